"""Fine-tuning with method ``modelfile`` end to end: real Redis (the arq queue), the worker as its
own process, the control plane registering the result; the derived model is created on the
simulated node through ``/api/create`` and takes its share of the route through the A/B test."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import orjson
import pytest

from tests.fixtures.fleet import Fleet
from tests.helpers import model_doc, route_doc

pytestmark = pytest.mark.etcd

SYSTEM = "You are the support desk of ACME. Answer in one sentence."
ROWS = [
    {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"question {i}?"},
            {"role": "assistant", "content": f"answer {i}" + "." * i},
        ]
    }
    for i in range(1, 9)
]


def jsonl(rows: list[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(r) for r in rows) + "\n"


async def job_state(fleet: Fleet, job_id: str) -> dict[str, Any]:
    resp = await fleet.api.get(f"/api/v1/fine-tune/{job_id}")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def wait_state(fleet: Fleet, job_id: str, *states: str, timeout_s: float = 30) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def reached() -> bool:
        seen.update(await job_state(fleet, job_id))
        return seen["state"] in states

    try:
        await fleet.eventually(reached, timeout_s=timeout_s)
    except TimeoutError:
        log = (fleet.tmp_path / "worker.log").read_text() if (fleet.tmp_path / "worker.log").exists() else ""
        raise AssertionError(f"job {job_id} is {seen.get('state')}, not {states}: {seen}\nworker log:\n{log[-3000:]}") from None
    return seen


async def test_modelfile_job_creates_a_routable_variant_on_the_nodes(finetune_fleet: Fleet) -> None:
    fleet = finetune_fleet
    await fleet.add_node("node-a")
    objects = [model_doc("small", tag="llama3.2:1b", options={"temperature": 0.7}), route_doc("chat", "small",
               match={"model_aliases": ["chat"]})]  # fmt: skip
    assert (await fleet.api.post("/api/v1/config:apply", json={"objects": objects})).status_code == 200

    # A bad dataset is refused with the line that is wrong; nothing is queued.
    bad = jsonl(ROWS[:2]) + '{"prompt": "third"}\n' + jsonl(ROWS[2:])
    body = {"base_model": "small", "output_model": "small-support", "dataset": bad}
    resp = await fleet.api.post("/api/v1/fine-tune", json=body)
    assert resp.status_code == 422, resp.text
    problem = resp.json()
    assert problem["errors"][0]["line"] == 3 and "line 3" in problem["detail"], problem
    dup = jsonl([*ROWS[:3], ROWS[1]])
    resp = await fleet.api.post("/api/v1/fine-tune", json={**body, "dataset": dup})
    assert resp.status_code == 422 and resp.json()["errors"][0]["line"] == 4 and "line 2" in resp.json()["detail"]
    wrong = {**body, "dataset": jsonl(ROWS), "hyperparameters": {"few_shot": 99}}
    resp = await fleet.api.post("/api/v1/fine-tune", json=wrong)
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "hyperparameters.few_shot", resp.text
    resp = await fleet.api.post("/api/v1/fine-tune", json={**body, "base_model": "nope", "dataset": jsonl(ROWS)})
    assert resp.status_code == 404 and "nope" in resp.json()["detail"]
    assert (await fleet.api.get("/api/v1/fine-tune")).json() == []

    # The job, submitted twice with the same id: one job. The same id with another request: 409.
    body = {"job_id": "ft-support", "base_model": "small", "output_model": "small-support", "dataset": jsonl(ROWS),
            "hyperparameters": {"few_shot": 2, "parameters": {"temperature": 0.2}}, "auto_experiment": True,
            "experiment_share": 0.3}  # fmt: skip
    first = await fleet.api.post("/api/v1/fine-tune", json=body)
    assert first.status_code == 201, first.text
    again = await fleet.api.post("/api/v1/fine-tune", json=body)
    assert again.status_code == 200 and again.json()["id"] == "ft-support"
    assert again.json()["created_at"] == first.json()["created_at"]
    other = await fleet.api.post("/api/v1/fine-tune", json={**body, "output_model": "small-other"})
    assert other.status_code == 409, other.text
    assert len((await fleet.api.get("/api/v1/fine-tune")).json()) == 1
    assert first.json()["state"] == "queued" and first.json()["dataset"]["rows"] == 8

    fleet.start_worker()
    job = await wait_state(fleet, "ft-support", "succeeded", "failed")
    assert job["state"] == "succeeded", job
    assert job["progress"] == 1.0 and job["attempt"] == 1 and job["experiment"] == "ft-small-support"
    assert job["metrics"]["few_shot_turns"] == 4 and job["metrics"]["system_prompt_from"] == "dataset"
    # arq's payloads in Redis are JSON, never pickle (anyone who can write Redis could run code otherwise)
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(str(fleet.finetune["redis_url"]))
    try:
        stored = await client.get("arq:result:ft-support.1")
    finally:
        await client.aclose()
    assert stored is not None and orjson.loads(stored)["f"] == "run_job"

    model = (await fleet.api.get("/api/v1/config/models/small-support")).json()
    spec = model["spec"]
    assert spec["base"] == "llama3.2:1b" and spec["ollama_tag"] == "small-support"
    assert spec["system_prompt"] == SYSTEM and spec["options"]["temperature"] == 0.2
    # the two shortest rows, as user/assistant turns, in the dataset's order
    assert [m["content"] for m in spec["messages"]] == ["question 1?", "answer 1.", "question 2?", "answer 2.."]
    assert model["metadata"]["labels"]["llmtune.dev/finetune-job"] == "ft-support"
    route = (await fleet.api.get("/api/v1/config/routes/chat")).json()
    assert route["spec"]["experiment"] == "ft-small-support"
    experiment = (await fleet.api.get("/api/v1/config/experiments/ft-small-support")).json()["spec"]
    assert experiment["state"] == "running"
    assert {v["model"]: v["weight"] for v in experiment["variants"]} == {"small": 700, "small-support": 300}

    # The agent created the variant on its node through /api/create, from the base, with the turns.
    engine = fleet.sims["node-a"].engine

    async def created() -> bool:
        m = engine.models.get("small-support:latest")
        return m is not None and m.parent == "llama3.2:1b"

    await fleet.eventually(created, timeout_s=20)
    variant = engine.models["small-support:latest"]
    assert variant.system == SYSTEM and [m["content"] for m in variant.messages][:2] == ["question 1?", "answer 1."]
    assert variant.parameters["temperature"] == 0.2

    async def ready() -> bool:
        models = (await fleet.api.get("/api/v1/models/status")).json()["models"]
        return {m["model"]: m["ready_nodes"] for m in models} == {"small": 1, "small-support": 1}

    await fleet.eventually(ready, timeout_s=20)
    url = await fleet.start_router()
    served: dict[str, int] = {}
    chat = {"model": "chat", "messages": [{"role": "user", "content": "hello"}], "stream": False}
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        for _ in range(60):
            resp = await client.post("/api/chat", json=chat)
            assert resp.status_code == 200, resp.text
            served[resp.headers["x-route-model"]] = served.get(resp.headers["x-route-model"], 0) + 1
    # 30% of 60 requests: the variant takes its share (a miss has odds of 0.7^60, about 5e-10)
    assert served.get("small-support", 0) > 0 and served.get("small", 0) > 0, served

    logs = (await fleet.api.get("/api/v1/fine-tune/ft-support/logs")).json()
    text = "\n".join(line["message"] for line in logs)
    assert "attempt 1 started" in text and "registered model small-support" in text, text
    assert "experiment ft-small-support started on route chat" in text
    # the stream of an ended job: its lines, then 'end' with the job
    async with fleet.api.stream("GET", "/api/v1/fine-tune/ft-support/logs/stream") as resp:
        events = [line async for line in resp.aiter_lines() if line.startswith("event:")]
    assert events.count("event: log") == len(logs) and events[-1] == "event: end"

    # Ended jobs cannot be cancelled; the output model now exists, so a new job for it is refused.
    assert (await fleet.api.post("/api/v1/fine-tune/ft-support/cancel")).status_code == 400
    resp = await fleet.api.post("/api/v1/fine-tune", json={**body, "job_id": "ft-again"})
    assert resp.status_code == 409 and "small-support" in resp.json()["detail"]


async def test_cancel_a_queued_job_and_uploaded_datasets(finetune_fleet: Fleet) -> None:
    fleet = finetune_fleet
    objects = [model_doc("small", tag="llama3.2:1b"), model_doc("embedder", tag="nomic-embed-text", caps=["embed"])]
    assert (await fleet.api.post("/api/v1/config:apply", json={"objects": objects})).status_code == 200
    uploaded = await fleet.api.post("/api/v1/fine-tune/datasets", content=jsonl(ROWS))
    assert uploaded.status_code == 201 and uploaded.json()["rows"] == 8
    same = await fleet.api.post("/api/v1/fine-tune/datasets", content=jsonl(ROWS))
    assert same.json()["id"] == uploaded.json()["id"]
    bad = await fleet.api.post("/api/v1/fine-tune/datasets", content='{"prompt": "a", "response": "b"}\nnot json\n')
    assert bad.status_code == 422 and bad.json()["errors"][0]["line"] == 2
    # a dataset between the API's 8 MiB body limit and finetune.max_dataset_bytes (16 MiB) is reachable
    rows = "".join(f'{{"prompt": "q{i} {"p" * 500}", "response": "{"r" * 500}"}}\n' for i in range(10 * 1024 * 1024 // 1000))
    large = await fleet.api.post("/api/v1/fine-tune/datasets", content=rows)
    assert large.status_code == 201 and large.json()["bytes"] > 8 * 1024 * 1024, large.text[:300]

    body = {"base_model": "embedder", "output_model": "x", "dataset_id": uploaded.json()["id"]}
    resp = await fleet.api.post("/api/v1/fine-tune", json=body)
    assert resp.status_code == 422 and "chat" in resp.json()["detail"]
    resp = await fleet.api.post("/api/v1/fine-tune", json={**body, "base_model": "small", "auto_experiment": True})
    assert resp.status_code == 422 and "route" in resp.json()["detail"]
    resp = await fleet.api.post("/api/v1/fine-tune", json={**body, "dataset_id": "ds-unknown", "base_model": "small"})
    assert resp.status_code == 404

    # No worker runs: the job waits in the queue, and cancelling it ends it at once.
    job = (await fleet.api.post("/api/v1/fine-tune", json={**body, "base_model": "small"})).json()
    assert job["state"] == "queued"
    cancelled = await fleet.api.post(f"/api/v1/fine-tune/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    # A worker that starts now finds the run in Redis but skips it: the job stays cancelled.
    fleet.start_worker()
    later = await fleet.api.post("/api/v1/fine-tune", json={**body, "base_model": "small", "output_model": "y"})
    await wait_state(fleet, later.json()["id"], "succeeded")
    assert (await job_state(fleet, job["id"]))["state"] == "cancelled"
    assert (await fleet.api.get("/api/v1/config/models/x")).status_code == 404
    listed = (await fleet.api.get("/api/v1/fine-tune", params={"state": "cancelled"})).json()
    assert [j["id"] for j in listed] == [job["id"]]

    # Jobs with different ids for one output model, submitted at the same instant: one is taken.
    race = {**body, "base_model": "small", "output_model": "raced"}
    answers = await asyncio.gather(*(fleet.api.post("/api/v1/fine-tune", json={**race, "job_id": f"ft-race-{i}"})
                                     for i in range(6)))  # fmt: skip
    assert sorted(a.status_code for a in answers) == [201, 409, 409, 409, 409, 409], [a.text for a in answers]
    assert all("raced" in a.json()["detail"] for a in answers if a.status_code == 409)
    taken = next(a.json()["id"] for a in answers if a.status_code == 201)
    assert [j["id"] for j in (await fleet.api.get("/api/v1/fine-tune")).json() if j["output_model"] == "raced"] == [taken]

    # A Model naming adapter files the control plane does not keep is refused, naming the file.
    unknown = {"adapter_model.safetensors": "sha256:" + "a" * 64}
    doc = model_doc("adapted", tag="adapted", base="llama3.2:1b", adapters=[{"files": unknown}])
    resp = await fleet.api.post("/api/v1/config:apply", json={"objects": [doc]})
    assert resp.status_code == 422, resp.text
    problem = resp.json()["errors"][0]
    assert problem["field"] == "spec.adapters[0].files.adapter_model.safetensors" and "not kept" in problem["message"]
    assert (await fleet.api.get("/api/v1/config/models/adapted")).status_code == 404
