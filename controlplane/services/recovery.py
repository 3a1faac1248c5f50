"""Store recovery: the store epoch kept against the audit log (``controlplane.store.epoch``).

``check`` runs when the control plane starts and every few seconds after: it creates the epoch of
a store that has none (a new store, or one that lost its data), replaces the epoch of a store
whose revisions went back (restored from an older snapshot), and compares the store with the
audit log's last committed state. A store that is empty or behind (objects missing, older, or
back from the dead) gets an epoch in state ``behind``: status says so, the gauge
``llmtune_store_behind_objects`` counts what differs, informers keep their last good snapshot, and
writes wait for ``ConfigService.restore``. Nothing is written back automatically.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from controlplane.services.config import ConfigService
from controlplane.services.history import History
from controlplane.store import epoch as epochs
from controlplane.store.base import ConfigStore
from controlplane.store.errors import Conflict
from controlplane.store.keys import KeySpace

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What ``/api/v1/status`` shows under ``store``."""

    epoch: str | None
    state: str  # ok | behind | unknown (not checked yet)
    reason: str = ""
    revision: int = 0  # the store's current revision
    audit: dict[str, Any] = field(default_factory=dict)  # the audit log's last committed change: epoch, revision
    missing: tuple[str, ...] = ()  # objects the audit log has and the store lacks (kind/name)
    differ: tuple[str, ...] = ()  # objects the store holds in another (older) version
    extra: tuple[str, ...] = ()  # objects the store holds that the audit log deleted

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"epoch": self.epoch, "state": self.state, "revision": self.revision, "audit": self.audit}
        if self.state == "behind":
            out |= {"reason": self.reason, "missing": list(self.missing), "differ": list(self.differ),
                    "extra": list(self.extra), "restore": "llmctl restore --dry-run, then llmctl restore"}  # fmt: skip
        return out

    @property
    def behind(self) -> int:
        return len(self.missing) + len(self.differ) + len(self.extra) if self.state == "behind" else 0


class Recovery:
    def __init__(self, store: ConfigStore, history: History, config: ConfigService, *, keys: KeySpace) -> None:
        self._store, self._history, self._config, self._keys = store, history, config, keys
        self.report = RecoveryReport(None, "unknown")

    async def _lost(self) -> tuple[dict[str, Any], tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]]:
        """The audit log's last committed change, and what the store lacks of its state."""
        last, changes, _revision = await self._config.audit_drift()
        if last is None:
            return {}, ((), (), ())

        def pick(action: str) -> tuple[str, ...]:
            return tuple(sorted(f"{c.kind}/{c.name}" for c in changes if c.action == action))

        # compare(audit, store): "create" = only in the store, "delete" = only in the audit log
        return {"epoch": last[0] or None, "revision": last[1]}, (pick("delete"), pick("update"), pick("create"))

    async def check(self) -> RecoveryReport:
        """One comparison of the store with the audit log (see the module's docstring)."""
        key = self._keys.epoch()
        found = epochs.decode(await self._store.get(key))
        revision = await self._store.current_revision()
        # Every audited change set moves config-head in its own transaction, so in a store that kept its
        # history config-head is at least the newest audited revision. Other writes (leases, status and
        # load reports) move only the store's revision, and quickly after a restore: the head tells.
        # The audit log first, then the head: a change set is committed to the store before its audit row
        # is final, so every revision audited by then is at or below the head read after it. Read the other
        # way round, a write (of this or another replica) landing in between looks like a store gone back.
        audited = await self._history.latest_revision(found.id) if found is not None else 0
        head = await self._store.get(self._keys.config_head())
        why, drift = "", None
        if found is None:
            why = "the store has no epoch: it is new, or it lost its data"
        elif (configured := head.mod_revision if head else 0) < audited:
            why = (f"the store's configuration revision {configured} is below the audit log's {audited} for its epoch "
                   "(restored from an older backup?)")  # fmt: skip
        if why:
            drift = await self._lost()
            audit, lost = drift
            behind = any(lost)
            created = epochs.Epoch.new("behind" if behind else "ok", why if behind else "")
            try:
                revision = await self._store.put(key, created.encode(), expected_revision=found.revision if found else 0)
            except Conflict:  # another replica got there first: take its verdict on the next check
                return self.report
            audited = 0  # a new history: none of its revisions is audited yet
            if found is None and not behind and audit.get("epoch") is None and audit:
                adopted = await self._history.adopt_legacy(created.id)  # rows written before epochs: this history
                log.info("store epoch %s: %d audit rows from before epochs adopted", created.id, adopted)
                audited = await self._history.latest_revision(created.id)
            level = logging.WARNING if behind else logging.INFO
            log.log(level, "store epoch %s created (%s): %s", created.id, created.state, why)
            found = dataclasses.replace(created, revision=revision)
        assert found is not None
        if found.state == "behind":
            audit, (missing, differ, extra) = drift or await self._lost()
            self.report = RecoveryReport(found.id, "behind", found.reason, revision, audit, missing, differ, extra)
        else:
            self.report = RecoveryReport(found.id, "ok", "", revision, {"epoch": found.id, "revision": audited})
        return self.report


class RecoveryCollector(Collector):
    """``llmtune_store_behind_objects``: objects the store lacks or holds older than the audit log
    says (0 unless the store epoch is behind, waiting for a restore)."""

    def __init__(self, recovery: Recovery) -> None:
        self._recovery = recovery

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "llmtune_store_behind_objects",
            "Configuration objects missing, older or deleted-then-back in the store against the audit log (restore it).",
        )
        family.add_metric([], self._recovery.report.behind)
        yield family


