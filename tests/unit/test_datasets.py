"""Fine-tuning datasets: JSONL checked row by row, refused with the offending line."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.datasets import DatasetInvalid, parse_dataset
from schemas.finetune import FineTuneRequest

GOOD = "\n".join([
    '{"prompt": "Reset my password", "response": "Open Settings, then Security."}',
    "",
    '{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},'
    ' {"role": "assistant", "content": "Hello."}]}',
])  # fmt: skip


def test_a_good_dataset_parses_and_its_digest_ignores_order() -> None:
    data = parse_dataset(GOOD)
    assert len(data.examples) == 2 and data.examples[0].as_messages()[1].content == "Open Settings, then Security."
    swapped = "\n".join(reversed(GOOD.splitlines()))
    assert parse_dataset(swapped).digest == data.digest


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('{"prompt": "a", "response": "b"}\n{not json}', 2, "not a JSON object"),
        ('["a", "b"]', 1, "one JSON object"),
        ('{"prompt": "a", "response": "b"}\n{"prompt": "  ", "response": "b"}', 2, "non-empty prompt and response"),
        ('{"prompt": "a", "answer": "b"}', 1, "answer"),
        ('{"messages": [{"role": "user", "content": "q"}]}', 1, "end with the assistant"),
        ('{"messages": [{"role": "robot", "content": "q"}, {"role": "assistant", "content": "a"}]}', 1, "role"),
        ('{"prompt": "a", "response": "b"}\n\n{"prompt": "a", "response": "b"}', 3, "the same row as line 1"),
        ("\n\n", 0, "0 row(s)"),
    ],
)
def test_bad_rows_are_refused_with_their_line(text: str, line: int, words: str) -> None:
    with pytest.raises(DatasetInvalid) as refused:
        parse_dataset(text)
    assert refused.value.line == line and words in refused.value.message


def test_limits() -> None:
    rows = "\n".join(f'{{"prompt": "q{i}", "response": "a{i}"}}' for i in range(5))
    with pytest.raises(DatasetInvalid, match="more than 3 rows"):
        parse_dataset(rows, max_rows=3)
    with pytest.raises(DatasetInvalid, match="the limit is 10"):
        parse_dataset(rows, max_bytes=10)


def test_requests_name_one_dataset_and_a_new_model() -> None:
    FineTuneRequest(base_model="small", output_model="small-support", dataset=GOOD)
    with pytest.raises(ValidationError, match="one of the two"):
        FineTuneRequest(base_model="small", output_model="x", dataset=GOOD, dataset_id="d1")
    with pytest.raises(ValidationError, match="must differ"):
        FineTuneRequest(base_model="small", output_model="small", dataset=GOOD)
