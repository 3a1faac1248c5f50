"""Cross-object checks over a whole configuration state (pure; used by the write path and readers)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from schemas.common import ConfigObject
from schemas.experiment import Experiment, ExperimentState
from schemas.model import Capability, Model, Provider
from schemas.rag import RagCollection
from schemas.route import Route

ObjectKey = tuple[str, str]  # (plural, name)


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str
    name: str
    field: str
    message: str
    missing: ObjectKey | None = None  # the referenced object that does not exist, if that is the problem


_SINGULAR = {"models": "model", "routes": "route", "experiments": "experiment", "nodepools": "node pool", "rag": "collection",
             "classifiers": "classifier"}


def _missing(owner: ObjectKey, field: str, ref: ObjectKey, state: Mapping[ObjectKey, ConfigObject]) -> list[Problem]:
    """A problem when ``owner`` names ``ref`` at ``field`` and ``ref`` is not in ``state``."""
    if ref in state:
        return []
    return [Problem(owner[0], owner[1], field, f"{_SINGULAR[ref[0]]} '{ref[1]}' does not exist", ref)]


def _check_route(route: Route, state: Mapping[ObjectKey, ConfigObject]) -> list[Problem]:
    me = ("routes", route.name)
    out: list[Problem] = []
    named = [(f"spec.targets[{i}].model", t.model) for i, t in enumerate(route.spec.targets)]
    named += [(f"spec.fallbacks[{i}]", model) for i, model in enumerate(route.spec.fallbacks)]
    for field, name in named:
        out += _missing(me, field, ("models", name), state)
        model = state.get(("models", name))
        if isinstance(model, Model) and model.spec.provider is Provider.LOCAL:
            out.append(Problem(*me, field, f"model '{name}' runs inside the RAG engine (provider 'local'); no node serves it"))
    if route.spec.experiment is not None:
        out += _missing(me, "spec.experiment", ("experiments", route.spec.experiment), state)
        exp = state.get(("experiments", route.spec.experiment))
        if isinstance(exp, Experiment) and exp.spec.route != route.name:
            out.append(Problem(*me, "spec.experiment", f"experiment '{exp.name}' belongs to route '{exp.spec.route}'"))
    if route.spec.quality.classifier is not None:
        out += _missing(me, "spec.quality.classifier", ("classifiers", route.spec.quality.classifier), state)
    return out


def _check_rag(rag: RagCollection, state: Mapping[ObjectKey, ConfigObject]) -> list[Problem]:
    me = ("rag", rag.name)
    out = _missing(me, "spec.embedding_model", ("models", rag.spec.embedding_model), state)
    model = state.get(("models", rag.spec.embedding_model))
    if isinstance(model, Model) and Capability.EMBED not in model.spec.capabilities:
        out.append(Problem(*me, "spec.embedding_model", f"model '{model.name}' lacks the 'embed' capability"))
    if rag.spec.generation_route is not None:
        out += _missing(me, "spec.generation_route", ("routes", rag.spec.generation_route), state)
    return out


def _check_experiment(exp: Experiment, state: Mapping[ObjectKey, ConfigObject]) -> list[Problem]:
    me = ("experiments", exp.name)
    out = _missing(me, "spec.route", ("routes", exp.spec.route), state)
    for i, variant in enumerate(exp.spec.variants):
        out += _missing(me, f"spec.variants[{i}].model", ("models", variant.model), state)
    if exp.spec.state is ExperimentState.RUNNING:
        for (kind, name), other in sorted(state.items()):
            if (kind == "experiments" and name != exp.name and isinstance(other, Experiment)
                    and other.spec.route == exp.spec.route and other.spec.state is ExperimentState.RUNNING):  # fmt: skip
                why = f"route '{exp.spec.route}' already runs experiment '{name}'; stop it first"
                out.append(Problem(*me, "spec.route", why))
    return out


def _check_model(model: Model, state: Mapping[ObjectKey, ConfigObject]) -> list[Problem]:
    pool = model.spec.placement.node_pool
    if pool is None:
        return []
    return _missing(("models", model.name), "spec.placement.node_pool", ("nodepools", pool), state)


def references(obj: ConfigObject) -> list[ObjectKey]:
    """Objects that ``obj`` names; a write of ``obj`` must see them unchanged (guarded in the txn)."""
    refs: list[ObjectKey] = []
    if isinstance(obj, Route):
        refs += [("models", t.model) for t in obj.spec.targets] + [("models", m) for m in obj.spec.fallbacks]
        if obj.spec.experiment:
            refs.append(("experiments", obj.spec.experiment))
        if obj.spec.quality.classifier:
            refs.append(("classifiers", obj.spec.quality.classifier))
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
