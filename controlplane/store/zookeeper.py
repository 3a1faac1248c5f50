"""ZooKeeper backend (kazoo) behind the same ConfigStore contract as etcd.

ZooKeeper has no global revision, no ordered history and (in kazoo 2.11) no persistent recursive
watches; one-shot data watches coalesce changes. So the backend builds them:

* **Revision = zxid.** A commit is one ``multi()`` transaction, so every znode it touches gets the
  same zxid; a key's ``mod_revision`` is its ``mzxid``. zxids only grow.
* **Serialised commits.** Each commit reads the keys it touches and ``<root>/meta/head``, then runs
  ``set_data(head, version=read)`` plus versioned writes in one transaction: if any other commit came
  in between, ZooKeeper rejects it and the commit re-reads and re-evaluates its preconditions.
* **Ordered change log.** Every commit also creates ``<root>/log/r-<seq>`` (persistent-sequential)
  holding its events. ZooKeeper numbers children in commit order, so the log is in revision order;
  a watch reads records after the last one it processed, woken by a one-shot children watch, and
  finds its starting point from a revision by binary search over the records' ``czxid``.
* **Compaction** deletes records older than a revision and writes ``<root>/meta/compacted``
  (the revision and the ``czxid`` of the newest deleted record); a watch positioned at or below the
  latter gets ``Compacted``, exactly when it would have missed a change.
* **Leases = sessions.** ``grant_lease(ttl)`` opens a session of its own (timeout = ttl) holding an
  ephemeral ``<root>/leases/l-<id>``; lease-bound keys are ordinary znodes indexed under
  ``<root>/lease-keys/<id>``. Every store instance watches ``<root>/leases`` and, when a lease's node
  vanishes (session expired or revoked), deletes its keys **through a logged commit**, so informers
  see the deletion like any other change. Concurrent reapers are harmless (versioned deletes).
* **Keys** live at ``<root>/kv/d<dir>/<name>`` (``/`` escaped), one bucket per key directory, so
  listing a prefix reads only the matching buckets and no single children list grows past
  ZooKeeper's 1 MB reply limit. A key znode's data is a header (marker, lease id) plus the value.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import struct
import threading
import time
from base64 import b64decode, b64encode
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError,
    ConnectionLoss,
    KazooException,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import KazooState, ZnodeStat

from controlplane.store.base import (
    Check,
    Delete,
    Event,
    EventType,
    KeyValue,
    ListResult,
    Op,
    Put,
    StoreBase,
    WatchBatch,
    check_ops,
)
from controlplane.store.errors import Compacted, Conflict, LeaseLost, StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")
_HEADER = struct.Struct(">cQ")  # marker, lease id
_MARKER = b"K"
_UNAVAILABLE = (ConnectionLoss, SessionExpiredError, KazooTimeoutError)
_CHUNK = 256  # log records read per round trip and per watch batch


@dataclass(frozen=True, slots=True)
class ZooKeeperConfig:
    hosts: str = "127.0.0.1:2181"
    root: str = "/llmtune-store"
    timeout_s: float = 10.0
    progress_interval_s: float = 5.0


def _enc(text: str) -> str:
    return text.replace("%", "%25").replace("/", "%2F")


def _dec(text: str) -> str:
    return text.replace("%2F", "/").replace("%25", "%")


def _seq(name: str) -> int:
    return int(name.rsplit("-", 1)[1])


def _lease_name(lease: int) -> str:
    return f"l-{lease - 1:010d}"  # lease ids start at 1 (0 means "no lease"); sequences at 0


@dataclass
class _Lease:
    """A lease's own session, and a watchdog that closes it when keepalives stop (etcd semantics:
    kazoo pings by itself, so without this a lease would outlive a stalled keepalive loop)."""

    session: KazooClient
    ttl_s: int
    watchdog: threading.Timer | None = None

    def arm(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
        self.watchdog = threading.Timer(self.ttl_s, self.expire)
        self.watchdog.daemon = True
        self.watchdog.start()

    def expire(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
        self.session.stop()
        self.session.close()


class ZooKeeperStore(StoreBase):
    """ConfigStore on a ZooKeeper ensemble; see the module docstring for the design."""

    def __init__(self, config: ZooKeeperConfig) -> None:
        self._cfg = config
        root = config.root.rstrip("/")
        self._kv, self._log, self._meta = f"{root}/kv", f"{root}/log", f"{root}/meta"
        self._head, self._compacted = f"{self._meta}/head", f"{self._meta}/compacted"
        self._lease_dir, self._lease_keys = f"{root}/leases", f"{root}/lease-keys"
        self._client: KazooClient | None = None
        self._start_lock = threading.Lock()
        self._leases: dict[int, _Lease] = {}

    # -- plumbing ------------------------------------------------------------------------------
    def _zk(self) -> KazooClient:
        with self._start_lock:
            if self._client is None:
                self._client = self._start()
            return self._client

    def _start(self) -> KazooClient:
        client = KazooClient(hosts=self._cfg.hosts, timeout=self._cfg.timeout_s)
        try:
            client.start(timeout=self._cfg.timeout_s)
        except KazooTimeoutError as exc:
            client.close()
            raise StoreUnavailable(f"ZooKeeper at {self._cfg.hosts} did not answer") from exc
        for path in (self._kv, self._log, self._meta, self._lease_dir, self._lease_keys):
            client.ensure_path(path)
        with contextlib.suppress(NodeExistsError):
            client.create(self._head, b"")
        client.ChildrenWatch(self._lease_dir, self._on_leases)
        return client

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking kazoo work in a thread; connection trouble becomes StoreUnavailable."""
        try:
            return await asyncio.to_thread(fn, *args)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"ZooKeeper unavailable: {exc.__class__.__name__}") from exc

    def _path(self, key: str) -> str:
        directory, _, name = key.rpartition("/")
        if not name:
            raise ValueError(f"a key must not end with '/': {key!r}")
        return f"{self._kv}/d{_enc(directory)}/{_enc(name)}"

    @staticmethod
    def _kv_of(key: str, data: bytes, stat: ZnodeStat) -> KeyValue | None:
        if len(data) < _HEADER.size or data[:1] != _MARKER:
            return None
        _, lease = _HEADER.unpack_from(data)
        return KeyValue(key, data[_HEADER.size :], stat.mzxid, stat.czxid, stat.version + 1, lease)

    def _read(self, keys: Sequence[str]) -> dict[str, tuple[bytes, ZnodeStat] | None]:
        zk = self._zk()
        pending = [(k, zk.get_async(self._path(k))) for k in keys]  # pipelined on one connection
        out: dict[str, tuple[bytes, ZnodeStat] | None] = {}
        for key, result in pending:
            try:
                out[key] = result.get()
            except NoNodeError:
                out[key] = None
        return out

    # -- key/value -----------------------------------------------------------------------------
    async def get(self, key: str) -> KeyValue | None:
        found = (await self._run(self._read, [key]))[key]
        return self._kv_of(key, *found) if found else None

    def _list(self, prefix: str) -> ListResult:
        zk = self._zk()
        for _ in range(20):
            before = zk.exists(self._log).pzxid
            keys: list[str] = []
            for bucket in zk.get_children(self._kv):
                directory = _dec(bucket[1:]) + "/"
                if directory.startswith(prefix) or prefix.startswith(directory):
                    try:
                        names = zk.get_children(f"{self._kv}/{bucket}")
                    except NoNodeError:
                        continue
                    keys += [k for k in (directory + _dec(n) for n in names) if k.startswith(prefix)]
            items = [kv for k, v in sorted(self._read(keys).items()) if v and (kv := self._kv_of(k, *v))]
            if zk.exists(self._log).pzxid == before:  # no commit in between: a consistent cut
                return ListResult(tuple(items), before)
        raise StoreUnavailable("the configuration kept changing during a list; retry")

    async def list(self, prefix: str) -> ListResult:
        return await self._run(self._list, prefix)

    def _commit(self, ops: Sequence[Op]) -> int:
        zk = self._zk()
        leases = {op.lease for op in ops if isinstance(op, Put) and op.lease}
        if len(leases) > 1:
            raise ValueError("one commit may bind keys to one lease only")
        for _ in range(200):
            head_stat = zk.exists(self._head)
            current = self._read([op.key for op in ops])
            for op in ops:
                found = current[op.key]
                actual = found[1].mzxid if found and self._kv_of(op.key, *found) else None
                if op.expected_revision is not None and (actual or 0) != op.expected_revision:
                    raise Conflict(op.key, expected=op.expected_revision, actual=actual)
            writes = [op for op in ops if not isinstance(op, Check)]
            if all(isinstance(op, Delete) and current[op.key] is None for op in writes):
                return int(head_stat.mzxid)  # nothing to change: no revision, as in etcd
            txn = zk.transaction()
            txn.set_data(self._head, b"", version=head_stat.version)
            for lease in leases:  # checked inside the transaction: a lease expiring meanwhile fails it
                lease_stat = zk.exists(f"{self._lease_dir}/{_lease_name(lease)}")
                if lease_stat is None:
                    raise LeaseLost(f"lease {lease} expired or was revoked")
                txn.check(f"{self._lease_dir}/{_lease_name(lease)}", lease_stat.version)
            events = []
            for op in writes:
                path, found = self._path(op.key), current[op.key]
                if isinstance(op, Put):
                    data = _HEADER.pack(_MARKER, op.lease) + op.value
                    if found:
                        txn.set_data(path, data, version=found[1].version)
                    else:
                        zk.ensure_path(path.rsplit("/", 1)[0])
                        txn.create(path, data)
                    if op.lease:
                        index = f"{self._lease_keys}/{op.lease}/{_enc(op.key)}"
                        if zk.exists(index) is None:
                            zk.ensure_path(index.rsplit("/", 1)[0])
                            txn.create(index, b"")
                    events.append(["put", op.key, b64encode(op.value).decode()])
                elif found:
                    txn.delete(path, version=found[1].version)
                    events.append(["delete", op.key, ""])
            txn.create(f"{self._log}/r-", json.dumps(events).encode(), sequence=True)
            results = txn.commit()
            if not any(isinstance(r, Exception) for r in results):
                return int(zk.exists(results[-1]).czxid)
            if not any(isinstance(r, BadVersionError | NodeExistsError | NoNodeError) for r in results):
                raise StoreUnavailable(f"ZooKeeper refused the transaction: {results}")
            # Another commit came first: read again and re-evaluate the preconditions (after a
            # short random pause, so colliding writers spread out instead of spinning).
            time.sleep(random.uniform(0, 0.002))
        raise StoreUnavailable("too many concurrent commits; retry")

    async def commit(self, ops: Sequence[Op]) -> int:
        check_ops(ops)
        return await self._run(self._commit, ops)

    async def current_revision(self) -> int:
        return int((await self._run(lambda: self._zk().exists(self._log))).pzxid)

    # -- watch -----------------------------------------------------------------------------------
    def _compaction(self) -> tuple[int, int]:
        """(compacted revision, czxid of the newest deleted record); (0, 0) before any compaction."""
        try:
            data, _ = self._zk().get(self._compacted)
        except NoNodeError:
            return 0, 0
        doc = json.loads(data)
        return int(doc["revision"]), int(doc["last_deleted"])

    def _records(self, names: Sequence[str]) -> Sequence[tuple[int, bytes, ZnodeStat]]:
        zk = self._zk()
        pending = [(_seq(n), zk.get_async(f"{self._log}/{n}")) for n in names]
        out = []
        for seq, result in pending:
            try:
                data, stat = result.get()
            except NoNodeError:
                continue  # compacted under us: the caller checks the compaction marker
            out.append((seq, data, stat))
        return out

    def _first_at(self, names: Sequence[str], revision: int) -> int:
        """Index of the first record with czxid >= revision (binary search, records are ordered)."""
        zk = self._zk()
        lo, hi = 0, len(names)
        while lo < hi:
            mid = (lo + hi) // 2
            stat = zk.exists(f"{self._log}/{names[mid]}")
            if stat is not None and stat.czxid < revision:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _poll(self, position: int, last_seq: int | None, on_children: Callable[[object], None]) -> tuple[Sequence[str], int]:
        """One thread hop per wake-up: the log records this watcher has not read yet (re-arming the
        children watch), and the czxid of the newest compacted record when it may have missed some."""
        zk = self._zk()
        names = sorted(zk.get_children(self._log, on_children), key=_seq)
        # Compaction deletes the oldest records first: while a record at or before our last one is
        # still there, nothing after it can be gone, and the marker need not be read.
        intact = last_seq is not None and bool(names) and _seq(names[0]) <= last_seq
        last_deleted = 0 if intact else self._compaction()[1]
        if last_seq is None:
            return names[self._first_at(names, position) :], last_deleted
        return [n for n in names if _seq(n) > last_seq], last_deleted

    async def watch(self, prefix: str, *, start_revision: int) -> AsyncIterator[WatchBatch]:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        position = start_revision  # the next revision this watcher needs
        last_seq: int | None = None

        def on_children(_event: object) -> None:
            loop.call_soon_threadsafe(wake.set)

        while True:
            wake.clear()
            names, last_deleted = await self._run(self._poll, position, last_seq, on_children)
            if position <= last_deleted:
                raise Compacted((await self._run(self._compaction))[0])
            for start in range(0, len(names), _CHUNK):  # a long catch-up arrives in bounded batches
                events: list[Event] = []
                for seq, data, stat in await self._run(self._records, names[start : start + _CHUNK]):
                    last_seq = seq
                    if stat.czxid < position:
                        continue
                    position = stat.czxid + 1
                    for kind, key, value in json.loads(data):
                        if key.startswith(prefix):
                            etype = EventType.PUT if kind == "put" else EventType.DELETE
                            events.append(Event(etype, key, b64decode(value), stat.czxid))
                if events:
                    yield WatchBatch(tuple(events), position - 1)
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that
                # arrives as the wake-up does (kazoo sets it from its thread), and the watch never ends.
                async with asyncio.timeout(self._cfg.progress_interval_s):
                    await wake.wait()
            except TimeoutError:
                yield WatchBatch((), await self.current_revision())  # progress: still alive

    async def compact(self, revision: int) -> None:
        def work() -> None:
            zk = self._zk()
            names = sorted(zk.get_children(self._log), key=_seq)
            cut = self._first_at(names, revision)
            last_deleted = self._compaction()[1]
            if cut:
                last_deleted = max(last_deleted, zk.exists(f"{self._log}/{names[cut - 1]}").czxid)
            doc = json.dumps({"revision": revision, "last_deleted": last_deleted}).encode()
            # The marker first: a watcher that then finds records gone knows why.
            try:
                zk.create(self._compacted, doc)
            except NodeExistsError:
                zk.set(self._compacted, doc)
            for name in names[:cut]:
                with contextlib.suppress(NoNodeError):
                    zk.delete(f"{self._log}/{name}")

        await self._run(work)

    # -- leases ------------------------------------------------------------------------------------
    async def grant_lease(self, ttl_s: int) -> int:
        def work() -> int:
            self._zk()
            session = KazooClient(hosts=self._cfg.hosts, timeout=float(ttl_s))
            session.start(timeout=self._cfg.timeout_s)
            path = session.create(f"{self._lease_dir}/l-", b"", ephemeral=True, sequence=True)
            lease = _seq(path) + 1
            held = _Lease(session, ttl_s)
            held.arm()
            self._leases[lease] = held
            return lease

        return await self._run(work)

    async def keepalive(self, lease_id: int) -> int:
        """kazoo pings the session by itself; this checks the lease still stands."""
        held = self._leases.get(lease_id)
        node = f"{self._lease_dir}/{_lease_name(lease_id)}"
        alive = held is not None and held.session.connected and held.session.state != KazooState.LOST
        if held is not None and alive and await self._run(lambda: self._zk().exists(node)) is not None:
            held.arm()
            return held.ttl_s
        if held is not None:  # expired (kazoo may even have opened a new, useless session)
            self._leases.pop(lease_id, None)
            await self._run(held.expire)
        raise LeaseLost(f"lease {lease_id} expired or was revoked")

    async def revoke_lease(self, lease_id: int) -> None:
        held = self._leases.pop(lease_id, None)
        if held is not None:
            await self._run(held.expire)
        await self._run(self._reap, lease_id)

    @staticmethod
    def _close_session(session: KazooClient) -> None:
        session.stop()
        session.close()

    def _on_leases(self, _children: Sequence[str]) -> None:
        """kazoo's children watch: reap, off kazoo's callback thread, the keys of vanished leases."""
        threading.Thread(target=self._reap_orphans, name="zk-lease-reaper", daemon=True).start()

    def _reap_orphans(self) -> None:
        zk = self._zk()
        try:
            # Index first, live leases second: an index seen here belongs to a lease created
            # earlier, so a lease missing from the later listing has really gone.
            indexed = {int(n) for n in zk.get_children(self._lease_keys)}
            live = {_seq(n) + 1 for n in zk.get_children(self._lease_dir)}
            for lease in sorted(indexed - live):
                self._reap(lease)
        except KazooException:
            log.exception("could not remove the keys of expired leases; the next lease change retries")

    def _reap(self, lease: int) -> None:
        """Delete (through a logged commit) the keys still bound to ``lease``, then its index."""
        zk = self._zk()
        index = f"{self._lease_keys}/{lease}"
        try:
            names = zk.get_children(index)
        except NoNodeError:
            return
        found = self._read([_dec(n) for n in names])
        bound = [kv for k, v in found.items() if v and (kv := self._kv_of(k, *v)) and kv.lease == lease]
        for kv in bound:
            # Versioned: a key rewritten (or reaped by another instance) since the read is left alone.
            with contextlib.suppress(Conflict):
                self._commit([Delete(kv.key, expected_revision=kv.mod_revision)])
        for name in names:
            with contextlib.suppress(NoNodeError):
                zk.delete(f"{index}/{name}")
        with contextlib.suppress(NoNodeError, NotEmptyError):
            zk.delete(index)

    async def close(self) -> None:
        for held in list(self._leases.values()):
            await asyncio.to_thread(held.expire)
        self._leases.clear()
        if self._client is not None:
            await asyncio.to_thread(self._close_session, self._client)
            self._client = None
