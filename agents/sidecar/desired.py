"""What one node should hold, derived from a configuration snapshot and the node's labels (pure).

A Model with a ``base`` is a derived model: the agent pulls the base and creates the model's tag
from it with the system prompt, template, options (as Modelfile parameters), adapters and
few-shot messages. A Model
without one is pulled as is; its runtime options travel with each request (the router adds
them), and only the options that shape the loaded runner (num_ctx, num_gpu, …) matter here.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.store.informer import Snapshot
from controlplane.store.keys import KeySpace
from controlplane.store.view import ConfigView
from schemas.model import LOAD_OPTIONS, Capability, Model
from schemas.nodepool import NodePool, ServerSettings
from schemas.placement import placed_on, pools_of, prunes, server_settings

log = logging.getLogger(__name__)


def tag(name: str) -> str:
    """Ollama's canonical name: ``:latest`` when no tag is given."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


#: An adapter as the agent applies it: a path on the node, or (file name, digest) pairs of files
#: the control plane keeps.
AdapterRef = str | tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Derived:
    """An ``/api/create`` request that makes a derived model from ``source``."""

    source: str
    system: str | None
    template: str | None
    parameters: tuple[tuple[str, Any], ...]
    adapters: tuple[AdapterRef, ...]
    messages: tuple[tuple[str, str], ...] = ()  # (role, content): few-shot turns

    @property
    def fingerprint(self) -> str:
        parts: list[Any] = [self.source, self.system, self.template, self.parameters, self.adapters]
        if self.messages:  # models made before messages existed keep their fingerprint
            parts.append(self.messages)
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class DesiredModel:
    config_name: str  # the Model object's name
    revision: int  # the Model object's mod revision
    name: str  # the tag the node serves
    pull: str  # the tag to pull (the base of a derived model)
    derived: Derived | None
    keep_alive: str | int
    preload: bool
    load_options: tuple[tuple[str, Any], ...]
    embedding: bool = False  # warmed with /api/embed: Ollama refuses generate for embedding models
    min_replicas: int | None = None  # an autoscaled model's: a restart here waits until as many are ready elsewhere


@dataclass(frozen=True, slots=True)
class Desired:
    revision: int
    models: Mapping[str, DesiredModel]  # by tag
    server: ServerSettings = field(default_factory=ServerSettings)
    prune: bool = False
    server_pools: tuple[str, ...] = ()  # the node's pools that set start-time settings: one restart at a time in each
    #: autoscaled models this node may run but is not given, by tag
    unplaced: Mapping[str, DesiredModel] = field(default_factory=dict)


def desired_model(model: Model) -> DesiredModel:
    spec = model.spec
    options = spec.options.model_dump(exclude_none=True)
    derived = None
    if spec.base is not None:
        derived = Derived(
            source=tag(spec.base),
            system=spec.system_prompt,
            template=spec.template,
            parameters=tuple(sorted(options.items(), key=lambda kv: kv[0])),
            adapters=tuple(a.path if a.path is not None else tuple(sorted(a.files.items())) for a in spec.adapters),
            messages=tuple((m.role, m.content) for m in spec.messages),
        )
    return DesiredModel(
        config_name=model.name,
        revision=model.metadata.revision or 0,
        name=tag(spec.ollama_tag),
        pull=tag(spec.base or spec.ollama_tag),
        derived=derived,
        keep_alive=spec.keep_alive,
        preload=spec.placement.preload,
        load_options=tuple((k, options[k]) for k in LOAD_OPTIONS if k in options),
        embedding=Capability.EMBED in spec.capabilities,
        min_replicas=spec.placement.min_replicas if spec.placement.autoscale else None,
    )


class DesiredState:
    """What a node with given labels should hold, over the shared decoded view of configuration
    (which decodes only changed keys and keeps the last good value of an item that no longer
    validates); a Model's requirements are derived once per revision of it."""

    def __init__(self, keys: KeySpace) -> None:
        self.view = ConfigView(keys)
        self._derived: dict[str, tuple[int, DesiredModel]] = {}  # Model name -> (revision, what it needs)

    def on_snapshot(self, snapshot: Snapshot) -> None:
        self.view.on_snapshot(snapshot)

    def _desired(self, model: Model, revision: int) -> DesiredModel:
        cached = self._derived.get(model.name)
        if cached is None or cached[0] != revision:
            cached = self._derived[model.name] = (revision, desired_model(model))
        return cached[1]

    def for_node(self, labels: Mapping[str, str], revision: int, placed: frozenset[str] = frozenset()) -> Desired:
        """``placed``: the autoscaled models (by Model name) the autoscaler placed on this node."""
        state = self.view.state
        models = [(s.obj, self._desired(s.obj, s.revision)) for _, s in sorted(state.items()) if isinstance(s.obj, Model)]
        pools = {s.obj.name: s.obj for s in state.values() if isinstance(s.obj, NodePool)}
        wanted: dict[str, DesiredModel] = {}
        unplaced: dict[str, DesiredModel] = {}
        for model, d in models:
            if model.spec.placement.autoscale and model.name not in placed:
                if placed_on(model, labels, pools):
                    unplaced[d.name] = d
                continue
            if placed_on(model, labels, pools):
                if d.name in wanted:
                    log.error("models %s and %s both serve %s; using %s", wanted[d.name].config_name, model.name, d.name,
                              wanted[d.name].config_name)  # fmt: skip
                    continue
                wanted[d.name] = d
        pool_list = list(pools.values())
        restarting = tuple(p.name for p in pools_of(labels, pool_list) if p.spec.server.environment())
        return Desired(revision, wanted, server_settings(labels, pool_list), prunes(labels, pool_list), restarting,
                       {t: n for t, n in unplaced.items() if t not in wanted})  # fmt: skip
