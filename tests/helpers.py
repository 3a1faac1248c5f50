"""Small builders of valid configuration documents for tests."""

from __future__ import annotations

from typing import Any


def model_doc(
    name: str, *, tag: str | None = None, caps: list[str] | None = None, ctx: int = 8192, **spec: Any
) -> dict[str, Any]:
    return {
        "kind": "Model",
        "metadata": {"name": name},
        "spec": {
            "ollama_tag": tag or f"{name}:latest",
            "capabilities": ["chat"] if caps is None else caps,
            "context_window": ctx,
            **spec,
        },
    }


def route_doc(name: str, *targets: str, **spec: Any) -> dict[str, Any]:
    return {"kind": "Route", "metadata": {"name": name}, "spec": {"targets": [{"model": t} for t in targets], **spec}}


def rag_doc(name: str, embedding_model: str, **spec: Any) -> dict[str, Any]:
    return {
        "kind": "RagCollection",
        "metadata": {"name": name},
        "spec": {"collection": name, "embedding_model": embedding_model, **spec},
    }
