"""Schema validation, cross-object references and JSON Schema export."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from schemas import KINDS, Model, parse_object
from schemas.jsonschema import export_all, main
from schemas.validation import check_references, references
from tests.helpers import model_doc, rag_doc, route_doc

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"


def test_examples_are_valid_and_whole() -> None:
    docs = [d for f in sorted(EXAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    objs = [parse_object(d) for d in docs]
    state = {(type(o).plural, o.name): o for o in objs}
    assert check_references(state) == []
    assert {k for k, _ in state} == {"models", "routes", "rag", "nodepools"}


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (model_doc("Bad_Name"), "metadata.name"),
        (model_doc("m", caps=[]), "spec.capabilities"),
        (model_doc("m", options={"num_ctx": 100000}), "spec"),  # num_ctx above context_window
        (model_doc("m", options={"temprature": 1}), "spec.options.temprature"),
        (model_doc("m", placement={"min_replicas": 3, "max_replicas": 1}), "spec.placement"),
        (model_doc("m", provider="openai"), "spec"),
        (model_doc("m", keep_alive="forever"), "spec.keep_alive"),
        (route_doc("r"), "spec.targets"),
        ({"kind": "Route", "metadata": {"name": "r"}, "spec": {"targets": [{"model": "a", "weight": 0}]}}, "spec"),
        (rag_doc("kb-x", "e", chunking={"size": 100, "overlap": 100}), "spec.chunking"),
        (rag_doc("kb-x", "e", prompt_template="no placeholders"), "spec"),
        (
            {"kind": "Experiment", "metadata": {"name": "e"}, "spec": {"route": "r", "variants": [{"name": "a", "model": "m"}]}},
            "spec.variants",
        ),
    ],
)
def test_invalid_documents_name_the_field(doc: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        parse_object(doc)
    locs = [".".join(str(p) for p in e["loc"][1:]) for e in exc.value.errors()]
    assert any(loc.startswith(field) for loc in locs), locs


def test_content_round_trips_and_drops_the_revision() -> None:
    obj = parse_object(model_doc("m", options={"temperature": 0.2})).with_revision(42)
    assert obj.metadata.revision == 42
    content = obj.content()
    assert "revision" not in content["metadata"] and list(content)[:3] == ["kind", "metadata", "spec"]  # type: ignore[operator]
    assert parse_object(content) == obj.with_revision(None)
    assert isinstance(obj, Model)


def test_references_and_dangling_checks() -> None:
    state = {
        ("models", "emb"): parse_object(model_doc("emb", caps=["embed"])),
        ("models", "chat"): parse_object(model_doc("chat")),
        ("routes", "r"): parse_object(route_doc("r", "chat", fallbacks=["emb"])),
        ("rag", "kb-1"): parse_object(rag_doc("kb-1", "chat", generation_route="missing")),
    }
    assert references(state[("routes", "r")]) == [("models", "chat"), ("models", "emb")]
    problems = {(p.kind, p.field, p.message) for p in check_references(state)}
    assert problems == {
        ("rag", "spec.embedding_model", "model 'chat' lacks the 'embed' capability"),
        ("rag", "spec.generation_route", "route 'missing' does not exist"),
    }


def test_json_schema_export(tmp_path: Path) -> None:
    schemas = export_all()
    assert set(schemas) == set(KINDS) | {"nodestatus"}
    assert schemas["models"]["properties"]["kind"]["const"] == "Model"
    assert main([str(tmp_path)]) == 0
    assert len(list(tmp_path.glob("*.schema.json"))) == len(KINDS) + 1
