"""``python -m controlplane.api.openapi_file [FILE]`` writes the control plane's OpenAPI document
(default: openapi.json), the snapshot a test compares the live one with (``make openapi``). Apart
from ``controlplane.api.openapi``, which the app and its routes import."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from controlplane.api.app import create_app


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0] if args else "openapi.json")
    target.write_text(json.dumps(create_app().openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
