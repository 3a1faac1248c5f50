"""Token counts of a static OpenAI-compatible endpoint's answers: usage, else counted chunks."""

from __future__ import annotations

import orjson

from router import openai_upstream


def sse(*events: object) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else orjson.dumps(e)) + b"\n\n" for e in events)


def chunk(text: str, finish: str | None = None) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


def test_usage_chunk_wins() -> None:
    tail = sse(chunk("a"), chunk("", "stop"), {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}, b"[DONE]")
    assert openai_upstream.tokens(tail, whole=False, events=4, prompt_tokens=99) == (7, 2, False)


def test_without_usage_chunks_are_counted() -> None:
    events = [chunk("tok") for _ in range(6)] + [chunk("", "length")]
    tail = sse(*events, b"[DONE]")
    assert openai_upstream.tokens(tail, whole=False, events=8, prompt_tokens=11) == (11, 6, True)
    # the last chunk may carry the last token with the finish reason (vLLM), and the tail may be cut
    cut = sse(*[chunk("tok") for _ in range(300)][:-1], chunk("tok", "stop"), b"[DONE]")[-2048:]
    assert openai_upstream.tokens(cut, whole=False, events=301, prompt_tokens=3) == (3, 300, True)


def test_whole_answer_usage_or_estimate() -> None:
    with_usage = {"choices": [{"message": {"content": "hello there"}}], "usage": {"prompt_tokens": 4, "completion_tokens": 2}}
    assert openai_upstream.tokens(orjson.dumps(with_usage), whole=True, events=0, prompt_tokens=1) == (4, 2, False)
    without = {"choices": [{"text": "hello there, how are you"}]}
    prompt, completion, estimated = openai_upstream.tokens(orjson.dumps(without), whole=True, events=0, prompt_tokens=5) or (
        0, 0, False
    )
    assert prompt == 5 and completion > 0 and estimated
    assert openai_upstream.tokens(b'{"error": {"message": "x"}}', whole=True, events=0, prompt_tokens=5) is None
    assert openai_upstream.tokens(b"not json", whole=True, events=0, prompt_tokens=5) is None


def test_streams_ask_for_usage() -> None:
    streamed = openai_upstream.request("/api/chat", {"messages": [{"role": "user", "content": "hi"}]}, model="m", options={})
    assert streamed["stream"] is True and streamed["stream_options"] == {"include_usage": True}
    whole = openai_upstream.request("/api/generate", {"prompt": "hi", "stream": False}, model="m", options={})
    assert "stream_options" not in whole
