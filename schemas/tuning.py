"""``PUT /api/v1/tune``: a live tuning patch for one model or the models a label selector picks."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from schemas.common import LabelKey, LabelValue, Name, Strict
from schemas.model import KeepAlive, OllamaOptions

#: Fields of a Model's spec a tune may change (besides ``options.*``).
TUNABLE = ("keep_alive", "system_prompt")


class TuneRequest(Strict):
    """Options are Ollama's runtime options: unknown names and out-of-range values are rejected."""

    model: Name | None = Field(default=None, description="The Model to tune.")
    selector: dict[LabelKey, LabelValue] | None = Field(
        default=None, description="Tune every Model whose labels match (instead of one model)."
    )
    options: OllamaOptions = Field(default_factory=OllamaOptions)
    keep_alive: KeepAlive | None = None
    system_prompt: str | None = Field(default=None, max_length=100_000)
    unset: list[str] = Field(
        default_factory=list, description="Settings to remove: option names (e.g. 'top_p') or 'system_prompt'."
    )
    message: str = Field(default="", max_length=1000, description="Audit message.")

    @model_validator(mode="after")
    def _target_and_change(self) -> TuneRequest:
        if (self.model is None) == (self.selector is None):
            raise ValueError("name exactly one target: 'model' or 'selector'")
        if self.selector == {}:
            raise ValueError("an empty selector would tune every model; name the labels to match")
        unknown = [u for u in self.unset if u not in OllamaOptions.model_fields and u != "system_prompt"]
        if unknown:
            raise ValueError(f"cannot unset {unknown}: name Ollama options or 'system_prompt'")
        if not self.changes() and not self.unset:
            raise ValueError("the patch changes nothing: set options, keep_alive or system_prompt, or unset something")
        both = set(self.unset) & set(self.changes().get("options", {}))
        if both:
            raise ValueError(f"{sorted(both)} both set and unset")
        return self

    def changes(self) -> dict[str, Any]:
        """The set fields as a partial Model spec."""
        out: dict[str, Any] = {}
        options = self.options.model_dump(exclude_none=True)
        if options:
            out["options"] = options
        for name in TUNABLE:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out
