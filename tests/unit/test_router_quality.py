"""Automatic quality signals from Ollama's answer objects (router/quality.py)."""

from __future__ import annotations

import orjson

from router.quality import signals as parsed_signals
from schemas.ollama import final_object


def signals(data: bytes, *, whole: bool, wants_json: bool = False) -> tuple[str, ...]:
    return parsed_signals(final_object(data), whole=whole, wants_json=wants_json)


def chat(content: str, done_reason: str = "stop") -> bytes:
    message = {"role": "assistant", "content": content}
    return orjson.dumps({"model": "m", "message": message, "done": True, "done_reason": done_reason})


def test_whole_answers() -> None:
    assert signals(chat("Paris is the capital."), whole=True) == ()
    assert signals(chat("   "), whole=True) == ("empty",)
    assert signals(chat("The list goes on and", "length"), whole=True) == ("truncated",)
    assert signals(chat("I'm sorry, but I can't help with that."), whole=True) == ("refusal",)
    assert signals(chat("I cannot assist with this request."), whole=True) == ("refusal",)
    assert signals(chat("Sorry for the wait: here is the answer."), whole=True) == ()  # not a refusal
    assert signals(chat('{"city": "Paris"}'), whole=True, wants_json=True) == ()
    assert signals(chat("city: Paris"), whole=True, wants_json=True) == ("invalid_json",)
    assert signals(chat("city: Paris"), whole=True, wants_json=False) == ()
    generated = orjson.dumps({"model": "m", "response": "", "done": True, "done_reason": "stop"})
    assert signals(generated, whole=True) == ("empty",)
    call = {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]}
    asked = orjson.dumps({"model": "m", "message": call, "done": True, "done_reason": "stop"})
    assert signals(asked, whole=True, wants_json=True) == ()  # a tool call is an answer, though it has no text


def test_streams_show_only_truncation_and_garbage_shows_nothing() -> None:
    stream = b'{"message":{"content":"a"},"done":false}\n' + chat("", "length") + b"\n"
    assert signals(stream, whole=False) == ("truncated",)
    assert signals(b'{"message":{"content":"a"},"done":false}\n' + chat("", "stop"), whole=False) == ()
    assert signals(b"not json", whole=True) == () and signals(b"[1, 2]", whole=True) == ()


def test_judge_scores_are_read_from_json_or_text_and_clamped() -> None:
    from controlplane.services.judge import parse_score

    assert parse_score('{"score": 0.8, "reason": "correct"}') == (0.8, "correct")
    assert parse_score('{"score": 7}') == (0.7, "")  # a 1-10 scale
    assert parse_score('Sure! {"score": 0.25, "reason": "thin"} hope this helps') == (0.25, "")
    assert parse_score('{"score": 250}') == (1.0, "") and parse_score('{"score": -3}') == (0.0, "")
    assert parse_score("no idea") is None and parse_score('{"verdict": "good"}') is None
