"""What one node should hold, derived from a configuration snapshot and the node's labels (pure).

A Model with a ``base`` is a derived model: the agent pulls the base and creates the model's tag
from it with the system prompt, template, options (as Modelfile parameters) and adapters. A Model
without one is pulled as is; its runtime options travel with each request (the router adds
them), and only the options that shape the loaded runner (num_ctx, num_gpu, …) matter here.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from controlplane.store.base import KeyValue
from controlplane.store.keys import KeySpace
from schemas.model import Capability, Model
from schemas.nodepool import NodePool, ServerSettings
from schemas.placement import placed_on, prunes, server_settings
from schemas.registry import parse_object

log = logging.getLogger(__name__)
#: Options Ollama applies when it loads a runner: a change means a reload (and a re-warm).
LOAD_OPTIONS = ("num_ctx", "num_gpu", "num_batch", "num_thread", "use_mmap", "num_keep")


def tag(name: str) -> str:
    """Ollama's canonical name: ``:latest`` when no tag is given."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


@dataclass(frozen=True, slots=True)
class Derived:
    """An ``/api/create`` request that makes a derived model from ``source``."""

    source: str
    system: str | None
    template: str | None
    parameters: tuple[tuple[str, Any], ...]
    adapters: tuple[str, ...]

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(
            json.dumps([self.source, self.system, self.template, self.parameters, self.adapters]).encode()
        ).hexdigest()


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


@dataclass(frozen=True, slots=True)
class Desired:
    revision: int
    models: Mapping[str, DesiredModel]  # by tag
    server: ServerSettings = field(default_factory=ServerSettings)
    prune: bool = False


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
            adapters=tuple(a.path for a in spec.adapters),
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
    )


class DesiredState:
    """Decodes Models and NodePools from config snapshots (keeping the last good value of an item
    that no longer validates) and answers what a node with given labels should hold."""

    def __init__(self, keys: KeySpace) -> None:
        self._keys = keys
        # key -> (mod revision, object, what a node holding it needs: derived once per revision)
        self._decoded: dict[str, tuple[int, Model | NodePool, DesiredModel | None]] = {}

    def update(self, items: Mapping[str, KeyValue], changed: Iterable[str] | None = None) -> None:
        """Take a snapshot's items; ``changed``: the only keys that moved (None: look at all)."""
        decoded = self._decoded.copy() if changed is not None else {}
        for key in items if changed is None else changed:
            kind, _ = self._keys.parse_config(key)
            if kind not in ("models", "nodepools"):
                continue
            old, kv = self._decoded.get(key), items.get(key)
            if kv is None:
                decoded.pop(key, None)
                continue
            if old is not None and old[0] == kv.mod_revision:
                decoded[key] = old
                continue
            try:
                obj = parse_object(json.loads(kv.value)).with_revision(kv.mod_revision)
            except (ValueError, ValidationError):
                log.error("invalid stored object %s at revision %d; keeping the last good value", key, kv.mod_revision)
                if old is not None:
                    decoded[key] = old
                continue
            assert isinstance(obj, Model | NodePool)
            decoded[key] = (kv.mod_revision, obj, desired_model(obj) if isinstance(obj, Model) else None)
        self._decoded = decoded

    def for_node(self, labels: Mapping[str, str], revision: int) -> Desired:
        models = sorted(((o, d) for _, o, d in self._decoded.values() if isinstance(o, Model) and d), key=lambda p: p[0].name)
        pools = {o.name: o for _, o, _ in self._decoded.values() if isinstance(o, NodePool)}
        wanted: dict[str, DesiredModel] = {}
        for model, d in models:
            if placed_on(model, labels, pools):
                if d.name in wanted:
                    log.error("models %s and %s both serve %s; using %s", wanted[d.name].config_name, model.name, d.name,
                              wanted[d.name].config_name)  # fmt: skip
                    continue
                wanted[d.name] = d
        pool_list = list(pools.values())
        return Desired(revision, wanted, server_settings(labels, pool_list), prunes(labels, pool_list))
