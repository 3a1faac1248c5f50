"""llmctl's fleet commands: ``models status``, ``nodes`` and ``tune`` (rich tables)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from cli.client import ApiError, Client
from schemas.fleet import ModelsStatus, NodeList, TuneAnswer
from schemas.status import ConditionType, ModelCondition

TOP_LEVEL = ("keep_alive", "system_prompt")


def parse_value(text: str) -> Any:
    """``--set`` values: integers, floats and booleans as such, a [a,b] list of strings, else text."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text.startswith("[") and text.endswith("]"):
        return [part.strip() for part in text[1:-1].split(",") if part.strip()]
    return text


def tune_body(model: str | None, sets: list[str], unsets: list[str], selector: list[str], message: str) -> dict[str, Any]:
    body: dict[str, Any] = {"options": {}, "unset": unsets, "message": message}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ApiError(f"--set takes name=value (for example temperature=0.2), got {item!r}")
        if key in TOP_LEVEL:
            body[key] = parse_value(value) if key == "keep_alive" else value
        else:
            body["options"][key] = parse_value(value)
    if selector:
        pairs = [s.partition("=") for s in selector]
        if any(not sep for _, sep, _ in pairs):
            raise ApiError("--selector takes label=value")
        body["selector"] = {k: v for k, _, v in pairs}
    if model:
        body["model"] = model
    return body


def _condition(cond: ModelCondition | None) -> str:
    if cond is None:
        return "-"
    text = str(cond.type)
    if cond.progress is not None and cond.type is ConditionType.PULLING:
        text += f" {cond.progress:.0%}"
    if cond.reason:
        text += f" ({cond.reason}: {cond.message[:80]})"
    return text


def _state_style(state: str) -> str:
    return {"applied": "green", "failed": "red", "pending": "yellow"}.get(state, "magenta")


def register(app: typer.Typer, client: Callable[[], Client], run: Callable[[Callable[[], None]], None], out: Console) -> None:
    models_app = typer.Typer(help="Models across the fleet.", no_args_is_help=True)
    app.add_typer(models_app, name="models")

    @models_app.command("status")
    def models_status(model: str | None = typer.Argument(None, help="Only this model.")) -> None:
        """Desired versus actual for every model on every node that should hold it."""

        def body() -> None:
            data = ModelsStatus.model_validate(client().get("/api/v1/models/status", model=model))
            table = Table(title=f"models at configuration revision {data.revision}")
            for col in ("MODEL", "TAG", "NODE", "PRESENT", "LOADED", "READY", "APPLIED", "CONDITION"):
                table.add_column(col)
            yes = {True: "[green]yes[/green]", False: "[red]no[/red]"}
            for m in data.models:
                if not m.nodes:
                    table.add_row(m.model, m.ollama_tag, "(no node matches)", "", "", "", "", "")
                for n in m.nodes:
                    table.add_row(m.model, m.ollama_tag, n.node, yes[n.present], yes[n.loaded], yes[n.ready], yes[n.applied],
                                  _condition(n.condition))  # fmt: skip
            out.print(table if data.models else "no models configured")
            scaled = [m for m in data.models if m.autoscaled]
            if scaled:
                auto = Table(title="autoscaled models")
                for col in ("MODEL", "DESIRED", "PLACED", "READY", "PANIC", "WHY"):
                    auto.add_column(col)
                for m in scaled:
                    rec = m.autoscale
                    if rec is None:
                        auto.add_row(m.model, "-", "-", "-", "", "not decided yet")
                        continue
                    why = rec.reason + (f" (short: {rec.short})" if rec.short else "")
                    auto.add_row(m.model, str(rec.desired), str(rec.placed), str(rec.ready), "yes" if rec.panic else "", why)
                out.print(auto)

        run(body)

    @app.command()
    def nodes() -> None:
        """Nodes reporting to the control plane: health, applied revision, loaded models."""

        def body() -> None:
            data = NodeList.model_validate(client().get("/api/v1/nodes"))
            table = Table(title=f"nodes (configuration revision {data.revision})")
            for col in ("NODE", "HEALTH", "OLLAMA", "APPLIED", "LAG", "HEARTBEAT", "LOADED", "LABELS", "NOTES"):
                table.add_column(col)
            for n in data.nodes:
                style = "green" if n.health == "ready" else "red"
                notes = f"restart Ollama for: {', '.join(n.restart_required)}" if n.restart_required else ""
                beat = f"{n.heartbeat_age_s:.0f} s ago" if n.heartbeat_age_s is not None else "-"
                table.add_row(
                    n.node, f"[{style}]{n.health}[/{style}]", n.ollama_version or "-", str(n.applied_revision), str(n.lag),
                    beat, ", ".join(n.loaded_models), ",".join(f"{k}={v}" for k, v in n.labels.items()), notes,
                )  # fmt: skip
            out.print(table if data.nodes else "no nodes registered (start an agent: see README, 'Agents')")

        run(body)

    @app.command()
    def tune(
        model: str | None = typer.Argument(None, help="The model to tune (or use --selector)."),
        set_: list[str] = typer.Option([], "--set", help="name=value: an Ollama option, keep_alive or system_prompt."),
        unset: list[str] = typer.Option([], "--unset", help="Remove an option (or system_prompt)."),
        selector: list[str] = typer.Option([], "--selector", "-l", help="label=value: tune every matching model."),
        wait: bool = typer.Option(False, "--wait", help="Return once every node applied the change."),
        timeout: float = typer.Option(30.0, "--timeout", help="Seconds to wait with --wait."),
        message: str = typer.Option("", "-m", "--message", help="Audit message."),
    ) -> None:
        """Tune a model live: llmctl tune MODEL --set temperature=0.2 --set num_ctx=8192 --wait"""

        def body() -> None:
            payload = tune_body(model, set_, unset, selector, message)
            params = {"wait": "applied", "timeout": timeout} if wait else {}
            answer = client().request("PUT", "/api/v1/tune", json=payload, params=params, timeout=timeout + 10)
            result = TuneAnswer.model_validate(answer)
            what = "changed" if result.changed else "unchanged"
            out.print(f"{', '.join(result.models)}: {what} at revision {result.revision} ({result.elapsed_ms:.0f} ms)")
            if result.nodes:
                table = Table()
                for col in ("NODE", "MODEL", "STATE", "DETAIL"):
                    table.add_column(col)
                for n in result.nodes:
                    style = _state_style(n.state)
                    table.add_row(n.node, n.model, f"[{style}]{n.state}[/{style}]", n.message)
                out.print(table)
            elif wait:
                out.print("no node holds these models")
            if wait and not result.complete:
                raise ApiError(f"{len(result.not_applied)} node(s) did not confirm revision {result.revision}")

        run(body)
