"""Machine-readable output of llmctl (``-o json|yaml``)."""

from __future__ import annotations

import json
from typing import Any

import typer
import yaml


def emit(data: Any, output: str) -> None:
    """``data`` as JSON or YAML, written as is: rich would wrap long lines at the terminal's width
    (breaking the document for a pipe or a file) and read brackets in values as markup."""
    text = json.dumps(data, indent=2) + "\n" if output == "json" else yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    typer.echo(text, nl=False)
