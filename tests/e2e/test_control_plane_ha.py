"""Control-plane replicas as processes on one etcd, one PostgreSQL database and one Redis.

Two replicas behind one address (a round-robin TCP balancer here) answer as one: writes on one
are history and reads on the other, and RAG documents ingested on one are found on the other.
Every loop has one leader among them. Both restarted in turn under router traffic and an ingest:
no client error and no document lost. A fine-tuning run that ends as its leader is killed is
registered once by the next leader; a leader paused past its TTL registers nothing when resumed.
The monitor's leader killed while judging: the next judges the rest, each answer once. The monitor's leader
killed with SIGKILL while an experiment breaches its guardrails: another leads within the lease's
TTL and the experiment is stopped once, not twice, and not never; the leader paused with SIGSTOP
past its TTL and resumed: another leads, the paused one's writes are refused, and it steps down."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import redis

from controlplane.store.base import ConfigStore
from controlplane.store.etcd import EtcdConfig, EtcdStore
from controlplane.store.keys import KeySpace
from deploy.local import processes
from schemas.changes import HistoryPage
from schemas.monitor import OUTCOME_STREAM
from tests.fixtures.controlplanes import ROOT, TOKEN, ControlPlanes
from tests.fixtures.services import ChromaServer, EtcdServer, PostgresServer, RedisServer
from tests.helpers import model_doc, rag_doc, route_doc
from tests.integration.rag_corpus import DOCS

pytestmark = pytest.mark.etcd
TTL_S = 3
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LOOPS = ("monitor", "finetune", "upkeep", "autoscaler")


class Balancer:
    """Round robin per connection over the replicas' ports; a replica that refuses is skipped."""

    def __init__(self, ports: list[int]) -> None:
        self.ports, self._next = ports, 0
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in self.ports:
            port = self.ports[self._next % len(self.ports)]
            self._next += 1
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            return
        writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()


@pytest.fixture
def redis_db(redis_server: RedisServer) -> Iterator[str]:
    """A database of the session's Redis of this test's own (the outcome stream's name is fixed)."""
    url = redis_server.url.rsplit("/", 1)[0] + "/7"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
async def planes(etcd_server: EtcdServer, postgres_server: PostgresServer, redis_db: str, keys: KeySpace,
                 tmp_path: Path) -> AsyncIterator[ControlPlanes]:  # fmt: skip
    env = {
        "LLMTUNE_LEADER_TTL_S": str(TTL_S), "LLMTUNE_MONITOR__REDIS_URL": redis_db, "LLMTUNE_MONITOR__GUARDRAILS_EVERY_S": "0.3",
        "LLMTUNE_FINETUNE__REDIS_URL": redis_db, "LLMTUNE_FINETUNE__QUEUE": f"ha-{uuid.uuid4().hex[:8]}",
        "LLMTUNE_FINETUNE__HEARTBEAT_S": "0.2", "LLMTUNE_FINETUNE__ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "LLMTUNE_AUTOSCALER__LEASE_TTL_S": str(TTL_S), "LLMTUNE_RAG__REDIS_URL": redis_db,
    }  # fmt: skip
    cps = ControlPlanes(etcd_server.url, keys, tmp_path, env=env, db_url=postgres_server.new_database())
    try:
        yield cps
    finally:
        await asyncio.to_thread(cps.stop)


@pytest.fixture
async def store(etcd_server: EtcdServer) -> AsyncIterator[ConfigStore]:
    s = EtcdStore(EtcdConfig(endpoints=(etcd_server.url,)))
    yield s
    await s.close()


async def _leaders(store: ConfigStore, keys: KeySpace, planes: ControlPlanes) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for loop in LOOPS:
        kv = await store.get(keys.election(loop))
        out[loop] = (planes.name_of(kv.value.decode()) or "another process") if kv is not None else None
    return out


async def _eventually(probe, timeout_s: float):  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout_s):
        while True:
            if found := await probe():
                return found
            await asyncio.sleep(0.05)


async def test_two_replicas_behind_one_address_answer_as_one(planes: ControlPlanes, store: ConfigStore, keys: KeySpace) -> None:
    await asyncio.gather(asyncio.to_thread(planes.start, "cp-a"), asyncio.to_thread(planes.start, "cp-b"))
    balancer = Balancer([planes.ports["cp-a"], planes.ports["cp-b"]])
    url = await balancer.start()
    fresh = httpx.Limits(max_keepalive_connections=0)  # a connection per request: the balancer alternates
    try:
        async with httpx.AsyncClient(base_url=url, headers=AUTH, limits=fresh, timeout=30) as api:
            revisions = {}
            for i in range(8):
                resp = await api.post("/api/v1/config:apply", json={"objects": [model_doc(f"m{i}", tag=f"m{i}:1b")]})
                assert resp.status_code == 200, resp.text
                revisions[f"m{i}"] = resp.json()["revision"]
            # a stale write is refused whichever replica takes it: the store decides, not a replica's view
            stale = {"If-Match": f'"{revisions["m0"] - 1}"'}
            for _ in range(2):
                resp = await api.put("/api/v1/config/models/m0", json=model_doc("m0", tag="other:1b"), headers=stale)
                assert resp.status_code == 409, resp.text
            # the audit log is one: each replica lists every change set, in order
            for _ in range(2):
                page = HistoryPage.model_validate((await api.get("/api/v1/history", params={"limit": 100})).json())
                listed = {r.name: r.revision for r in page.items if r.kind == "models"}
                assert listed == revisions
        # and each replica's view serves every object at the revision the write answered
        for name in ("cp-a", "cp-b"):
            async with httpx.AsyncClient(base_url=planes.url(name), headers=AUTH, timeout=10) as one:

                async def caught_up(one: httpx.AsyncClient = one) -> bool:
                    got = {m: (await one.get(f"/api/v1/config/models/{m}")).json()["metadata"]["revision"] for m in revisions}
                    return got == revisions

                await _eventually(caught_up, 10)
        # every loop has one leader, one of the two
        leaders = await _eventually(lambda: _all_led(store, keys, planes), TTL_S + 5)
        assert set(leaders.values()) <= {"cp-a", "cp-b"}
    finally:
        await balancer.close()


async def _all_led(store: ConfigStore, keys: KeySpace, planes: ControlPlanes) -> dict[str, str | None] | None:
    leaders = await _leaders(store, keys, planes)
    return leaders if all(leaders.values()) else None


LOCAL = {"provider": "local", "ollama_tag": "all-minilm:22m", "capabilities": ["embed"], "context_window": 512}
MINILM = {"kind": "Model", "metadata": {"name": "minilm"}, "spec": LOCAL}


async def test_rag_ingested_on_one_replica_is_found_on_the_other(planes: ControlPlanes, chroma_server: ChromaServer) -> None:
    """The catalog is in the shared PostgreSQL database and the vectors in a Chroma server: what
    one replica ingests or deletes, the other lists and finds at once; the Redis cache of results
    is keyed by the catalog's generation, so no replica serves a result from before the change."""
    await asyncio.gather(asyncio.to_thread(planes.start, "cp-a"), asyncio.to_thread(planes.start, "cp-b"))
    a = httpx.AsyncClient(base_url=planes.url("cp-a"), headers=AUTH, timeout=60)
    b = httpx.AsyncClient(base_url=planes.url("cp-b"), headers=AUTH, timeout=60)
    name = f"ha-{uuid.uuid4().hex[:8]}"
    try:
        objects = [MINILM, rag_doc("handbook", "minilm", server_url=chroma_server.url, collection=name)]
        assert (await a.post("/api/v1/config:apply", json={"objects": objects})).status_code == 200

        async def known(c: httpx.AsyncClient) -> bool:
            return (await c.get("/api/v1/config/rag/handbook")).status_code == 200

        await _eventually(lambda: known(a), 10)
        await _eventually(lambda: known(b), 10)
        first = {"documents": [{"id": d, "text": DOCS[d], "format": "markdown"} for d in ("gpu", "kitchen")]}
        resp = await a.post("/api/v1/rag/collections/handbook/documents", json=first)
        assert resp.status_code == 200, resp.text
        ask = {"collection": "handbook", "query": "charging electric cars at work", "retrieve_only": True}
        before = (await b.post("/api/v1/rag/query", json=ask)).json()
        assert before["cached"] is False and "parking" not in [s["document_id"] for s in before["sources"]]
        assert (await b.post("/api/v1/rag/query", json=ask)).json()["cached"] is True  # cached in Redis

        more = {"documents": [{"id": "parking", "text": DOCS["parking"], "format": "markdown"}]}
        assert (await a.post("/api/v1/rag/collections/handbook/documents", json=more)).status_code == 200
        after = (await b.post("/api/v1/rag/query", json=ask)).json()  # the other replica, at once
        assert after["cached"] is False and after["sources"][0]["document_id"] == "parking"
        listed = (await b.get("/api/v1/rag/collections/handbook/documents")).json()
        assert listed["total"] == 3 and {d["id"] for d in listed["documents"]} == {"gpu", "kitchen", "parking"}

        assert (await b.delete("/api/v1/rag/collections/handbook/documents/parking")).status_code == 200
        gone = (await a.post("/api/v1/rag/query", json=ask)).json()
        assert "parking" not in [s["document_id"] for s in gone["sources"]]
    finally:
        await a.aclose()
        await b.aclose()


def _experiment(name: str, route: str) -> dict[str, object]:
    variants = [{"name": "a", "model": "small"}, {"name": "b", "model": "big"}]
    rails = {"max_error_rate": 0.2, "min_samples": 50}
    return {"kind": "Experiment", "metadata": {"name": name},
            "spec": {"route": route, "state": "running", "variants": variants, "guardrails": rails}}  # fmt: skip


def _breach(client: redis.Redis, route: str, n: int = 120) -> None:
    """``n`` outcomes per variant on ``route``: variant b fails half of its requests."""
    now = time.time()
    pipe = client.pipeline(transaction=False)
    for variant in ("a", "b"):
        for i in range(n):
            status = "error" if variant == "b" and i % 2 else "ok"
            record = {"key": f"{route}-{variant}-{i}-{uuid.uuid4().hex[:6]}", "at": now - 5, "id": f"{route}-{variant}-{i}",
                      "route": route, "variant": variant, "model": "small" if variant == "a" else "big", "node": "n0",
                      "status": status, "decision_us": 20.0, "ttft_ms": 5.0, "total_ms": 50.0, "attempts": 1}  # fmt: skip
            pipe.xadd(OUTCOME_STREAM, {"r": orjson.dumps(record)})
    pipe.execute()


async def _stops(api: httpx.AsyncClient, experiment: str) -> list[str]:
    """The actors of the changes that stopped ``experiment``."""
    page = HistoryPage.model_validate((await api.get("/api/v1/config/experiments/" + experiment + "/history")).json())
    return [r.actor for r in page.items if r.after is not None and r.after.get("spec", {}).get("state") == "stopped"]


async def test_the_monitor_leader_killed_or_paused_stops_each_experiment_once(
    planes: ControlPlanes, store: ConfigStore, keys: KeySpace, redis_db: str
) -> None:
    await asyncio.gather(asyncio.to_thread(planes.start, "cp-a"), asyncio.to_thread(planes.start, "cp-b"))
    outcomes = redis.Redis.from_url(redis_db)
    async with httpx.AsyncClient(base_url=planes.url("cp-a"), headers=AUTH, timeout=30) as api:
        objects = [model_doc("small", tag="small:1b"), model_doc("big", tag="big:1b"),
                   route_doc("chat", "small", experiment="one"), route_doc("fast", "small", experiment="two"),
                   _experiment("one", "chat"), _experiment("two", "fast")]  # fmt: skip
        assert (await api.post("/api/v1/config:apply", json={"objects": objects})).status_code == 200
        leaders = await _eventually(lambda: _all_led(store, keys, planes), TTL_S + 5)

        # 1. SIGKILL the monitor's leader as the breach arrives: the other leads and stops the experiment, once
        was = leaders["monitor"]
        assert was is not None
        _breach(outcomes, "chat")
        planes.procs[was].kill()
        started = time.monotonic()
        other = "cp-b" if was == "cp-a" else "cp-a"
        await _eventually(lambda: _leads(store, keys, planes, "monitor", other), TTL_S + 3)
        assert time.monotonic() - started <= TTL_S + 3
        async with httpx.AsyncClient(base_url=planes.url(other), headers=AUTH, timeout=30) as alive:
            await _eventually(lambda: _stopped(alive, "one"), 15)
            await asyncio.sleep(2 * 0.3 + 1)  # more guardrail ticks: none stops it again
            assert await _stops(alive, "one") == ["monitor"]

            # 2. SIGSTOP the new leader past its TTL: a third leads; resumed, the paused one writes nothing and steps down
            await asyncio.to_thread(planes.start, "cp-c")
            paused = planes.procs[other]
            os.kill(paused.pid, signal.SIGSTOP)
            await _eventually(lambda: _leads(store, keys, planes, "monitor", "cp-c"), TTL_S + 5)
            _breach(outcomes, "fast")
            async with httpx.AsyncClient(base_url=planes.url("cp-c"), headers=AUTH, timeout=30) as third:
                await _eventually(lambda: _stopped(third, "two"), 15)
                os.kill(paused.pid, signal.SIGCONT)
                await _eventually(lambda: _logged(planes, other, "outcome monitor: ", "campaigns for the lead again"), 10)
                await asyncio.sleep(1)
                assert await _leads(store, keys, planes, "monitor", "cp-c")
                assert await _stops(third, "two") == ["monitor"]
                assert await _stops(third, "one") == ["monitor"]
    outcomes.close()


async def _leads(store: ConfigStore, keys: KeySpace, planes: ControlPlanes, loop: str, name: str) -> bool:
    return (await _leaders(store, keys, planes))[loop] == name


async def _stopped(api: httpx.AsyncClient, experiment: str) -> bool:
    return bool((await api.get(f"/api/v1/config/experiments/{experiment}")).json()["spec"]["state"] == "stopped")


async def _logged(planes: ControlPlanes, name: str, *texts: str) -> bool:
    log = planes.log(name)
    return any(all(t in line for t in texts) for line in log.splitlines())


async def test_a_rolling_restart_under_traffic_and_an_ingest_loses_nothing(
    planes: ControlPlanes, chroma_server: ChromaServer, etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path
) -> None:
    """Both replicas restarted one after the other, as a rolling update does (the replica leaves the
    balancer, as its readiness would take it out of a Service, and gets SIGTERM at once, with work
    in flight), while clients call the router and documents are ingested through the balancer: no
    client error, every document acknowledged is listed and found, and every loop is led again."""
    from tests.fixtures.fleet import Fleet

    fleet = Fleet(etcd_server.url, keys, tmp_path / "fleet")
    (tmp_path / "fleet").mkdir()
    await fleet.start_control_plane(autoscaler={"enabled": False})
    await asyncio.gather(asyncio.to_thread(planes.start, "cp-a"), asyncio.to_thread(planes.start, "cp-b"))
    balancer = Balancer([planes.ports["cp-a"], planes.ports["cp-b"]])
    url = await balancer.start()
    fresh = httpx.Limits(max_keepalive_connections=0)
    api = httpx.AsyncClient(base_url=url, headers=AUTH, limits=fresh, timeout=60)
    stop = asyncio.Event()
    router_statuses: list[int] = []
    acknowledged: list[str] = []
    failures: list[str] = []
    try:
        for node in ("node-0", "node-1"):
            await fleet.add_node(node)
        name = f"roll-{uuid.uuid4().hex[:8]}"
        objects = [model_doc("small", tag="llama3.2:1b"), MINILM, rag_doc("handbook", "minilm", server_url=chroma_server.url,
                                                                           collection=name)]  # fmt: skip
        assert (await api.post("/api/v1/config:apply", json={"objects": objects})).status_code == 200
        await fleet.until_ready(models=2)  # the local embedder is listed too (on no node)
        router = await fleet.start_router()

        async def traffic() -> None:
            async with httpx.AsyncClient(base_url=router, timeout=30) as c:
                while not stop.is_set():
                    body = {"model": "small", "prompt": "hello", "stream": False, "options": {"num_predict": 4}}
                    router_statuses.append((await c.post("/api/generate", json=body)).status_code)

        async def ingest() -> None:
            texts = list(DOCS.values())
            i = 0
            while not stop.is_set():
                doc_id = f"doc-{i}"
                body = {"documents": [{"id": doc_id, "text": texts[i % len(texts)] + f"\n\nrevision {i}"}]}
                try:
                    resp = await api.post("/api/v1/rag/collections/handbook/documents", json=body)
                except httpx.HTTPError as exc:
                    failures.append(f"{doc_id}: {exc!r}")
                else:
                    if resp.status_code == 200:
                        acknowledged.append(doc_id)
                    else:
                        failures.append(f"{doc_id}: {resp.status_code} {resp.text[:200]}")
                i += 1

        tasks = [asyncio.create_task(traffic()) for _ in range(3)] + [asyncio.create_task(ingest())]
        await asyncio.sleep(2)
        for name_ in ("cp-a", "cp-b"):
            port = planes.ports[name_]
            balancer.ports.remove(port)  # out of the Service
            proc = planes.procs[name_]
            proc.send_signal(signal.SIGTERM)  # at once: requests in flight finish, the process leaves
            await asyncio.to_thread(proc.wait, 30)
            await asyncio.to_thread(planes.start, name_)  # on the same port, and ready
            balancer.ports.append(port)
            await asyncio.sleep(2)
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        stop.set()
        await balancer.close()
    try:
        assert failures == [] and acknowledged, failures
        assert router_statuses and all(s == 200 for s in router_statuses), [s for s in router_statuses if s != 200]
        for replica in ("cp-a", "cp-b"):
            async with httpx.AsyncClient(base_url=planes.url(replica), headers=AUTH, timeout=30) as c:
                listed = (await c.get("/api/v1/rag/collections/handbook/documents", params={"limit": 1000})).json()
                assert {d["id"] for d in listed["documents"]} == set(acknowledged)
                ask = {"collection": "handbook", "query": f"revision {len(acknowledged) - 1}", "retrieve_only": True,
                       "top_k": 3}  # fmt: skip
                assert (await c.post("/api/v1/rag/query", json=ask)).status_code == 200
        store = fleet.open_store()
        try:
            assert await _eventually(lambda: _all_led(store, keys, planes), TTL_S + 5)
        finally:
            await store.close()
    finally:
        await api.aclose()
        await fleet.close()


def _worker(planes: ControlPlanes, name: str) -> subprocess.Popen[bytes]:
    """A fine-tuning worker process on the replicas' database and queue."""
    env = {**os.environ, "LLMTUNE_DB__URL": planes.db_url or "", **{k: v for k, v in planes.env.items() if "FINETUNE" in k}}
    log = (planes.tmp_path / f"{name}.log").open("ab")
    return processes.spawn([sys.executable, "-m", "agents.finetune"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


async def _registrations(api: httpx.AsyncClient, model: str) -> list[str]:
    """The actors of the change sets that created ``model``."""
    page = HistoryPage.model_validate((await api.get(f"/api/v1/config/models/{model}/history")).json())
    return [r.actor for r in page.items if r.before is None and r.after is not None]


async def test_fine_tune_registration_happens_once_when_the_leader_is_killed_or_paused(
    planes: ControlPlanes, store: ConfigStore, keys: KeySpace
) -> None:
    """Finished runs are registered by the leader of ``finetune``: killed as a run finishes, the
    other replica registers it (once); paused past its TTL while another job finishes and then
    resumed, it registers nothing (its lead ended with its lease) and campaigns again."""
    from tests.integration.test_finetune import ROWS, jsonl

    await asyncio.gather(asyncio.to_thread(planes.start, "cp-a"), asyncio.to_thread(planes.start, "cp-b"))
    worker = _worker(planes, "worker")
    try:
        async with httpx.AsyncClient(base_url=planes.url("cp-a"), headers=AUTH, timeout=30) as api:
            objects = [model_doc("small", tag="llama3.2:1b"), route_doc("chat", "small", match={"model_aliases": ["chat"]})]
            assert (await api.post("/api/v1/config:apply", json={"objects": objects})).status_code == 200
            leaders = await _eventually(lambda: _all_led(store, keys, planes), TTL_S + 5)
            was = leaders["finetune"]
            other = "cp-b" if was == "cp-a" else "cp-a"

            async def state(c: httpx.AsyncClient, job: str) -> str:
                return str((await c.get(f"/api/v1/fine-tune/{job}")).json()["state"])

            # 1. SIGKILL the leader as the run ends: the other leads and registers the model once
            async with httpx.AsyncClient(base_url=planes.url(other), headers=AUTH, timeout=30) as alive:
                body = {"job_id": "ft-one", "base_model": "small", "output_model": "small-one", "dataset": jsonl(ROWS),
                        "auto_experiment": True}  # fmt: skip
                assert (await alive.post("/api/v1/fine-tune", json=body)).status_code == 201
                await _eventually(lambda: _in(state(alive, "ft-one"), "registering", "succeeded"), 30)
                planes.procs[was].kill()
                await _eventually(lambda: _leads(store, keys, planes, "finetune", other), TTL_S + 3)
                await _eventually(lambda: _in(state(alive, "ft-one"), "succeeded"), 15)
                # Killed between its store write and the audit row's commit, the old leader leaves that row
                # pending: the pending-audit repair (every 60 s, on the upkeep leader) completes it.
                assert len(await _eventually(lambda: _registrations(alive, "small-one"), 90)) == 1
                assert (await alive.get("/api/v1/config/experiments/ft-small-one")).status_code == 200

                # 2. SIGSTOP the leader (now the other) past its TTL while a job finishes; a third registers it
                await asyncio.to_thread(planes.start, "cp-c")
                paused = planes.procs[other]
                os.kill(paused.pid, signal.SIGSTOP)
                await _eventually(lambda: _leads(store, keys, planes, "finetune", "cp-c"), TTL_S + 5)
                async with httpx.AsyncClient(base_url=planes.url("cp-c"), headers=AUTH, timeout=30) as third:
                    body = {"job_id": "ft-two", "base_model": "small", "output_model": "small-two", "dataset": jsonl(ROWS)}
                    assert (await third.post("/api/v1/fine-tune", json=body)).status_code == 201
                    await _eventually(lambda: _in(state(third, "ft-two"), "succeeded"), 30)
                    os.kill(paused.pid, signal.SIGCONT)
                    await _eventually(lambda: _logged(planes, other, "fine-tuning jobs: ", "campaigns for the lead again"), 10)
                    await asyncio.sleep(1)
                    assert await _leads(store, keys, planes, "finetune", "cp-c")
                    assert len(await _registrations(third, "small-two")) == 1
                    assert len(await _registrations(third, "small-one")) == 1
    finally:
        processes.stop([worker])


async def _in(state: Awaitable[str], *states: str) -> bool:
    return await state in states


async def test_the_monitor_leader_killed_while_judging_each_answer_is_judged_once(
    planes: ControlPlanes, store: ConfigStore, keys: KeySpace, redis_db: str, etcd_server: EtcdServer, tmp_path: Path
) -> None:
    """Answers to judge wait in SQL; the monitor's leader is killed with SIGKILL after it judged a
    few: the next leader judges the rest, and every answer has one judge score."""
    from sqlalchemy import text

    from controlplane.db.engine import make_engine
    from tests.fixtures.fleet import PEPPER, Fleet
    from tests.sim.engine import SimSettings

    (tmp_path / "fleet").mkdir()
    fleet = Fleet(etcd_server.url, keys, tmp_path / "fleet")
    planes.env.update({"LLMTUNE_ROUTER_CLIENT__URL": f"http://127.0.0.1:{fleet.router_port}",
                       "LLMTUNE_MONITOR__JUDGE_ROUTE": "judge", "LLMTUNE_KEYS__PEPPER": PEPPER})  # the fleet router's pepper
    engine = make_engine(planes.db_url or "")
    outcomes = redis.Redis.from_url(redis_db)
    try:
        await fleet.start_control_plane(autoscaler={"enabled": False})
        await fleet.add_node("node-0", sim=SimSettings(token_s=0.01))
        objects = [model_doc("small", tag="llama3.2:1b"), route_doc("judge", "small", match={"model_aliases": ["judge-only"]})]
        assert (await fleet.api.post("/api/v1/config:apply", json={"objects": objects})).status_code == 200
        await fleet.until_ready(models=1)
        await fleet.start_router()
        await asyncio.gather(asyncio.to_thread(planes.start, "cp-a"), asyncio.to_thread(planes.start, "cp-b"))
        leaders = await _eventually(lambda: _all_led(store, keys, planes), TTL_S + 5)
        was = leaders["monitor"]
        assert was in ("cp-a", "cp-b")
        now = time.time()
        pipe = outcomes.pipeline(transaction=False)
        for i in range(24):
            record = {"key": f"j{i}-{uuid.uuid4().hex[:6]}", "at": now, "id": f"req-{i}", "route": "chat", "model": "small",
                      "node": "node-0", "status": "ok", "decision_us": 20.0, "ttft_ms": 5.0, "total_ms": 50.0, "attempts": 1,
                      "question": f"question {i}?", "answer": f"answer {i}."}  # fmt: skip
            pipe.xadd(OUTCOME_STREAM, {"r": orjson.dumps(record)})
        pipe.execute()

        def judged() -> list[str]:
            with engine.connect() as conn:
                return list(conn.execute(text("SELECT request_id FROM feedback WHERE comment LIKE 'judge:%'")).scalars())

        async def some() -> bool:
            return len(await asyncio.to_thread(judged)) >= 3

        await _eventually(some, 30)
        planes.procs[was].kill()
        early = len(await asyncio.to_thread(judged))

        async def all_of_them() -> bool:
            return len(await asyncio.to_thread(judged)) >= 24

        await _eventually(all_of_them, 60)
        await asyncio.sleep(1)
        ids = await asyncio.to_thread(judged)
        assert early < 24, "the leader judged everything before it was killed: nothing was left to hand over"
        assert sorted(ids) == sorted(f"req-{i}" for i in range(24))  # each once
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM judge_queue")).scalar() == 0
    finally:
        outcomes.close()
        engine.dispose()
        await fleet.close()
