"""Write-path edge cases on the memory store: endless concurrent changes, bad stored items."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from controlplane.db.engine import make_engine, migrate
from controlplane.services.config import ConfigService, encode
from controlplane.services.errors import Busy
from controlplane.services.history import History
from controlplane.store.base import Op, Put
from controlplane.store.informer import Informer
from controlplane.store.keys import KeySpace
from controlplane.store.memory import MemoryStore
from controlplane.store.view import ConfigView
from schemas.registry import parse_object
from tests.helpers import model_doc

KEYS = KeySpace("unit")


def history(tmp_path: Path) -> History:
    engine = make_engine(f"sqlite:///{tmp_path / 'meta.db'}")
    migrate(engine)
    return History(engine)


class Racing(MemoryStore):
    """Another writer moves the config head right before each of our commits."""

    async def commit(self, ops: Sequence[Op]) -> int:
        if any(op.key == KEYS.config_head() for op in ops):
            await super().commit([Put(KEYS.config_head(), b"{}")])
        return await super().commit(ops)


async def test_a_write_that_keeps_losing_the_race_gives_up_cleanly(tmp_path: Path) -> None:
    store = Racing()
    service = ConfigService(store, history(tmp_path), keys=KEYS)
    with pytest.raises(Busy, match="retry"):
        await service.apply([parse_object(model_doc("m"))], actor="a")
    assert await store.get(KEYS.config("models", "m")) is None
    assert await service.history() == []


async def test_view_keeps_the_last_good_value_of_a_corrupted_object(tmp_path: Path) -> None:
    store = MemoryStore()
    view = ConfigView(KEYS)
    informer = Informer(store, KEYS.config_prefix())
    informer.add_handler(view.on_snapshot)
    task = asyncio.create_task(informer.run())
    good = parse_object(model_doc("m", ctx=4096))
    assert await view.wait_for(await store.put(KEYS.config("models", "m"), encode(good)), 2)
    rev = await store.put(KEYS.config("models", "m"), json.dumps({"kind": "Model", "metadata": {"name": "m"}}).encode())
    assert await view.wait_for(rev, 2)
    kept = view.state[("models", "m")]
    assert kept.obj.spec.context_window == 4096  # type: ignore[attr-defined]
    task.cancel()


async def test_daemon_loop_survives_a_failing_run() -> None:
    from controlplane.services.loops import every

    runs: list[int] = []

    async def work() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("database down")

    await every(0.01, work, name="test", iterations=3)
    assert runs == [0, 1, 2]
