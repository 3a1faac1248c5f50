"""ConfigView folding: an item that stops validating keeps its last good value in ``state``,
leaves ``current`` and is reported in ``invalid`` until valid bytes (or a delete) replace it."""

from __future__ import annotations

import orjson

from controlplane.store.base import KeyValue
from controlplane.store.informer import Snapshot
from controlplane.store.keys import KeySpace
from controlplane.store.view import ConfigView
from tests.helpers import route_doc

KEYS = KeySpace(namespace="unit")
KEY = KEYS.config("routes", "default-chat")
GOOD = orjson.dumps(route_doc("default-chat", "small"))
BAD = b'{"kind":"Route","metadata":{"name":"default-chat"},"spec":{"targets":[{"model":"nope","weight":"x"}]}}'


def relist(revision: int, value: bytes) -> Snapshot:
    kv = KeyValue(KEY, value, revision, 1, 1)
    return Snapshot(revision=revision, items={KEY: kv}, relisted=True)


def test_invalid_item_keeps_last_good_value_until_repaired() -> None:
    view = ConfigView(KEYS)
    view.on_snapshot(relist(2, GOOD))
    assert view.state[("routes", "default-chat")].revision == 2
    assert not view.invalid

    view.on_snapshot(relist(3, BAD))
    assert view.state[("routes", "default-chat")].revision == 2  # last good value still served
    assert ("routes", "default-chat") not in view.current
    bad = view.invalid[KEY]
    assert (bad.kind, bad.name, bad.revision, bad.raw) == ("routes", "default-chat", 3, BAD.decode())
    assert "weight" in bad.error

    view.on_snapshot(relist(4, GOOD))
    assert view.state[("routes", "default-chat")].revision == 4
    assert view.current[("routes", "default-chat")].revision == 4
    assert not view.invalid


def test_invalid_item_without_a_last_good_value_is_only_reported() -> None:
    view = ConfigView(KEYS)
    view.on_snapshot(relist(5, b"not json"))
    assert not view.state and not view.current
    assert view.invalid[KEY].revision == 5
