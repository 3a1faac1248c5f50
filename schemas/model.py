"""The ``Model`` kind: an LLM the fleet serves, with its Ollama options and placement."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AnyHttpUrl, Field, SerializerFunctionWrapHandler, StringConstraints, model_serializer, model_validator

from schemas.common import INT_MAX, ConfigObject, Int64, LabelKey, LabelValue, Strict

#: Ollama model references: ``name``, ``name:tag`` or ``namespace/name:tag``.
OllamaTag = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*(:[A-Za-z0-9._-]+)?$", max_length=200)]
#: Ollama keep_alive: a Go duration ("5m", "1h30m", "-1") or seconds as an integer.
KeepAlive = Annotated[str, StringConstraints(pattern=r"^-?(\d+(\.\d+)?(ns|us|ms|s|m|h)?)+$")] | Int64


class Capability(StrEnum):
    CHAT = "chat"
    COMPLETION = "completion"
    EMBED = "embed"
    TOOLS = "tools"
    VISION = "vision"
    CODE = "code"
    JSON = "json"


class Provider(StrEnum):
    OLLAMA = "ollama"
    OPENAI = "openai"
    LOCAL = "local"  # an embedding model run inside the RAG engine (machines without one on the fleet)


#: Embedding models the RAG engine can run itself (``provider: local``), by the Ollama tag of the same model.
LOCAL_EMBEDDERS = ("all-minilm", "all-minilm:latest", "all-minilm:22m")


class OllamaOptions(Strict):
    """Ollama runtime ``options``; only documented names are accepted so that typos fail early."""

    num_ctx: int | None = Field(default=None, ge=128, le=2_097_152)
    num_predict: int | None = Field(default=None, ge=-2, le=INT_MAX)
    num_keep: int | None = Field(default=None, ge=0, le=INT_MAX)
    num_batch: int | None = Field(default=None, ge=1, le=INT_MAX)
    num_gpu: int | None = Field(default=None, ge=0, le=INT_MAX)
    num_thread: int | None = Field(default=None, ge=1, le=INT_MAX)
    temperature: float | None = Field(default=None, ge=0, le=5)
    top_k: int | None = Field(default=None, ge=0, le=INT_MAX)
    top_p: float | None = Field(default=None, ge=0, le=1)
    min_p: float | None = Field(default=None, ge=0, le=1)
    typical_p: float | None = Field(default=None, ge=0, le=1)
    repeat_penalty: float | None = Field(default=None, ge=0)
    repeat_last_n: int | None = Field(default=None, ge=-1, le=INT_MAX)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    mirostat: Literal[0, 1, 2] | None = None
    mirostat_tau: float | None = Field(default=None, ge=0)
    mirostat_eta: float | None = Field(default=None, ge=0)
    seed: Int64 | None = None
    stop: list[str] | None = None
    use_mmap: bool | None = None


#: Options Ollama applies when it loads a runner: a change means a reload (and a re-warm).
LOAD_OPTIONS = ("num_ctx", "num_gpu", "num_batch", "num_thread", "use_mmap", "num_keep")
#: Options a request may set unless its Model says otherwise: how it samples, and how long it answers.
SAMPLING_OPTIONS = (
    "temperature", "top_k", "top_p", "min_p", "typical_p", "repeat_penalty", "repeat_last_n", "presence_penalty",
    "frequency_penalty", "mirostat", "mirostat_tau", "mirostat_eta", "seed", "stop", "num_predict",
)  # fmt: skip
OptionName = Literal[
    "num_ctx", "num_predict", "num_keep", "num_batch", "num_gpu", "num_thread", "temperature", "top_k", "top_p",
    "min_p", "typical_p", "repeat_penalty", "repeat_last_n", "presence_penalty", "frequency_penalty", "mirostat",
    "mirostat_tau", "mirostat_eta", "seed", "stop", "use_mmap",
]  # fmt: skip
#: Request fields that are the operator's unless a Model lets clients set them.
ClientField = Literal["keep_alive", "system", "template", "raw"]


class OptionBound(Strict):
    """The range a client's value of one numeric option is clamped to."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> OptionBound:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) exceeds max ({self.max})")
        return self


class ClientPolicy(Strict):
    """What a request may set on this model; everything else is the operator's. An option or field
    a client may not set is dropped (or, with ``refuse``, answered 400); a value outside its bound
    is clamped to it; both are reported in the ``x-llmtune-overridden`` response header."""

    options: list[OptionName] = Field(
        default_factory=lambda: list(SAMPLING_OPTIONS),  # type: ignore[arg-type]
        description="Request options clients may set (default: the sampling options and num_predict; "
        "load-time options such as num_ctx and num_gpu are the operator's, and always are on an autoscaled model).",
    )
    bounds: dict[OptionName, OptionBound] = Field(
        default_factory=dict,
        description="Ranges client values are clamped to. num_predict is always bounded by the context window; "
        "a negative num_predict (no limit) becomes its maximum.",
    )
    fields: list[ClientField] = Field(
        default_factory=list,
        description="Request fields clients may set: keep_alive (load and evict; never on an autoscaled model), "
        "system and template (replace the operator's prompt; only governed where the Model sets them), raw (skip the template).",
    )
    refuse: bool = Field(default=False, description="Answer 400 instead of dropping what a client may not set.")

    @model_validator(mode="after")
    def _bounds_numeric(self) -> ClientPolicy:
        for name in self.bounds:
            if name in ("stop", "use_mmap"):
                raise ValueError(f"bounds.{name}: only numeric options have bounds")
        return self


class Message(Strict):
    """One turn of a conversation: a few-shot example baked into a derived model (``/api/create`` ``messages``)."""

    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1, max_length=100_000)


#: A content address: ``sha256:`` and 64 lowercase hex digits (Ollama's blob digests).
Digest = Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")]
#: The name of one file of an adapter, as Ollama's ``/api/create`` ``adapters`` map takes it.
FileName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=200)]


class Adapter(Strict):
    """A LoRA adapter applied on top of the base model (Ollama ``/api/create`` ``adapters``): files
    on the node (``path``), or files the control plane keeps (``files``, what fine-tuning makes)."""

    path: str | None = Field(
        default=None,
        min_length=1,
        description="Path on the node of a GGUF adapter file, or of a folder with adapter_config.json and "
        "adapter_model.safetensors (peft's output).",
    )
    files: dict[FileName, Digest] = Field(
        default_factory=dict,
        max_length=16,
        description="File name → digest of files kept by the control plane (GET /api/v1/artifacts/{digest}); "
        "agents fetch them, so no storage need be shared with the nodes.",
    )
    scale: float = Field(default=1.0, gt=0, le=10)

    @model_validator(mode="after")
    def _one_source(self) -> Adapter:
        if (self.path is None) == (not self.files):
            raise ValueError("an adapter has either 'path' (on the node) or 'files' (kept by the control plane), not both")
        return self


class Placement(Strict):
    """Where and how many copies of the model should be loaded."""

    node_selector: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    node_pool: str | None = Field(default=None, description="Name of a NodePool the model is placed on.")
    min_replicas: int = Field(default=1, ge=0, le=1000)
    max_replicas: int = Field(default=1, ge=1, le=1000)
    preload: bool = Field(default=True, description="Load into memory ahead of traffic (keep_alive warm-up).")
    autoscale: bool = Field(
        default=False,
        description="The autoscaler chooses how many matching nodes hold it (min_replicas to max_replicas) by load; "
        "without it, every matching node holds it.",
    )
    memory_bytes: int | None = Field(
        default=None, ge=0, le=INT_MAX,
        description="Memory to book for it before any node has loaded it (after that, the size Ollama reports).",
    )  # fmt: skip

    @model_serializer(mode="wrap")
    def _without_off_autoscale(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """``autoscale`` is written only when on: a Model that does not use it reads the same to
        routers and agents that predate it (a rolling upgrade, a benchmark's baseline)."""
        data: dict[str, Any] = handler(self)
        if not self.autoscale:
            data.pop("autoscale", None)
        return data

    @model_validator(mode="after")
    def _bounds(self) -> Placement:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})")
        return self


class ModelSpec(Strict):
    provider: Provider = Provider.OLLAMA
    ollama_tag: OllamaTag = Field(description="Tag the node serves, e.g. 'llama3.1:8b'.")
    base: OllamaTag | None = Field(
        default=None,
        description="Model to derive from with /api/create when system prompt, template, adapters or options are set.",
    )
    endpoint: AnyHttpUrl | None = Field(default=None, description="Base URL of a static OpenAI-compatible upstream.")
    capabilities: list[Capability] = Field(min_length=1)
    context_window: int = Field(ge=128, le=10_000_000, description="Maximum tokens of prompt plus answer.")
    cost: float = Field(default=1.0, ge=0, description="Relative cost per token (1.0 = reference).")
    quality_tier: int = Field(default=3, ge=1, le=5, description="1 = lowest, 5 = best.")
    options: OllamaOptions = Field(default_factory=OllamaOptions)
    keep_alive: KeepAlive = "5m"
    system_prompt: str | None = Field(default=None, max_length=100_000)
    template: str | None = Field(default=None, max_length=100_000)
    adapters: list[Adapter] = Field(default_factory=list)
    messages: list[Message] = Field(
        default_factory=list, max_length=200, description="Few-shot turns a derived model starts every conversation with."
    )
    placement: Placement = Field(default_factory=Placement)
    client: ClientPolicy = Field(default_factory=ClientPolicy, description="What requests may set and override.")

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        if self.provider is Provider.OPENAI and self.endpoint is None:
            raise ValueError("provider 'openai' needs an endpoint URL")
        if self.provider is Provider.LOCAL:
            if self.capabilities != [Capability.EMBED]:
                raise ValueError("provider 'local' runs embedding models only: capabilities must be ['embed']")
            if self.ollama_tag not in LOCAL_EMBEDDERS:
                raise ValueError(f"provider 'local' has no model '{self.ollama_tag}'; it runs {', '.join(LOCAL_EMBEDDERS)}")
        if self.options.num_ctx is not None and self.options.num_ctx > self.context_window:
            raise ValueError(f"options.num_ctx ({self.options.num_ctx}) exceeds context_window ({self.context_window})")
        if self.messages and self.base is None:
            raise ValueError("messages are baked into a derived model by /api/create: set base")
        if len(set(self.capabilities)) != len(self.capabilities):
            raise ValueError("capabilities lists an entry twice")
        return self


class Model(ConfigObject):
    """An LLM (or embedding model) that the fleet serves."""

    plural: ClassVar[str] = "models"
    kind: Literal["Model"] = "Model"
    spec: ModelSpec
