"""The control plane's OpenAPI under schemathesis: a real process on real etcd answers no 5xx."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from controlplane.store.keys import KeySpace
from tests.e2e.test_llmctl import ROOT, TOKEN, control_plane_process, llmctl
from tests.fixtures.services import EtcdServer

pytestmark = [pytest.mark.etcd, pytest.mark.slow]
CONFIG = ROOT / "tests" / "fuzz" / "schemathesis.toml"


def test_openapi_fuzz_finds_no_server_error(etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path) -> None:
    with control_plane_process(etcd_server.url, keys.namespace, tmp_path) as (url, _env):
        # a store with the examples in it, so that the fuzzer also meets objects that exist
        assert llmctl(url, tmp_path, "apply", "-f", str(ROOT / "deploy" / "examples")).returncode == 0
        env = {**os.environ, "LLMTUNE_FUZZ_TOKEN": TOKEN, "NO_COLOR": "1", "COLUMNS": "200"}
        seconds = os.environ.get("LLMTUNE_FUZZ_SECONDS", "120")
        command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run", f"{url}/openapi.json",
                   "--max-time", seconds, "--report-dir", str(tmp_path / "report")]  # fmt: skip
        result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=400)
    output = result.stdout + result.stderr
    (tmp_path / "schemathesis.txt").write_text(output)
    lines = output.splitlines()
    cases = [lines[i + 1].strip() for i, line in enumerate(lines[:-1]) if line.strip() == "Test cases:"]
    print("schemathesis:", *cases, *[line.strip("= ") for line in lines if re.fullmatch(r"=+ .* in [\d.]+s =+", line)])
    assert result.returncode == 0, output[-8000:]
