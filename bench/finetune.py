"""Fine-tuning benchmark. Two figures:

1. The pipeline's own time: a ``modelfile`` job (no training) from ``POST /api/v1/fine-tune`` until
   the job reads ``succeeded`` (queued on Redis, claimed by the worker process, derived, handed back,
   registered by the control plane as a configuration revision), against the baseline of writing
   the same Model through ``POST /api/v1/config/models`` (the write alone), alternated in one run.
   p50/p95/p99 and where the time goes (queue → claim, claim → trained, trained → registered).
2. LoRA training on CPU: the same tiny Llama trained in process by ``agents.finetune.lora.train``
   (the baseline) and as a job through the worker; steps/s and the job's overhead beyond training.
3. Adapter delivery: a file the size of a 7B model's LoRA adapter kept by the control plane (the
   worker's ``put_file``) and fetched by the agent's ``ArtifactFetcher`` over HTTP, digest checked,
   against the baseline of copying it on local disk; MB/s.

    python bench/finetune.py [--jobs 30] [--steps 100] [--adapter-mb 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import KEYS, ROOT, TOKEN, pct, run_loop, wait_ready
from deploy.local import processes
from tests.fixtures.services import EtcdServer, RedisServer, free_port

ROWS = "".join(
    f'{{"prompt": "what is {a} plus {b}?", "response": "{a} plus {b} is {a + b}"}}\n' for a in range(4) for b in range(3)
)
BASE = {"kind": "Model", "metadata": {"name": "base"},
        "spec": {"ollama_tag": "llama3.2:1b", "capabilities": ["chat"], "context_window": 8192}}  # fmt: skip


def tiny_checkpoint(folder: Path) -> None:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    words.train_from_iterator([ROWS], trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]", "<s>", "</s>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]", pad_token="[PAD]", bos_token="<s>", eos_token="</s>")
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128)  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)


def when(text: str | None) -> float:
    return datetime.fromisoformat(text).timestamp() if text else float("nan")


async def job_until_done(client: httpx.AsyncClient, body: dict[str, Any], timeout_s: float = 120) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    resp = await client.post("/api/v1/fine-tune", json=body)
    resp.raise_for_status()
    job_id = resp.json()["id"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = (await client.get(f"/api/v1/fine-tune/{job_id}")).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            if job["state"] != "succeeded":
                raise RuntimeError(f"job {job_id} {job['state']}: {job['error']}")
            return time.perf_counter() - start, job
        await asyncio.sleep(0.01)
    raise RuntimeError(f"job {job_id} did not end within {timeout_s} s")


async def pipeline(api: str, jobs: int) -> None:
    async with httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as client:
        await wait_ready(client)
        (await client.post("/api/v1/config/models", json=BASE)).raise_for_status()
        await job_until_done(client, {"base_model": "base", "output_model": "warm-up", "dataset": ROWS})
        job_s: list[float] = []
        write_s: list[float] = []
        claim, train, register = [], [], []
        for i in range(jobs):
            body = {"base_model": "base", "output_model": f"variant-{i}", "dataset": ROWS, "hyperparameters": {"few_shot": 2}}
            took, job = await job_until_done(client, body)
            job_s.append(took)
            logs = (await client.get(f"/api/v1/fine-tune/{job['id']}/logs")).json()
            trained = next(line["at"] for line in logs if line["message"].startswith("trained:"))
            claim.append(when(job["started_at"]) - when(job["created_at"]))
            train.append(trained - when(job["started_at"]))
            register.append(when(job["finished_at"]) - trained)
            doc = {**BASE, "metadata": {"name": f"direct-{i}"}, "spec": {**BASE["spec"], "ollama_tag": f"direct-{i}"}}
            start = time.perf_counter()
            (await client.post("/api/v1/config/models", json=doc)).raise_for_status()
            write_s.append(time.perf_counter() - start)

    def row(name: str, values: list[float]) -> str:
        ms = [v * 1000 for v in values]
        return f"  {name:44s} p50 {pct(ms, 50):8.1f} ms   p95 {pct(ms, 95):8.1f} ms   p99 {pct(ms, 99):8.1f} ms"

    print(f"modelfile job, submit → succeeded ({jobs} jobs, each followed by a direct write):")
    print(row("job (queue, worker, registration)", job_s))
    print(row("baseline: POST /config/models (the write)", write_s))
    print(f"  ratio p50 job/write: {pct(job_s, 50) / pct(write_s, 50):.1f}x")
    print(row("  queued → claimed by the worker", claim))
    print(row("  claimed → derived and handed back", train))
    print(row("  handed back → registered (control plane)", register))


async def lora_job(api: str, checkpoint: Path, steps: int) -> tuple[float, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as client:
        hyper = {"base_checkpoint": str(checkpoint), "max_steps": steps, "learning_rate": 0.05, "batch_size": 4}
        body = {"base_model": "base", "output_model": f"lora-{uuid.uuid4().hex[:6]}", "method": "lora", "dataset": ROWS,
                "hyperparameters": hyper}  # fmt: skip
        return await job_until_done(client, body, timeout_s=600)


def lora_in_process(checkpoint: Path, steps: int, out: Path) -> float:
    from agents.finetune import lora
    from agents.finetune.report import Report
    from schemas.datasets import parse_dataset
    from schemas.finetune import LoraParams
    from schemas.model import Model

    base = Model.model_validate(BASE)
    params = LoraParams(base_checkpoint=str(checkpoint), max_steps=steps, learning_rate=0.05, batch_size=4)
    start = time.perf_counter()
    lora.train(base, "x", parse_dataset(ROWS).examples, params, Report(), threading.Event(), out)
    return time.perf_counter() - start


async def adapter_delivery(api: str, db_url: str, folder: Path, size_mb: int, rounds: int = 5) -> None:
    from agents.sidecar.artifacts import ArtifactFetcher
    from controlplane.db.artifacts import ArtifactStore
    from controlplane.db.engine import make_engine

    source = folder / "adapter_model.safetensors"
    source.write_bytes(os.urandom(size_mb << 20))
    store = ArtifactStore(make_engine(db_url))
    start = time.perf_counter()
    digest = await asyncio.to_thread(store.put_file, source)
    put_s = time.perf_counter() - start
    fetcher = ArtifactFetcher(api, TOKEN)
    fetch_s, copy_s = [], []
    try:
        for i in range(rounds):
            start = time.perf_counter()
            await fetcher.fetch(digest, folder / f"fetched-{i}")
            fetch_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            await asyncio.to_thread(shutil.copyfile, source, folder / f"copied-{i}")
            copy_s.append(time.perf_counter() - start)
            (folder / f"fetched-{i}").unlink()
            (folder / f"copied-{i}").unlink()
    finally:
        await fetcher.close()
    print(f"\nadapter delivery, {size_mb} MiB file ({rounds} rounds, p50):")
    print(f"  kept by the worker (put_file, SQL chunks)   {put_s:7.3f} s   {size_mb / put_s:8.0f} MiB/s")
    print(f"  fetched by the agent (HTTP, digest checked) {pct(fetch_s, 50):7.3f} s   {size_mb / pct(fetch_s, 50):8.0f} MiB/s")
    print(f"  baseline: copied on local disk              {pct(copy_s, 50):7.3f} s   {size_mb / pct(copy_s, 50):8.0f} MiB/s")
    print(f"  ratio p50 fetch/copy: {pct(fetch_s, 50) / pct(copy_s, 50):.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--adapter-mb", type=int, default=64)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-finetune-"))
    etcd, redis = EtcdServer(progress_interval="5s"), RedisServer()
    etcd.start()
    redis.start()
    port = free_port()
    env = {
        **os.environ, "LLMTUNE_STORE__ENDPOINTS": etcd.url, "LLMTUNE_STORE__NAMESPACE": KEYS.namespace,
        "LLMTUNE_DB__URL": f"sqlite:///{tmp / 'meta.db'}", "LLMTUNE_AUTH__BOOTSTRAP_TOKEN": TOKEN,
        "LLMTUNE_API__PORT": str(port), "LLMTUNE_RAG__DATA_DIR": str(tmp / "rag"), "LLMTUNE_FINETUNE__REDIS_URL": redis.url,
        "LLMTUNE_FINETUNE__ARTIFACTS_DIR": str(tmp / "artifacts"),
    }  # fmt: skip
    procs = [
        processes.spawn([sys.executable, "-m", "controlplane.api"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=(tmp / "cp.log").open("wb")),
        processes.spawn([sys.executable, "-m", "agents.finetune"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=(tmp / "worker.log").open("wb")),
    ]  # fmt: skip
    api = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60  # measure a warm worker: its background imports done
    while time.monotonic() < deadline and "loaded in" not in (tmp / "worker.log").read_text(errors="replace"):
        time.sleep(0.2)
    try:
        run_loop(pipeline(api, args.jobs))
        run_loop(adapter_delivery(api, env["LLMTUNE_DB__URL"], tmp, args.adapter_mb))
        try:
            checkpoint = tmp / "tiny"
            tiny_checkpoint(checkpoint)
        except ImportError:
            print("LoRA: skipped (the finetune extra is not installed)")
            return
        lora_in_process(checkpoint, 5, tmp / "warm")  # imports and first-call costs out of the figures
        alone = lora_in_process(checkpoint, args.steps, tmp / "alone")
        took, job = run_loop(lora_job(api, checkpoint, args.steps))
        params = job["metrics"].get("trainable_parameters", 0)
        print(
            f"\nLoRA on CPU, tiny Llama (2 layers, hidden 64), r=8, {args.steps} steps of 4 rows, "
            f"{params:,} trainable parameters:"
        )
        print(f"  baseline: lora.train in process          {alone:7.2f} s   {args.steps / alone:7.1f} steps/s")
        print(f"  job: submit → succeeded (worker process)  {took:7.2f} s   overhead {took - alone:+.2f} s "
              "(the checkpoint loaded, the queue, heartbeats, registration)")  # fmt: skip
        loss = job["metrics"]["loss"]
        print(f"  loss {loss[0][1]:.3f} → {loss[-1][1]:.3f}")
    finally:
        processes.stop(procs)  # never raises: the servers below are stopped whatever happened
        redis.close()
        etcd.close()


if __name__ == "__main__":
    main()
