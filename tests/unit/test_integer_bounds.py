"""Every integer the API accepts or publishes is bounded to a signed 64-bit integer."""

from __future__ import annotations

from typing import Any

from controlplane.api.app import create_app
from schemas.common import INT_MAX, INT_MIN
from schemas.jsonschema import export_all


def unbounded(node: Any, path: str = "") -> list[str]:
    """JSON pointers of integer schemas without both bounds inside [INT_MIN, INT_MAX] (enums are bounded)."""
    found: list[str] = []
    if isinstance(node, dict):
        if node.get("type") == "integer" and "enum" not in node and "const" not in node:
            low, high = node.get("minimum", node.get("exclusiveMinimum")), node.get("maximum", node.get("exclusiveMaximum"))
            if low is None or high is None or not INT_MIN <= low <= high <= INT_MAX:
                found.append(f"{path} [{low}, {high}]")
        for key, value in node.items():
            found += unbounded(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += unbounded(value, f"{path}/{i}")
    return found


def test_every_openapi_integer_is_bounded() -> None:
    spec = create_app().openapi()
    assert "ValidationError" not in spec["components"]["schemas"]  # FastAPI's error shape: this API answers problems
    assert unbounded(spec) == []


def test_every_config_kind_integer_is_bounded() -> None:
    assert {kind: unbounded(schema) for kind, schema in export_all().items() if unbounded(schema)} == {}


def test_the_published_bound_is_the_enforced_one() -> None:
    assert float(INT_MAX) == INT_MAX < 2**63 and INT_MIN == -(2**63)
    spec = create_app().openapi()
    before = next(p for p in spec["paths"]["/api/v1/history"]["get"]["parameters"] if p["name"] == "before")
    assert before["schema"]["anyOf"][0]["maximum"] == INT_MAX
