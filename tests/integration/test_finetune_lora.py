"""Fine-tuning with method ``lora`` on a tiny randomly initialised Llama (built from a config: no
download), trained on CPU by the worker process: the loss falls, the adapter is saved as
safetensors and loads with peft, its files are kept by the control plane, and the registered
variant reaches the agent, which fetches them, uploads them to its node and creates the model. Then the robustness cases: the
worker killed mid-run (the run is queued again as attempt 2 and a new worker takes it), a worker
paused past the deadline that comes back (it stops; attempt 3 goes on), a running job cancelled,
and a queued job cancelled while no worker runs."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.fleet import Fleet
from tests.helpers import model_doc, route_doc
from tests.integration.test_finetune import job_state, jsonl, wait_state

pytestmark = [pytest.mark.etcd, pytest.mark.lora, pytest.mark.slow]

ROWS = [{"prompt": f"what is {a} plus {b}?", "response": f"{a} plus {b} is {a + b}"} for a in range(4) for b in range(3)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-layer Llama with a word-level tokenizer trained on the rows, saved as a HF checkpoint."""
    if os.environ.get("LLMTUNE_REQUIRE_SERVICES") != "1":
        pytest.importorskip("peft", reason="the finetune extra is not installed")
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    texts = [f"user: {r['prompt']}\nassistant: {r['response']}" for r in ROWS]
    words.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]", "<s>", "</s>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]", pad_token="[PAD]", bos_token="<s>",
                                        eos_token="</s>")  # fmt: skip
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128)  # fmt: skip
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
async def fleet(finetune_fleet: Fleet) -> Fleet:
    """The control plane with the fine-tuning queue, one simulated node, the base model and its route."""
    await finetune_fleet.add_node("node-a")
    objects = [model_doc("tiny", tag="tinyllama:1b"), route_doc("chat", "tiny", match={"model_aliases": ["chat"]})]
    assert (await finetune_fleet.api.post("/api/v1/config:apply", json={"objects": objects})).status_code == 200
    return finetune_fleet


def lora_job(checkpoint: Path, output: str, **params: Any) -> dict[str, Any]:
    hyper = {"base_checkpoint": str(checkpoint), "rank": 8, "alpha": 16, "learning_rate": 0.05, "batch_size": 4, **params}
    return {"base_model": "tiny", "output_model": output, "method": "lora", "dataset": jsonl(ROWS), "hyperparameters": hyper}


async def test_lora_adapter_is_trained_saved_and_created_on_the_node(fleet: Fleet, tmp_path: Path, checkpoint: Path) -> None:
    fleet.start_worker()
    resp = await fleet.api.post("/api/v1/fine-tune", json=lora_job(checkpoint, "tiny-math", max_steps=100, eval_fraction=0.25))
    assert resp.status_code == 201, resp.text
    job = await wait_state(fleet, resp.json()["id"], "succeeded", "failed", timeout_s=120)
    assert job["state"] == "succeeded", job

    loss = [value for _, value in job["metrics"]["loss"]]
    assert len(loss) == 100
    # (only the attention layers adapt and the output layer stays random: the fall is steady, not steep)
    first, last = sum(loss[:10]) / 10, sum(loss[-10:]) / 10
    assert last < first * 0.9, f"the loss did not fall: {first:.3f} → {last:.3f}"
    assert job["metrics"]["trainable_parameters"] > 0
    # 3 of the 12 rows were held out: their loss, every 10 steps, falls too (the sums follow one pattern)
    held_out = job["metrics"]["eval_loss"]
    assert [s for s, _ in held_out] == list(range(0, 101, 10))
    assert held_out[-1][1] < held_out[0][1] * 0.95, held_out  # (2.84 → 2.48 here)
    logs = "\n".join(line["message"] for line in (await fleet.api.get(f"/api/v1/fine-tune/{job['id']}/logs")).json())
    assert "9 rows; LoRA r=8" in logs and "on 3 rows not trained on" in logs, logs

    # The adapter was saved on the worker; its files are kept by the control plane, by digest.
    spec = (await fleet.api.get("/api/v1/config/models/tiny-math")).json()["spec"]
    assert spec["base"] == "tinyllama:1b" and len(spec["adapters"]) == 1
    adapter = tmp_path / "artifacts" / job["id"] / "attempt-1"
    names = ("adapter_model.safetensors", "adapter_config.json")
    digests = {n: "sha256:" + hashlib.sha256((adapter / n).read_bytes()).hexdigest() for n in names}
    assert spec["adapters"][0] == {"files": digests, "scale": 1.0}

    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import LlamaForCausalLM

    tuned = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(checkpoint), adapter)
    weights = load_file(adapter / "adapter_model.safetensors")
    assert weights and all("lora_" in name for name in weights)
    assert sum(1 for n, _ in tuned.named_parameters() if "lora_" in n) == len(weights)
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 8

    # The control plane serves them to viewers, byte for byte.
    viewer = {"Authorization": f"Bearer {fleet.agent_token}"}
    weights_digest = digests["adapter_model.safetensors"]
    got = await fleet.api.get(f"/api/v1/artifacts/{weights_digest}", headers=viewer)
    assert got.status_code == 200 and got.content == (adapter / "adapter_model.safetensors").read_bytes()
    assert got.headers["etag"] == f'"{weights_digest}"'
    head = await fleet.api.head(f"/api/v1/artifacts/{weights_digest}", headers=viewer)
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(got.content)
    assert (await fleet.api.get(f"/api/v1/artifacts/{weights_digest}", headers={"Authorization": ""})).status_code == 401
    missing = await fleet.api.get(f"/api/v1/artifacts/sha256:{'0' * 64}", headers=viewer)
    assert missing.status_code == 404 and "does not exist" in missing.json()["detail"]
    assert (await fleet.api.get("/api/v1/artifacts/md5:abc", headers=viewer)).status_code == 422

    # The agent fetched both files from the control plane, uploaded them to its node as blobs and
    # created the variant from the base with them.
    engine = fleet.sims["node-a"].engine

    async def created() -> bool:
        return "tiny-math:latest" in engine.models

    await fleet.eventually(created, timeout_s=20)
    variant = engine.models["tiny-math:latest"]
    assert variant.parent == "tinyllama:1b" and set(variant.adapters) == set(digests.values())
    fetcher = fleet.agent("node-a").node.artifacts
    assert fetcher is not None and fetcher.fetched == 2

    # An agent that does not know the control plane fails the variant and says what to set.
    await fleet.add_node("node-b", agent={"control_plane_url": None})

    async def refused() -> bool:
        condition = fleet.agent("node-b").reconciler.conditions.get("tiny-math")
        return condition is not None and condition.reason == "AdapterUnavailable"

    await fleet.eventually(refused, timeout_s=20)
    condition = fleet.agent("node-b").reconciler.conditions["tiny-math"]
    assert condition.type.value == "Failed" and "LLMTUNE_AGENT__CONTROL_PLANE_URL" in condition.message
    assert "tiny-math:latest" not in fleet.sims["node-b"].engine.models


async def test_worker_killed_mid_run_then_cancelled(fleet: Fleet, tmp_path: Path, checkpoint: Path) -> None:
    worker = fleet.start_worker()
    resp = await fleet.api.post("/api/v1/fine-tune", json=lora_job(checkpoint, "tiny-long", max_steps=1_000_000))
    job_id = resp.json()["id"]

    async def training(attempt: int) -> bool:
        job = await job_state(fleet, job_id)
        return job["state"] == "running" and job["attempt"] == attempt and len(job["metrics"].get("loss", [])) > 3

    await fleet.eventually(lambda: training(1), timeout_s=60)
    worker.send_signal(signal.SIGKILL)  # no goodbye: its heartbeat just stops
    worker.wait()

    # The control plane finds the stale heartbeat and queues the run again as attempt 2.
    queued = await wait_state(fleet, job_id, "queued", timeout_s=20)
    assert queued["attempt"] == 2 and queued["worker"] is None

    # Meanwhile, with no worker running, a queued job is cancelled at once.
    other = (await fleet.api.post("/api/v1/fine-tune", json=lora_job(checkpoint, "tiny-other", max_steps=5))).json()
    assert (await fleet.api.post(f"/api/v1/fine-tune/{other['id']}/cancel")).json()["state"] == "cancelled"

    second = fleet.start_worker("worker-2")
    await fleet.eventually(lambda: training(2), timeout_s=60)

    # A worker that is only paused (SIGSTOP) looks lost the same way; when it comes back it
    # finds its attempt replaced and stops, without writing over the newer run.
    second.send_signal(signal.SIGSTOP)
    assert (await wait_state(fleet, job_id, "queued", timeout_s=20))["attempt"] == 3
    third = fleet.start_worker("worker-3")
    await fleet.eventually(lambda: training(3), timeout_s=60)
    second.send_signal(signal.SIGCONT)

    async def gave_up() -> bool:
        lines = (await fleet.api.get(f"/api/v1/fine-tune/{job_id}/logs")).json()
        return any(line["attempt"] == 2 and "given up on" in line["message"] for line in lines)

    await fleet.eventually(gave_up, timeout_s=20)
    running = await job_state(fleet, job_id)
    assert running["state"] == "running" and running["attempt"] == 3 and running["worker"].endswith(f":{third.pid}")
    asked = await fleet.api.post(f"/api/v1/fine-tune/{job_id}/cancel")
    assert asked.status_code == 200 and asked.json()["cancel_requested"] is True
    ended = await wait_state(fleet, job_id, "cancelled", "failed", "succeeded", timeout_s=20)
    assert ended["state"] == "cancelled" and "cancelled on request" in ended["error"], ended
    assert ended["finished_at"] is not None

    logs = "\n".join(line["message"] for line in (await fleet.api.get(f"/api/v1/fine-tune/{job_id}/logs")).json())
    assert "attempt 1 started" in logs and "lost (no heartbeat" in logs and "attempt 3 started" in logs, logs
    assert "cancel requested" in logs
    assert (await job_state(fleet, other["id"]))["state"] == "cancelled"
    for name in ("tiny-long", "tiny-other"):
        assert (await fleet.api.get(f"/api/v1/config/models/{name}")).status_code == 404
