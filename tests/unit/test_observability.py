"""Prometheus configuration, alert rules (promtool, from Debian's prometheus package: check and
unit-test them) and Grafana dashboards (structure, and every metric they name is one we export)."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REQUIRE_SERVICES

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
SUFFIXES = ("_total", "_bucket", "_sum", "_count")


@functools.cache
def exported() -> frozenset[str]:
    """Metric names our processes define (read from the source, so a dashboard cannot name one
    that does not exist)."""
    names: set[str] = set()
    for folder in ("router", "controlplane", "agents"):
        for path in (ROOT / folder).rglob("*.py"):
            names |= set(re.findall(r'"(llmtune_[a-z_]+)"', path.read_text()))
    return frozenset(names)


def referenced(expr: str) -> set[str]:
    out = set()
    for name in re.findall(r"\b(llmtune_[a-z_]+)", expr):
        for suffix in SUFFIXES:
            if name.endswith(suffix) and name.removesuffix(suffix) in exported():
                name = name.removesuffix(suffix)
                break
        out.add(name)
    return out


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if REQUIRE_SERVICES:
            raise AssertionError("promtool missing (apt-get install prometheus)")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return found


def test_prometheus_config_and_rules_pass_promtool() -> None:
    tool = promtool()
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "rules.yml"], ["test", "rules", "rules_test.yml"]):
        done = subprocess.run([tool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def test_rules_name_only_exported_metrics_and_every_alert_is_documented() -> None:
    groups = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    recorded = {r["record"] for r in rules if "record" in r}
    alerts = [r for r in rules if "alert" in r]
    wanted = {"LlmtuneNodeDown", "LlmtuneErrorRateSpike", "LlmtuneLatencySLOBurn", "LlmtuneConfigNotApplied"}
    assert {a["alert"] for a in alerts} >= wanted
    for rule in rules:
        assert referenced(rule["expr"]) <= exported(), rule
        assert set(re.findall(r"\b(llmtune:[a-z_:0-9]+)", rule["expr"])) <= recorded, rule
    for alert in alerts:
        assert alert["labels"]["severity"] in ("warning", "critical") and alert["annotations"]["summary"], alert


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_dashboards_are_whole_and_name_only_exported_metrics(path: Path) -> None:
    board = json.loads(path.read_text())
    assert board["uid"].startswith("llmtune-") and board["title"] and board["schemaVersion"] >= 36
    assert any(v["type"] == "datasource" for v in board["templating"]["list"])
    recorded = {r["record"] for g in yaml.safe_load((PROMETHEUS / "rules.yml").read_text())["groups"] for r in g["rules"]
                if "record" in r}  # fmt: skip
    ids, cells = set(), set()
    for panel in board["panels"]:
        assert panel["id"] not in ids and panel["title"] and panel["type"] in ("timeseries", "stat", "table")
        ids.add(panel["id"])
        box = panel["gridPos"]
        assert box["x"] >= 0 and box["x"] + box["w"] <= 24 and box["h"] > 0
        for x in range(box["x"], box["x"] + box["w"]):  # no two panels overlap
            for y in range(box["y"], box["y"] + box["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))
        assert panel["targets"]
        for target in panel["targets"]:
            assert referenced(target["expr"]) <= exported(), target["expr"]
            assert set(re.findall(r"\b(llmtune:[a-z_:0-9]+)", target["expr"])) <= recorded, target["expr"]
    assert len(DASHBOARDS) == 5


def test_a_misspelt_metric_would_be_caught() -> None:
    assert referenced("rate(llmtune_router_requestz_total[5m])") - exported() == {"llmtune_router_requestz_total"}
