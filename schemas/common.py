"""Shared building blocks of every configuration object: metadata and the object envelope."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

#: Object names: lower-case letters, digits, '.', '_' and '-', starting and ending alphanumeric.
#: Dots are allowed because model names such as ``llama3.1-8b`` carry versions.
NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
LabelKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]([A-Za-z0-9./_-]{0,126}[A-Za-z0-9])?$")]
LabelValue = Annotated[str, StringConstraints(max_length=128)]
SCHEMA_VERSION = 1

#: Every integer field and parameter is bounded to fit a signed 64-bit integer: what etcd revisions,
#: SQL BIGINT columns and Ollama's Go ints hold; a larger number is a 422, never an overflow further in.
#: The top bound is the largest int64 that a JSON number (an IEEE double) holds exactly, so that the
#: published schema (FastAPI writes bounds as floats) states the same bound that validation applies.
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1024
#: An integer with no narrower bounds of its own. Where a field has bounds (``Field(ge=0)``), it stays
#: ``int`` and adds ``le=INT_MAX``: pydantic lets ``Annotated`` constraints override ``Field`` ones.
Int64 = Annotated[int, Field(ge=INT_MIN, le=INT_MAX)]


class Strict(BaseModel):
    """Base for every schema people write: unknown fields are errors (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Report(BaseModel):
    """Base for what processes write about themselves for others to read (registrations, statuses,
    load reports, placements): unknown fields are ignored, so that during a rolling upgrade a
    writer one version ahead, with a field more, is still read by the readers of the last one."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Metadata(Strict):
    """Identity and bookkeeping of a configuration object."""

    name: Name = Field(description="Unique name within the kind (lower case, digits, '.', '_', '-').")
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, description="Free-form labels.")
    revision: int | None = Field(
        default=None,
        ge=0,
        le=INT_MAX,
        description="Store revision at which the object was last changed; set by the server, ignored on write.",
    )
    schema_version: int = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)


class ConfigObject(Strict):
    """Envelope shared by every configuration kind: ``kind``, ``metadata``, ``spec``."""

    #: URL/key-space segment of the kind, e.g. ``models``.
    plural: ClassVar[str] = ""

    #: Each kind narrows it to its own literal (first, so that documents read kind, metadata, spec).
    kind: str
    metadata: Metadata

    @property
    def name(self) -> str:
        return self.metadata.name

    def with_revision(self, revision: int | None) -> ConfigObject:
        """Copy with ``metadata.revision`` set (the store's mod revision)."""
        return self.model_copy(update={"metadata": self.metadata.model_copy(update={"revision": revision})})

    def content(self) -> dict[str, Any]:
        """JSON-able content without the server-owned revision: what is stored and compared."""
        data = self.model_dump(mode="json", exclude_none=True)
        data["metadata"].pop("revision", None)
        return {"kind": data.pop("kind"), "metadata": data.pop("metadata"), **data}
