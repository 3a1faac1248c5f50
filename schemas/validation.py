"""Cross-object checks over a whole configuration state (pure; used by the write path and readers)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from schemas.common import ConfigObject
from schemas.experiment import Experiment
from schemas.model import Capability, Model
from schemas.nodepool import NodePool
from schemas.rag import RagCollection
from schemas.route import Route

ObjectKey = tuple[str, str]  # (plural, name)


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str
    name: str
    field: str
    message: str


def _check_route(route: Route, state: Mapping[ObjectKey, ConfigObject]) -> list[Problem]:
    out: list[Problem] = []
    for i, target in enumerate(route.spec.targets):
        if ("models", target.model) not in state:
            out.append(Problem("routes", route.name, f"spec.targets[{i}].model", f"model '{target.model}' does not exist"))
    for i, model in enumerate(route.spec.fallbacks):
        if ("models", model) not in state:
            out.append(Problem("routes", route.name, f"spec.fallbacks[{i}]", f"model '{model}' does not exist"))
    if route.spec.experiment is not None:
        exp = state.get(("experiments", route.spec.experiment))
        if exp is None:
            out.append(Problem("routes", route.name, "spec.experiment", f"experiment '{route.spec.experiment}' does not exist"))
        elif isinstance(exp, Experiment) and exp.spec.route != route.name:
            out.append(
                Problem("routes", route.name, "spec.experiment", f"experiment '{exp.name}' belongs to route '{exp.spec.route}'")
            )
    return out


def _check_rag(rag: RagCollection, state: Mapping[ObjectKey, ConfigObject]) -> list[Problem]:
    out: list[Problem] = []
    model = state.get(("models", rag.spec.embedding_model))
    if model is None:
        out.append(Problem("rag", rag.name, "spec.embedding_model", f"model '{rag.spec.embedding_model}' does not exist"))
    elif isinstance(model, Model) and Capability.EMBED not in model.spec.capabilities:
        out.append(Problem("rag", rag.name, "spec.embedding_model", f"model '{model.name}' lacks the 'embed' capability"))
    route = rag.spec.generation_route
    if route is not None and ("routes", route) not in state:
        out.append(Problem("rag", rag.name, "spec.generation_route", f"route '{route}' does not exist"))
    return out


def _check_experiment(exp: Experiment, state: Mapping[ObjectKey, ConfigObject]) -> list[Problem]:
    out: list[Problem] = []
    if ("routes", exp.spec.route) not in state:
        out.append(Problem("experiments", exp.name, "spec.route", f"route '{exp.spec.route}' does not exist"))
    for i, variant in enumerate(exp.spec.variants):
        if ("models", variant.model) not in state:
            out.append(Problem("experiments", exp.name, f"spec.variants[{i}].model", f"model '{variant.model}' does not exist"))
    return out


def _check_model(model: Model, state: Mapping[ObjectKey, ConfigObject]) -> list[Problem]:
    pool = model.spec.placement.node_pool
    if pool is not None and not isinstance(state.get(("nodepools", pool)), NodePool):
        return [Problem("models", model.name, "spec.placement.node_pool", f"node pool '{pool}' does not exist")]
    return []


def references(obj: ConfigObject) -> list[ObjectKey]:
    """Objects that ``obj`` names; a write of ``obj`` must see them unchanged (guarded in the txn)."""
    refs: list[ObjectKey] = []
    if isinstance(obj, Route):
        refs += [("models", t.model) for t in obj.spec.targets] + [("models", m) for m in obj.spec.fallbacks]
        if obj.spec.experiment:
            refs.append(("experiments", obj.spec.experiment))
    elif isinstance(obj, RagCollection):
        refs.append(("models", obj.spec.embedding_model))
        if obj.spec.generation_route:
            refs.append(("routes", obj.spec.generation_route))
    elif isinstance(obj, Experiment):
        refs += [("routes", obj.spec.route)] + [("models", v.model) for v in obj.spec.variants]
    elif isinstance(obj, Model) and obj.spec.placement.node_pool:
        refs.append(("nodepools", obj.spec.placement.node_pool))
    return list(dict.fromkeys(refs))


def check_references(state: Mapping[ObjectKey, ConfigObject], *, only: Iterable[ObjectKey] | None = None) -> list[Problem]:
    """Dangling or inconsistent references in ``state`` (empty when the state is whole).

    ``only`` limits the check to those objects (the ones a change touches), for writes to a
    large configuration that is known to be whole otherwise.
    """
    problems: list[Problem] = []
    objects = state.values() if only is None else [state[k] for k in only if k in state]
    for obj in objects:
        if isinstance(obj, Route):
            problems += _check_route(obj, state)
        elif isinstance(obj, RagCollection):
            problems += _check_rag(obj, state)
        elif isinstance(obj, Experiment):
            problems += _check_experiment(obj, state)
        elif isinstance(obj, Model):
            problems += _check_model(obj, state)
    return problems


def affected_by(
    state: Mapping[ObjectKey, ConfigObject], changed: Iterable[ObjectKey], deleted: Iterable[ObjectKey]
) -> list[ObjectKey]:
    """Objects whose references a change can break: the changed ones and those naming a deleted one."""
    gone = set(deleted)
    out = [k for k in changed if k in state]
    if gone:
        out += [k for k, obj in state.items() if k not in out and gone.intersection(references(obj))]
    return out
