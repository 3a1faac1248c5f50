"""Ollama's answer objects (``/api/chat``, ``/api/generate``, ``/api/embed``): the one reading of
their shape that the router, the RAG engine and the judge share. The final object of a whole
answer or of a stream, its text, tool calls, usage, finish reason and speed, the error line, and
NDJSON lines that arrive split across reads. Pure functions on bytes and dictionaries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import orjson

FinishReason = Literal["stop", "length", "tool_calls"]


def final_object(data: bytes) -> dict[str, Any] | None:
    """The last answer object: a whole (non-streamed) answer, or the last line of a stream."""
    try:
        final = orjson.loads(data.rstrip().rsplit(b"\n", 1)[-1])
    except orjson.JSONDecodeError:
        return None
    return final if isinstance(final, dict) else None


def text(answer: Mapping[str, Any]) -> str:
    """The text of an answer object or stream line (``message.content`` for chat, ``response`` for generate)."""
    message = answer.get("message")
    found = message.get("content", "") if isinstance(message, dict) else answer.get("response", "")
    return found if isinstance(found, str) else ""


def tool_calls(answer: Mapping[str, Any]) -> list[Any]:
    """The tool calls of a chat answer (Ollama's own shape: arguments as an object)."""
    message = answer.get("message")
    calls = message.get("tool_calls") if isinstance(message, dict) else None
    return calls if isinstance(calls, list) else []


def finish_reason(final: Mapping[str, Any]) -> FinishReason:
    """Why the answer ended, in OpenAI's words: Ollama says ``length`` when num_predict cut it."""
    if final.get("done_reason") == "length":
        return "length"
    return "tool_calls" if tool_calls(final) else "stop"


def usage(final: Mapping[str, Any]) -> tuple[int, int]:
    """Prompt and generated tokens of the final object (0 where Ollama gave none)."""
    return int(final.get("prompt_eval_count") or 0), int(final.get("eval_count") or 0)


def speed(final: Mapping[str, Any] | None) -> tuple[int | None, float | None]:
    """Generated tokens and tokens per second (``eval_count`` over ``eval_duration``), when known."""
    if final is not None and final.get("eval_count") and final.get("eval_duration"):
        return int(final["eval_count"]), final["eval_count"] / (final["eval_duration"] / 1e9)
    return None, None


def embeddings(answer: Mapping[str, Any]) -> list[list[float]] | None:
    """The vectors of an ``/api/embed`` answer as parsed (JSON numbers), or None when it holds none."""
    vectors = answer.get("embeddings")
    if not isinstance(vectors, list) or not all(isinstance(v, list) for v in vectors):
        return None
    return vectors


def final(
    model: str, *, length: bool, prompt_tokens: int, completion_tokens: int, total_ns: int, created_at: str
) -> dict[str, Any]:
    """A final answer object as Ollama writes it (for answers translated from other servers)."""
    return {"model": model, "created_at": created_at, "done": True, "done_reason": "length" if length else "stop",
            "total_duration": total_ns, "prompt_eval_count": prompt_tokens, "eval_count": completion_tokens}  # fmt: skip


def error_line(message: str) -> bytes:
    """How Ollama ends a stream that failed: one object with ``error``."""
    return orjson.dumps({"error": message}) + b"\n"


class Lines:
    """NDJSON objects from chunks that may split a line anywhere: ``feed`` each chunk, then ``end``."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        self._buffer += chunk
        *complete, self._buffer = self._buffer.split(b"\n")
        return [orjson.loads(line) for line in complete if line.strip()]

    def end(self) -> list[dict[str, Any]]:
        rest, self._buffer = self._buffer, b""
        return [orjson.loads(rest)] if rest.strip() else []
