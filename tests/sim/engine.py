"""The simulated Ollama node's state and behaviour, without HTTP: the model library, loaded
runners with keep_alive expiry, server settings read from OLLAMA_* at start, and fault injection.

Ollama semantics followed here (docs/api.md and the server's scheduler):
* names without a tag mean ``:latest``; pulling an unknown model fails with "file does not exist";
* a request loads the model (``load_duration``) unless a runner with the same load-time options
  (num_ctx, num_gpu, num_batch, num_thread, use_mmap, …) is loaded, otherwise it reloads;
* ``keep_alive`` is a Go duration or seconds: 0 unloads now, a negative value keeps it forever;
* OLLAMA_MAX_LOADED_MODELS evicts the least recently used runner; more than OLLAMA_NUM_PARALLEL
  running plus OLLAMA_MAX_QUEUE waiting requests get 503 "server busy".
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

VERSION = "0.12.6"
#: Options that shape the runner; a request asking for other values reloads the model.
LOAD_OPTIONS = ("num_ctx", "num_gpu", "num_batch", "num_thread", "use_mmap", "num_keep")
FOREVER = datetime(2318, 1, 1, tzinfo=UTC)
_DURATION = re.compile(r"(-?\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class OllamaError(Exception):
    """An error answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def normalize(name: str) -> str:
    name = name.strip()
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def keep_alive_seconds(value: Any, default: float) -> float:
    """Seconds to keep a runner; negative means forever. Accepts numbers and Go durations."""
    if value is None or value == "":
        return default
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.replace("+", ""):
        raise OllamaError(400, f'time: invalid duration "{text}"')
    sign = -1.0 if text.startswith("-") else 1.0
    return sign * sum(abs(float(n)) * _UNITS[u] for n, u in parts)


def _digest(*parts: object) -> str:
    return "sha256:" + hashlib.sha256(repr(parts).encode()).hexdigest()


@dataclass
class SimModel:
    name: str
    digest: str
    size: int
    family: str = "llama"
    parameter_size: str = "8B"
    quantization: str = "Q4_K_M"
    parent: str = ""
    system: str = ""
    template: str = "{{ .Prompt }}"
    parameters: dict[str, Any] = field(default_factory=dict)
    adapters: list[str] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    modified_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def embedding(self) -> bool:
        return "embed" in self.name or "bge" in self.name or "minilm" in self.name

    def details(self) -> dict[str, Any]:
        return {
            "parent_model": self.parent,
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization,
        }

    def capabilities(self) -> list[str]:
        return ["embedding"] if self.embedding else ["completion", "tools"]


@dataclass
class Runner:
    model: str
    options: dict[str, Any]
    expires_at: datetime
    size: int
    context_length: int
    last_used: float = field(default_factory=time.monotonic)


@dataclass
class Fault:
    """Fail requests to ``path``: ``status`` with ``message`` (``mid_stream``: after some progress)."""

    path: str
    status: int = 500
    message: str = "simulated failure"
    times: int = 1  # how many requests fail (-1: every one)
    after: int = 0  # let this many requests to ``path`` through first (a failure part-way through a batch)
    stall_s: float = 0.0  # wait this long first (a stalled node)
    mid_stream: bool = False
    drop_after: int | None = None  # generation: break the connection after this many tokens (a node dying mid-answer)
    pause_after: int | None = None  # generation: after this many tokens, send nothing for pause_s (a node stalling)
    pause_s: float = 0.0
    model: str | None = None  # only requests to this model fail (None: any)


@dataclass
class SimSettings:
    """Server settings Ollama reads at start (OLLAMA_*), plus the simulator's own timings."""

    num_parallel: int = 4
    max_queue: int = 512
    max_loaded_models: int = 3
    context_length: int = 4096
    flash_attention: bool = False
    kv_cache_type: str = "f16"
    keep_alive_s: float = 300.0
    token_s: float = 0.001  # per generated token
    load_s: float = 0.01  # per model load
    pull_s: float = 0.02  # per pull
    catalog: frozenset[str] | None = None  # pullable models (None: any name except 'missing*')
    openai_stream_usage: bool = True  # /v1 streams honour stream_options.include_usage (off: never send usage)
    quality: dict[str, dict[str, float]] = field(default_factory=dict)  # SIM_QUALITY: the judge's profile (json_answer)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SimSettings:
        def num(key: str, default: float) -> float:
            return float(env[key]) if env.get(key) else default

        catalog = env.get("SIM_CATALOG")
        return cls(
            num_parallel=int(num("OLLAMA_NUM_PARALLEL", 4)),
            max_queue=int(num("OLLAMA_MAX_QUEUE", 512)),
            max_loaded_models=int(num("OLLAMA_MAX_LOADED_MODELS", 3)),
            context_length=int(num("OLLAMA_CONTEXT_LENGTH", 4096)),
            flash_attention=env.get("OLLAMA_FLASH_ATTENTION", "0").lower() in ("1", "true"),
            kv_cache_type=env.get("OLLAMA_KV_CACHE_TYPE", "f16") or "f16",
            keep_alive_s=keep_alive_seconds(env.get("OLLAMA_KEEP_ALIVE") or None, 300.0),
            token_s=num("SIM_TOKEN_S", 0.001),
            load_s=num("SIM_LOAD_S", 0.01),
            pull_s=num("SIM_PULL_S", 0.02),
            catalog=frozenset(normalize(n) for n in catalog.split(",")) if catalog else None,
            openai_stream_usage=env.get("SIM_OPENAI_STREAM_USAGE", "1").lower() not in ("0", "false"),
            quality=json.loads(env["SIM_QUALITY"]) if env.get("SIM_QUALITY") else {},
        )


class Engine:
    """One simulated Ollama server's state. Methods raise OllamaError for Ollama's error answers."""

    def __init__(self, settings: SimSettings | None = None) -> None:
        self.settings = settings or SimSettings()
        self.models: dict[str, SimModel] = {}
        self.runners: dict[str, Runner] = {}
        self.blobs: dict[str, int] = {}
        self.faults: list[Fault] = []
        # model short name -> task -> the score a judge gives its answers (json_answer)
        self.quality: dict[str, dict[str, float]] = dict(self.settings.quality)
        # (method, path, model) of recent API requests, for tests (bounded: the demo runs for days)
        self.calls: collections.deque[tuple[str, str, str]] = collections.deque(maxlen=10_000)
        self.loads: collections.Counter[str] = collections.Counter()  # runners made, per model (a reload counts)
        self.traces: collections.deque[tuple[str, str, str]] = collections.deque(maxlen=1_000)  # (path, traceparent, tracestate)
        self.openai_requests: collections.deque[dict[str, Any]] = collections.deque(maxlen=20)  # bodies its /v1 API got
        self.last_request: dict[str, Any] = {}  # the body of the last generate/chat (for tests)
        self.last_options: dict[str, Any] = {}  # options of the last generate/chat, merged (for tests)
        self.running = 0
        self.waiting = 0
        self._slots = asyncio.Semaphore(self.settings.num_parallel)

    # -- library -----------------------------------------------------------------------------
    def get(self, name: str) -> SimModel:
        model = self.models.get(normalize(name))
        if model is None:
            raise OllamaError(404, f"model '{name}' not found")
        return model

    def pullable(self, name: str) -> bool:
        name = normalize(name)
        if self.settings.catalog is not None:
            return name in self.settings.catalog
        return not name.startswith("missing")

    def add_pulled(self, name: str) -> SimModel:
        name = normalize(name)
        size = 274_000_000 if "embed" in name else 4_900_000_000
        model = SimModel(name=name, digest=_digest("pull", name), size=size)
        self.models[name] = model
        return model

    def create(self, name: str, *, source: str, body: Mapping[str, Any]) -> SimModel:
        base = self.get(source)
        params = dict(base.parameters)
        params.update(body.get("parameters") or {})
        adapters = [str(d) for d in (body.get("adapters") or {}).values()]
        for digest in adapters:
            if digest not in self.blobs:
                raise OllamaError(400, f"adapter blob {digest} was not uploaded (POST /api/blobs/{digest})")
        model = SimModel(
            name=normalize(name),
            digest=_digest("create", base.digest, sorted(params.items()), body.get("system"), body.get("template"), adapters),
            size=base.size + sum(self.blobs[d] for d in adapters),
            family=base.family,
            parameter_size=base.parameter_size,
            quantization=str(body.get("quantize") or base.quantization),
            parent=base.name,
            system=str(body.get("system") if body.get("system") is not None else base.system),
            template=str(body.get("template") or base.template),
            parameters=params,
            adapters=adapters,
            messages=list(body.get("messages") or []),
        )
        old = self.models.get(model.name)
        if model.name in self.runners and (old is None or (old.parent, old.adapters) != (model.parent, model.adapters)):
            del self.runners[model.name]  # other weights behind the name: the runner is stale (as in Ollama)
        self.models[model.name] = model
        return model

    def delete(self, name: str) -> None:
        model = self.get(name)
        del self.models[model.name]
        self.runners.pop(model.name, None)

    def copy(self, source: str, destination: str) -> None:
        model = self.get(source)
        clone = SimModel(**{**model.__dict__, "name": normalize(destination)})
        self.models[clone.name] = clone

    # -- runners -----------------------------------------------------------------------------
    def expire(self) -> None:
        now = datetime.now(UTC)
        for name in [n for n, r in self.runners.items() if r.expires_at <= now]:
            del self.runners[name]

    def effective_options(self, model: SimModel, options: Mapping[str, Any] | None) -> dict[str, Any]:
        merged = {"num_ctx": self.settings.context_length, **model.parameters, **(options or {})}
        return merged

    async def load(self, model: SimModel, options: Mapping[str, Any], keep_alive: Any) -> int:
        """Make a runner for ``model`` with ``options``; returns load_duration in ns (0 when warm)."""
        self.expire()
        seconds = keep_alive_seconds(keep_alive, self.settings.keep_alive_s)
        wanted = {k: options[k] for k in LOAD_OPTIONS if k in options}
        runner = self.runners.get(model.name)
        started = time.perf_counter_ns()
        loaded = runner is None or runner.options != wanted
        if loaded:
            if runner is None and len(self.runners) >= self.settings.max_loaded_models:
                lru = min(self.runners.values(), key=lambda r: r.last_used)
                del self.runners[lru.model]
            await asyncio.sleep(self.settings.load_s)
            ctx = int(wanted.get("num_ctx", self.settings.context_length))
            runner = Runner(model.name, wanted, FOREVER, model.size + ctx * 131_072, ctx)
            self.runners[model.name] = runner
            self.loads[model.name] += 1
        runner.last_used = time.monotonic()
        self.touch(runner, seconds)
        return time.perf_counter_ns() - started if loaded else 0

    def touch(self, runner: Runner, seconds: float) -> None:
        if seconds == 0:
            self.runners.pop(runner.model, None)
        else:
            runner.expires_at = FOREVER if seconds < 0 else datetime.now(UTC) + timedelta(seconds=seconds)

    def unload(self, name: str) -> None:
        self.runners.pop(normalize(name), None)

    async def admit(self) -> None:
        """Wait for a request slot, or raise 503 when the queue is full (Ollama's OLLAMA_MAX_QUEUE)."""
        if self.waiting >= self.settings.max_queue:
            raise OllamaError(503, "server busy, please try again.  maximum pending requests exceeded")
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1

    def release(self) -> None:
        self.running -= 1
        self._slots.release()

    # -- faults ------------------------------------------------------------------------------
    def take_fault(self, path: str, model: str = "") -> Fault | None:
        for fault in self.faults:
            if fault.model is not None and normalize(fault.model) != normalize(model or "-"):
                continue
            if fault.path == path and fault.times != 0:
                if fault.after > 0:
                    fault.after -= 1
                    return None
                if fault.times > 0:
                    fault.times -= 1
                return fault
        return None


def embed_vector(text: str, dims: int = 64) -> list[float]:
    """A deterministic bag-of-words vector: each word adds its own dense pseudo-random direction,
    so texts sharing words get a high cosine similarity and unrelated texts one near zero."""
    vec = [0.0] * dims
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        raw = hashlib.shake_256(word.encode()).digest(dims)
        for i, byte in enumerate(raw):
            vec[i] += (byte - 127.5) / 127.5
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


_JUDGED = re.compile(r"Question:\n(?P<question>.*)\n\nAnswer:\n\[(?P<model>[^\]\s]+)\]", re.DOTALL)
_CODE_HINTS = ("```", "def ", "function", "python", "code", "sql", "class ", "compile", "regex")


def sim_task(text: str) -> str:
    """The simulator's own reading of a question's task for its quality profile: code or chat."""
    lowered = text.lower()
    return "code" if any(hint in lowered for hint in _CODE_HINTS) else "chat"


def json_answer(text: str, prompt: str, quality: Mapping[str, Mapping[str, float]] | None = None) -> str:
    """The answer to a request with ``format``: a JSON object with the words and a score in [0, 1]
    fixed by the prompt (so an LLM judge can be exercised against the simulator). A judge's prompt
    ("Question: ... Answer: [model] ...") about a model in the ``quality`` profile (model -> task ->
    score, ``*`` for any other task) is scored by the profile: the quality routing loop can be
    proven through the real judge path."""
    score = int(hashlib.sha256(prompt.encode()).hexdigest()[:4], 16) / 0xFFFF
    judged = _JUDGED.search(prompt) if quality else None
    if judged is not None and quality is not None:
        profile = quality.get(judged["model"])
        if profile is not None:
            task = sim_task(judged["question"])
            score = profile.get(task, profile.get("*", score))
    return json.dumps({"answer": text, "score": round(score, 3), "reason": "simulated"})


def answer_words(model: str, prompt: str, count: int) -> list[str]:
    """Deterministic output: the model's short name and the prompt's words, cycled."""
    words = re.findall(r"\S+", prompt) or ["ok"]
    base = [f"[{model.split(':')[0]}]", *words]
    return [base[i % len(base)] for i in range(count)]


_STRING_FORMATS = {"date-time": "2026-01-01T00:00:00Z", "date": "2026-01-01", "time": "00:00:00Z", "email": "user@example.com",
                   "uri": "https://example.com/", "uuid": "00000000-0000-4000-8000-000000000000"}  # fmt: skip


def example_of(schema: Any, *, root: Mapping[str, Any] | None = None, depth: int = 0) -> Any:
    """A deterministic value that validates against the JSON schema ``schema`` (the subset models
    are given: types, properties, items, enum, const, anyOf/oneOf/allOf, ``$ref`` into ``$defs``,
    bounds and lengths): what the simulator answers for a ``format`` schema or a tool's arguments."""
    if not isinstance(schema, Mapping) or depth > 16:
        return None
    root = root if root is not None else schema
    if isinstance(ref := schema.get("$ref"), str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, Mapping) else None
        return example_of(target, root=root, depth=depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return example_of(schema[key][0], root=root, depth=depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        props = schema.get("properties") or {}
        return {name: example_of(sub, root=root, depth=depth + 1) for name, sub in props.items()}
    if kind == "array":
        count = max(int(schema.get("minItems") or 0), 1 if schema.get("items") else 0)
        return [example_of(schema.get("items"), root=root, depth=depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0) + (1 if "exclusiveMinimum" in schema else 0))
        value = max(low, 1) if "maximum" not in schema else min(max(low, 1), schema["maximum"])
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    text = _STRING_FORMATS.get(str(schema.get("format")), "sample")
    text = text.ljust(int(schema.get("minLength") or 0), "x")
    return text[: int(schema["maxLength"])] if "maxLength" in schema else text


def tool_calls(tools: list[Any], prompt: str) -> list[dict[str, Any]]:
    """The calls the simulated model makes when given ``tools``: the first function, and every other
    one the prompt names (parallel calls), with arguments built from its parameters' schema
    (Ollama's shape: ``arguments`` an object, ``index`` its place in the answer)."""
    named = [t["function"] for t in tools if isinstance(t, Mapping) and isinstance(t.get("function"), Mapping)]
    named = [fn for fn in named if isinstance(fn.get("name"), str)]
    chosen = [fn for i, fn in enumerate(named) if i == 0 or fn["name"] in prompt]
    out = []
    for index, fn in enumerate(chosen):
        args = example_of(fn.get("parameters") or {"type": "object"})
        out.append({"function": {"index": index, "name": fn["name"], "arguments": args if isinstance(args, dict) else {}}})
    return out


def split_text(text: str, parts: int) -> list[str]:
    """``text`` in up to ``parts`` pieces (a JSON answer streamed as a model would, token by token)."""
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]
