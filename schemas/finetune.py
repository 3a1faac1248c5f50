"""Fine-tuning jobs (``POST /api/v1/fine-tune``) and their training data: rows of prompt/response
or chat messages, one JSON object per line (JSONL)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from schemas.common import Name


class Method(StrEnum):
    MODELFILE = "modelfile"  # a derived model: system prompt, few-shot messages and parameters (no GPU)
    LORA = "lora"  # a LoRA adapter trained with peft from a base checkpoint


class Message(BaseModel):
    model_config = {"extra": "forbid"}

    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1)


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

    @model_validator(mode="after")
    def _one_dataset(self) -> FineTuneRequest:
        if (self.dataset is None) == (self.dataset_id is None):
            raise ValueError("give the rows inline (dataset) or an uploaded dataset_id, one of the two")
        if self.output_model == self.base_model:
            raise ValueError("output_model must differ from base_model")
        return self
