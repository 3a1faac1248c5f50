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

from router import translate
from router.classify import estimate_tokens
from router.errors import BadInput
from schemas import ollama
from schemas import openai as wire

PATHS = {"/api/chat": "/chat/completions", "/api/generate": "/completions", "/api/embed": "/embeddings"}
#: Ollama request fields with no OpenAI equivalent: (the values that ask for nothing, why).
_REFUSED: dict[str, tuple[tuple[Any, ...], str]] = {
    "think": ((None, False), "thinking has no equivalent in OpenAI's chat API"),
    "raw": ((None, False), "raw prompts bypass the model's template, which the upstream server owns"),
    "template": ((None, ""), "the prompt template belongs to the upstream server"),
    "context": ((None, []), "the context of an earlier /api/generate answer only means something to an Ollama node"),
    "logprobs": ((None, False), "log probabilities are not passed on"),
    "top_logprobs": ((None, 0), "log probabilities are not passed on"),
}


def request(
    path: str, body: Mapping[str, Any], *, model: str, options: Mapping[str, Any], name: str = ""
) -> dict[str, Any]:  # fmt: skip
    """The OpenAI request for an Ollama-API ``body`` (``model``: the upstream's model id, ``name``
    the model's name for errors); BadInput naming a field that has no OpenAI equivalent."""
    name = name or model
    if path == "/api/embed":
        out: dict[str, Any] = {"model": model, "input": body.get("input", "")}
        if body.get("dimensions") is not None:
            out["dimensions"] = body["dimensions"]
        return out
    for field, (neutral, why) in _REFUSED.items():
        if field in body and body[field] not in neutral:
            raise BadInput(f"'{field}' cannot be sent to the OpenAI-compatible upstream serving {name!r}: {why}", field)
    client = body.get("options") if isinstance(body.get("options"), Mapping) else None
    out = {"model": model, "stream": bool(body.get("stream", True))}
    out |= translate.openai_sampling(options, client, model=name)
    if out["stream"]:  # usage in a last chunk; servers that ignore it are counted by their chunks
        out["stream_options"] = {"include_usage": True}
    if (fmt := translate.openai_format(body.get("format"))) is not None:
        out["response_format"] = fmt
    if path == "/api/generate":
        for field in ("system", "images"):
            if body.get(field):
                raise BadInput(f"'{field}' on /api/generate cannot be sent to the OpenAI-compatible upstream serving "
                               f"{name!r} (its completions API has none): use /api/chat", field)  # fmt: skip
        out["prompt"] = str(body.get("prompt") or "")
        if body.get("suffix"):
            out["suffix"] = body["suffix"]
        return out
    out["messages"] = translate.openai_messages(body.get("messages") or [])
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
        out["message"] = {"role": "assistant", "content": text}
        if calls := wire.tool_calls_of(choice, whole=True):
            try:
                out["message"]["tool_calls"] = translate.ollama_tool_calls(calls)
            except ValueError as exc:
                return {"error": str(exc)}
    else:
        out["response"] = text
    return out


def _whole(data: Mapping[str, Any], prompt_tokens: int) -> tuple[dict[str, Any], str, tuple[int, int, bool]]:
    """A whole answer's first choice, its text, and its (prompt, completion) tokens."""
    choice = (data.get("choices") or [{}])[0]
    choice = choice if isinstance(choice, dict) else {}
    text = wire.text_of(choice, whole=True)
    return choice, text, _counts(data.get("usage"), prompt_tokens=prompt_tokens, generated=estimate_tokens(text) if text else 0)


def tokens(
    tail: bytes, *, whole: bool, events: int, prompt_tokens: int, head: bytes = b""
) -> tuple[int, int, bool] | None:  # fmt: skip
    """(prompt, completion) tokens of an answer from a static endpoint and whether they are
    estimated, for the router's figures and usage:
    ``tail`` is the whole answer (``whole``) or the last bytes of its SSE stream, ``head`` its
    first bytes, ``events`` the ``data:`` events the stream carried. Without ``usage``, a stream's
    completion tokens are its events less the ``[DONE]`` marker, a last chunk that only names the
    finish reason and a first one that only names the role (servers send about one token per
    chunk); a whole answer's are estimated from its text."""
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
        if choices and not any(wire.text_of(c, whole=False) for c in choices):
            generated -= 1  # the finish chunk (or a role-only one) carries no token
        break
    if generated > 1 and _opens_with_role(head):
        generated -= 1
    return prompt_tokens, max(generated, 0), True


def _opens_with_role(head: bytes) -> bool:
    """Whether a stream's first event only names the role (OpenAI's and llama.cpp's first chunk)."""
    try:
        events, _ = wire.sse_events(head)
        first = next(events, None)
    except orjson.JSONDecodeError:
        return False
    choices = first.get("choices") if first else None
    if not isinstance(choices, list) or not choices:
        return False
    return not any(wire.text_of(c, whole=False) or wire.tool_calls_of(c, whole=False) or c.get("finish_reason") for c in choices)


async def stream(
    path: str, chunks: AsyncIterator[bytes], *, model: str, started: float, prompt_tokens: int = 0
) -> AsyncIterator[bytes]:
    """The upstream's SSE events as Ollama's NDJSON lines: text as it comes, tool calls (streamed in
    fragments) put together and sent in one line once the upstream says why it finished, as
    Ollama sends them; the last line ``done`` with token counts (the upstream's usage, else the
    pieces of text it sent)."""
    buffer, finish, usage, pieces, calls = b"", None, None, 0, wire.ToolCallParts()

    def line(text: str, **extra: Any) -> bytes:
        piece: dict[str, Any] = {"model": model, "created_at": _now(), "done": False}
        piece |= {"message": {"role": "assistant", "content": text} | extra} if path == "/api/chat" else {"response": text}
        return orjson.dumps(piece) + b"\n"

    async for chunk in chunks:
        events, buffer = wire.sse_events(buffer + chunk)
        for event in events:
            if event is None:
                continue
            if "error" in event:  # the upstream's (or the router's, when the upstream broke off) error event
                err = event["error"]
                yield ollama.error_line(err.get("message", str(err)) if isinstance(err, dict) else str(err))
                return
            usage = event.get("usage") or usage
            for choice in event.get("choices") or []:
                finish = choice.get("finish_reason") or finish
                if text := wire.text_of(choice, whole=False):
                    pieces += 1
                    yield line(text)
                calls.add(wire.tool_calls_of(choice, whole=False))
            if calls and finish:
                try:
                    yield line("", tool_calls=translate.ollama_tool_calls(calls.calls()))
                except ValueError as exc:
                    yield ollama.error_line(str(exc))
                    return
                calls = wire.ToolCallParts()
    last = _done(model, finish, _counts(usage, prompt_tokens=prompt_tokens, generated=pieces), started)
    last |= {"message": {"role": "assistant", "content": ""}} if path == "/api/chat" else {"response": ""}
    yield orjson.dumps(last) + b"\n"
