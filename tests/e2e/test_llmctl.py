"""llmctl end to end: a real control-plane process (uvicorn) on a real etcd, driven by the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from controlplane.store.etcd import EtcdConfig, EtcdStore
from controlplane.store.keys import KeySpace
from deploy.local import processes
from tests.fixtures.services import EtcdServer, free_port, free_port_range
from tests.helpers import model_doc, route_doc

pytestmark = pytest.mark.etcd
ROOT = Path(__file__).resolve().parents[2]
TOKEN = "e2e-admin-token"
PEPPER = "e2e-api-key-pepper-0123456789abcdef"  # the API keys' server-side secret (control plane and router)


@contextlib.contextmanager
def control_plane_process(etcd_url: str, namespace: str, tmp_path: Path, **extra: str) -> Iterator[tuple[str, dict[str, str]]]:
    """``python -m controlplane.api`` on etcd and a SQLite file in ``tmp_path``; its URL and environment."""
    port = free_port()
    env = {
        **os.environ,
        "LLMTUNE_STORE__ENDPOINTS": etcd_url,
        "LLMTUNE_STORE__NAMESPACE": namespace,
        "LLMTUNE_DB__URL": f"sqlite:///{tmp_path / 'meta.db'}",
        "LLMTUNE_AUTH__BOOTSTRAP_TOKEN": TOKEN,
        "LLMTUNE_KEYS__PEPPER": PEPPER,
        "LLMTUNE_API__PORT": str(port),
        "LLMTUNE_RAG__DATA_DIR": str(tmp_path / "rag"),
        # no router unless a test starts one: the default 127.0.0.1:8701 may be a developer's own stack
        "LLMTUNE_ROUTER_CLIENT__URL": f"http://127.0.0.1:{free_port()}",
        **extra,
    }
    log = (tmp_path / "cp.log").open("wb")
    proc = processes.spawn([sys.executable, "-m", "controlplane.api"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, (tmp_path / "cp.log").read_text()
        time.sleep(0.1)
    try:
        yield url, env
    finally:
        processes.stop([proc])


@pytest.fixture
def control_plane(etcd_server: EtcdServer, tmp_path: Path, keys: KeySpace) -> Iterator[str]:
    with control_plane_process(etcd_server.url, keys.namespace, tmp_path) as (url, _env):
        yield url


def llmctl(url: str, tmp_path: Path, *args: str, token: str = TOKEN, columns: int = 200) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "LLMCTL_URL": url,
        "LLMCTL_TOKEN": token,
        "LLMCTL_CONFIG": str(tmp_path / "llmctl.yaml"),
        "COLUMNS": str(columns),
    }
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_apply_get_list_history_diff_rollback_delete(control_plane: str, tmp_path: Path) -> None:
    examples = str(ROOT / "deploy" / "examples")
    dry = llmctl(control_plane, tmp_path, "apply", "-f", examples, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "+++ b/routes/default-chat" in dry.stdout and "would change 12 object(s)" in dry.stdout
    assert json.loads(llmctl(control_plane, tmp_path, "list", "-o", "json").stdout) == []

    applied = llmctl(control_plane, tmp_path, "apply", "-f", examples, "-m", "initial fleet")
    assert applied.returncode == 0 and "changed 12 object(s) at revision" in applied.stdout
    first_rev = int(applied.stdout.rsplit("revision", 1)[1])
    again = llmctl(control_plane, tmp_path, "apply", "-f", examples)
    assert "no changes" in again.stdout

    got = json.loads(llmctl(control_plane, tmp_path, "get", "model", "llama3.1-8b", "-o", "json").stdout)
    assert got["spec"]["options"]["num_ctx"] == 8192 and got["metadata"]["revision"] == first_rev
    # Machine output is the document as is, whatever the terminal's width or the brackets in it.
    prompt = "[INST] You answer questions about invoices, refunds and delivery times; be brief and kind. [/INST] " * 2
    doc = model_doc("long-prompt", tag="long-prompt", base="llama3.1:8b", system_prompt=prompt)
    (tmp_path / "long.json").write_text(json.dumps(doc))
    assert llmctl(control_plane, tmp_path, "apply", "-f", str(tmp_path / "long.json")).returncode == 0
    for fmt, parse in (("yaml", yaml.safe_load), ("json", json.loads)):
        narrow = llmctl(control_plane, tmp_path, "get", "model", "long-prompt", "-o", fmt, columns=40)
        assert parse(narrow.stdout)["spec"]["system_prompt"] == prompt, narrow.stdout
    assert llmctl(control_plane, tmp_path, "delete", "model", "long-prompt").returncode == 0
    table = llmctl(control_plane, tmp_path, "list", "routes").stdout
    assert "default-chat" in table and "support" in table

    edited = tmp_path / "route.yaml"
    edited.write_text((ROOT / "deploy/examples/routes.yaml").read_text().replace("weight: 90", "weight: 50"))
    assert llmctl(control_plane, tmp_path, "apply", "-f", str(edited), "-m", "split").returncode == 0
    hist = json.loads(llmctl(control_plane, tmp_path, "history", "route", "default-chat", "-o", "json").stdout)
    assert [(h["action"], h["message"]) for h in hist] == [("update", "split"), ("create", "initial fleet")]
    diff = llmctl(control_plane, tmp_path, "diff", str(first_rev))
    assert "-    weight: 90" in diff.stdout and "+    weight: 50" in diff.stdout

    rolled = llmctl(control_plane, tmp_path, "rollback", str(first_rev), "route", "default-chat")
    assert rolled.returncode == 0 and "routes/default-chat update" in rolled.stdout
    assert "no differences" in llmctl(control_plane, tmp_path, "diff", str(first_rev)).stdout

    refused = llmctl(control_plane, tmp_path, "delete", "model", "llama3.1-8b")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "422" in refused.stderr
    assert llmctl(control_plane, tmp_path, "delete", "rag", "support-kb").returncode == 0
    missing = llmctl(control_plane, tmp_path, "get", "rag", "support-kb")
    assert missing.returncode == 1 and "404" in missing.stderr

    status = llmctl(control_plane, tmp_path, "status")
    assert status.returncode == 0 and "ready" in status.stdout and "routes" in status.stdout


def test_watch_tokens_and_errors(control_plane: str, tmp_path: Path) -> None:
    env = {**os.environ, "LLMCTL_URL": control_plane, "LLMCTL_TOKEN": TOKEN, "LLMCTL_CONFIG": str(tmp_path / "c.yaml")}
    watcher = processes.spawn(
        [sys.executable, "-m", "cli.main", "watch", "--count", "2"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    doc = tmp_path / "m.yaml"
    doc.write_text("kind: Model\nmetadata: {name: w}\nspec: {ollama_tag: 'w:1', capabilities: [chat], context_window: 4096}\n")
    assert llmctl(control_plane, tmp_path, "apply", "-f", str(doc)).returncode == 0
    assert llmctl(control_plane, tmp_path, "delete", "model", "w").returncode == 0
    out, _ = watcher.communicate(timeout=20)
    assert [line.split()[1:] for line in out.strip().splitlines()] == [["PUT", "models/w"], ["DELETE", "models/w"]]

    created = llmctl(control_plane, tmp_path, "token", "create", "ci-viewer", "--role", "viewer")
    viewer = created.stdout.strip()
    assert created.returncode == 0 and viewer.startswith("llmt_")
    assert llmctl(control_plane, tmp_path, "list", token=viewer).returncode == 0
    denied = llmctl(control_plane, tmp_path, "apply", "-f", str(doc), token=viewer)
    assert denied.returncode == 1 and "403" in denied.stderr
    listed = json.loads(llmctl(control_plane, tmp_path, "token", "list", "-o", "json").stdout)["items"]
    (mine,) = [t for t in listed if t["name"] == "ci-viewer"]
    assert viewer.startswith(mine["prefix"] + "_") and mine["last_used_at"] and viewer not in json.dumps(listed)
    rotated = llmctl(control_plane, tmp_path, "token", "rotate", str(mine["id"]), "--grace", "0")
    assert rotated.returncode == 0 and rotated.stdout.strip().startswith("llmt_")
    assert llmctl(control_plane, tmp_path, "list", token=viewer).returncode == 1  # no grace: the old one ends now
    viewer = rotated.stdout.strip()

    doc.write_text("kind: Model\nmetadata: {name: w}\nspec: {ollama_tag: 'w:1', capabilities: [chat], context_window: tiny}\n")
    invalid = llmctl(control_plane, tmp_path, "apply", "-f", str(doc))
    assert invalid.returncode == 1 and "spec.context_window" in invalid.stderr and str(doc) in invalid.stderr
    assert llmctl(control_plane, tmp_path, "get", "gadget", "x").returncode == 1
    down = llmctl("http://127.0.0.1:9", tmp_path, "list")
    assert down.returncode == 1 and "cannot reach the control plane" in down.stderr

    secret = tmp_path / "viewer.token"
    secret.write_text(viewer + "\n")
    login = llmctl(control_plane, tmp_path, "login", "--url", control_plane, "--token-file", str(secret))
    assert login.returncode == 0 and viewer not in " ".join(login.args)  # never on a command line
    assert (tmp_path / "llmctl.yaml").stat().st_mode & 0o777 == 0o600
    env_free = {k: v for k, v in os.environ.items() if not k.startswith("LLMCTL_")} | {
        "LLMCTL_CONFIG": str(tmp_path / "llmctl.yaml")
    }
    from_file = subprocess.run(
        [sys.executable, "-m", "cli.main", "list", "-o", "json"], env=env_free, cwd=ROOT, capture_output=True, text=True
    )
    assert from_file.returncode == 0, from_file.stderr


def test_fleet_commands_with_agent_and_simulator_processes(
    control_plane: str, etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path
) -> None:
    """Two simulated Ollama nodes (one process) and two agent processes, driven through llmctl."""
    sim_port = free_port_range(2)
    agent_ports = [free_port(), free_port()]
    procs = [
        processes.spawn([sys.executable, "-m", "tests.sim", "--port", str(sim_port), "--count", "2"], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT),
    ]  # fmt: skip
    for i in range(2):
        env = {
            **os.environ,
            "LLMTUNE_STORE__ENDPOINTS": etcd_server.url,
            "LLMTUNE_STORE__NAMESPACE": keys.namespace,
            "LLMTUNE_AGENT__NODE": f"sim-{i}",
            "LLMTUNE_AGENT__OLLAMA_URL": f"http://127.0.0.1:{sim_port + i}",
            "LLMTUNE_AGENT__LABELS": "pool=sim",
            "LLMTUNE_AGENT__PORT": str(agent_ports[i]),
            "LLMTUNE_AGENT__PROBE_INTERVAL_S": "0.5",
        }
        log = (tmp_path / f"agent-{i}.log").open("wb")
        procs.append(
            processes.spawn([sys.executable, "-m", "agents.sidecar"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        )
    router_port = free_port()
    router_env = {**os.environ, "LLMTUNE_STORE__ENDPOINTS": etcd_server.url, "LLMTUNE_STORE__NAMESPACE": keys.namespace,
                  "LLMTUNE_ROUTER__PORT": str(router_port), "LLMTUNE_KEYS__PEPPER": PEPPER}  # fmt: skip
    router_log = (tmp_path / "router.log").open("wb")
    router_cmd = [sys.executable, "-m", "router"]
    procs.append(processes.spawn(router_cmd, env=router_env, cwd=ROOT, stdout=router_log, stderr=router_log))
    try:
        model = {"kind": "Model", "metadata": {"name": "assistant"}, "spec": {
            "ollama_tag": "assistant:v1", "base": "llama3.1:8b", "capabilities": ["chat"], "context_window": 16384,
            "system_prompt": "Be brief.", "options": {"temperature": 0.7}}}  # fmt: skip
        (tmp_path / "model.json").write_text(json.dumps(model))
        assert llmctl(control_plane, tmp_path, "apply", "-f", str(tmp_path / "model.json")).returncode == 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = json.loads(
                httpx.get(f"{control_plane}/api/v1/models/status", headers={"Authorization": f"Bearer {TOKEN}"}).text
            )
            if status["models"] and status["models"][0]["ready_nodes"] == 2:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"not ready: {status}; agent log: {(tmp_path / 'agent-0.log').read_text()[-2000:]}")

        nodes = llmctl(control_plane, tmp_path, "nodes")
        assert nodes.returncode == 0 and "sim-0" in nodes.stdout and "sim-1" in nodes.stdout and "ready" in nodes.stdout
        table = llmctl(control_plane, tmp_path, "models", "status").stdout
        assert table.count("assistant:v1") == 2 and "Ready" in table

        tuned = llmctl(
            control_plane, tmp_path, "tune", "assistant", "--set", "temperature=0.2", "--set", "num_ctx=8192", "--wait"
        )
        assert tuned.returncode == 0, tuned.stderr
        assert "changed at revision" in tuned.stdout and tuned.stdout.count("applied") == 2

        metrics = httpx.get(f"http://127.0.0.1:{agent_ports[0]}/metrics").text
        assert "llmtune_agent_ollama_up 1.0" in metrics and 'llmtune_agent_ollama_calls_total{op="create",result="ok"}' in metrics

        os.environ["LLMCTL_ROUTER_URL"] = f"http://127.0.0.1:{router_port}"
        created = llmctl(control_plane, tmp_path, "key", "create", "e2e-svc", "--tenant", "e2e", "--model", "assistant",
                         "--rpm", "600", "-o", "json")  # fmt: skip
        assert created.returncode == 0, created.stderr
        issued = json.loads(created.stdout)
        assert issued["secret"].startswith("llmk_") and issued["spec"]["limits"]["requests_per_minute"] == 600
        os.environ["LLMCTL_ROUTER_KEY"] = issued["secret"]
        try:
            deadline = time.monotonic() + 15
            routed = llmctl(control_plane, tmp_path, "route", "hello", "--model", "assistant")
            while routed.returncode != 0 and time.monotonic() < deadline:  # the router catches up with the fleet
                time.sleep(0.3)
                routed = llmctl(control_plane, tmp_path, "route", "hello", "--model", "assistant")
            assert routed.returncode == 0, routed.stderr + (tmp_path / "router.log").read_text()[-2000:]
            assert "assistant:v1" in routed.stdout and "decision_us" in routed.stdout
            dry = llmctl(control_plane, tmp_path, "route", "hello", "--model", "nope", "--dry-run")
            assert dry.returncode == 1 and "403" in dry.stderr and "may not use model 'nope'" in dry.stderr
            listed = llmctl(control_plane, tmp_path, "key", "list")
            assert listed.returncode == 0 and issued["prefix"] in listed.stdout and issued["secret"] not in listed.stdout
            rotated = llmctl(control_plane, tmp_path, "key", "rotate", "e2e-svc", "--grace", "0")
            assert rotated.returncode == 0 and rotated.stdout.strip().startswith("llmk_"), rotated.stderr
            refused = llmctl(control_plane, tmp_path, "route", "hello", "--model", "assistant", "--dry-run")
            deadline = time.monotonic() + 5
            while refused.returncode == 0 and time.monotonic() < deadline:  # the router's watch delivers the rotation
                refused = llmctl(control_plane, tmp_path, "route", "hello", "--model", "assistant", "--dry-run")
            assert refused.returncode == 1 and "401" in refused.stderr
            os.environ["LLMCTL_ROUTER_KEY"] = rotated.stdout.strip()
            assert llmctl(control_plane, tmp_path, "route", "hello", "--model", "assistant", "--dry-run").returncode == 0
            assert llmctl(control_plane, tmp_path, "key", "revoke", "e2e-svc").returncode == 0
            gone = llmctl(control_plane, tmp_path, "key", "revoke", "e2e-svc")
            assert gone.returncode == 1 and "404" in gone.stderr
        finally:
            del os.environ["LLMCTL_ROUTER_URL"]
            os.environ.pop("LLMCTL_ROUTER_KEY", None)

        bad = llmctl(control_plane, tmp_path, "tune", "assistant", "--set", "temprature=0.2")
        assert bad.returncode == 1 and "422" in bad.stderr and "temprature" in bad.stderr
    finally:
        processes.stop(procs)


def test_rag_ingest_query_docs_delete(control_plane: str, tmp_path: Path) -> None:
    """The local embedder (no fleet needed): files and folders in, sources out."""
    config = tmp_path / "rag.yaml"
    config.write_text(
        "kind: Model\nmetadata: {name: minilm}\n"
        "spec: {provider: local, ollama_tag: 'all-minilm', capabilities: [embed], context_window: 512}\n---\n"
        "kind: RagCollection\nmetadata: {name: notes}\nspec: {collection: notes, embedding_model: minilm}\n"
    )
    assert llmctl(control_plane, tmp_path, "apply", "-f", str(config)).returncode == 0
    folder = tmp_path / "docs"
    (folder / "ops").mkdir(parents=True)
    (folder / "ops" / "backups.md").write_text("# Backups\n\nThe database is copied to object storage every night.")
    (folder / "kitchen.txt").write_text("The dishwasher runs at six in the evening; coffee beans are refilled on Mondays.")
    (folder / "image.png").write_bytes(b"\x89PNG")  # not a text suffix: skipped
    first = llmctl(control_plane, tmp_path, "rag", "ingest", str(folder), "-c", "notes")
    assert first.returncode == 0 and "2 ingested, 0 unchanged, 2 chunks written" in first.stdout, first.stdout + first.stderr
    again = llmctl(control_plane, tmp_path, "rag", "ingest", str(folder), "-c", "notes")
    assert again.returncode == 0 and "0 ingested, 2 unchanged, 0 chunks written" in again.stdout

    found = llmctl(control_plane, tmp_path, "rag", "query", "when are the espresso beans topped up?", "-c", "notes",
                   "--retrieve-only", "-k", "1")  # fmt: skip
    assert found.returncode == 0 and "docs/kitchen.txt" in found.stdout and "backups" not in found.stdout, found.stdout
    assert "retrieve" in found.stdout and "ms" in found.stdout
    listed = llmctl(control_plane, tmp_path, "rag", "docs", "-c", "notes")
    assert listed.returncode == 0 and "2 of 2" in listed.stdout and "docs/ops/backups.md" in listed.stdout
    gone = llmctl(control_plane, tmp_path, "rag", "delete", "docs/kitchen.txt", "-c", "notes")
    assert gone.returncode == 0
    assert "1 of 1" in llmctl(control_plane, tmp_path, "rag", "docs", "-c", "notes").stdout

    unknown = llmctl(control_plane, tmp_path, "rag", "query", "x", "-c", "nope")
    assert unknown.returncode == 1 and "404" in unknown.stderr and "no RAG collection 'nope'" in unknown.stderr
    missing = llmctl(control_plane, tmp_path, "rag", "ingest", str(tmp_path / "absent"), "-c", "notes")
    assert missing.returncode == 1 and "no such file or folder" in missing.stderr
    no_router = llmctl(control_plane, tmp_path, "rag", "query", "coffee", "-c", "notes")  # generation needs the router
    assert no_router.returncode == 1 and "502" in no_router.stderr and "could not be reached" in no_router.stderr


def test_metrics_and_feedback(control_plane: str, tmp_path: Path) -> None:
    from controlplane.db.engine import make_engine
    from controlplane.services.monitor import OutcomeStore
    from schemas.monitor import OutcomeRecord

    now = time.time()  # outcomes as the monitor would have folded them in
    records = [OutcomeRecord(key=f"k{i}", at=now - 30, id=f"req-{i}", route="chat", model="small", node="sim-0", variant=None,
                             status="ok" if i else "error", decision_us=20, ttft_ms=10.0 * i, total_ms=20.0 * i + 1, attempts=1)
               for i in range(10)]  # fmt: skip
    OutcomeStore(make_engine(f"sqlite:///{tmp_path / 'meta.db'}")).apply([(f"1-{i}", r) for i, r in enumerate(records)])
    sent = llmctl(control_plane, tmp_path, "feedback", "req-3", "--thumbs", "up", "--label", "helpful")
    assert sent.returncode == 0 and "on small at sim-0 (route chat" in sent.stdout, sent.stdout + sent.stderr
    shown = llmctl(control_plane, tmp_path, "metrics", "--window", "5m")
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if "│ small" in line)
    assert "10" in row and "10.0%" in row and "1.00 (1)" in row, shown.stdout
    wrong = llmctl(control_plane, tmp_path, "metrics", "--window", "soon")
    assert wrong.returncode == 1 and "400" in wrong.stderr and "unit" in wrong.stderr
    unknown = llmctl(control_plane, tmp_path, "feedback", "req-nope", "--score", "0.5")
    assert unknown.returncode == 1 and "404" in unknown.stderr


def test_experiments_create_list_results_stop_promote(control_plane: str, tmp_path: Path) -> None:
    from controlplane.db.engine import make_engine
    from controlplane.services.monitor import OutcomeStore
    from schemas.monitor import OutcomeRecord

    config = tmp_path / "fleet.yaml"
    config.write_text(
        "kind: Model\nmetadata: {name: small}\nspec: {ollama_tag: 'small:1b', capabilities: [chat], context_window: 4096}\n---\n"
        "kind: Model\nmetadata: {name: big}\nspec: {ollama_tag: 'big:70b', capabilities: [chat], context_window: 4096}\n---\n"
        "kind: Route\nmetadata: {name: chat}\nspec: {targets: [{model: small}]}\n"
    )
    assert llmctl(control_plane, tmp_path, "apply", "-f", str(config)).returncode == 0
    made = llmctl(control_plane, tmp_path, "experiments", "create", "bigger", "--route", "chat", "--variant", "a=small",
                  "--variant", "b=big:3", "--max-error-rate", "0.5")  # fmt: skip
    assert made.returncode == 0 and "experiment bigger on route chat" in made.stdout, made.stderr
    listed = llmctl(control_plane, tmp_path, "experiments", "list")
    assert "bigger" in listed.stdout and "running" in listed.stdout and "b=big:3" in listed.stdout
    route = json.loads(llmctl(control_plane, tmp_path, "get", "route", "chat", "-o", "json").stdout)
    assert route["spec"]["experiment"] == "bigger"

    now = time.time()
    records = [OutcomeRecord(key=f"k{i}", at=now - 5, id=f"r{i}", route="chat", model="small" if i % 2 else "big", node="n0",
                             variant="a" if i % 2 else "b", status="error" if i % 2 and i % 7 == 0 else "ok",
                             decision_us=20, ttft_ms=5, total_ms=100.0 + i % 13, attempts=1) for i in range(400)]  # fmt: skip
    OutcomeStore(make_engine(f"sqlite:///{tmp_path / 'meta.db'}")).apply([(f"1-{i}", r) for i, r in enumerate(records)])
    shown = llmctl(control_plane, tmp_path, "experiments", "results", "bigger")
    assert shown.returncode == 0 and "b is significantly better than a on success rate" in shown.stdout, shown.stdout

    assert llmctl(control_plane, tmp_path, "experiments", "stop", "bigger").returncode == 0
    twice = llmctl(control_plane, tmp_path, "experiments", "stop", "bigger")
    assert twice.returncode == 1 and "not running" in twice.stderr
    promoted = llmctl(control_plane, tmp_path, "experiments", "promote", "bigger", "b")
    assert promoted.returncode == 0 and "promoted b of bigger" in promoted.stdout
    route = json.loads(llmctl(control_plane, tmp_path, "get", "route", "chat", "-o", "json").stdout)
    assert route["spec"]["targets"] == [{"model": "big", "weight": 1}] and "experiment" not in route["spec"]
    bad = llmctl(control_plane, tmp_path, "experiments", "create", "x", "--route", "chat", "--variant", "only")
    assert bad.returncode == 1 and "name=model" in bad.stderr


async def put_raw(etcd_url: str, key: str, value: bytes) -> None:
    store = EtcdStore(EtcdConfig(endpoints=(etcd_url,)))
    try:
        await store.put(key, value)
    finally:
        await store.close()


def test_invalid_stored_object_shown_and_repaired(etcd_server: EtcdServer, tmp_path: Path, keys: KeySpace) -> None:
    bad = b'{"kind":"Model","metadata":{"name":"small"},"spec":{"tag":"llama3.2:1b","temprature":1}}'
    (tmp_path / "small.json").write_text(json.dumps(model_doc("small", tag="llama3.2:1b")))
    with control_plane_process(etcd_server.url, keys.namespace, tmp_path) as (url, _env):
        assert llmctl(url, tmp_path, "apply", "-f", str(tmp_path / "small.json")).returncode == 0
        asyncio.run(put_raw(etcd_server.url, keys.config("models", "small"), bad))
        deadline = time.monotonic() + 10
        while (got := llmctl(url, tmp_path, "get", "model", "small")).returncode == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert got.returncode == 1 and "temprature" in got.stdout + got.stderr, got
        status = llmctl(url, tmp_path, "status")
        assert "do not validate" in status.stdout and "small" in status.stdout, status
        listed = llmctl(url, tmp_path, "list", "model")
        assert "do not validate" in listed.stdout, listed
        assert llmctl(url, tmp_path, "apply", "-f", str(tmp_path / "small.json")).returncode == 0
        assert llmctl(url, tmp_path, "get", "model", "small").returncode == 0
        assert "do not validate" not in llmctl(url, tmp_path, "status").stdout


def test_classifier_training_apply_refusal_and_quality_report(control_plane: str, tmp_path: Path) -> None:
    command = ["-m", "router.learned", "train", "deploy/examples/classifier/prompts.jsonl", "--name", "tasks", "--bits", "10"]
    trained = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    assert "accuracy" in trained.stderr
    (tmp_path / "tasks.json").write_text(trained.stdout)
    route = route_doc("assist", "small", match={"model_aliases": ["assist"]}, strategy="quality",
                      quality={"classifier": "tasks", "floor": 0.3})  # fmt: skip
    (tmp_path / "route.yaml").write_text(yaml.safe_dump_all([model_doc("small", tag="llama3.2:1b"), route]))
    missing = llmctl(control_plane, tmp_path, "apply", "-f", str(tmp_path / "route.yaml"))
    assert missing.returncode == 1 and "classifier 'tasks' does not exist" in missing.stdout + missing.stderr
    assert llmctl(control_plane, tmp_path, "apply", "-f", str(tmp_path / "tasks.json")).returncode == 0
    assert llmctl(control_plane, tmp_path, "apply", "-f", str(tmp_path / "route.yaml")).returncode == 0
    broken = json.loads(trained.stdout)
    broken["spec"]["bits"] = 11  # the weights no longer match
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    refused = llmctl(control_plane, tmp_path, "apply", "-f", str(tmp_path / "broken.json"))
    assert refused.returncode == 1 and "the file does not match its bits and classes" in refused.stdout + refused.stderr
    shown = llmctl(control_plane, tmp_path, "quality", "assist")
    assert shown.returncode == 0 and "strategy quality, quality on, floor 0.3" in shown.stdout, shown
    assert "no evidence yet" in shown.stdout
    report = json.loads(llmctl(control_plane, tmp_path, "quality", "assist", "-o", "json").stdout)
    assert report["route"] == "assist" and report["classes"] == [] and report["published_at"] is None
    unknown = llmctl(control_plane, tmp_path, "quality", "nope")
    assert unknown.returncode == 1 and "nope" in unknown.stdout + unknown.stderr
    assert llmctl(control_plane, tmp_path, "history", "quality", "-o", "json").returncode == 0
