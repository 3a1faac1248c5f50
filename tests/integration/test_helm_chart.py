"""The Helm chart (deploy/helm/llmtune), offline: linted and rendered by Helm's Go library for each
values file, every manifest validated against the Kubernetes 1.29 and 1.33 schemas, the alert
rules it ships checked by promtool, and the settings, probes and security it renders checked
against what our processes read and serve."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from tests.fixtures.chart import CHART, ROOT, VALUES, containers, find, notes, ours, pod_specs, render, values
from tests.fixtures.deploy_settings import SETTINGS, is_setting, load

KUBERNETES = ["1.29.0", "1.33.0"]
#: Kinds whose schema Kubernetes does not publish (Prometheus Operator CRDs): checked below instead.
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
#: The paths each process serves (its probes must be among them).
SERVED = {
    "controlplane": {"/healthz", "/readyz", "/metrics"},
    "router": {"/healthz", "/readyz", "/metrics"},
    "agent": {"/healthz", "/metrics", "/status"},
    "monitor": {"/healthz", "/metrics"},
}
#: Where each process reads its own port from.
PORT_SETTING = {"controlplane": "LLMTUNE_API__PORT", "router": "LLMTUNE_ROUTER__PORT", "agent": "LLMTUNE_AGENT__PORT"}


@pytest.fixture(scope="module", params=list(VALUES))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(values(request.param))


@pytest.mark.parametrize("name", list(VALUES))
def test_chart_lints_clean_for_every_values_file(name: str) -> None:
    for kube in ("v1.29.0", "v1.33.0"):
        report = helm.lint(CHART, values(name), strict=True, kube_version=kube)
        assert report["errors"] == [] and report["messages"] == [], report


def test_values_schema_rejects_a_wrong_type_and_an_unknown_key() -> None:
    chart = helm.Chart.load(CHART)
    with pytest.raises(helm.HelmValuesError, match="/router/replicas"):
        chart.validate_schema(values("defaults", router={"replicas": "three"}))
    with pytest.raises(helm.HelmValuesError, match="routr"):
        chart.validate_schema(values("defaults", routr={"replicas": 3}))
    with pytest.raises(helm.HelmValuesError, match="OLLAMA_NUM_PARALEL"):
        chart.validate_schema(values("defaults", ollama={"server": {"OLLAMA_NUM_PARALEL": 4}}))
    with pytest.raises(helm.HelmError):  # render refuses too: nothing is installed from bad values
        render(values("defaults", agent={"nativeSidecar": "yes"}))


def test_every_manifest_validates_against_kubernetes(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = rendered
    checked: dict[str, int] = {}
    for doc in docs:
        if doc["kind"] in OPERATOR_KINDS:
            continue
        for version in KUBERNETES:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise AssertionError(f"{name}: {doc['kind']}/{doc['metadata']['name']} on {version}: {exc.message}") from exc
        checked[doc["kind"]] = checked.get(doc["kind"], 0) + 1
    print(f"{name}: {sum(checked.values())} manifests valid on Kubernetes {', '.join(KUBERNETES)}: {checked}")
    assert {"Deployment", "StatefulSet", "Service", "Pod", "NetworkPolicy"} <= set(checked)


def test_operator_objects_carry_our_rules_and_dashboards(tmp_path: Path) -> None:
    docs = render(values("production"))
    (rule,) = find(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    # one source of truth: the chart's rules are deploy/prometheus/rules.yml itself
    assert rule["spec"] == yaml.safe_load((ROOT / "deploy/prometheus/rules.yml").read_text())
    promtool = shutil.which("promtool")
    if promtool:
        (tmp_path / "rules.yml").write_text(yaml.safe_dump(rule["spec"]))
        subprocess.run([promtool, "check", "rules", str(tmp_path / "rules.yml")], check=True, capture_output=True)
    monitors = find(docs, "ServiceMonitor")
    services = {d["metadata"]["name"]: d for d in find(docs, "Service")}
    assert len(monitors) == 3
    for monitor in monitors:  # each selects one of our Services by labels, on a port that Service names
        (endpoint,) = monitor["spec"]["endpoints"]
        svc = services[monitor["metadata"]["name"]]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
        assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]} and endpoint["path"] == "/metrics"
    dashboards = [d for d in find(docs, "ConfigMap") if d["metadata"]["labels"].get("grafana_dashboard") == "1"]
    files = sorted((ROOT / "deploy/grafana").glob("*.json"))
    assert len(dashboards) == len(files) > 0
    for path in files:
        assert any(d["data"].get(path.name) == path.read_text().rstrip("\n") for d in dashboards), path.name
    # files/ holds links to deploy/, never copies
    assert all(p.is_symlink() for p in (CHART / "files").iterdir())
    # auto: no Prometheus Operator API offline, so nothing renders that a cluster without it would refuse
    defaults = render(values("defaults"))
    assert not find(defaults, "ServiceMonitor") and not find(defaults, "PrometheusRule")


def test_every_llmtune_variable_is_a_real_setting_with_a_valid_value(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = rendered
    seen = 0
    for container in containers(docs):
        process = ours(container.spec)
        if process is None:
            continue
        settings = SETTINGS[process]
        env: dict[str, str] = {}
        for var, entry in container.env().items():
            if not var.startswith("LLMTUNE_"):
                continue
            assert is_setting(settings, var), f"{name}: {process} sets {var}, which {settings.__name__} does not read"
            if "value" in entry:  # what Kubernetes expands $(VAR) to, as a pod would
                env[var] = re.sub(r"\$\((\w+)\)", lambda m: {"POD_NAME": "llmtune-ollama-0", "POD_IP": "10.0.0.7"}[m[1]],
                                  entry["value"])  # fmt: skip
            seen += 1
        parsed = load(settings, env)
        if process == "agent":
            assert parsed.agent.node == "llmtune-ollama-0" and parsed.agent.ollama_url.startswith("http://10.0.0.7:")  # type: ignore[attr-defined]
    assert seen > 20


def test_probes_use_paths_and_ports_each_process_serves(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = rendered
    for container in containers(docs):
        process = ours(container.spec)
        if process is None or process not in SERVED:
            continue
        probes = {k: container.spec[k] for k in ("startupProbe", "livenessProbe", "readinessProbe") if k in container.spec}
        assert "startupProbe" in probes and "livenessProbe" in probes, f"{name}: {process}"
        own_port = int(container.env()[PORT_SETTING[process]]["value"])
        assert {int(p["containerPort"]) for p in container.spec["ports"]} == {own_port}
        for kind, probe in probes.items():
            assert probe["httpGet"]["path"] in SERVED[process], f"{name}: {process} {kind} {probe}"
            assert container.port(probe["httpGet"]["port"]) == own_port
        if process == "agent":  # an agent's hiccup must never take Ollama out of its Service
            assert "readinessProbe" not in probes
    for svc in find(docs, "Service"):  # every Service selects pods that name the ports it targets
        selector = svc["spec"]["selector"].items()
        pods = [pod for w, pod in pod_specs(docs)
                if w["kind"] != "Pod" and selector <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert pods, f"{name}: Service {svc['metadata']['name']} selects no pod"
        for pod in pods:
            named = {p["name"] for c in pod.get("containers", []) + pod.get("initContainers", []) for p in c.get("ports", [])}
            assert {p["targetPort"] for p in svc["spec"]["ports"]} <= named, f"{name}: {svc['metadata']['name']}"


def test_agent_is_a_native_sidecar_or_a_classic_container() -> None:
    native = find(render(values("production")), "StatefulSet", "-ollama")[0]["spec"]["template"]["spec"]
    (agent,) = native["initContainers"]
    assert agent["name"] == "agent" and agent["restartPolicy"] == "Always"
    assert [c["name"] for c in native["containers"]] == ["ollama"]
    classic = find(render(values("classic-sidecar")), "StatefulSet", "-ollama")[0]["spec"]["template"]["spec"]
    assert "initContainers" not in classic and [c["name"] for c in classic["containers"]] == ["ollama", "agent"]
    assert "restartPolicy" not in classic["containers"][1]
    # the node is named after the pod, and its start-time settings reach both containers
    ollama, env = native["containers"][0], {e["name"]: e for e in agent["env"]}
    assert env["LLMTUNE_AGENT__NODE"]["value"] == "$(POD_NAME)"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    server = {e["name"]: e["value"] for e in ollama["env"] if e["name"] not in ("OLLAMA_HOST", "OLLAMA_MODELS", "HOME")}
    assert server == {"OLLAMA_NUM_PARALLEL": "4", "OLLAMA_MAX_LOADED_MODELS": "2", "OLLAMA_FLASH_ATTENTION": "1"}
    pairs = dict(p.split("=") for p in env["LLMTUNE_AGENT__OLLAMA_ENVIRONMENT"]["value"].split(","))
    assert pairs == server
    assert ollama["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert native["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}


def test_secure_by_default(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = rendered
    for workload, pod in pod_specs(docs):
        where = f"{name}: {workload['kind']}/{workload['metadata']['name']}"
        assert pod["automountServiceAccountToken"] is False, where
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        volumes = {v["name"] for v in pod.get("volumes", [])} | {
            t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])
        }
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            ctx = c["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False, f"{where} {c['name']}"
            assert ctx["capabilities"]["drop"] == ["ALL"] and ctx.get("runAsNonRoot", True), f"{where} {c['name']}"
            assert all(m["name"] in volumes for m in c.get("volumeMounts", [])), f"{where} {c['name']}"
            if ours(c) or c["name"] in ("ollama", "test"):
                assert "/tmp" in {m["mountPath"] for m in c.get("volumeMounts", [])}, f"{where} {c['name']}: no writable /tmp"
            for entry in c.get("env", []):  # secrets come from Secrets, never as values
                if any(word in entry["name"] for word in ("TOKEN", "PASSWORD", "PEPPER", "DB__URL", "REDIS_URL")):
                    assert "valueFrom" in entry, f"{where}: {entry['name']} is a literal"
    assert not find(docs, "Role") and not find(docs, "ClusterRole") and not find(docs, "RoleBinding")


def test_api_keys_pepper_is_generated_once_shared_and_keys_are_required() -> None:
    docs = render(values("defaults"))
    (secret,) = find(docs, "Secret", "-api-keys")
    assert re.fullmatch(r"[A-Za-z0-9]{64}", base64.b64decode(secret["data"]["pepper"]).decode())
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    by_process = {ours(c.spec): c for c in containers(docs) if ours(c.spec) in ("controlplane", "router")}
    for c in by_process.values():  # the same pepper for hashing (control plane) and checking (router)
        ref = c.env()["LLMTUNE_KEYS__PEPPER"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "rel-llmtune-api-keys", "key": "pepper"}
    assert by_process["router"].env()["LLMTUNE_ROUTER__AUTH"]["value"] == "required"
    off = render(values("defaults", router={"auth": "off"}, apiKeys={"existingSecret": "ops-pepper", "key": "k"}))
    (router,) = [c for c in containers(off) if ours(c.spec) == "router"]
    assert "LLMTUNE_KEYS__PEPPER" not in router.env() and not find(off, "Secret", "-api-keys")


def test_admin_token_is_generated_once_and_never_a_default() -> None:
    first = find(render(values("defaults")), "Secret", "-admin-token")
    second = find(render(values("defaults")), "Secret", "-admin-token")
    tokens = [base64.b64decode(s[0]["data"]["token"]).decode() for s in (first, second)]
    assert tokens[0] != tokens[1] and all(re.fullmatch(r"llmt_[A-Za-z0-9]{43}", t) for t in tokens)
    assert first[0]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    mine = render(values("defaults", adminToken={"existingSecret": "ops-token", "key": "value"}))
    assert not find(mine, "Secret", "-admin-token")
    (cp,) = [c for c in containers(mine) if ours(c.spec) == "controlplane"]
    assert cp.env()["LLMTUNE_AUTH__BOOTSTRAP_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "ops-token", "key": "value"}
    text = notes(values("defaults"))
    assert "rel-llmtune-admin-token" in text and "--token-file" in text and "llmt_" not in text


def test_network_policies_let_only_the_router_and_agents_reach_ollama_and_only_ours_reach_etcd() -> None:
    docs = render(values("trial"))
    policies = {d["metadata"]["name"]: d for d in find(docs, "NetworkPolicy")}
    ollama = policies["rel-llmtune-ollama"]["spec"]
    (model_port, metrics) = ollama["ingress"]
    assert [p["port"] for p in model_port["ports"]] == [11434]
    allowed = {peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for peer in model_port["from"]}
    assert allowed == {"router", "ollama"}
    assert "from" not in metrics and [p["port"] for p in metrics["ports"]] == [8710]
    etcd = policies["rel-llmtune-etcd"]["spec"]
    allowed = {peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for peer in etcd["ingress"][0]["from"]}
    assert allowed == {"controlplane", "router", "ollama", "monitor"}
    env = next(c for c in containers(docs) if ours(c.spec) == "router").env()
    assert env["LLMTUNE_STORE__ENDPOINTS"]["value"] == "http://rel-llmtune-etcd:2379" and "LLMTUNE_STORE__CA_FILE" not in env


def test_router_scales_on_cpu_and_the_control_plane_keeps_a_quorum_available() -> None:
    docs = render(values("production"))
    (hpa,) = find(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] == 3 and hpa["spec"]["maxReplicas"] == 12
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    (router,) = find(docs, "Deployment", "-router")
    assert "replicas" not in router["spec"]  # the autoscaler owns it
    budgets = {d["metadata"]["name"]: d["spec"]["minAvailable"] for d in find(docs, "PodDisruptionBudget")}
    assert budgets == {"rel-llmtune-controlplane": 2, "rel-llmtune-router": 1}
    (cp,) = find(docs, "Deployment", "-controlplane")
    assert cp["spec"]["replicas"] == 3
