"""The outcome record: one finished router request, as the router writes it to the outcome stream
(Redis) and the performance monitor reads it. Field names are short: the router writes one per
request."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

#: The Redis stream outcome records go to, and the monitor's consumer group on it.
OUTCOME_STREAM = "llmtune:outcomes"
MONITOR_GROUP = "monitor"


class OutcomeRecord(BaseModel):
    key: str = Field(min_length=1, max_length=64, description="Unique to this record (the router's process and sequence).")
    at: float = Field(description="Unix time the request finished.")
    id: str = Field(description="The request id (x-request-id).")
    route: str | None = None
    model: str
    node: str
    variant: str | None = None
    status: Literal["ok", "error", "cancelled"]
    decision_us: float = Field(ge=0)
    ttft_ms: float = Field(ge=0, description="Time to the first byte of the answer.")
    total_ms: float = Field(ge=0)
    attempts: int = Field(ge=1)
    tokens: int | None = Field(default=None, ge=0, description="Generated tokens (Ollama's eval_count).")
    tokens_per_s: float | None = Field(default=None, ge=0)
    signals: list[str] = Field(
        default_factory=list, description="Automatic quality signals: empty, truncated, refusal, invalid_json."
    )
