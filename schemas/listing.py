"""Configuration objects as the API answers them: one document of any kind, and a page of a
listing with the stored items that do not validate beside the valid ones."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import INT_MAX
from schemas.registry import AnyConfig

#: One object of any kind, with ``metadata.revision`` set (the store's mod revision).
ConfigDocument = AnyConfig


class InvalidStored(BaseModel):
    """A stored configuration item that does not validate (processes keep its last good value)."""

    key: str
    kind: str
    name: str
    revision: int = Field(ge=0, le=INT_MAX)
    error: str


class ConfigList(BaseModel):
    """A page of objects, sorted by kind then name, read at one revision."""

    revision: int = Field(ge=0, le=INT_MAX, description="The store revision the page was read at.")
    items: list[ConfigDocument]
    invalid: list[InvalidStored] = Field(description="Stored items of the page's range that do not validate.")
    total: int = Field(ge=0, le=INT_MAX, description="Valid objects that match the filter, on every page.")
    next: str | None = Field(default=None, description="Pass as 'continue' for the next page (None: this is the last).")


class HeadMetadata(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    revision: int | None = None


class ObjectHead(BaseModel):
    """What every listed object has, read leniently: a table of a listing from a newer server
    (with kinds or fields this version lacks) still reads."""

    model_config = ConfigDict(extra="ignore")

    kind: str
    metadata: HeadMetadata


class ConfigHeads(BaseModel):
    """A listing read as its objects' heads (``ConfigList``'s shape)."""

    model_config = ConfigDict(extra="ignore")

    revision: int
    items: list[ObjectHead]
    invalid: list[InvalidStored] = Field(default_factory=list)
    total: int = 0
    next: str | None = None

