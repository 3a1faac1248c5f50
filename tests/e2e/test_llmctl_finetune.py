"""llmctl finetune end to end: a control-plane process with the fine-tuning queue on real Redis,
the worker process, and the CLI's submit (progress bar until the job ends), status, logs, list
and cancel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.store.keys import KeySpace
from deploy.local import processes
from tests.e2e.test_llmctl import ROOT, control_plane_process, llmctl
from tests.fixtures.services import EtcdServer, RedisServer

pytestmark = pytest.mark.etcd


@pytest.fixture
def stack(
    etcd_server: EtcdServer, redis_server: RedisServer, tmp_path: Path, keys: KeySpace
) -> Iterator[tuple[str, dict[str, str]]]:
    queue = f"e2e-{uuid.uuid4().hex[:8]}"
    extra = {
        "LLMTUNE_FINETUNE__REDIS_URL": redis_server.url,
        "LLMTUNE_FINETUNE__QUEUE": queue,
        "LLMTUNE_FINETUNE__HEARTBEAT_S": "0.2",
    }
    with control_plane_process(etcd_server.url, keys.namespace, tmp_path, **extra) as running:
        yield running


def test_finetune_submit_status_logs_list_cancel(stack: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    url, env = stack
    config = tmp_path / "models.yaml"
    config.write_text(
        "kind: Model\nmetadata: {name: small}\nspec: {ollama_tag: 'small:1b', capabilities: [chat], context_window: 4096}\n"
    )
    assert llmctl(url, tmp_path, "apply", "-f", str(config)).returncode == 0
    good = tmp_path / "rows.jsonl"
    good.write_text("".join(json.dumps({"prompt": f"q{i}", "response": f"a{i}"}) + "\n" for i in range(5)))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "response": "a"}\n{"prompt": "q2", "response": ""}\n')

    refused = llmctl(url, tmp_path, "finetune", "submit", "-d", str(bad), "--base", "small", "-o", "small-x")
    assert refused.returncode == 1 and "dataset line 2" in refused.stderr, refused.stderr

    # No worker yet: a job submitted without waiting stays queued, and cancelling ends it.
    queued = llmctl(url, tmp_path, "finetune", "submit", "-d", str(good), "--base", "small", "-o", "small-q", "--id", "ft-q",
                    "--no-wait")  # fmt: skip
    assert queued.returncode == 0 and "job ft-q queued (5 rows, method modelfile)" in queued.stdout, queued.stderr
    cancelled = llmctl(url, tmp_path, "finetune", "cancel", "ft-q")
    assert cancelled.returncode == 0 and "ft-q: cancelled" in cancelled.stdout

    worker_env = {k: v for k, v in env.items() if k.startswith(("LLMTUNE_DB", "LLMTUNE_FINETUNE"))}
    worker = processes.spawn([sys.executable, "-m", "agents.finetune"], env={**os.environ, **worker_env}, cwd=ROOT,
                              stdout=(tmp_path / "worker.log").open("wb"), stderr=subprocess.STDOUT)  # fmt: skip
    try:
        done = llmctl(url, tmp_path, "finetune", "submit", "-d", str(good), "--base", "small", "-o", "small-x", "--id",
                      "ft-cli", "-p", "few_shot=2", "-p", "parameters.temperature=0.3")  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr + (tmp_path / "worker.log").read_text()
        assert "ft-cli: succeeded; model small-x registered at revision" in done.stdout, done.stdout
        model = json.loads(llmctl(url, tmp_path, "get", "model", "small-x", "-o", "json").stdout)
        assert model["spec"]["options"]["temperature"] == 0.3 and len(model["spec"]["messages"]) == 4

        status = llmctl(url, tmp_path, "finetune", "status", "ft-cli", "-o", "json")
        assert json.loads(status.stdout)["state"] == "succeeded"
        logs = llmctl(url, tmp_path, "finetune", "logs", "ft-cli")
        assert "registered model small-x" in logs.stdout, logs.stdout
        listed = llmctl(url, tmp_path, "finetune", "list")
        assert "ft-cli" in listed.stdout and "succeeded" in listed.stdout and "ft-q" in listed.stdout
        assert "cancelled" in llmctl(url, tmp_path, "finetune", "list", "--state", "cancelled").stdout
        again = llmctl(url, tmp_path, "finetune", "cancel", "ft-cli")
        assert again.returncode == 1 and "only queued or running jobs" in again.stderr
    finally:
        processes.stop([worker])
