"""Fine-tuning jobs (``POST /api/v1/fine-tune``) and their training data: rows of prompt/response
or chat messages, one JSON object per line (JSONL)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.common import INT_MAX, Int64, Name
from schemas.model import Message, OllamaOptions

#: Label of a Model (and experiment) a fine-tuning job registered: the job's id.
JOB_LABEL = "llmtune.dev/finetune-job"


class Method(StrEnum):
    MODELFILE = "modelfile"  # a derived model: system prompt, few-shot messages and parameters (no GPU)
    LORA = "lora"  # a LoRA adapter trained with peft from a base checkpoint


class Example(BaseModel):
    """One training row: ``prompt`` and ``response``, or ``messages`` ending with the assistant's turn."""

    model_config = {"extra": "forbid"}

    prompt: str | None = None
    response: str | None = None
    messages: list[Message] | None = None

    @model_validator(mode="after")
    def _shape(self) -> Example:
        if self.messages is not None:
            if self.prompt is not None or self.response is not None:
                raise ValueError("a row has either messages or prompt and response, not both")
            if len(self.messages) < 2 or self.messages[-1].role != "assistant":
                raise ValueError("messages need a user turn and end with the assistant's answer")
            if not any(m.role == "user" for m in self.messages):
                raise ValueError("messages need at least one user turn")
            return self
        if not (self.prompt or "").strip() or not (self.response or "").strip():
            raise ValueError("a row needs a non-empty prompt and response (or messages)")
        return self

    def as_messages(self) -> list[Message]:
        if self.messages is not None:
            return self.messages
        return [Message(role="user", content=self.prompt or ""), Message(role="assistant", content=self.response or "")]


class ModelfileParams(BaseModel):
    """Hyperparameters of ``method: modelfile``: a derived model, no training."""

    model_config = {"extra": "forbid"}

    system_prompt: str | None = Field(
        default=None, max_length=100_000, description="Default: the system turn the dataset's rows share, else the base's."
    )
    few_shot: int = Field(default=3, ge=0, le=50, description="Rows baked in as example turns.")
    max_few_shot_chars: int = Field(default=8_000, ge=0, le=200_000, description="Budget of the example turns, in characters.")
    parameters: OllamaOptions = Field(default_factory=OllamaOptions, description="Options set over the base's.")


class LoraParams(BaseModel):
    """Hyperparameters of ``method: lora``: peft LoRA on a Hugging Face checkpoint of the base model."""

    model_config = {"extra": "forbid"}

    base_checkpoint: str = Field(min_length=1, description="Folder (on the worker) of the base model's HF checkpoint.")
    adapter_path: str | None = Field(
        default=None,
        description="A path where the agents find the adapter on their nodes (storage you share); by default the "
        "control plane keeps the adapter's files and the agents fetch them from it.",
    )
    rank: int = Field(default=8, ge=1, le=256)
    alpha: int = Field(default=16, ge=1, le=1024)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        default=None, description="Layers that get adapters: names, 'all-linear', or default peft's choice for the architecture."
    )
    epochs: int = Field(default=1, ge=1, le=100)
    max_steps: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Optimiser steps (cycling over the rows); overrides epochs."
    )
    learning_rate: float = Field(default=2e-4, gt=0, le=1)
    batch_size: int = Field(default=4, ge=1, le=1024)
    max_length: int = Field(default=512, ge=8, le=131_072, description="Tokens per row; longer rows are cut.")
    eval_fraction: float = Field(
        default=0.0, ge=0, le=0.5,
        description="Share of the rows held out from training (at least one when above 0): their loss, before, during "
        "and after training, is the job's eval_loss curve.",
    )  # fmt: skip
    seed: Int64 = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    REGISTERING = "registering"  # trained; the control plane writes the Model (and experiment)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class FineTuneRequest(BaseModel):
    model_config = {"extra": "forbid"}

    job_id: Name | None = Field(default=None, description="Resubmitting the same id returns the same job (idempotent).")
    base_model: Name = Field(description="A Model object to derive from.")
    method: Method = Method.MODELFILE
    dataset: str | None = Field(default=None, description="Inline JSONL: one row per line.")
    dataset_id: str | None = Field(default=None, description="An uploaded dataset instead of inline rows.")
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    output_model: Name = Field(description="The Model object the job creates.")
    auto_experiment: bool = Field(default=False, description="Start an A/B test of the new model against the base.")
    experiment_share: float = Field(default=0.1, gt=0, lt=1, description="Traffic share of the new model in that test.")

    @model_validator(mode="after")
    def _one_dataset(self) -> FineTuneRequest:
        if (self.dataset is None) == (self.dataset_id is None):
            raise ValueError("give the rows inline (dataset) or an uploaded dataset_id, one of the two")
        if self.output_model == self.base_model:
            raise ValueError("output_model must differ from base_model")
        return self

    def params(self) -> ModelfileParams | LoraParams:
        """The hyperparameters checked for the method (raises pydantic's ValidationError)."""
        cls = ModelfileParams if self.method is Method.MODELFILE else LoraParams
        return cls.model_validate(self.hyperparameters)


class DatasetInfo(BaseModel):
    id: str
    rows: Int64
    bytes: Int64


#: One point of a training curve: (step, value).
CurvePoint = tuple[Int64, float]


class JobMetrics(BaseModel):
    """What a run reported: its curves, and for a modelfile job what was derived (other keys)."""

    model_config = ConfigDict(extra="allow")

    loss: list[CurvePoint] = Field(default_factory=list, description="Training loss by step (at most 1,000 points).")
    eval_loss: list[CurvePoint] = Field(default_factory=list, description="Held-out loss by step.")


class FineTuneJob(BaseModel):
    """A job as the API shows it."""

    id: str
    state: JobState
    method: Method
    base_model: str
    output_model: str
    auto_experiment: bool
    dataset: DatasetInfo
    hyperparameters: dict[str, Any]
    progress: float = Field(description="0 to 1.")
    attempt: Int64 = Field(description="1, then one more each time a lost worker's job is queued again.")
    cancel_requested: bool
    worker: str | None
    error: str | None
    metrics: JobMetrics = Field(description="loss: [[step, loss], ...] for lora; what was derived for modelfile.")
    model_revision: Int64 | None = Field(description="Configuration revision that registered the model.")
    experiment: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class LogLine(BaseModel):
    """One line of a job's log (the worker's, kept after the job ends or fails)."""

    id: int = Field(ge=1, le=INT_MAX, description="Increasing; pass as 'after' (or Last-Event-ID) to read on.")
    attempt: int = Field(ge=0, le=INT_MAX)
    at: float = Field(description="Unix time.")
    level: str
    message: str
