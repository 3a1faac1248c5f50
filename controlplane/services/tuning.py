"""Live tuning: a patch of Ollama options, keep_alive and system prompt for one model or a label
selector, written through the one write path as one revision; optionally waits until every node
that holds a tuned model reports that revision applied."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import ValidationError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from controlplane.services.config import ConfigService
from controlplane.services.errors import Invalid, StaleRevision
from controlplane.services.fleet import FleetView, model_on_node, pools_in
from controlplane.store.view import ConfigView, Stored
from schemas.fleet import NodeApplyState
from schemas.model import Model
from schemas.placement import matches
from schemas.registry import parse_object
from schemas.tuning import TuneRequest
from schemas.validation import Problem

ObjectKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class TuneResult:
    revision: int
    models: list[str]
    changed: bool
    waited: bool
    complete: bool  # every targeted node applied the revision (vacuously true without waiting for nodes)
    nodes: list[NodeApplyState]
    elapsed_ms: float


def _targets(state: Mapping[ObjectKey, Stored], request: TuneRequest) -> list[Model]:
    models = [s.obj for (kind, _), s in sorted(state.items()) if kind == "models" and isinstance(s.obj, Model)]
    if request.model is not None:
        found = [m for m in models if m.name == request.model]
        if not found:
            raise Invalid(
                [
                    Problem(
                        "models", request.model, "model", f"there is no Model '{request.model}'; 'llmctl get models' lists them"
                    )
                ]
            )
        return found
    assert request.selector is not None
    found = [m for m in models if matches(request.selector, m.metadata.labels)]
    if not found:
        raise Invalid([Problem("models", "*", "selector", f"no Model has the labels {request.selector}")])
    return found


def patched(model: Model, request: TuneRequest) -> Model:
    """``model`` with the patch applied; Invalid (422) when the result breaks the Model schema."""
    doc = model.content()
    spec = doc["spec"]
    changes = request.changes()
    options = {**spec.get("options", {}), **changes.pop("options", {})}
    for name in request.unset:
        if name == "system_prompt":
            spec.pop("system_prompt", None)
        else:
            options.pop(name, None)
    spec.update(changes)
    spec["options"] = options
    try:
        result = parse_object(doc)
    except ValidationError as exc:
        problems = [
            Problem("models", model.name, ".".join(str(p) for p in e["loc"][1:]) or "spec", e["msg"]) for e in exc.errors()
        ]
        raise Invalid(problems) from exc
    assert isinstance(result, Model)
    return result


class TuningService:
    ATTEMPTS = 5

    def __init__(self, config: ConfigService, view: ConfigView, fleet: FleetView) -> None:
        self._config, self._view, self._fleet = config, view, fleet

    async def tune(self, request: TuneRequest, *, actor: str, wait: bool = False, timeout_s: float = 30.0) -> TuneResult:
        started = time.perf_counter()
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.ATTEMPTS), retry=retry_if_exception_type(StaleRevision), reraise=True
        )
        async for attempt in retrying:
            with attempt:
                targets = _targets((await self._config.state()).objects, request)
                updated = [patched(m, request) for m in targets]
                expected = {("models", m.name): m.metadata.revision or 0 for m in targets}
                message = request.message or f"tune {', '.join(m.name for m in targets)}: {_describe(request)}"
                result = await self._config.apply(updated, expected=expected, actor=actor, message=message)
        revision = result.revision if result.changes else max(m.metadata.revision or 0 for m in targets)
        pairs = self._pairs(updated)
        if wait:
            pending = set(pairs)
            looked: dict[str, int] = {}  # node -> status version last looked at

            def settled() -> bool:
                # A status write per node per change wakes this once per node: look only at nodes
                # whose status changed since the last look.
                versions = self._fleet.status_versions
                for node, model in list(pending):
                    if looked.get(node, -1) == versions.get(node, 0):
                        continue
                    if model_on_node(node, self._fleet.statuses.get(node), model, revision).state in ("applied", "failed"):
                        pending.discard((node, model))
                looked.update((node, versions.get(node, 0)) for node, _ in pairs)
                return not pending

            await self._fleet.wait_until(settled, timeout_s)
        states = [model_on_node(node, self._fleet.statuses.get(node), model, revision) for node, model in pairs]
        return TuneResult(
            revision=revision,
            models=[m.name for m in targets],
            changed=bool(result.changes),
            waited=wait,
            complete=wait and all(s.state == "applied" for s in states),
            nodes=states,
            elapsed_ms=(time.perf_counter() - started) * 1000,
        )

    def _pairs(self, models: Sequence[Model]) -> list[tuple[str, str]]:
        """(node, model) for every node that should hold one of ``models``."""
        pools = pools_in(self._view)
        return [(node, m.name) for m in models for node in self._fleet.nodes_for(m, pools)]


def _describe(request: TuneRequest) -> str:
    parts = [f"{k}={v}" for k, v in request.options.model_dump(exclude_none=True).items()]
    parts += [f"{k}={getattr(request, k)!r}" for k in ("keep_alive", "system_prompt") if getattr(request, k) is not None]
    parts += [f"-{u}" for u in request.unset]
    return ", ".join(parts)
