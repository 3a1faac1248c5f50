"""What a client may set on a model: a request's options and the operator's fields (``keep_alive``,
``system``, ``template``, ``raw``) as each Model's client policy lets them through — dropped,
clamped to a bound, or refused — and the report of it that goes back in ``x-llmtune-overridden``.

The rules are compiled once per table (``ClientRules.of``); a request's view of them (``ClientView``)
is worked out at most once per candidate model, and not at all for a request that sets nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from schemas.model import LOAD_OPTIONS, Capability, ModelSpec

#: The request fields a Model's policy governs (see ``ClientPolicy.fields``).
GOVERNED = ("keep_alive", "system", "template", "raw")
HEADER = "x-llmtune-overridden"


@dataclass(frozen=True, slots=True)
class ClientRules:
    """One Model's client policy, ready for the request path."""

    options: frozenset[str]  # options clients may set
    bounds: Mapping[str, tuple[float, float]]  # option -> (lowest, highest) a client value is clamped to
    fields: frozenset[str]  # governed fields kept from clients (the rest of GOVERNED pass)
    refuse: bool  # answer 400 rather than drop or clamp

    @classmethod
    def of(cls, spec: ModelSpec) -> ClientRules:
        policy = spec.client
        bounds: dict[str, tuple[float, float]] = {
            name: (-math.inf if b.min is None else b.min, math.inf if b.max is None else b.max)
            for name, b in policy.bounds.items()
        }
        low, high = bounds.get("num_predict", (0, math.inf))
        bounds["num_predict"] = (max(low, 0), min(high, spec.context_window))  # never more than the window holds
        kept = {"keep_alive", "raw"}  # these act on every client of the model (load/evict, skip the template)
        if spec.system_prompt is not None:
            kept.add("system")  # only an operator's prompt is protected; without one there is nothing to replace
        if spec.template is not None:
            kept.add("template")
        fields, options = kept - set(policy.fields), set(policy.options)
        if spec.placement.autoscale:  # the autoscaler loaded it as placed: a client may neither reload nor evict it
            fields.add("keep_alive")
            options -= set(LOAD_OPTIONS)
        return cls(frozenset(options), MappingProxyType(bounds), frozenset(fields), policy.refuse)


#: A model without a Model object's policy (tests, tables built by hand): the schema's defaults.
DEFAULT_RULES = ClientRules.of(ModelSpec(ollama_tag="x", capabilities=[Capability.CHAT], context_window=2_097_152))


@dataclass(frozen=True, slots=True)
class Let:
    """What of a request reaches one model."""

    options: Mapping[str, Any]  # the client's options that pass (clamped where bounded)
    drop: frozenset[str] = frozenset()  # governed fields to remove from the body
    notes: tuple[str, ...] = ()  # what was dropped ("options.num_gpu") or clamped ("options.num_predict=4096")

    @property
    def report(self) -> str:
        return ", ".join(self.notes)


_NOTHING = Let(MappingProxyType({}))


def _clamp(value: Any, low: float, high: float) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value  # wrong types were refused by the option check before this
    if isinstance(value, float):
        return max(low, min(value, high))
    if value < 0 <= low:
        return value if high == math.inf else math.floor(high)  # a negative count means "no limit": the most allowed
    if value < low:
        return math.ceil(low)
    return math.floor(high) if value > high else value


@dataclass(slots=True)
class ClientView:
    """One request's options and governed fields, judged against each candidate model's rules."""

    options: Mapping[str, Any] | None
    fields: frozenset[str]  # governed fields the request sets (``system``: also a system message)
    _seen: dict[str, Let] = field(default_factory=dict)

    def let(self, name: str, rules: ClientRules) -> Let:
        if not self.options and not self.fields:
            return _NOTHING
        got = self._seen.get(name)
        if got is None:
            got = self._seen[name] = self._judge(rules)
        return got

    def _judge(self, rules: ClientRules) -> Let:
        out: dict[str, Any] = {}
        notes = [f for f in GOVERNED if f in self.fields and f in rules.fields]
        for key, value in (self.options or {}).items():
            if key not in rules.options:
                notes.append(f"options.{key}")
                continue
            bound = rules.bounds.get(key)
            out[key] = value if bound is None else _clamp(value, *bound)
            if out[key] != value:
                notes.append(f"options.{key}={out[key]}")
        return Let(MappingProxyType(out), frozenset(self.fields & rules.fields), tuple(notes))

    def refused(self, name: str, rules: ClientRules) -> str | None:
        """Why a model that refuses (rather than drops) what clients may not set turns this request
        away; None when it does not refuse, or the request keeps to its policy."""
        if not rules.refuse:
            return None
        let = self.let(name, rules)
        if not let.notes:
            return None
        return (
            f"model {name!r} does not let clients set {let.report} (its spec.client policy says what requests may set; "
            "values outside a bound are shown with the bound)"
        )


def governed_fields(body: Mapping[str, Any], messages: Any = None) -> frozenset[str]:
    """The governed fields an Ollama-shaped ``body`` sets; a system message counts as ``system``."""
    present = [f for f in GOVERNED if body.get(f) is not None]
    if isinstance(messages, list) and any(isinstance(m, Mapping) and m.get("role") == "system" for m in messages):
        present.append("system")
    return frozenset(present)


def without(messages: list[Any], let: Let) -> list[Any]:
    """Chat ``messages`` without the client's system messages when ``system`` is dropped."""
    if "system" not in let.drop:
        return messages
    return [m for m in messages if not (isinstance(m, Mapping) and m.get("role") == "system")]
