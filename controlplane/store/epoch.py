"""The store epoch: the identity of one history of the configuration store.

etcd revisions restart below the audit log's when etcd loses its data, and go back when it is
restored from an older snapshot. The epoch key (``/<ns>/v1/meta/epoch``) names the history a
revision belongs to: a random id, created once; the control plane replaces it when it finds the
store empty or behind the audit log, in state ``behind`` until an operator restores the audit
log's last committed state (or accepts the store as it is), which sets it ``ok``.

Informers (``controlplane.store.informer``) read it on every list: a re-list that finds a
different epoch that is not ``ok``, no epoch where there was one, or revisions that went back,
keeps the last good snapshot instead of publishing what the store lost.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import orjson

from controlplane.store.base import KeyValue

State = Literal["ok", "behind"]


@dataclass(frozen=True, slots=True)
class Epoch:
    id: str
    state: State = "ok"
    created: str = ""
    reason: str = ""  # why the control plane started it behind (what the store lost)
    revision: int = 0  # the epoch key's mod revision (a CAS guard); 0 before it is stored

    @classmethod
    def new(cls, state: State = "ok", reason: str = "") -> Epoch:
        return cls(secrets.token_hex(8), state, datetime.now(UTC).isoformat(timespec="seconds"), reason)

    def encode(self) -> bytes:
        return orjson.dumps({"id": self.id, "state": self.state, "created": self.created, "reason": self.reason})

    def with_state(self, state: State, reason: str = "") -> Epoch:
        return Epoch(self.id, state, self.created, reason, self.revision)


def decode(kv: KeyValue | None) -> Epoch | None:
    """The stored epoch; None when absent or unreadable (treated as lost)."""
    if kv is None:
        return None
    try:
        data = orjson.loads(kv.value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not data["id"]:
        return None
    state: State = "behind" if data.get("state") == "behind" else "ok"
    return Epoch(data["id"], state, str(data.get("created", "")), str(data.get("reason", "")), kv.mod_revision)
