"""OpenAI's wire shapes as the router reads them: the requests its OpenAI-compatible door accepts
(``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``; typed, unknown fields refused,
fields that have no translation refused with the reason), and the one reading of OpenAI answers
from static OpenAI-compatible upstreams (a choice's text, its tool calls, whole or streamed in
fragments, SSE events). Pure data and pure functions."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_TOOLS = 128  # OpenAI's own limit on ``tools``
MAX_STOP = 16


class _Wire(BaseModel):
    """Strict JSON types (no ``"1"`` for 1), unknown fields refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


class TextPart(_Wire):
    type: Literal["text"]
    text: str


class ImageUrl(_Wire):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Wire):
    type: Literal["image_url"]
    image_url: ImageUrl


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class _Echoed(_Wire):
    """A part of the conversation so far, which SDKs send back as they parsed it from an answer,
    with fields of their own (the openai SDK's ``parsed_arguments``, ``refusal: null``,
    ``annotations``): those say nothing the model must be told, so they are let through unread."""

    model_config = ConfigDict(extra="ignore")


class FunctionCall(_Echoed):
    name: str
    arguments: str  # JSON text, as OpenAI clients send it back


class ToolCall(_Echoed):
    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Echoed):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = Field(default=None, max_length=256)  # a participant's name: Ollama has none (see the README)


class FunctionSpec(_Wire):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Wire):
    type: Literal["function"]
    function: FunctionSpec


class ChosenFunction(_Wire):
    name: str


class ToolChoice(_Wire):
    type: Literal["function"]
    function: ChosenFunction


class JsonSchemaSpec(_Wire):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class TextFormat(_Wire):
    type: Literal["text"]


class JsonObjectFormat(_Wire):
    type: Literal["json_object"]


class JsonSchemaFormat(_Wire):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]


class StreamOptions(_Wire):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None  # nothing to obfuscate against: the answer is not sent across a CDN


class _Sampling(_Wire):
    model: str = Field(min_length=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    seed: int | None = None
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP)] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    n: Literal[1] | None = None
    user: str | None = Field(default=None, max_length=256)  # the caller's own end-user id: kept for its records only


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[Tool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    metadata: dict[str, str] | None = None
    store: Literal[False] | None = None


class CompletionRequest(_Sampling):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]  # one prompt per request (n=1)
    suffix: str | None = None
    echo: Literal[False] | None = None
    best_of: Literal[1] | None = None


class EmbeddingRequest(_Wire):
    model: str = Field(min_length=1)
    input: str | list[str]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = Field(default=None, max_length=256)


#: Fields of OpenAI's API with no translation onto Ollama nodes: (the values that ask for nothing, why).
REFUSED: dict[str, tuple[tuple[Any, ...], str]] = {
    "logprobs": ((None, False, 0), "log probabilities are not returned by the Ollama nodes the router serves"),
    "top_logprobs": ((None, 0), "log probabilities are not returned by the Ollama nodes the router serves"),
    "logit_bias": ((None, {}), "Ollama has no token bias"),
    "functions": ((None, []), "the deprecated functions API: send 'tools' instead"),
    "function_call": ((None,), "the deprecated functions API: send 'tool_choice' instead"),
    "audio": ((None,), "audio output is not supported"),
    "modalities": ((None, ["text"]), "only text output is supported"),
    "prediction": ((None,), "predicted outputs are not supported"),
    "reasoning_effort": ((None,), "reasoning effort has no equivalent on Ollama nodes"),
    "web_search_options": ((None,), "web search is not supported"),
    "service_tier": ((None, "auto", "default"), "service tiers are not offered"),
}
KIND_OF: dict[str, type[BaseModel]] = {"chat": ChatRequest, "completion": CompletionRequest, "embedding": EmbeddingRequest}


class Refused(ValueError):
    """A request the door cannot serve as asked: ``param`` names the field, the message says why."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def check(kind: Literal["chat", "completion", "embedding"], body: Mapping[str, Any]) -> None:
    """Refused naming the first field that is wrong, unknown, or has no translation."""
    for name, (neutral, why) in REFUSED.items():
        if name in body and body[name] not in neutral:
            raise Refused(f"'{name}' is not supported: {why}", name)
    fields = {k: v for k, v in body.items() if k not in REFUSED}
    try:
        KIND_OF[kind].model_validate(fields)
    except ValidationError as exc:
        errors = [(_where(e["loc"], fields, missing=e["type"] == "missing"), e) for e in exc.errors()]
        where, first = max(errors, key=lambda pair: len(pair[0]))  # of a union's members, the one that got furthest
        if first["type"] == "extra_forbidden":
            raise Refused(f"'{where}' is not a field the router's OpenAI API accepts", where) from None
        said = dict.fromkeys(e["msg"] for w, e in errors if w == where)  # a union's members: what each wanted
        raise Refused(f"{where}: {' or '.join(said)}", where) from None


def _where(loc: tuple[int | str, ...], body: Any, *, missing: bool) -> str:
    """A validation error's place in the request as a client writes it (``messages[0].content``):
    the parts of ``loc`` that lead into the body (and a ``missing`` field's name), without the
    union members pydantic names."""
    out, at = "", body
    for part in loc[:-1] if missing else loc:
        if isinstance(at, list) and isinstance(part, int) and part < len(at):
            out, at = f"{out}[{part}]", at[part]
        elif isinstance(at, dict) and isinstance(part, str) and (part in at or not out):
            out, at = f"{out}.{part}" if out else part, at.get(part)
    if missing:
        out = f"{out}.{loc[-1]}" if out else str(loc[-1])
    return out or "body"


# -- answers of OpenAI-compatible upstreams ---------------------------------------------------------


def text_of(choice: Any, *, whole: bool) -> str:
    """The text of one choice: a completion's ``text``, else a whole answer's ``message`` or a chunk's ``delta``."""
    if not isinstance(choice, dict):
        return ""
    if "text" in choice:
        text = choice["text"]
    else:
        part = choice.get("message" if whole else "delta")
        text = part.get("content") if isinstance(part, dict) else None
    return text if isinstance(text, str) else ""


def tool_calls_of(choice: Any, *, whole: bool) -> list[dict[str, Any]]:
    """The tool calls of a whole answer's message or of one chunk's delta (fragments), as sent."""
    part = choice.get("message" if whole else "delta") if isinstance(choice, dict) else None
    calls = part.get("tool_calls") if isinstance(part, dict) else None
    return [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []


class ToolCallParts:
    """Tool calls streamed in fragments (the id and name first, then pieces of the arguments, each
    naming its call by ``index``), put back together: ``add`` each delta's calls, then ``calls``."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, Any]] = {}

    def add(self, fragments: list[dict[str, Any]]) -> None:
        for part in fragments:
            index = part["index"] if isinstance(part.get("index"), int) else len(self._calls)
            call = self._calls.setdefault(index, {"id": None, "name": "", "arguments": ""})
            fn: dict[str, Any] = part["function"] if isinstance(part.get("function"), dict) else {}
            call["id"] = part.get("id") or call["id"]
            call["name"] += fn.get("name") or ""
            call["arguments"] += fn.get("arguments") or ""

    def __bool__(self) -> bool:
        return bool(self._calls)

    def calls(self) -> list[dict[str, Any]]:
        """Each call as ``{"id", "type", "function": {"name", "arguments"}}`` in index order."""
        return [{"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for _, c in sorted(self._calls.items())]  # fmt: skip


def sse_events(buffer: bytes) -> tuple[Iterator[dict[str, Any] | None], bytes]:
    """The ``data:`` events complete in ``buffer`` (None for ``[DONE]``) and the bytes left over."""
    *lines, rest = buffer.split(b"\n")

    def events() -> Iterator[dict[str, Any] | None]:
        for raw in lines:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                yield None
                continue
            event = orjson.loads(payload)
            if isinstance(event, dict):
                yield event

    return events(), rest
