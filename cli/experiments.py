"""llmctl's experiment commands: ``experiments create|list|results|promote|stop``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from cli.client import ApiError, Client
from schemas.changes import ApplyAnswer
from schemas.experiment import Experiment
from schemas.monitor import ExperimentChange, ExperimentResults


def variant(text: str) -> dict[str, Any]:
    """``name=model`` or ``name=model:weight``."""
    name, sep, rest = text.partition("=")
    model, _, weight = rest.partition(":")
    if not sep or not name or not model:
        raise ApiError(f"--variant takes name=model or name=model:weight, got {text!r}")
    try:
        return {"name": name, "model": model, "weight": int(weight) if weight else 1}
    except ValueError:
        raise ApiError(f"--variant {text!r}: the weight is a whole number") from None


def _interval(pair: list[float | None]) -> str:
    low, high = pair
    return "-" if low is None or high is None else f"[{low:.3g}, {high:.3g}]"


def register(app: typer.Typer, client: Callable[[], Client], run: Callable[[Callable[[], None]], None], out: Console) -> None:
    exp_app = typer.Typer(help="A/B experiments on a route's traffic.", no_args_is_help=True)
    app.add_typer(exp_app, name="experiments")

    @exp_app.command("create")
    def create(
        name: str,
        route: str = typer.Option(..., "--route"),
        variants: list[str] = typer.Option(..., "--variant", help="name=model[:weight], two or more; the first is the baseline."),
        metric: str = typer.Option("success_rate", "--metric", help="success_rate, latency or feedback_score."),
        sticky: str | None = typer.Option(None, "--sticky", help="header:<name> or tenant: one user stays in one variant."),
        max_error_rate: float | None = typer.Option(None, "--max-error-rate", help="Guardrail: stop past this error rate."),
        max_p95_ms: int | None = typer.Option(None, "--max-p95-ms", help="Guardrail: stop past this p95 latency."),
        draft: bool = typer.Option(False, "--draft", help="Create it without starting it."),
    ) -> None:
        """Create (and start) an experiment, and point the route at it: one revision."""

        def body() -> None:
            api = client()
            stored = api.get(f"/api/v1/config/routes/{route}")
            bounds = {"max_error_rate": max_error_rate, "max_p95_latency_ms": max_p95_ms}
            rails = {k: v for k, v in bounds.items() if v is not None}
            spec = {"route": route, "variants": [variant(v) for v in variants], "primary_metric": metric,
                    "state": "draft" if draft else "running", "sticky_key": sticky, "guardrails": rails}  # fmt: skip
            stored["spec"]["experiment"] = name
            stored["metadata"].pop("revision", None)
            objects = [{"kind": "Experiment", "metadata": {"name": name}, "spec": spec}, stored]
            answer = api.post("/api/v1/config:apply", {"objects": objects, "message": f"experiment {name} on route {route}"})
            out.print(f"experiment {name} on route {route}: revision {ApplyAnswer.model_validate(answer).revision}")

        run(body)

    @exp_app.command("list")
    def list_() -> None:
        """Experiments, their routes, states and variants."""

        def body() -> None:
            table = Table("experiment", "route", "state", "metric", "variants")
            listing = client().get("/api/v1/config/experiments")
            for exp in (Experiment.model_validate(item) for item in listing["items"]):
                parts = ", ".join(f"{v.name}={v.model}:{v.weight}" for v in exp.spec.variants)
                table.add_row(exp.name, exp.spec.route, exp.spec.state.value, exp.spec.primary_metric.value, parts)
            out.print(table)

        run(body)

    @exp_app.command("results")
    def results(name: str) -> None:
        """Per-variant figures with 95% intervals, the test against the baseline, the verdict."""

        def body() -> None:
            data = ExperimentResults.model_validate(client().get(f"/api/v1/experiments/{name}/results"))
            table = Table("variant", "requests", "success rate (95% CI)", "latency mean ms (95% CI)", "p95 ms", "feedback",
                          "P(best)", "guardrails", title=f"{name} on route {data.route} ({data.state})")  # fmt: skip
            for v in data.variants:
                rate = "-" if v.success_rate is None else f"{v.success_rate:.3f} {_interval(v.success_rate_ci95)}"
                lat = v.latency_ms
                mean = "-" if lat.mean is None else f"{lat.mean:.1f} {_interval(lat.ci95)}"
                fb = v.feedback
                votes = "-" if fb.mean is None else f"{fb.mean:.2f} ({fb.count})"
                best, rails = f"{data.probability_best.get(v.variant, 0):.2f}", "; ".join(v.guardrails_breached) or "ok"
                table.add_row(v.variant, str(v.requests), rate, mean, str(lat.p95 or "-"), votes, best, rails)
            out.print(table)
            for comparison in data.comparisons:
                out.print(comparison.verdict)

        run(body)

    @exp_app.command("promote")
    def promote(name: str, variant_name: str = typer.Argument(..., metavar="VARIANT")) -> None:
        """Make the variant the route's target and complete the experiment (one revision)."""

        def body() -> None:
            answer = client().post(f"/api/v1/experiments/{name}/promote", {"variant": variant_name})
            done = ExperimentChange.model_validate(answer)
            out.print(f"promoted {variant_name} of {name}: revision {done.revision}")

        run(body)

    @exp_app.command("stop")
    def stop(name: str) -> None:
        """Stop a running experiment."""

        def body() -> None:
            done = ExperimentChange.model_validate(client().post(f"/api/v1/experiments/{name}/stop", {}))
            out.print(f"stopped {name}: revision {done.revision}")

        run(body)
