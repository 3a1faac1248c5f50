"""``llmctl route "prompt" [--dry-run]``: ask the router, show its decision (and the answer)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from cli.client import Client
from cli.context import Context


def register(app: typer.Typer, context: Callable[[], Context], run: Callable[[Callable[[], None]], None], out: Console) -> None:
    @app.command()
    def route(
        prompt: str = typer.Argument(..., help="The user message."),
        model: str | None = typer.Option(None, "--model", "-m", help="An alias, Model name or Ollama tag."),
        task: str | None = typer.Option(None, "--task", help="chat, code, math, summarization, extraction, embedding."),
        tenant: str | None = typer.Option(None, "--tenant"),
        tag: list[str] = typer.Option([], "--tag", help="Route tags (repeatable)."),
        sticky: str | None = typer.Option(None, "--sticky", help="Sticky key (e.g. a user id) for A/B splits."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Show the decision only; send nothing to a model."),
    ) -> None:
        """Route a prompt through the router and show which model and node serve it, and why."""

        def body() -> None:
            ctx = context()
            router = Client(Context(ctx.router_url, ctx.router_key))  # the router's API key, sent as a bearer token
            payload: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}], "dry_run": dry_run, "tags": tag}
            payload |= {k: v for k, v in {"model": model, "task": task, "tenant": tenant, "sticky_key": sticky}.items() if v}
            result = router.post("/api/v1/route", payload)
            d = result["decision"]
            table = Table(show_header=False)
            for key in ("route", "strategy", "variant", "model", "ollama_tag", "node", "decision_us", "table_revision"):
                table.add_row(key, str(d.get(key) if d.get(key) is not None else "-"))
            table.add_row("fallbacks", ", ".join(f"{f['model']}@{f['node']}" for f in d["fallbacks"]) or "-")
            if d["reasons"]:
                table.add_row("left out", "; ".join(d["reasons"]))
            if quality := d.get("quality"):  # the quality strategy: the class, why the model won, what it drew
                table.add_row("class", quality["class"])
                table.add_row("why", quality["why"])
                scores = sorted(quality["scores"].items(), key=lambda kv: -kv[1])
                table.add_row("sampled", ", ".join(f"{name} {score:.3f}" for name, score in scores) or "-")
            out.print(table)
            if not dry_run:
                answer = result["answer"]
                out.print((answer.get("message") or {}).get("content") or answer.get("response", ""), highlight=False)

        run(body)
