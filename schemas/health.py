"""The control plane's own state: liveness, readiness with each check's verdict, and the status
summary (configuration revision, objects per kind, the store's standing, each node's live status)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from schemas.changes import StoreState
from schemas.common import INT_MAX, Int64
from schemas.listing import InvalidStored
from schemas.status import NodeStatus


class Liveness(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    ready: bool = Field(description="False (status 503) when a check is down or the informer still syncs.")
    checks: dict[str, str] = Field(description="store, database, informer, config, epoch: 'ok…', 'synced' or what is wrong.")


class HeldStoreState(StoreState):
    held: str | None = Field(description="Why the informer holds back a store that lost its history (None: it does not).")


class UnreadableStatus(BaseModel):
    """A node's status key whose value is not a status this version reads."""

    node: str
    error: str


class ServiceStatus(BaseModel):
    revision: int = Field(ge=0, le=INT_MAX, description="The configuration revision the control plane sees.")
    synced: bool = Field(description="The configuration informer has listed the store.")
    objects: dict[str, Int64] = Field(description="Stored objects per kind.")
    invalid_objects: list[InvalidStored]
    store: HeldStoreState
    nodes: list[NodeStatus | UnreadableStatus] = Field(description="Each node's live status, as its agent wrote it.")
    roles: list[str] = Field(default_factory=list, description="What this replica does (LLMTUNE_ROLES).")
