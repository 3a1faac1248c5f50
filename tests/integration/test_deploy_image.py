"""The container image's recipe, offline: hadolint on every Dockerfile, the build context it copies
from, and the ``llmtune`` entrypoint it runs (one console script for every process)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from controlplane.launcher import PROCESSES, health_url, parser
from tests.fixtures.dockerfile import final_stage, instructions

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "deploy").rglob("Dockerfile*"))
BIN = Path(sys.executable).parent


def test_hadolint_finds_nothing_in_any_dockerfile() -> None:
    assert DOCKERFILES, "no Dockerfile under deploy/"
    for dockerfile in DOCKERFILES:
        # Every finding fails the test, style included; a rule may be ignored only inline, with its reason.
        run = subprocess.run([str(BIN / "hadolint"), "--no-color", "--failure-threshold", "style", str(dockerfile)],
                             capture_output=True, text=True)  # fmt: skip
        assert run.returncode == 0 and not run.stdout.strip(), run.stdout + run.stderr
        for line in dockerfile.read_text().splitlines():
            if "hadolint ignore" in line:
                assert re.search(r"hadolint ignore=\S+\s+\S", line), f"an ignored rule without its reason: {line}"


def test_image_is_multistage_non_root_and_runs_llmtune() -> None:
    dockerfile = ROOT / "deploy/docker/Dockerfile"
    steps = instructions(dockerfile)
    stages = [arg for op, arg in steps if op == "FROM"]
    assert len(stages) >= 2 and stages[-1].startswith("${PYTHON_IMAGE}")
    assert all(s.startswith(("${PYTHON_IMAGE}", "${NODE_IMAGE} AS ui")) for s in stages)  # Node only builds the UI
    assert re.search(r"ARG PYTHON_IMAGE=python:3\.11\.\d+-slim", dockerfile.read_text())
    final = final_stage(dockerfile)
    ops = dict(final)
    assert ops["USER"].split(":")[0] not in ("root", "0")
    assert json.loads(ops["ENTRYPOINT"]) == ["llmtune"]
    assert "llmtune" in ops["HEALTHCHECK"] and "healthcheck" in ops["HEALTHCHECK"]
    assert any("org.opencontainers.image.title" in arg for op, arg in final if op == "LABEL")
    # the web UI's static build, from the ui stage, where the control plane looks for it
    assert ("COPY", "--from=ui /src/web/dist /opt/llmtune/ui") in final and "LLMTUNE_API__UI_DIR=/opt/llmtune/ui" in ops["ENV"]
    # no compiler or package manager work in the final stage, and dependencies pinned by constraints.txt
    assert not any(op == "RUN" and re.search(r"apt-get|pip install|gcc|build-essential", arg) for op, arg in final)
    assert any(op == "RUN" and "-c constraints.txt" in arg for op, arg in steps)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["llmtune"] == "controlplane.launcher:main"


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    """.dockerignore keeps the context to the packages: each COPY source must survive it."""
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for op, arg in instructions():
        if op == "COPY" and not arg.startswith("--from"):
            for source in arg.split()[:-1]:
                kept = any(source.rstrip("/") == a or source.startswith(a + "/") for a in allowed)
                assert kept, f"COPY {source}: excluded by .dockerignore"
                assert (ROOT / source).exists(), source
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {p.rstrip("*") for p in packages} <= allowed


@pytest.mark.parametrize("process", list(PROCESSES))
def test_llmtune_names_every_process(process: str) -> None:
    assert parser().parse_args([process]).process == process
    __import__(PROCESSES[process].module)  # the module it runs exists and imports


def test_healthcheck_asks_the_recorded_process(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    env = {**os.environ, "LLMTUNE_STATE_FILE": str(state)}
    run = subprocess.run([str(BIN / "llmtune"), "healthcheck"], env=env, capture_output=True, text=True)
    assert run.returncode == 1 and "no process recorded" in run.stderr
    state.write_text(json.dumps({"process": "router", "pid": os.getpid(), "url": "http://127.0.0.1:9/readyz"}))
    run = subprocess.run([str(BIN / "llmtune"), "healthcheck"], env=env, capture_output=True, text=True)
    assert run.returncode == 1 and "unreachable" in run.stderr
    state.write_text(json.dumps({"process": "finetune-worker", "pid": os.getpid(), "url": None}))
    run = subprocess.run([str(BIN / "llmtune"), "healthcheck"], env=env, capture_output=True, text=True)
    assert run.returncode == 0 and "alive" in run.stdout
    router = PROCESSES["router"]
    assert health_url(router, {"LLMTUNE_ROUTER__HOST": "0.0.0.0", "LLMTUNE_ROUTER__PORT": "9000"}) == "http://127.0.0.1:9000/readyz"
    assert health_url(PROCESSES["agent"], {}) == "http://127.0.0.1:8710/healthz"


def test_image_size_runs_the_dockerfiles_own_install() -> None:
    """`make image-size` measures the Dockerfile's own pip command, read from it (so they cannot drift)."""
    sys.path.insert(0, str(ROOT / "deploy" / "docker"))
    try:
        import image_size
    finally:
        sys.path.pop(0)
    args, extras, index = image_size.install_command(ROOT / "deploy/docker/Dockerfile")
    assert args[:2] == ["install", "--only-binary=:all:"] and args[2:4] == ["-c", "constraints.txt"]
    assert args[-1] == ".[${EXTRAS}]" and extras == "postgres" and index.startswith("https://")
