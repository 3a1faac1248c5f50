"""The answers about configuration changes: what a change set did (or would do), the audit log's
records, a diff between revisions, and a restore. The API's response models, and what llmctl
parses; fields a newer server adds are ignored by an older client."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import INT_MAX

Action = Literal["create", "update", "delete"]


class ObjectChange(BaseModel):
    """One object a change set creates, updates or deletes."""

    kind: str = Field(description="Plural kind, e.g. 'models'.")
    name: str
    action: Action


class ApplyAnswer(BaseModel):
    """What a change set did, or for a dry run would do."""

    revision: int = Field(ge=0, le=INT_MAX, description="The new revision; for a dry run or no change, the current one.")
    dry_run: bool
    changes: list[ObjectChange]
    diff: str = Field(description="A unified diff of the documents, before and after.")


class StoreState(BaseModel):
    """The store's epoch and whether it holds what the audit log says (``/api/v1/status``'s ``store``)."""

    epoch: str | None
    state: Literal["ok", "behind", "unknown"]
    revision: int = Field(ge=0, le=INT_MAX, description="The store's current revision.")
    audit: dict[str, Any] = Field(description="The audit log's last committed change: epoch and revision.")
    reason: str | None = None
    missing: list[str] | None = Field(default=None, description="kind/name the audit log has and the store lacks.")
    differ: list[str] | None = Field(default=None, description="kind/name the store holds in another version.")
    extra: list[str] | None = Field(default=None, description="kind/name the store holds that the audit log deleted.")
    restore: str | None = Field(default=None, description="What to run when the store is behind.")


class RestoreAnswer(ApplyAnswer):
    source: str = Field(description="The audit log's change set the configuration comes from.")
    accepted: bool = Field(description="The store was kept as it is and marked whole (accept_current).")
    store: StoreState


class ChangeDetail(BaseModel):
    """One object's change, with both documents."""

    kind: str
    name: str
    action: Action
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class HistoryRecord(ChangeDetail):
    """One object's change in a committed change set, or one of the autoscaler's decisions (kind ``scaling``)."""

    epoch: str = Field(description="The store epoch the revision belongs to ('legacy': before epochs).")
    revision: int = Field(ge=0, le=INT_MAX)
    at: datetime
    actor: str
    message: str


class HistoryPage(BaseModel):
    items: list[HistoryRecord] = Field(description="Newest first.")


class DiffAnswer(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_revision: int = Field(alias="from", ge=0, le=INT_MAX)
    to_revision: int | None = Field(alias="to", ge=0, le=INT_MAX, description="None: the current state.")
    changes: list[ChangeDetail]
    diff: str
