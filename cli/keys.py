"""llmctl's API key commands (admin): ``key create|list|revoke|rotate`` and the tenants' budgets,
``tenant budget|list|delete``. A secret is printed once, alone on standard output (``-o json``: the
whole key object with its ``secret``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from cli.client import ApiError, Client
from cli.output import emit
from schemas.apikey import ApiKeyIssued, ApiKeyList, TenantBudget, TenantBudgetList

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def duration_s(text: str) -> float:
    """``90s``, ``15m``, ``12h``, ``30d`` (or plain seconds) in seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if match is None:
        raise ApiError(f"{text!r} is not a duration: use e.g. 90s, 15m, 12h or 30d")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def labels(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ApiError(f"--label takes key=value, got {pair!r}")
        out[key] = value
    return out


def _issued(data: Any, output: str | None, out: Console, err: Console, what: str) -> None:
    key = ApiKeyIssued.model_validate(data)
    if output:
        emit(key.model_dump(mode="json"), output)
        return
    out.print(key.secret, highlight=False, soft_wrap=True)
    err.print(f"{what} key '{key.name}' ({key.prefix}…, tenant {key.spec.tenant}); store the secret now, it is not shown again")


def register(app: typer.Typer, client: Callable[[], Client], run: Callable[[Callable[[], None]], None], out: Console) -> None:
    key_app = typer.Typer(help="Manage the router's API keys (admin).", no_args_is_help=True)
    app.add_typer(key_app, name="key")
    err = Console(stderr=True)

    @key_app.command("create")
    def create(
        name: str,
        tenant: str = typer.Option(..., "--tenant", help="The tenant its requests count for."),
        routes: list[str] = typer.Option(["*"], "--route", help="Route names it may use (globs; repeat)."),
        models: list[str] = typer.Option(["*"], "--model", help="Model names it may ask for (globs; repeat)."),
        act_for: list[str] = typer.Option([], "--act-for", help="Other tenants it may name in x-tenant (globs; repeat)."),
        priority: str = typer.Option("normal", "--priority", help="high, normal or low (its class when nodes are full)."),
        rpm: int | None = typer.Option(None, "--rpm", help="Requests per minute."),
        tpm: int | None = typer.Option(None, "--tpm", help="Tokens (prompt + completion) per minute."),
        concurrent: int | None = typer.Option(None, "--concurrent", help="Requests in flight at once."),
        per_day: int | None = typer.Option(None, "--tokens-per-day", help="Token budget per day."),
        per_month: int | None = typer.Option(None, "--tokens-per-month", help="Token budget per month."),
        expires_in: str | None = typer.Option(None, "--expires-in", help="Refused after this long (e.g. 90d)."),
        label: list[str] = typer.Option([], "--label", help="key=value (repeat)."),
        output: str | None = typer.Option(None, "-o", "--output", help="json or yaml: the key object with its secret."),
    ) -> None:
        """Create a key; its secret is printed once."""

        def body() -> None:
            request: dict[str, Any] = {
                "name": name, "tenant": tenant, "routes": routes, "models": models, "act_for": act_for, "priority": priority,
                "labels": labels(label),
                "limits": {"requests_per_minute": rpm, "tokens_per_minute": tpm, "concurrent": concurrent},
                "budgets": {"tokens_per_day": per_day, "tokens_per_month": per_month},
            }  # fmt: skip
            if expires_in is not None:
                request["expires_at"] = (datetime.now(UTC) + timedelta(seconds=duration_s(expires_in))).isoformat()
            _issued(client().post("/api/v1/keys", request), output, out, err, "created")

        run(body)

    @key_app.command("list")
    def list_(output: str | None = typer.Option(None, "-o", "--output", help="json or yaml")) -> None:
        """List keys (never their secrets)."""

        def body() -> None:
            keys = ApiKeyList.model_validate(client().get("/api/v1/keys"))
            if output:
                emit(keys.model_dump(mode="json"), output)
                return
            table = Table()
            for col in ("NAME", "PREFIX", "TENANT", "ROUTES", "MODELS", "PRIORITY", "EXPIRES", "CREATED", "BY"):
                table.add_column(col)
            for k in keys.items:
                expires = k.spec.expires_at.isoformat()[:19] if k.spec.expires_at else "-"
                table.add_row(k.name, k.prefix, k.spec.tenant, ",".join(k.spec.routes), ",".join(k.spec.models), k.spec.priority,
                              expires, k.created_at.isoformat()[:19], k.created_by)  # fmt: skip
            out.print(table)

        run(body)

    @key_app.command("revoke")
    def revoke(name: str) -> None:
        """Revoke a key: every router refuses it within the watch latency."""
        run(lambda: client().delete(f"/api/v1/keys/{name}"))
        out.print(f"revoked key '{name}'")

    @key_app.command("rotate")
    def rotate(
        name: str,
        grace: str = typer.Option("1h", "--grace", help="How long the old secret keeps working (0 ends it now)."),
        output: str | None = typer.Option(None, "-o", "--output", help="json or yaml: the key object with its new secret."),
    ) -> None:
        """A new secret for a key (printed once); the old one works for --grace more."""
        run(lambda: _issued(client().post(f"/api/v1/keys/{name}:rotate", {"grace_s": duration_s(grace)}), output, out, err,
                            "rotated"))  # fmt: skip

    tenant_app = typer.Typer(help="Tenants' token budgets, shared by their keys (admin).", no_args_is_help=True)
    app.add_typer(tenant_app, name="tenant")

    @tenant_app.command("budget")
    def budget(
        tenant: str,
        per_day: int | None = typer.Option(None, "--tokens-per-day", help="Token budget per UTC day."),
        per_month: int | None = typer.Option(None, "--tokens-per-month", help="Token budget per UTC month."),
    ) -> None:
        """Set a tenant's budgets (replacing what it had; none given: unlimited)."""

        def body() -> None:
            data = client().put(f"/api/v1/tenants/{tenant}", {"tokens_per_day": per_day, "tokens_per_month": per_month})
            budgets = TenantBudget.model_validate(data).budgets
            day, month = budgets.tokens_per_day or "-", budgets.tokens_per_month or "-"
            out.print(f"tenant {tenant}: {day} tokens/day, {month} tokens/month")

        run(body)

    @tenant_app.command("list")
    def tenants(output: str | None = typer.Option(None, "-o", "--output", help="json or yaml")) -> None:
        """Tenants with budgets."""

        def body() -> None:
            listed = TenantBudgetList.model_validate(client().get("/api/v1/tenants"))
            if output:
                emit(listed.model_dump(mode="json"), output)
                return
            table = Table()
            for col in ("TENANT", "TOKENS/DAY", "TOKENS/MONTH"):
                table.add_column(col)
            for t in listed.items:
                table.add_row(t.tenant, str(t.budgets.tokens_per_day or "-"), str(t.budgets.tokens_per_month or "-"))
            out.print(table)

        run(body)

    @tenant_app.command("delete")
    def delete_tenant(tenant: str) -> None:
        """Remove a tenant's budgets (its keys' own limits stay)."""
        run(lambda: client().delete(f"/api/v1/tenants/{tenant}"))
        out.print(f"tenant {tenant}: no budgets")
