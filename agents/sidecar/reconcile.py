"""Desired versus actual on one Ollama node: one pass that ends (the agent's loop repeats it).

A pass observes the node (``/api/tags``, ``/api/ps``), then for each desired model pulls what is
missing, creates derived models that are missing or differ, warms models that should be loaded
(again when a change forces a reload), unloads models the node should no longer serve, and
deletes only when a node pool says ``prune``. What the pass verified is remembered, so a second
pass over an unchanged node makes no call that changes anything. Transient Ollama errors are
retried with tenacity inside the pass; each model ends with a condition (Ready, or Failed with
the reason) and one model's failure does not stop the others.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from agents.sidecar.desired import AdapterRef, Derived, Desired, DesiredModel
from agents.sidecar.node import AdapterUnavailable, Loaded, Observed, OllamaFailed, OllamaNode, OllamaUnavailable, matches
from schemas.status import ConditionType, ModelCondition

log = logging.getLogger(__name__)


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, OllamaUnavailable) or (isinstance(exc, OllamaFailed) and not exc.permanent)


@dataclass(frozen=True, slots=True)
class PassResult:
    ok: bool  # every desired model is Ready
    observed: Observed | None  # None: Ollama did not answer
    mutations: int  # calls that changed the node


class Reconciler:
    """Holds per-model conditions and what earlier passes verified on the node."""

    def __init__(self, node: OllamaNode, *, attempts: int = 3, max_wait_s: float = 2.0) -> None:
        self.node = node
        self.conditions: dict[str, ModelCondition] = {}  # by Model name
        self.errors: collections.deque[str] = collections.deque(maxlen=20)
        self._verified: dict[str, tuple[str | None, str]] = {}  # derived tag → (digest, fingerprint)
        self._warmed: dict[str, Any] = {}  # tag → what its runner was warmed with
        self._attempts, self._max_wait_s = attempts, max_wait_s
        self._mutations = 0

    def forget_loaded(self) -> None:
        """Ollama restarted: every model must be warmed again."""
        self._warmed.clear()

    async def _retry(self, op: Callable[[], Awaitable[None]]) -> None:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential_jitter(multiplier=0.1, max=self._max_wait_s, jitter=0.1),
            retry=retry_if_exception(_transient),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await op()
        self._mutations += 1

    def _set(
        self, model: DesiredModel, kind: ConditionType, *, reason: str = "", message: str = "", progress: float | None = None
    ) -> None:
        old = self.conditions.get(model.config_name)
        if old is not None and (old.type, old.revision, old.reason, old.message, old.progress) == (
            kind, model.revision, reason, message, progress
        ):  # fmt: skip
            return
        since = old.since if old is not None and old.type is kind else datetime.now(UTC)
        self.conditions[model.config_name] = ModelCondition(
            model=model.config_name, type=kind, reason=reason, message=message, progress=progress, revision=model.revision,
            since=since,
        )  # fmt: skip

    async def reconcile(self, desired: Desired, *, observed: Observed | None = None, max_loaded: int | None = None) -> PassResult:
        """One pass; ``observed``: a recent observation to use instead of asking Ollama again.

        The result's observation is the node as this pass left it (what it pulled, created, loaded
        and unloaded applied to what it observed), so the next pass need not ask again. At most
        ``max_loaded`` models are warmed: warming more would make Ollama evict one to load the next,
        and every pass would load the evicted one again.
        """
        self._mutations = 0
        try:
            observed = observed or await self.node.observe(version=not self.node.version)
        except (OllamaUnavailable, OllamaFailed) as exc:
            for model in desired.models.values():
                self._set(model, ConditionType.FAILED, reason="OllamaUnreachable", message=str(exc))
            self._note(str(exc))
            return PassResult(False, None, 0)
        ok = True
        node = _NodeState(dict(observed.present), dict(observed.loaded))
        warm = _to_warm(desired, node, max_loaded)
        for model in desired.models.values():
            try:
                await self._ensure(model, node, warm=model.name in warm)
            except (OllamaUnavailable, OllamaFailed) as exc:
                ok = False
                reason = (
                    "OllamaUnreachable" if isinstance(exc, OllamaUnavailable)
                    else "AdapterUnavailable" if isinstance(exc, AdapterUnavailable) else "OllamaError"
                )  # fmt: skip
                self._set(model, ConditionType.FAILED, reason=reason, message=str(exc))
                self._note(f"{model.config_name}: {exc}")
            else:
                if model.preload and model.name not in warm:
                    note = f"not preloaded: the node keeps at most {max_loaded} models loaded; it loads on first use"
                    self._set(model, ConditionType.READY, reason="NotPreloaded", message=note)
                else:
                    self._set(model, ConditionType.READY)
        wanted = {m.config_name for m in desired.models.values()}
        self.conditions = {k: v for k, v in self.conditions.items() if k in wanted}
        try:
            await self._cleanup(desired, node)
        except (OllamaUnavailable, OllamaFailed) as exc:
            ok = False
            self._note(f"cleanup: {exc}")
        return PassResult(ok, Observed(observed.version, node.present, node.loaded, observed.sizes), self._mutations)

    def _note(self, error: str) -> None:
        log.warning("%s", error)
        self.errors.append(f"{datetime.now(UTC).isoformat(timespec='seconds')} {error}")

    async def _ensure(self, model: DesiredModel, node: _NodeState, *, warm: bool) -> None:
        if model.pull not in node.present:
            self._set(model, ConditionType.PULLING, progress=0.0)

            def progress(done: float) -> None:
                self._set(model, ConditionType.PULLING, progress=round(done, 3))

            await self._retry(lambda: self.node.pull(model.pull, progress))
            node.present[model.pull] = ""  # "": present, digest not known yet
        if model.derived is not None:
            await self._derive(model, model.derived, node)
        if warm:
            await self._warm(model, node)

    async def _derive(self, model: DesiredModel, derived: Derived, node: _NodeState) -> None:
        """Create the derived model unless the node holds one made from the same request.

        ``/api/show`` is asked only when this agent knows nothing about the model Ollama holds
        (after a restart, or when its digest changed behind our back).
        """
        fingerprint, digest = derived.fingerprint, node.present.get(model.name)
        seen = self._verified.get(model.name)
        known = seen is not None and digest is not None and seen[0] in (None, digest or None)
        if known and seen is not None:
            same = seen[1] == fingerprint
        else:
            same = digest is not None and matches(await self.node.show(model.name), derived)
        if same:
            self._verified[model.name] = (digest or (seen[0] if seen else None), fingerprint)
            return
        self._set(model, ConditionType.CREATING)
        await self._retry(lambda: self.node.create(model.name, derived))
        self._verified[model.name] = (None, fingerprint)  # its digest is learnt from the next /api/tags
        node.present[model.name] = ""  # (new weights change the warm-up key: _warm loads it again)

    async def _warm(self, model: DesiredModel, node: _NodeState) -> None:
        # What the runner depends on: load-time options, keep_alive and the weights (base, adapters).
        # A changed system prompt or sampling parameter re-creates the model but keeps its runner.
        wanted = (model.load_options, model.keep_alive, _weights(model))
        loaded = node.loaded.get(model.name)
        warmed = self._warmed.get(model.name)
        if loaded is not None and (warmed == wanted or (warmed is None and _same_runner(loaded.context_length, model))):
            self._warmed[model.name] = wanted  # (loaded before this agent started: adopt it)
            return
        self._set(model, ConditionType.LOADING)
        await self._retry(
            lambda: self.node.load(model.name, dict(model.load_options), model.keep_alive, embedding=model.embedding)
        )
        self._warmed[model.name] = wanted
        ctx = dict(model.load_options).get("num_ctx")
        node.loaded[model.name] = Loaded(model.name, 0, 0, None, int(ctx) if ctx is not None else None)

    async def _cleanup(self, desired: Desired, node: _NodeState) -> None:
        for name in list(node.loaded):
            if name not in desired.models:
                await self._retry(lambda n=name: self.node.unload(n))  # type: ignore[misc]
                self._warmed.pop(name, None)
                node.loaded.pop(name, None)
        if not desired.prune:
            return
        keep = {m.name for m in desired.models.values()} | {m.pull for m in desired.models.values()}
        for name in list(node.present):
            if name not in keep:
                await self._retry(lambda n=name: self.node.delete(n))  # type: ignore[misc]
                self._verified.pop(name, None)
                node.present.pop(name, None)


@dataclass(slots=True)
class _NodeState:
    """The node as a pass sees it: observed, then updated with what the pass changed."""

    present: dict[str, str]
    loaded: dict[str, Loaded]


def _to_warm(desired: Desired, node: _NodeState, limit: int | None) -> set[str]:
    """The models to keep warm: those to preload, at most ``limit``; the autoscaler's replicas
    first (it placed them by the node's room), then loaded ones (no churn)."""
    placed = {m.name for m in desired.models.values() if m.min_replicas is not None}
    wanted = sorted(
        (m.name for m in desired.models.values() if m.preload or m.name in placed),
        key=lambda n: (n not in placed, n not in node.loaded, n),
    )
    return set(wanted if limit is None else wanted[:limit])


def _weights(model: DesiredModel) -> tuple[str, tuple[AdapterRef, ...]]:
    return (model.derived.source, model.derived.adapters) if model.derived else (model.pull, ())


def _same_runner(context_length: int | None, model: DesiredModel) -> bool:
    ctx = dict(model.load_options).get("num_ctx")
    return ctx is None or context_length is None or context_length == ctx
