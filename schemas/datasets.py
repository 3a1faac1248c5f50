"""Training datasets: JSONL parsed and checked row by row, so a bad dataset is refused with the
line that is wrong (format, empty rows, duplicates, size) before any job is queued."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson
from pydantic import ValidationError

from schemas.finetune import Example


class DatasetInvalid(Exception):
    """The dataset cannot be trained on; ``line`` is 1-based (0: the dataset as a whole)."""

    def __init__(self, line: int, message: str) -> None:
        self.line, self.message = line, message
        super().__init__(f"line {line}: {message}" if line else message)


@dataclass(frozen=True, slots=True)
class Dataset:
    examples: list[Example]
    digest: str  # of the normalised rows: the same rows give the same digest
    bytes: int


def parse_dataset(text: str, *, max_bytes: int = 16 * 1024 * 1024, max_rows: int = 100_000, min_rows: int = 1) -> Dataset:
    size = len(text.encode())
    if size > max_bytes:
        raise DatasetInvalid(0, f"the dataset is {size:,} bytes; the limit is {max_bytes:,}")
    examples: list[Example] = []
    first_seen: dict[bytes, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue  # blank lines between rows are allowed
        try:
            raw = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise DatasetInvalid(number, f"not a JSON object ({exc})") from exc
        if not isinstance(raw, dict):
            raise DatasetInvalid(number, "each line is one JSON object: {prompt, response} or {messages}")
        try:
            example = Example.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "row"
            raise DatasetInvalid(number, f"{where}: {first.get('msg', 'invalid')}") from exc
        key = orjson.dumps([m.model_dump() for m in example.as_messages()])
        if key in first_seen:
            raise DatasetInvalid(number, f"the same row as line {first_seen[key]}")
        first_seen[key] = number
        examples.append(example)
        if len(examples) > max_rows:
            raise DatasetInvalid(number, f"more than {max_rows:,} rows")
    if len(examples) < min_rows:
        raise DatasetInvalid(0, f"the dataset has {len(examples)} row(s); at least {min_rows} needed")
    digest = hashlib.sha256(b"\n".join(sorted(first_seen))).hexdigest()
    return Dataset(examples, digest, size)
