"""Ollama's REST API over the simulator engine (Starlette), plus ``/sim/*`` control endpoints.

Request and answer shapes follow Ollama's docs/api.md: streamed NDJSON by default for pull,
create, generate and chat (``"stream": false`` for one JSON object), errors as ``{"error": …}``
with the HTTP status Ollama uses, and an ``{"error": …}`` line when a stream fails midway.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.sim.engine import (
    VERSION,
    Engine,
    Fault,
    OllamaError,
    SimModel,
    answer_words,
    embed_vector,
    example_of,
    json_answer,
    keep_alive_seconds,
    split_text,
    tool_calls,
)
from tests.sim.openai_compat import OpenAICompat

NATURAL_TOKENS = 12  # answer length when num_predict does not cut it short
Handler = Callable[[Request], Awaitable[Response]]


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _ndjson(lines: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        try:
            async for line in lines:
                yield orjson.dumps(line) + b"\n"
        except OllamaError as exc:
            yield orjson.dumps({"error": str(exc)}) + b"\n"

    return StreamingResponse(body(), media_type="application/x-ndjson")


async def _last(lines: AsyncIterator[dict[str, Any]]) -> JSONResponse:
    """The non-streaming answer: the final object of the stream (an error → its status)."""
    final: dict[str, Any] = {}
    async for line in lines:
        final = line
    return JSONResponse(final)


class NodeDied(Exception):
    """Raised inside an answer's stream: uvicorn then breaks the connection, as a dying node would."""


class SimApp:
    """Builds the Starlette app for one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _endpoint(self, path: str, fn: Callable[[dict[str, Any]], Awaitable[Response]]) -> Handler:
        async def handler(request: Request) -> Response:
            try:
                body: dict[str, Any] = orjson.loads(await request.body() or b"{}") if request.method != "GET" else {}
            except orjson.JSONDecodeError:
                return _error(400, "invalid character in request body")
            model = str(body.get("model") or body.get("name") or "")
            self.engine.calls.append((request.method, path, model))
            if "traceparent" in request.headers:  # the W3C trace context a caller propagated (tests read it)
                self.engine.traces.append((path, request.headers["traceparent"], request.headers.get("tracestate", "")))
            fault = self.engine.take_fault(path, model)
            if fault is not None:
                await asyncio.sleep(fault.stall_s)
                if not fault.mid_stream and fault.drop_after is None and fault.pause_after is None:
                    return _error(fault.status, fault.message)
                body["_fault"] = fault
            try:
                return await fn(body)
            except OllamaError as exc:
                return _error(exc.status, str(exc))

        return handler

    @staticmethod
    async def _stream(body: dict[str, Any], lines: AsyncIterator[dict[str, Any]]) -> Response:
        """Streamed NDJSON unless the request says ``"stream": false`` (then the final object)."""
        return _ndjson(lines) if body.get("stream", True) else await _last(lines)

    # -- library -----------------------------------------------------------------------------
    async def version(self, _b: dict[str, Any]) -> Response:
        return JSONResponse({"version": VERSION})

    async def tags(self, _b: dict[str, Any]) -> Response:
        models = [
            {"name": m.name, "model": m.name, "modified_at": m.modified_at.isoformat(), "size": m.size,
             "digest": m.digest.removeprefix("sha256:"), "details": m.details()}
            for m in sorted(self.engine.models.values(), key=lambda m: m.name)
        ]  # fmt: skip
        return JSONResponse({"models": models})

    async def ps(self, _b: dict[str, Any]) -> Response:
        self.engine.expire()
        out = []
        for r in self.engine.runners.values():
            m = self.engine.models.get(r.model)
            out.append({
                "name": r.model, "model": r.model, "size": r.size, "size_vram": r.size,
                "digest": m.digest.removeprefix("sha256:") if m else "", "details": m.details() if m else {},
                "expires_at": r.expires_at.isoformat(), "context_length": r.context_length,
            })  # fmt: skip
        return JSONResponse({"models": out})

    async def show(self, body: dict[str, Any]) -> Response:
        m = self.engine.get(str(body.get("model") or body.get("name") or ""))
        params = "\n".join(f"{k:<30} {_param(v)}" for k, vs in sorted(m.parameters.items()) for v in _values(vs))
        modelfile = f'# Modelfile generated by "ollama show"\nFROM {m.parent or m.name}\nTEMPLATE """{m.template}"""\n'
        if m.system:
            modelfile += f'SYSTEM """{m.system}"""\n'
        modelfile += "".join(f"PARAMETER {line}\n" for line in params.splitlines())
        modelfile += "".join(f"ADAPTER /root/.ollama/models/blobs/{d.replace(':', '-')}\n" for d in m.adapters)
        modelfile += "".join(f"MESSAGE {msg.get('role')} {msg.get('content')}\n" for msg in m.messages)  # as Ollama prints them
        return JSONResponse({
            "modelfile": modelfile, "parameters": params, "template": m.template, "system": m.system,
            "details": m.details(), "model_info": {"general.architecture": m.family, f"{m.family}.context_length": 131072},
            "capabilities": m.capabilities(), "modified_at": m.modified_at.isoformat(), "license": "",
        })  # fmt: skip

    async def pull(self, body: dict[str, Any]) -> Response:
        name = str(body.get("model") or body.get("name") or "")
        if not name:
            raise OllamaError(400, "model is required")
        fault: Fault | None = body.get("_fault")

        async def lines() -> AsyncIterator[dict[str, Any]]:
            yield {"status": "pulling manifest"}
            if not self.engine.pullable(name):
                raise OllamaError(500, "pull model manifest: file does not exist")
            total, digest = 4_900_000_000, "sha256:" + hashlib.sha256(name.encode()).hexdigest()
            for step in range(1, 5):
                await asyncio.sleep(self.engine.settings.pull_s / 4)
                if fault is not None and step == 3:
                    raise OllamaError(fault.status, fault.message)
                yield {"status": f"pulling {digest[7:19]}", "digest": digest, "total": total, "completed": total * step // 4}
            self.engine.add_pulled(name)
            for status in ("verifying sha256 digest", "writing manifest", "success"):
                yield {"status": status}

        if not body.get("stream", True):
            return await _pull_once(lines())
        return _ndjson(lines())

    async def create(self, body: dict[str, Any]) -> Response:
        name, source = str(body.get("model") or body.get("name") or ""), body.get("from")
        if not name:
            raise OllamaError(400, "model is required")
        if not source:
            raise OllamaError(400, "neither 'from' or 'files' was specified")
        self.engine.get(str(source))  # 404 before streaming starts, like Ollama

        async def lines() -> AsyncIterator[dict[str, Any]]:
            yield {"status": "using existing layer sha256:" + "0" * 64}
            self.engine.create(name, source=str(source), body=body)
            yield {"status": "writing manifest"}
            yield {"status": "success"}

        return await self._stream(body, lines())

    async def copy(self, body: dict[str, Any]) -> Response:
        self.engine.copy(str(body.get("source", "")), str(body.get("destination", "")))
        return Response(status_code=200)

    async def delete(self, body: dict[str, Any]) -> Response:
        self.engine.delete(str(body.get("model") or body.get("name") or ""))
        return Response(status_code=200)

    async def blob(self, request: Request) -> Response:
        digest = request.path_params["digest"]
        self.engine.calls.append((request.method, "/api/blobs", digest))
        if request.method == "HEAD":
            return Response(status_code=200 if digest in self.engine.blobs else 404)
        data = await request.body()
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            return _error(400, "digest mismatch")
        self.engine.blobs[digest] = len(data)
        return Response(status_code=201)

    # -- inference ---------------------------------------------------------------------------
    async def generate(self, body: dict[str, Any]) -> Response:
        return await self._infer(body, prompt=str(body.get("prompt") or ""), chat=False)

    async def chat(self, body: dict[str, Any]) -> Response:
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        prompt = " ".join(str(m.get("content") or "") for m in messages)
        last = messages[-1] if messages else {}
        # after a tool's result the model answers from it; before, given tools, it calls the first one
        wanted = isinstance(body.get("tools"), list) and last.get("role") != "tool"
        calls = tool_calls(body["tools"], str(last.get("content") or "")) if wanted else []
        said = str(last.get("content") or "") if last.get("role") == "tool" else prompt
        return await self._infer(body, prompt=prompt, chat=True, empty=not body.get("messages"), said=said, calls=calls)

    async def _infer(
        self, body: dict[str, Any], *, prompt: str, chat: bool, empty: bool | None = None, said: str | None = None,
        calls: list[dict[str, Any]] | None = None,
    ) -> Response:  # fmt: skip
        eng, started = self.engine, time.perf_counter_ns()
        model = eng.get(str(body.get("model") or ""))
        if model.embedding:
            raise OllamaError(400, f'"{model.name}" does not support {"chat" if chat else "generate"}')
        options = eng.effective_options(model, body.get("options"))
        eng.last_options, eng.last_request = options, {k: v for k, v in body.items() if k != "_fault"}
        keep_alive = body.get("keep_alive")
        if prompt == "" if empty is None else empty:
            return JSONResponse(await self._load_only(model, options, keep_alive, chat=chat))
        await eng.admit()
        try:
            load_ns = await eng.load(model, options, keep_alive)
        except BaseException:
            eng.release()
            raise
        limit = int(options.get("num_predict", -1))
        count = NATURAL_TOKENS if limit < 0 else min(limit, NATURAL_TOKENS)
        words = answer_words(model.name, prompt if said is None else said, count)
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]  # streamed pieces join into the whole answer
        cut, fmt = pieces, body.get("format")  # only plain text is cut short by num_predict
        if calls:  # tool calls: no text, the calls in one piece (as Ollama's tool parser sends them)
            pieces, count = [], max(1, len(orjson.dumps([c["function"]["arguments"] for c in calls])) // 4)
        elif isinstance(fmt, dict):  # structured output: an object that validates against the schema
            pieces = split_text(orjson.dumps(example_of(fmt)).decode(), 4)
            count = len(pieces)
        elif fmt:  # format "json": one JSON object
            pieces = [json_answer(" ".join(words), prompt, eng.quality)]
        prompt_tokens = len(prompt.split()) + len(model.system.split()) + 1

        fault: Fault | None = body.get("_fault")

        async def lines() -> AsyncIterator[dict[str, Any]]:
            try:
                for i, piece in enumerate(pieces):
                    if fault is not None and fault.drop_after == i:
                        raise NodeDied("simulated node death mid-answer")  # the server drops the connection
                    if fault is not None and fault.pause_after == i:
                        await asyncio.sleep(fault.pause_s)
                    await asyncio.sleep(eng.settings.token_s)
                    yield _piece(model.name, piece, chat=chat)
                if calls and body.get("stream", True):
                    await asyncio.sleep(eng.settings.token_s * count)
                    message = {"role": "assistant", "content": "", "tool_calls": calls}
                    yield _piece(model.name, "", chat=chat) | {"message": message}
            finally:
                eng.release()
            total = time.perf_counter_ns() - started
            final = _piece(model.name, "", chat=chat) | {
                "done": True, "done_reason": "length" if count == limit and pieces == cut else "stop",
                "total_duration": total, "load_duration": load_ns, "prompt_eval_count": prompt_tokens,
                "prompt_eval_duration": 1_000_000, "eval_count": count, "eval_duration": max(total - load_ns, 1),
            }  # fmt: skip
            if not body.get("stream", True):
                text = "".join(pieces)
                final[("message" if chat else "response")] = {"role": "assistant", "content": text} if chat else text
                if calls:
                    final["message"]["tool_calls"] = calls
            yield final

        return await self._stream(body, lines())

    async def _load_only(self, model: SimModel, options: dict[str, Any], keep_alive: Any, *, chat: bool) -> dict[str, Any]:
        seconds = keep_alive_seconds(keep_alive, self.engine.settings.keep_alive_s)
        if seconds == 0:
            self.engine.unload(model.name)
            reason = "unload"
        else:
            await self.engine.load(model, options, keep_alive)
            reason = "load"
        return _piece(model.name, "", chat=chat) | {"done": True, "done_reason": reason}

    async def embed(self, body: dict[str, Any]) -> Response:
        model = self.engine.get(str(body.get("model") or ""))
        raw = body.get("input", "")
        inputs = [raw] if isinstance(raw, str) else [str(x) for x in raw]
        started = time.perf_counter_ns()
        load_ns = await self.engine.load(model, self.engine.effective_options(model, body.get("options")), body.get("keep_alive"))
        vectors = [embed_vector(text, int(body.get("dimensions") or 64)) for text in inputs]
        return JSONResponse({
            "model": model.name, "embeddings": vectors, "total_duration": time.perf_counter_ns() - started,
            "load_duration": load_ns, "prompt_eval_count": sum(len(t.split()) for t in inputs),
        })  # fmt: skip

    async def embeddings(self, body: dict[str, Any]) -> Response:
        model = self.engine.get(str(body.get("model") or ""))
        await self.engine.load(model, self.engine.effective_options(model, body.get("options")), body.get("keep_alive"))
        return JSONResponse({"embedding": embed_vector(str(body.get("prompt", "")))})

    # -- simulator control -------------------------------------------------------------------
    async def sim_state(self, _b: dict[str, Any]) -> Response:
        s = self.engine.settings
        return JSONResponse({
            "settings": {"num_parallel": s.num_parallel, "max_queue": s.max_queue, "max_loaded_models": s.max_loaded_models,
                         "context_length": s.context_length, "flash_attention": s.flash_attention,
                         "kv_cache_type": s.kv_cache_type},
            "models": sorted(self.engine.models), "loaded": sorted(self.engine.runners),
            "running": self.engine.running, "waiting": self.engine.waiting,
        })  # fmt: skip

    async def sim_calls(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.engine.calls.clear()
            return Response(status_code=204)
        return JSONResponse([list(c) for c in self.engine.calls])

    async def sim_quality(self, request: Request) -> Response:
        """The judge's quality profile: GET it, PUT a new one (model -> task -> score), DELETE it."""
        if request.method == "PUT":
            given = orjson.loads(await request.body())
            self.engine.quality = {str(m): {str(t): float(s) for t, s in p.items()} for m, p in given.items()}
        elif request.method == "DELETE":
            self.engine.quality = {}
        return JSONResponse(self.engine.quality)

    async def sim_faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.engine.faults.clear()
        else:
            self.engine.faults.append(Fault(**orjson.loads(await request.body())))
        return Response(status_code=204)

    def build(self) -> Starlette:
        api = {
            "/api/version": (self.version, ["GET", "HEAD"]), "/api/tags": (self.tags, ["GET"]),
            "/api/ps": (self.ps, ["GET"]), "/api/show": (self.show, ["POST"]), "/api/pull": (self.pull, ["POST"]),
            "/api/create": (self.create, ["POST"]), "/api/copy": (self.copy, ["POST"]),
            "/api/delete": (self.delete, ["DELETE"]), "/api/generate": (self.generate, ["POST"]),
            "/api/chat": (self.chat, ["POST"]), "/api/embed": (self.embed, ["POST"]),
            "/api/embeddings": (self.embeddings, ["POST"]), "/sim/state": (self.sim_state, ["GET"]),
        }  # fmt: skip
        compat = OpenAICompat(
            chat=self.chat, generate=self.generate, embed=self.embed, models=lambda: sorted(self.engine.models),
            stream_usage=lambda: self.engine.settings.openai_stream_usage, seen=self.engine.openai_requests,
        )  # fmt: skip
        api |= {
            "/v1/chat/completions": (lambda b: compat.completions(b, chat=True), ["POST"]),
            "/v1/completions": (lambda b: compat.completions(b, chat=False), ["POST"]),
            "/v1/embeddings": (compat.embeddings, ["POST"]), "/v1/models": (compat.models, ["GET"]),
        }  # fmt: skip
        routes = [Route(path, self._endpoint(path, fn), methods=methods) for path, (fn, methods) in api.items()]
        routes += [
            Route("/", lambda _r: PlainTextResponse("Ollama is running"), methods=["GET", "HEAD"]),
            Route("/api/blobs/{digest}", self.blob, methods=["HEAD", "POST"]),
            Route("/sim/calls", self.sim_calls, methods=["GET", "DELETE"]),
            Route("/sim/faults", self.sim_faults, methods=["POST", "DELETE"]),
            Route("/sim/quality", self.sim_quality, methods=["GET", "PUT", "DELETE"]),
        ]
        return Starlette(routes=routes)


def _values(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _param(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)


def _piece(model: str, text: str, *, chat: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"model": model, "created_at": _now(), "done": False}
    if chat:
        out["message"] = {"role": "assistant", "content": text}
    else:
        out["response"] = text
    return out


async def _pull_once(lines: AsyncIterator[dict[str, Any]]) -> Response:
    try:
        return await _last(lines)
    except OllamaError as exc:
        return _error(exc.status, str(exc))


def create_app(engine: Engine | None = None) -> Starlette:
    return SimApp(engine or Engine()).build()
