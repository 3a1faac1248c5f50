"""The only place where key paths are built or parsed (see DESIGN.md, "Key space")."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_NAMESPACE = "llmtune"


@dataclass(frozen=True, slots=True)
class KeySpace:
    """Key paths under ``/<ns>/v1/``."""

    namespace: str = DEFAULT_NAMESPACE

    @property
    def root(self) -> str:
        return f"/{self.namespace}/v1/"

    def config_prefix(self, kind: str | None = None) -> str:
        base = f"{self.root}config/"
        return base if kind is None else f"{base}{kind}/"

    def config(self, kind: str, name: str) -> str:
        return f"{self.config_prefix(kind)}{name}"

    def split_config(self, key: str) -> tuple[str, str]:
        """``(kind, rest)`` of any key under the config prefix, valid path or not (for reporting)."""
        prefix = self.config_prefix()
        kind, _, rest = (key[len(prefix) :] if key.startswith(prefix) else key).partition("/")
        return kind, rest

    def parse_config(self, key: str) -> tuple[str, str]:
        """``(kind, name)`` of a config key; ValueError for any other key."""
        kind, name = self.split_config(key)
        if not key.startswith(self.config_prefix()) or not name or "/" in name:
            raise ValueError(f"not a config key: {key}")
        return kind, name

    def config_head(self) -> str:
        """Bumped in every configuration change set: one key whose revision guards a whole validation."""
        return f"{self.root}meta/config-head"

    def epoch(self) -> str:
        """The store's identity: created once per history; a wiped or restored store gets a new one."""
        return f"{self.root}meta/epoch"

    def placement_prefix(self) -> str:
        return f"{self.root}placement/"

    def placement(self, node: str) -> str:
        """The autoscaled models a node should hold (the autoscaler's leader writes it)."""
        return f"{self.placement_prefix()}{node}"

    def quality_prefix(self) -> str:
        return f"{self.root}quality/"

    def quality(self, route: str) -> str:
        """A route's quality posterior, as the monitor's leader last published it for the routers."""
        return f"{self.quality_prefix()}{route}"

    def scaling_prefix(self) -> str:
        return f"{self.root}scaling/"

    def scaling(self, model: str) -> str:
        """The autoscaler's last decision and windows for a model."""
        return f"{self.scaling_prefix()}{model}"

    def nodes_prefix(self) -> str:
        return f"{self.root}nodes/"

    def node(self, node: str) -> str:
        return f"{self.nodes_prefix()}{node}"

    def status_prefix(self) -> str:
        return f"{self.root}status/"

    def status(self, node: str) -> str:
        return f"{self.status_prefix()}{node}"

    def load_prefix(self) -> str:
        return f"{self.root}load/"

    def load(self, router: str) -> str:
        """A router's load report, bound to its lease."""
        return f"{self.load_prefix()}{router}"

    def apikeys_prefix(self) -> str:
        """The router's API keys: beside the configuration, never rolled back or restored with it
        (a revoked key must not come back)."""
        return f"{self.root}apikeys/"

    def apikey(self, name: str) -> str:
        return f"{self.apikeys_prefix()}{name}"

    def tenants_prefix(self) -> str:
        """Tenants' token budgets (beside the API keys, for the same reason)."""
        return f"{self.root}tenants/"

    def tenant(self, name: str) -> str:
        return f"{self.tenants_prefix()}{name}"

    def election(self, role: str) -> str:
        return f"{self.root}election/{role}"
