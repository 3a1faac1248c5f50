"""The API's contract is a file in the repository: a change to it shows as a diff of openapi.json."""

from __future__ import annotations

import json
from pathlib import Path

from controlplane.api.app import create_app

SNAPSHOT = Path(__file__).resolve().parents[2] / "openapi.json"


def test_the_live_openapi_document_is_the_committed_one() -> None:
    live = json.loads(json.dumps(create_app().openapi()))  # as served: tuples become lists
    assert live == json.loads(SNAPSHOT.read_text()), (
        "the API contract changed: run `make openapi`, read the diff of openapi.json and commit it"
    )


def test_every_operation_documents_its_errors_as_problems() -> None:
    doc = json.loads(SNAPSHOT.read_text())
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            for status in ("400", "401", "404", "422", "503"):
                content = operation["responses"][status]["content"]
                assert list(content) == ["application/problem+json"], f"{method.upper()} {path} {status}"
    assert "HTTPValidationError" not in doc["components"]["schemas"]
