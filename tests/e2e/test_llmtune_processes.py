"""`llmtune <process>` as the image runs it: the monitor as a process of its own (elected, with
/healthz and /metrics), `llmtune healthcheck` asking the process it recorded, and SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from deploy.local import processes
from tests.fixtures.services import EtcdServer, RedisServer, free_port

pytestmark = pytest.mark.etcd
BIN = Path(sys.executable).parent


def test_monitor_process_serves_health_and_metrics_and_stops_on_sigterm(
    etcd_server: EtcdServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    port, state = free_port(), tmp_path / "llmtune-process.json"
    env = {
        "PATH": "/usr/bin:/bin", "LLMTUNE_STATE_FILE": str(state), "LLMTUNE_STORE__ENDPOINTS": etcd_server.url,
        "LLMTUNE_STORE__NAMESPACE": f"mon{free_port()}", "LLMTUNE_DB__URL": f"sqlite:///{tmp_path / 'meta.db'}",
        "LLMTUNE_MONITOR__REDIS_URL": redis_server.url, "LLMTUNE_MONITOR__PORT": str(port),
    }  # fmt: skip
    log = tmp_path / "monitor.log"
    proc = processes.spawn([str(BIN / "llmtune"), "monitor"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        while "llmtune_outcome_stream_length" not in httpx.get(f"http://127.0.0.1:{port}/metrics").text:  # once it leads
            assert time.monotonic() < deadline, httpx.get(f"http://127.0.0.1:{port}/metrics").text
            time.sleep(0.1)
        assert json.loads(state.read_text())["url"] == f"http://127.0.0.1:{port}/healthz"
        check = subprocess.run([str(BIN / "llmtune"), "healthcheck"], env=env, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0 and time.monotonic() - started < 12, log.read_text()
        check = subprocess.run([str(BIN / "llmtune"), "healthcheck"], env=env, capture_output=True, text=True)
        assert check.returncode == 1 and "unreachable" in check.stderr
    finally:
        processes.stop([proc])
