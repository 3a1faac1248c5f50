"""Fans the config informer's snapshots out to Server-Sent-Events clients of ``/api/v1/watch``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from controlplane.store.base import EventType
from controlplane.store.informer import Snapshot
from controlplane.store.keys import KeySpace

#: A client that falls this far behind is told to re-read (``resync``) instead of blocking others.
QUEUE_LIMIT = 1000


class Broadcaster:
    def __init__(self, keys: KeySpace) -> None:
        self._keys = keys
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()

    def _messages(self, snapshot: Snapshot) -> list[dict[str, Any]]:
        if snapshot.relisted:
            return [{"event": "resync", "data": json.dumps({"revision": snapshot.revision})}]
        out = []
        for ev in snapshot.changes:
            try:
                kind, name = self._keys.parse_config(ev.key)
            except ValueError:
                continue
            data: dict[str, Any] = {"revision": ev.mod_revision, "type": ev.type.value, "kind": kind, "name": name}
            if ev.type is EventType.PUT:
                data["object"] = json.loads(ev.value)
            out.append({"event": "change", "id": str(ev.mod_revision), "data": json.dumps(data)})
        return out

    def publish(self, snapshot: Snapshot) -> None:
        """Queue the snapshot's messages for every subscriber. One that cannot take them all (it
        stopped reading) loses its queue for one ``resync``: it re-reads, and hurts no one else."""
        messages = self._messages(snapshot)
        for queue in list(self._queues):
            if queue.qsize() + len(messages) > QUEUE_LIMIT:
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait({"event": "resync", "data": json.dumps({"revision": snapshot.revision})})
                continue
            for msg in messages:
                queue.put_nowait(msg)

    async def subscribe(self, *, revision: int, kind: str | None = None) -> AsyncIterator[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()  # bounded by publish: QUEUE_LIMIT, or one resync
        self._queues.add(queue)
        try:
            yield {"event": "hello", "data": json.dumps({"revision": revision})}
            while True:
                msg = await queue.get()
                if kind is None or msg["event"] != "change" or json.loads(msg["data"])["kind"] == kind:
                    yield msg
        finally:
            self._queues.discard(queue)
