"""An experiment end to end: the router splits a route between two variants, one of them on a
node that fails; its outcome records reach the monitor through Redis; the monitor's guardrail
stops the experiment on its own, and the router sends everything to the route's target again.
Then promote writes the winner into the route as one revision, and the router follows it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from controlplane.store.keys import KeySpace
from tests.fixtures.fleet import Fleet
from tests.fixtures.services import EtcdServer, RedisServer
from tests.helpers import model_doc, route_doc
from tests.sim.engine import Fault

pytestmark = pytest.mark.etcd


async def test_guardrail_stops_a_failing_variant_and_promote_reroutes(
    etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path, redis_server: RedisServer
) -> None:
    import redis

    redis.Redis.from_url(redis_server.url).delete("llmtune:outcomes")
    fleet = Fleet(etcd_server.url, keys, tmp_path)
    await fleet.start_control_plane(monitor={"redis_url": redis_server.url, "guardrails_every_s": 0.5})
    try:
        await fleet.add_node("node-a", labels={"pool": "a"})
        await fleet.add_node("node-b", labels={"pool": "b"})
        variants = [{"name": "a", "model": "small"}, {"name": "b", "model": "big"}]
        spec = {"route": "chat", "state": "running", "variants": variants, "sticky_key": "header:x-user",
                "guardrails": {"max_error_rate": 0.3, "min_samples": 10}}  # fmt: skip
        objects = [
            model_doc("small", tag="llama3.2:1b", placement={"node_selector": {"pool": "a"}}),
            model_doc("big", tag="llama3.1:8b", placement={"node_selector": {"pool": "b"}}),
            # the route's own breaker settings: a tripped node is probed again after 1 s (the default is 30 s)
            route_doc("chat", "small", match={"model_aliases": ["chat"]}, experiment="ab", circuit_breaker={"open_s": 1}),
            {"kind": "Experiment", "metadata": {"name": "ab"}, "spec": spec},
        ]
        assert (await fleet.api.post("/api/v1/config:apply", json={"objects": objects})).status_code == 200

        async def ready() -> bool:
            models = (await fleet.api.get("/api/v1/models/status")).json()["models"]
            return all(m["ready_nodes"] == 1 for m in models)

        await fleet.eventually(ready, timeout_s=20)
        url = await fleet.start_router(outcomes_redis_url=redis_server.url)
        # variant b's node fails every chat; with a single node per model there is nowhere to fall back
        fleet.sims["node-b"].engine.faults.append(Fault("/api/chat", status=500, message="GPU lost", times=-1))
        body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": False}
        variants_seen: dict[str, int] = {}
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            for i in range(60):
                resp = await client.post("/api/chat", json=body, headers={"x-user": f"user-{i}"})
                seen = resp.headers.get("x-route-variant", "")
                variants_seen[seen] = variants_seen.get(seen, 0) + 1

            async def stopped() -> bool:
                exp = (await fleet.api.get("/api/v1/config/experiments/ab")).json()
                return bool(exp["spec"]["state"] == "stopped")

            await fleet.eventually(stopped, timeout_s=20)
            history = (await fleet.api.get("/api/v1/config/experiments/ab/history")).json()
            assert "guardrail: b: error rate" in str(history)
            async def unsplit() -> bool:  # the router's table follows the stop within moments
                resp = await client.post("/api/chat", json=body, headers={"x-user": "probe"})
                return "x-route-variant" not in resp.headers or resp.headers["x-route-variant"] == ""

            await fleet.eventually(unsplit, timeout_s=10)
            after = [await client.post("/api/chat", json=body, headers={"x-user": f"user-{i}"}) for i in range(20)]
            assert all(r.status_code == 200 and r.headers["x-route-model"] == "small" for r in after)
            assert {r.headers.get("x-route-variant", "") for r in after} == {""}

            fleet.sims["node-b"].engine.faults.clear()  # the node is repaired; b is promoted after all
            promoted = await fleet.api.post("/api/v1/experiments/ab/promote", json={"variant": "b"})
            assert promoted.status_code == 200

            async def follows() -> bool:
                resp = await client.post("/api/chat", json=body)
                return resp.status_code == 200 and resp.headers["x-route-model"] == "big"

            await fleet.eventually(follows, timeout_s=10)
        # both variants had traffic until the guardrail acted (b needs min_samples answers first)
        assert variants_seen.get("a", 0) >= 3 and variants_seen.get("b", 0) >= 10, variants_seen
    finally:
        await fleet.close()
