"""What routes depend on: the runtime (store, services, informers) and role-checked principals."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Depends, Header, Request
from prometheus_client import CollectorRegistry

from controlplane.api.broadcast import Broadcaster
from controlplane.db.artifacts import ArtifactStore
from controlplane.services.apikeys import ApiKeyService, TenantBudgets
from controlplane.services.config import ConfigService
from controlplane.services.errors import BadRequest, Forbidden, NotConfigured, Unauthorized
from controlplane.services.experiments import ExperimentControl, ExperimentResults
from controlplane.services.feedback import FeedbackService
from controlplane.services.figures import Figures
from controlplane.services.finetune import FineTuneService
from controlplane.services.fleet import FleetView
from controlplane.services.playground import Playground
from controlplane.services.quality import QualityBook
from controlplane.services.rag import RagService
from controlplane.services.recovery import Recovery
from controlplane.services.tokens import Principal, Role, TokenService
from controlplane.services.tuning import TuningService
from controlplane.services.usage import Usage
from controlplane.store.base import ConfigStore
from controlplane.store.informer import Informer
from controlplane.store.keys import KeySpace
from controlplane.store.view import ConfigView
from schemas.common import INT_MAX


@dataclass
class Runtime:
    store: ConfigStore
    keys: KeySpace
    config: ConfigService
    tokens: TokenService
    apikeys: ApiKeyService
    tenant_budgets: TenantBudgets
    usage: Usage
    config_informer: Informer
    status_informer: Informer
    nodes_informer: Informer
    view: ConfigView
    fleet: FleetView
    tuning: TuningService
    broadcaster: Broadcaster
    registry: CollectorRegistry
    check_db: Callable[[], Awaitable[None]]
    artifacts: ArtifactStore
    recovery: Recovery
    rag: RagService | None = None
    feedback: FeedbackService | None = None
    figures: Figures | None = None
    experiments: ExperimentResults | None = None
    experiment_control: ExperimentControl | None = None
    quality: QualityBook | None = None
    finetune: FineTuneService | None = None
    playground: Playground | None = None
    roles: frozenset[str] = frozenset()


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def require(role: Role) -> Callable[..., Awaitable[Principal]]:
    """Dependency: the caller's principal, which must hold at least ``role``."""

    async def dependency(request: Request, authorization: str | None = Header(default=None)) -> Principal:
        principal: Principal | None = getattr(request.state, "principal", None)  # AuthenticateFirst's, for a body
        if principal is None:
            if not authorization or not authorization.lower().startswith("bearer "):
                raise Unauthorized("send 'Authorization: Bearer <token>' (llmctl reads it from its config or LLMCTL_TOKEN)")
            principal = await runtime(request).tokens.authenticate(authorization[7:].strip())
        if "api" not in runtime(request).roles:
            raise NotConfigured("this control-plane replica does not serve the API (LLMTUNE_ROLES lacks 'api'): use another")
        if principal.role < role:
            raise Forbidden(f"token '{principal.name}' has role {principal.role.name.lower()}; this needs {role.name.lower()}")
        return principal

    return dependency


Viewer = Depends(require(Role.VIEWER))
Operator = Depends(require(Role.OPERATOR))
Admin = Depends(require(Role.ADMIN))


def parse_revision_header(value: str | None, header: str) -> int | None:
    """``If-Match: "12"`` → 12; ``*`` → -1 (any existing); absent → None."""
    if value is None:
        return None
    value = value.strip()
    if value == "*":
        return -1
    if value.startswith("W/"):
        value = value[2:]
    text = value.strip('"')
    if not text.isdecimal() or not 0 <= int(text) <= INT_MAX:
        raise BadRequest(f'{header} must be a quoted revision such as "42" (the ETag you read), got {value!r}')
    return int(text)
