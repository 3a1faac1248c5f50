"""Requests of the Ollama front door sent to a static OpenAI-compatible upstream (a Model with
``provider: openai`` and an ``endpoint`` such as ``http://vllm:8000/v1``), and the answers turned
back into Ollama's shapes: one JSON object, or NDJSON lines from the upstream's SSE stream; and
the token counts of an upstream's answer (its ``usage``, or a count of its chunks where it sends
none) for the router's accounting."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from router.classify import estimate_tokens
from schemas import ollama

_FIELDS = {"temperature": "temperature", "top_p": "top_p", "seed": "seed", "stop": "stop", "num_predict": "max_tokens",
           "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty"}  # fmt: skip
PATHS = {"/api/chat": "/chat/completions", "/api/generate": "/completions", "/api/embed": "/embeddings"}


def request(path: str, body: Mapping[str, Any], *, model: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenAI request for an Ollama-API ``body`` (``model``: the upstream's model id)."""
    if path == "/api/embed":
        return {"model": model, "input": body.get("input", "")}
    out: dict[str, Any] = {"model": model, "stream": bool(body.get("stream", True))}
    out |= {_FIELDS[k]: v for k, v in options.items() if k in _FIELDS and not (k == "num_predict" and v is not None and v < 0)}
    if out["stream"]:  # usage in a last chunk; servers that ignore it are counted by their chunks
        out["stream_options"] = {"include_usage": True}
    if body.get("format") == "json":
        out["response_format"] = {"type": "json_object"}
    if path == "/api/generate":
        out["prompt"] = str(body.get("prompt") or "")
        return out
    messages = []
    for m in body.get("messages") or []:
        content: Any = m.get("content", "")
        if m.get("images"):
            content = [{"type": "text", "text": content}] + [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{img}"}} for img in m["images"]
            ]
        messages.append({"role": m.get("role", "user"), "content": content})
    out["messages"] = messages
    if body.get("tools"):
        out["tools"] = body["tools"]
    return out


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _done(model: str, finish: str | None, counts: tuple[int, int, bool], started: float) -> dict[str, Any]:
    return ollama.final(model, length=finish == "length", prompt_tokens=counts[0], completion_tokens=counts[1],
                        total_ns=int((time.perf_counter() - started) * 1e9), created_at=_now())  # fmt: skip


def _counts(usage: Any, *, prompt_tokens: int, generated: int) -> tuple[int, int, bool]:
    """(prompt, completion) tokens and whether they are estimated: the upstream's ``usage`` where it
    sent one, else the router's estimate of the prompt and ``generated`` (the chunks or the
    estimated tokens of the answer)."""
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        prompt = usage.get("prompt_tokens")
        return (prompt if isinstance(prompt, int) else prompt_tokens), usage["completion_tokens"], not isinstance(prompt, int)
    return prompt_tokens, generated, True


def answer(path: str, data: Mapping[str, Any], *, model: str, started: float, prompt_tokens: int = 0) -> dict[str, Any]:
    """One OpenAI answer as Ollama's non-streaming answer."""
    if "error" in data:
        err = data["error"]
        return {"error": err.get("message", str(err)) if isinstance(err, dict) else str(err)}
    if path == "/api/embed":
        return {"model": model, "embeddings": [d["embedding"] for d in data.get("data", [])]}
    choice, text, counts = _whole(data, prompt_tokens)
    out = _done(model, choice.get("finish_reason"), counts, started)
    if path == "/api/chat":
        message = choice.get("message") or {}
        out["message"] = {"role": "assistant", "content": text}
        if message.get("tool_calls"):
            out["message"]["tool_calls"] = message["tool_calls"]
    else:
        out["response"] = text
    return out


def _whole(data: Mapping[str, Any], prompt_tokens: int) -> tuple[dict[str, Any], str, tuple[int, int, bool]]:
    """A whole answer's first choice, its text, and its (prompt, completion) tokens."""
    choice = (data.get("choices") or [{}])[0]
    choice = choice if isinstance(choice, dict) else {}
    text = _text(choice, whole=True)
    return choice, text, _counts(data.get("usage"), prompt_tokens=prompt_tokens, generated=estimate_tokens(text) if text else 0)


def _text(choice: Any, *, whole: bool) -> str:
    """The text of one choice: a completion's ``text``, else a whole answer's ``message`` or a chunk's ``delta``."""
    if not isinstance(choice, dict):
        return ""
    if "text" in choice:
        text = choice["text"]
    else:
        part = choice.get("message" if whole else "delta")
        text = part.get("content") if isinstance(part, dict) else None
    return text if isinstance(text, str) else ""


def tokens(tail: bytes, *, whole: bool, events: int, prompt_tokens: int) -> tuple[int, int, bool] | None:
    """(prompt, completion) tokens of an answer from a static endpoint and whether they are
    estimated, for the router's figures and usage:
    ``tail`` is the whole answer (``whole``) or the last bytes of its SSE stream, ``events`` the
    ``data:`` events the stream carried. Without ``usage``, a stream's completion tokens are its
    events less the ``[DONE]`` marker and a last chunk that only names the finish reason (servers
    send about one token per chunk); a whole answer's are estimated from its text."""
    if whole:
        try:
            data = orjson.loads(tail)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(data, dict) or "error" in data:
            return None
        return _whole(data, prompt_tokens)[2]
    generated = events
    for raw in reversed(tail.split(b"\n")):
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            generated -= 1
            continue
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            break  # the first line of the tail, cut
        if not isinstance(event, dict):
            break
        if isinstance(event.get("usage"), dict):
            return _counts(event["usage"], prompt_tokens=prompt_tokens, generated=0)
        choices = event.get("choices") or []
        if choices and not any(_text(c, whole=False) for c in choices):
            generated -= 1  # the finish chunk (or a role-only one) carries no token
        break
    return prompt_tokens, max(generated, 0), True


async def stream(
    path: str, chunks: AsyncIterator[bytes], *, model: str, started: float, prompt_tokens: int = 0
) -> AsyncIterator[bytes]:
    """The upstream's SSE events as Ollama's NDJSON lines, the last one ``done`` with token counts
    (the upstream's usage, else the pieces of text it sent)."""
    buffer, finish, usage, pieces = b"", None, None, 0
    async for chunk in chunks:
        buffer += chunk
        *events, buffer = buffer.split(b"\n")
        for raw in events:
            line = raw.strip()
            if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
                continue
            event = orjson.loads(line[5:])
            if "error" in event:  # the upstream's (or the router's, when the upstream broke off) error event
                err = event["error"]
                yield ollama.error_line(err.get("message", str(err)) if isinstance(err, dict) else str(err))
                return
            usage = event.get("usage") or usage
            for choice in event.get("choices") or []:
                finish = choice.get("finish_reason") or finish
                text = _text(choice, whole=False)
                if text:
                    pieces += 1
                    piece: dict[str, Any] = {"model": model, "created_at": _now(), "done": False}
                    piece |= {"message": {"role": "assistant", "content": text}} if path == "/api/chat" else {"response": text}
                    yield orjson.dumps(piece) + b"\n"
    last = _done(model, finish, _counts(usage, prompt_tokens=prompt_tokens, generated=pieces), started)
    last |= {"message": {"role": "assistant", "content": ""}} if path == "/api/chat" else {"response": ""}
    yield orjson.dumps(last) + b"\n"
