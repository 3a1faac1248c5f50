"""schemas/ollama.py: the one reading of Ollama's answer objects (router, RAG, judge)."""

from __future__ import annotations

import orjson

from schemas import ollama

CHAT_FINAL = {"model": "m", "message": {"role": "assistant", "content": "hi"}, "done": True, "done_reason": "stop",
              "prompt_eval_count": 7, "eval_count": 20, "eval_duration": 400_000_000}  # fmt: skip


def test_final_object_of_a_whole_answer_and_of_a_stream() -> None:
    stream = b'{"message":{"content":"h"},"done":false}\n' + orjson.dumps(CHAT_FINAL) + b"\n"
    assert ollama.final_object(stream) == CHAT_FINAL
    assert ollama.final_object(orjson.dumps(CHAT_FINAL)) == CHAT_FINAL
    assert ollama.final_object(b'{"message": cut') is None and ollama.final_object(b"[1]") is None


def test_text_usage_speed_and_finish() -> None:
    assert ollama.text(CHAT_FINAL) == "hi" and ollama.text({"response": "r"}) == "r" and ollama.text({"message": 3}) == ""
    assert ollama.usage(CHAT_FINAL) == (7, 20) and ollama.usage({}) == (0, 0)
    assert ollama.speed(CHAT_FINAL) == (20, 50.0) and ollama.speed({"eval_count": 3}) == (None, None)
    assert ollama.speed(None) == (None, None)
    assert ollama.finish_reason(CHAT_FINAL) == "stop" and ollama.finish_reason({"done_reason": "length"}) == "length"
    calls = {"message": {"tool_calls": [{"function": {"name": "f", "arguments": {}}}]}}
    assert ollama.finish_reason(calls) == "tool_calls" and ollama.tool_calls(calls) == calls["message"]["tool_calls"]


def test_embeddings_and_the_objects_written() -> None:
    assert ollama.embeddings({"embeddings": [[0.5, 1], [2.0]]}) == [[0.5, 1], [2.0]]
    assert ollama.embeddings({"embeddings": "x"}) is None and ollama.embeddings({}) is None
    assert orjson.loads(ollama.error_line("boom")) == {"error": "boom"}
    done = ollama.final("m", length=True, prompt_tokens=3, completion_tokens=4, total_ns=9, created_at="t")
    assert ollama.finish_reason(done) == "length" and ollama.usage(done) == (3, 4) and done["done"] is True


def test_lines_split_anywhere() -> None:
    wire = b'{"a":1}\n\n{"b":2}\n{"c":3}'
    for cut in range(len(wire) + 1):
        lines = ollama.Lines()
        assert lines.feed(wire[:cut]) + lines.feed(wire[cut:]) + lines.end() == [{"a": 1}, {"b": 2}, {"c": 3}]
