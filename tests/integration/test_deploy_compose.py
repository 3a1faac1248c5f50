"""The compose stack (deploy/compose), offline: valid against the compose specification, every
secret interpolated from the uncommitted .env with no default, every LLMTUNE_* variable a real
setting with a valid value, the agent in Ollama's network namespace, and Prometheus's
configuration (with our rules) accepted by promtool."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.deploy_settings import SETTINGS, is_setting, load

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose"
BIN = Path(sys.executable).parent
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?([?-])([^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """What compose does to ${VAR}, ${VAR:-default}, ${VAR:?error} and $$ (error when unset)."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m[1], m[2], m[3]
        if env.get(name):
            return env[name]
        if op == "-":
            return arg
        raise KeyError(f"{name}: {arg or 'required'}")

    return INTERPOLATION.sub(one, text).replace("$$", "$")


def stack(env: dict[str, str]) -> dict[str, Any]:
    return yaml.safe_load(interpolate((COMPOSE / "compose.yaml").read_text(), env))  # type: ignore[no-any-return]


def secrets_env() -> dict[str, str]:
    names = [line.split("=", 1)[0] for line in (COMPOSE / ".env.example").read_text().splitlines()
             if line and not line.startswith("#")]  # fmt: skip
    return {name: f"test-{name.lower()}-value" for name in names}


def test_compose_files_follow_the_compose_specification() -> None:
    files = [str(COMPOSE / "compose.yaml"), str(COMPOSE / "compose.gpu.yaml")]
    run = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", *files],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    print(run.stdout.strip())


def test_secrets_come_from_the_uncommitted_env_file_with_no_default() -> None:
    text = (COMPOSE / "compose.yaml").read_text()
    required = {m[1] for m in INTERPOLATION.finditer(text) if m[2] == "?"}
    example = secrets_env()
    assert required == set(example), "every secret in compose.yaml is listed in .env.example, and only those"
    assert all(line.endswith("=") for line in (COMPOSE / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")), ".env.example gives no value"  # fmt: skip
    for name in required:  # a missing secret stops `docker compose up` with a message
        with pytest.raises(KeyError, match=name):
            stack({k: v for k, v in example.items() if k != name})
    ignored = subprocess.run(["git", "check-ignore", "-q", str(COMPOSE / ".env")], cwd=ROOT)
    assert ignored.returncode == 0, "deploy/compose/.env must be git-ignored"
    for service in stack(example)["services"].values():  # no password written into the file itself
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|TOKEN|PEPPER", key):
                assert str(value).startswith("test-"), key


def test_every_llmtune_variable_is_a_real_setting_with_a_valid_value() -> None:
    services = stack(secrets_env())["services"]
    ours = {name: s for name, s in services.items() if "llmtune" in s.get("image", "")}
    assert {s["command"][0] for s in ours.values()} == {"controlplane", "router", "agent", "finetune-worker"}
    for name, service in ours.items():
        settings = SETTINGS[service["command"][0]]
        env = {k: str(v) for k, v in service["environment"].items() if k.startswith("LLMTUNE_")}
        for variable in env:
            assert is_setting(settings, variable), f"{name} sets {variable}, which {settings.__name__} does not read"
        load(settings, env)  # parses: a value of the wrong shape fails here


def test_stack_has_every_part_and_the_agent_shares_ollamas_network() -> None:
    services = stack(secrets_env())["services"]
    assert {"etcd", "postgres", "redis", "chroma", "controlplane", "router", "ollama", "agent", "prometheus", "grafana"} <= set(
        services
    )
    etcd_tag = services["etcd"]["image"].rsplit(":v", 1)[1]
    assert tuple(int(p) for p in etcd_tag.split(".")) >= (3, 5, 6)
    agent, ollama = services["agent"], services["ollama"]
    assert agent["network_mode"] == "service:ollama"
    metrics = agent["environment"]["LLMTUNE_AGENT__PORT"]
    assert f"127.0.0.1:{metrics}:{metrics}" in ollama["ports"]
    told = dict(p.split("=") for p in agent["environment"]["LLMTUNE_AGENT__OLLAMA_ENVIRONMENT"].split(","))
    assert told == {k: v for k, v in ollama["environment"].items() if k != "OLLAMA_HOST"}
    for name, service in services.items():  # published ports stay on loopback
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"
        if "llmtune" in service.get("image", ""):
            assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
    volumes = services["prometheus"]["volumes"]
    assert "../prometheus/rules.yml:/etc/prometheus/rules.yml:ro" in volumes  # the rules themselves, not a copy
    assert any(v.startswith("../grafana:") for v in services["grafana"]["volumes"])


def test_prometheus_configuration_and_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus; CI installs it)")
    shutil.copy(COMPOSE / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(ROOT / "deploy/prometheus/rules.yml", tmp_path / "rules.yml")
    run = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
