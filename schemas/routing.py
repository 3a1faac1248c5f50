"""``POST /api/v1/route`` on the router: a request with routing hints, and the decision it returns."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.common import Int64, Name
from schemas.model import Capability
from schemas.route import Task


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # images, tool calls… pass through to Ollama

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""


class RouteRequest(BaseModel):
    """Messages (chat) or a prompt (completion), plus hints the policy uses."""

    model_config = ConfigDict(extra="forbid")

    messages: list[ChatMessage] | None = None
    prompt: str | None = None
    model: str | None = Field(default=None, description="An alias, a Model name or an Ollama tag; else routes match by hints.")
    route: str | None = Field(default=None, max_length=253, description="Use this route by name; matching is skipped.")
    task: Task | None = Field(default=None, description="Skip the classifier.")
    tags: list[str] = Field(default_factory=list)
    tenant: str | None = None
    capabilities: list[Capability] = Field(default_factory=list)
    max_latency_ms: float | None = Field(default=None, gt=0, description="Budget for the whole answer.")
    max_cost: float | None = Field(default=None, ge=0)
    sticky_key: str | None = Field(default=None, max_length=256)
    options: dict[str, Any] = Field(default_factory=dict, description="Ollama options for this request.")
    stream: bool = False
    dry_run: bool = Field(default=False, description="Decide and explain, send nothing upstream.")

    @model_validator(mode="after")
    def _one_input(self) -> RouteRequest:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give either 'messages' (chat) or 'prompt' (completion)")
        return self

    def text(self) -> str:
        return self.prompt if self.prompt is not None else "\n".join(m.content for m in self.messages or [])


class PlaygroundMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=100_000)


class PlaygroundChat(BaseModel):
    """A chat the web UI's playground sends through the router (``POST /api/v1/playground/chat``)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=253, pattern=r"^[^\x00-\x1f\x7f]+$",
                       description="An alias, a Model name or an Ollama tag, as a client sends it.")  # fmt: skip
    messages: list[PlaygroundMessage] = Field(min_length=1, max_length=200)
    route: Name | None = Field(default=None, description="Use this route by name (x-route-name).")
    options: dict[str, float | Int64 | str | bool] = Field(default_factory=dict, max_length=50, description="Ollama options.")
