"""JSON Schema export of every configuration kind (for the web UI and client-side validation)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from schemas.registry import KINDS
from schemas.status import NodeStatus


def export_all() -> dict[str, dict[str, Any]]:
    """Plural kind name (and ``nodestatus``) -> JSON Schema document."""
    out = {plural: cls.model_json_schema() for plural, cls in KINDS.items()}
    out["nodestatus"] = NodeStatus.model_json_schema()
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m schemas.jsonschema DIR`` writes one ``<kind>.schema.json`` per kind."""
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0] if args else "schemas/json")
    target.mkdir(parents=True, exist_ok=True)
    for name, schema in export_all().items():
        (target / f"{name}.schema.json").write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
    print(f"wrote {len(KINDS) + 1} schemas to {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
