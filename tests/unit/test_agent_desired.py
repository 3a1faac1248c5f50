"""Pure parts of the agent and of tuning: what a node should hold, start-time settings, the
tuning patch, and the Modelfile comparisons used to verify derived models."""

from __future__ import annotations

import json

import ollama
import pytest
from pydantic import ValidationError

from agents.sidecar.desired import DesiredState, desired_model, tag
from agents.sidecar.node import matches, modelfile_system, parse_parameters
from controlplane.services.errors import Invalid
from controlplane.services.tuning import patched
from controlplane.store.base import Event, EventType, KeyValue
from controlplane.store.informer import Snapshot
from controlplane.store.keys import KeySpace
from schemas.model import Model
from schemas.nodepool import ServerSettings
from schemas.tuning import TuneRequest
from tests.helpers import model_doc

KEYS = KeySpace("unit")


def kv(kind: str, doc: dict[str, object], revision: int) -> tuple[str, KeyValue]:
    key = KEYS.config(kind, str(doc["metadata"]["name"]))  # type: ignore[index]
    return key, KeyValue(key, json.dumps(doc).encode(), revision, revision, 1)


def feed(state: DesiredState, items: dict[str, KeyValue], changed: list[str] | None = None) -> None:
    """Hand ``state`` a snapshot: a full listing, or only the ``changed`` keys as watch events."""
    revision = max((kv.mod_revision for kv in items.values()), default=1)
    if changed is None:
        state.on_snapshot(Snapshot(revision, items, relisted=True))
        return
    events = tuple(
        Event(EventType.PUT, k, items[k].value, items[k].mod_revision)
        if k in items
        else Event(EventType.DELETE, k, b"", revision)
        for k in changed
    )
    state.on_snapshot(Snapshot(revision, items, changes=events))


def test_placement_by_selector_and_pool_and_server_settings() -> None:
    pool = {"kind": "NodePool", "metadata": {"name": "a100"}, "spec": {
        "node_selector": {"gpu": "a100"}, "server": {"num_parallel": 8, "flash_attention": True}, "prune": True}}  # fmt: skip
    docs = [
        kv("models", model_doc("everywhere", tag="llama3.1:8b"), 3),
        kv("models", model_doc("big", tag="llama3.1:70b", placement={"node_pool": "a100"}), 4),
        kv("models", model_doc("eu", tag="mistral", placement={"node_selector": {"zone": "eu"}}), 5),
        kv("nodepools", pool, 6),
    ]
    state = DesiredState(KEYS)
    feed(state, dict(docs))
    gpu = state.for_node({"gpu": "a100", "zone": "us"}, 9)
    assert sorted(gpu.models) == ["llama3.1:70b", "llama3.1:8b"] and gpu.revision == 9 and gpu.prune
    assert gpu.server.environment() == {"OLLAMA_NUM_PARALLEL": "8", "OLLAMA_FLASH_ATTENTION": "1"}
    cpu = state.for_node({"zone": "eu"}, 9)
    assert sorted(cpu.models) == ["llama3.1:8b", "mistral:latest"] and not cpu.prune and cpu.server.environment() == {}


def test_an_invalid_stored_item_keeps_its_last_good_value() -> None:
    key, good = kv("models", model_doc("m", tag="m:1"), 3)
    state = DesiredState(KEYS)
    feed(state, {key: good})
    feed(state, {key: KeyValue(key, b'{"kind": "Model", "metadata": {"name": "m"}, "spec": {}}', 4, 3, 2)})
    assert list(state.for_node({}, 4).models) == ["m:1"]


def test_derived_model_request_and_load_options() -> None:
    doc = model_doc("helper", tag="helper", base="llama3.1", system_prompt="Hi.", options={"num_ctx": 2048, "temperature": 0.1},
                    adapters=[{"path": "/lora/a.safetensors"}], caps=["chat", "embed"])  # fmt: skip
    d = desired_model(Model.model_validate(doc))
    assert (d.name, d.pull) == ("helper:latest", "llama3.1:latest") and d.embedding
    assert d.derived is not None and d.derived.parameters == (("num_ctx", 2048), ("temperature", 0.1))
    assert d.load_options == (("num_ctx", 2048),) and d.derived.adapters == ("/lora/a.safetensors",)
    assert tag("ns/model:7b") == "ns/model:7b" and tag("ns/model") == "ns/model:latest"


def test_show_output_is_compared_on_what_we_set() -> None:
    doc = model_doc("h", tag="h", base="b", system_prompt="Be kind.", options={"temperature": 0.2, "stop": ["<|x|>"]})
    derived = desired_model(Model.model_validate(doc)).derived
    assert derived is not None
    params = 'stop                           "<|x|>"\ntemperature                    0.2\nnum_ctx                        4096'
    modelfile = 'FROM b\nSYSTEM """Be kind."""\nPARAMETER temperature 0.2\n'
    assert parse_parameters(params)["stop"] == ["<|x|>"] and modelfile_system(modelfile) == "Be kind."

    def show(parameters: str, modelfile: str) -> ollama.ShowResponse:
        return ollama.ShowResponse(parameters=parameters, modelfile=modelfile, template="{{ .Prompt }}", model_info={})

    assert matches(show(params, modelfile), derived)  # num_ctx is inherited from the base: not ours to compare
    assert not matches(show(params.replace("0.2", "0.3"), modelfile), derived)
    assert not matches(show(params, "FROM b\n"), derived)


def test_tune_request_validation_and_patch() -> None:
    model = Model.model_validate(model_doc("m", tag="m", ctx=8192, options={"top_p": 0.9, "temperature": 0.7}, system_prompt="x"))
    req = TuneRequest(model="m", options={"temperature": 0.2}, keep_alive="-1", unset=["top_p", "system_prompt"])  # type: ignore[arg-type]
    out = patched(model, req)
    assert out.spec.options.model_dump(exclude_none=True) == {"temperature": 0.2}
    assert out.spec.keep_alive == "-1" and out.spec.system_prompt is None and out.spec.context_window == 8192
    with pytest.raises(Invalid, match="exceeds context_window"):
        patched(model, TuneRequest(model="m", options={"num_ctx": 16384}))  # type: ignore[arg-type]
    for bad in ({"model": "m"}, {"model": "m", "selector": {"a": "b"}, "keep_alive": "1m"}, {"selector": {}, "keep_alive": "1m"},
                {"model": "m", "options": {"top_k": 1}, "unset": ["top_k"]}, {"model": "m", "keep_alive": "soon"}):  # fmt: skip
        with pytest.raises(ValidationError):
            TuneRequest.model_validate(bad)


def test_quantized_kv_cache_needs_flash_attention() -> None:
    with pytest.raises(ValidationError, match="needs flash_attention"):
        ServerSettings(kv_cache_type="q8_0")  # type: ignore[arg-type]
    assert ServerSettings(kv_cache_type="q8_0", flash_attention=True).environment()["OLLAMA_KV_CACHE_TYPE"] == "q8_0"  # type: ignore[arg-type]


def test_incremental_updates_touch_only_changed_keys() -> None:
    (k1, v1), (k2, v2) = kv("models", model_doc("a", tag="a:1"), 3), kv("models", model_doc("b", tag="b:1"), 4)
    state = DesiredState(KEYS)
    feed(state, {k1: v1, k2: v2})
    _, v2b = kv("models", model_doc("b", tag="b:2"), 5)
    feed(state, {k1: v1, k2: v2b}, changed=[k2])
    assert sorted(state.for_node({}, 5).models) == ["a:1", "b:2"]
    feed(state, {k2: v2b}, changed=[k1])  # a deleted
    assert sorted(state.for_node({}, 6).models) == ["b:2"]
