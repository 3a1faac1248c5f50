"""What one API's request or answer says in the other's words, both ways between OpenAI's and
Ollama's chat APIs: messages (text parts, inline images, assistant tool calls, tool results),
tool calls (OpenAI's ids and JSON-text arguments, Ollama's argument objects), structured-output
formats, and sampling fields. What has no translation raises BadInput naming the field; nothing
is dropped on the way. Pure functions: the doors and the OpenAI upstream adapter call them."""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Mapping
from typing import Any

import orjson

from router.errors import BadInput

#: Ollama options and the OpenAI field each becomes (the rest of Ollama's sampling has no OpenAI field).
OPENAI_FIELD = {"temperature": "temperature", "top_p": "top_p", "seed": "seed", "stop": "stop", "num_predict": "max_tokens",
                "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty"}  # fmt: skip
#: Options that size the node's runner, not the answer: a static upstream's server sizes its own.
RUNNER_OPTIONS = frozenset({"num_ctx", "num_gpu", "main_gpu", "num_batch", "num_thread", "use_mmap", "use_mlock", "numa",
                            "low_vram", "f16_kv", "vocab_only", "num_keep", "num_gqa"})  # fmt: skip
_IMAGE_TYPES = ((b"\x89PNG", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"), (b"RIFF", "image/webp"))


def call_id() -> str:
    """A new tool call id, in OpenAI's form."""
    return f"call_{secrets.token_hex(12)}"


# -- OpenAI → Ollama --------------------------------------------------------------------------------


def ollama_messages(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    """OpenAI chat messages (already checked against schemas.openai.Message) as Ollama's, and
    whether any carries an image: text parts joined, data-URL images inline, ``developer`` as
    ``system``, tool calls with object arguments, a tool result named by the call it answers."""
    out, names, images_seen = [], {}, False
    for i, msg in enumerate(messages):
        role, content = msg["role"], msg.get("content")
        entry: dict[str, Any] = {"role": "system" if role == "developer" else role}
        if isinstance(content, list):
            texts, images = [], []
            for j, part in enumerate(content):
                if part["type"] == "text":
                    texts.append(part["text"])
                else:
                    images.append(_inline_image(part["image_url"]["url"], f"messages[{i}].content[{j}].image_url.url"))
            content = "\n".join(texts)
            if images:
                entry["images"], images_seen = images, True
        entry["content"] = content or ""
        if msg.get("tool_calls"):
            entry["tool_calls"] = []
            for k, call in enumerate(msg["tool_calls"]):
                names[call["id"]] = call["function"]["name"]
                args = _arguments(call["function"]["arguments"], f"messages[{i}].tool_calls[{k}].function.arguments")
                entry["tool_calls"].append({"id": call["id"], "function": {"name": call["function"]["name"], "arguments": args}})
        if role == "tool":
            ident = msg.get("tool_call_id")
            if ident not in names:
                raise BadInput(f"messages[{i}]: a tool result must answer a tool call of an earlier assistant message "
                               f"(no call has id {ident!r})", f"messages[{i}].tool_call_id")  # fmt: skip
            entry |= {"tool_name": names[ident], "tool_call_id": ident}
        out.append(entry)
    return out, images_seen


def _inline_image(url: str, where: str) -> str:
    """The base64 data of a ``data:`` URL image (the router never fetches an image from elsewhere)."""
    head, sep, data = url.partition(",")
    if not url.startswith("data:") or not sep or not head.endswith(";base64"):
        raise BadInput(f"{where}: images must be inline base64 data URLs (data:image/png;base64,…); "
                       "the router does not fetch images from other addresses", where)  # fmt: skip
    try:
        base64.b64decode(data[:64].ljust(4 * -(-len(data[:64]) // 4), "="), validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(f"{where}: the image data is not base64", where) from None
    return data


def _arguments(text: str, where: str) -> dict[str, Any]:
    try:
        args = orjson.loads(text or "{}")
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"{where}: the arguments are not JSON ({exc})", where) from None
    if not isinstance(args, dict):
        raise BadInput(f"{where}: the arguments must be a JSON object", where)
    return args


def ollama_format(response_format: Mapping[str, Any] | None) -> Any:
    """OpenAI's ``response_format`` as Ollama's ``format`` (None: plain text)."""
    kind = (response_format or {}).get("type")
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        return response_format["json_schema"]["schema"]  # type: ignore[index]
    return None


def openai_tool_calls(calls: list[Any], *, ids: list[str]) -> list[dict[str, Any]]:
    """Ollama's tool calls as OpenAI's (arguments as JSON text); ``ids``: the ids given so far in
    this answer, extended here, so a call keeps the id it was first sent with."""
    out = []
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            continue
        ident = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else call_id()
        ids.append(ident)
        args = fn.get("arguments")
        text = args if isinstance(args, str) else orjson.dumps(args if args is not None else {}).decode()
        out.append({"id": ident, "type": "function", "function": {"name": str(fn.get("name") or ""), "arguments": text}})
    return out


# -- Ollama → OpenAI --------------------------------------------------------------------------------


def openai_messages(messages: Any) -> list[dict[str, Any]]:
    """Ollama chat messages as OpenAI's: images as data-URL parts, tool calls with ids and JSON-text
    arguments, a tool result's ``tool_call_id`` found from its ``tool_name`` (or its own id)."""
    if not isinstance(messages, list):
        raise BadInput("'messages' must be a list", "messages")
    out: list[dict[str, Any]] = []
    pending: list[tuple[str, str]] = []  # (id, name) of calls not answered yet
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise BadInput(f"messages[{i}] must be an object", f"messages[{i}]")
        role, content = m.get("role", "user"), m.get("content") or ""
        if m.get("images"):
            content = [{"type": "text", "text": content}] + [
                {"type": "image_url", "image_url": {"url": data_url(img)}} for img in m["images"]
            ]
        entry: dict[str, Any] = {"role": role, "content": content}
        if isinstance(m.get("tool_calls"), list) and m["tool_calls"]:
            calls, pending = [], []
            for k, call in enumerate(m["tool_calls"]):
                fn = call.get("function") if isinstance(call, dict) else None
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    raise BadInput(f"messages[{i}].tool_calls[{k}] must name a function", f"messages[{i}].tool_calls[{k}]")
                ident = str(call.get("id") or f"call_{i}_{k}")
                args = fn.get("arguments")
                text = args if isinstance(args, str) else orjson.dumps(args or {}).decode()
                calls.append({"id": ident, "type": "function", "function": {"name": fn["name"], "arguments": text}})
                pending.append((ident, fn["name"]))
            entry["tool_calls"] = calls
        if role == "tool":
            entry["tool_call_id"] = _answered(m, pending, i)
        out.append(entry)
    return out


def _answered(message: Mapping[str, Any], pending: list[tuple[str, str]], i: int) -> str:
    """The id of the call a tool result answers: its own ``tool_call_id``, else the first pending
    call of its ``tool_name``, else the first pending call."""
    ident, name = message.get("tool_call_id"), message.get("tool_name")
    for k, (pid, pname) in enumerate(pending):
        if (ident and pid == ident) or (not ident and (not name or pname == name)):
            del pending[k]
            return pid
    raise BadInput(f"messages[{i}]: a tool result must follow an assistant message whose tool calls it answers "
                   f"(no call {ident or name or ''} is waiting for one)", f"messages[{i}]")  # fmt: skip


def data_url(image: str) -> str:
    """An Ollama image (base64) as a data URL, its media type read from the first bytes."""
    try:
        head = base64.b64decode(image[:16])
    except (binascii.Error, ValueError):
        head = b""
    kind = next((t for magic, t in _IMAGE_TYPES if head.startswith(magic)), "image/png")
    return f"data:{kind};base64,{image}"


def openai_format(fmt: Any) -> dict[str, Any] | None:
    """Ollama's ``format`` as OpenAI's ``response_format``."""
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt}}
    raise BadInput("'format' must be \"json\" or a JSON schema object", "format")


def openai_sampling(options: Mapping[str, Any], client: Mapping[str, Any] | None, *, model: str) -> dict[str, Any]:
    """The OpenAI fields for merged Ollama ``options``. A client option with no OpenAI field is
    refused (a runner option is the upstream server's business, like keep_alive)."""
    for name in client or {}:
        if name not in OPENAI_FIELD and name not in RUNNER_OPTIONS:
            raise BadInput(f"options.{name} has no equivalent at the OpenAI-compatible upstream serving {model!r}; "
                           f"it takes {', '.join(sorted(OPENAI_FIELD))}", f"options.{name}")  # fmt: skip
    out = {OPENAI_FIELD[k]: v for k, v in options.items() if k in OPENAI_FIELD and v is not None}
    if isinstance(out.get("max_tokens"), int) and out["max_tokens"] < 0:  # Ollama's "no limit"
        del out["max_tokens"]
    return out


def ollama_tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI tool calls (JSON-text arguments) as Ollama's; ValueError when arguments are not a JSON object."""
    out = []
    for index, call in enumerate(calls):
        fn = call.get("function") or {}
        try:
            args = orjson.loads(fn.get("arguments") or "{}")
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"the upstream's tool call {fn.get('name')!r} has arguments that are not JSON ({exc})") from None
        if not isinstance(args, dict):
            raise ValueError(f"the upstream's tool call {fn.get('name')!r} has arguments that are not a JSON object")
        entry: dict[str, Any] = {"function": {"index": index, "name": fn.get("name") or "", "arguments": args}}
        if call.get("id"):
            entry["id"] = call["id"]
        out.append(entry)
    return out
