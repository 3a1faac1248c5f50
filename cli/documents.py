"""Reads kubectl-style YAML/JSON manifests (files or folders, multi-document) and checks them
against the schemas before anything is sent, naming the file and document of each error."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from schemas.registry import KINDS, PLURAL_OF_KIND, parse_object

SUFFIXES = (".yaml", ".yml", ".json")


class DocumentError(Exception):
    pass


def kind_plural(kind: str) -> str:
    """Accept ``models``, ``model``, ``Model`` or ``rag``/``ragcollection`` and return the plural."""
    lowered = kind.lower()
    if lowered in KINDS:
        return lowered
    for name, plural in PLURAL_OF_KIND.items():
        if lowered in (name.lower(), plural.rstrip("s")):
            return plural
    raise DocumentError(f"unknown kind '{kind}'; use one of {', '.join(KINDS)}")


def _files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
        elif path.exists():
            out.append(path)
        else:
            raise DocumentError(f"{path}: no such file or folder")
    return out


def _where(err: Mapping[str, Any]) -> str:
    loc = [str(p) for p in err.get("loc", ())]
    if loc and loc[0] in PLURAL_OF_KIND:
        loc = loc[1:]
    return ".".join(loc) or "(document)"


def load(paths: list[Path]) -> list[dict[str, Any]]:
    """Every document in ``paths``, validated; raises DocumentError with file, document and field."""
    docs: list[dict[str, Any]] = []
    for file in _files(paths):
        try:
            loaded = list(yaml.safe_load_all(file.read_text()))
        except yaml.YAMLError as exc:
            raise DocumentError(f"{file}: not valid YAML: {exc}") from exc
        for index, doc in enumerate(loaded, start=1):
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise DocumentError(f"{file} (document {index}): expected a mapping with kind, metadata and spec")
            try:
                parse_object(doc)
            except ValidationError as exc:
                first = exc.errors()[0]
                name = doc.get("metadata", {}).get("name", "?") if isinstance(doc.get("metadata"), dict) else "?"
                more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
                raise DocumentError(
                    f"{file} (document {index}, {doc.get('kind', '?')} {name}): {_where(first)}: {first['msg']}{more}"
                ) from exc
            docs.append(doc)
    if not docs:
        raise DocumentError("no documents found in " + ", ".join(str(p) for p in paths))
    return docs
