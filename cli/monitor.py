"""llmctl's monitor commands: ``metrics`` (figures over a recent window), ``usage`` (tokens by key,
tenant, model or route), ``feedback`` and ``quality`` (a route's quality posterior)."""

from __future__ import annotations

from collections.abc import Callable

import typer
from rich.console import Console
from rich.table import Table

from cli.client import Client
from cli.output import emit
from schemas.monitor import FeedbackOut, MetricsSummary, Percentiles, UsageReport
from schemas.quality import RouteQualityReport


def _ms(values: Percentiles) -> str:
    return " / ".join("-" if v is None else f"{v:g}" for v in (values.p50, values.p95, values.p99))


def register(app: typer.Typer, client: Callable[[], Client], run: Callable[[Callable[[], None]], None], out: Console) -> None:
    @app.command()
    def usage(
        by: str = typer.Option("tenant", "--by", help="key, tenant, model or route."),
        window: str | None = typer.Option(None, "--window", "-w", help="90s, 15m, 2h, 1d (default 1d)."),
        start: str | None = typer.Option(None, "--from", help="ISO 8601 start (instead of --window)."),
        end: str | None = typer.Option(None, "--to", help="ISO 8601 end (default now)."),
        output: str | None = typer.Option(None, "-o", "--output", help="json or yaml"),
    ) -> None:
        """Requests and prompt/completion tokens per API key, tenant, model or route."""

        def body() -> None:
            params = {"group_by": by, "window": window, "from": start, "to": end}
            report = UsageReport.model_validate(client().get("/api/v1/usage", **params))
            if output:
                emit(report.model_dump(mode="json"), output)
                return
            table = Table(by, "requests", "prompt tokens", "completion tokens", "total", "estimated", title=f"usage by {by}")
            for r in report.rows:
                table.add_row(r.group or "(none)", str(r.requests), str(r.prompt_tokens), str(r.completion_tokens),
                              str(r.total_tokens), str(r.estimated_requests or ""))  # fmt: skip
            out.print(table)

        run(body)

    @app.command()
    def quality(
        route: str = typer.Argument(..., help="The route (strategy: quality)."),
        output: str | None = typer.Option(None, "-o", "--output", help="json or yaml"),
    ) -> None:
        """The quality strategy's posterior for a route: per request class and model, answers,
        scores, the mean quality with its 95% interval, the share of traffic, the floor."""

        def body() -> None:
            report = RouteQualityReport.model_validate(client().get(f"/api/v1/routes/{route}/quality"))
            if output:
                emit(report.model_dump(mode="json"), output)
                return
            state = "on" if report.enabled else "OFF (static weights; the guardrails or an operator turned it off)"
            title = f"route {report.route}: strategy {report.strategy}, quality {state}"
            if report.floor is not None:
                title += f", floor {report.floor:g}"
            table = Table("class", "model", "ok/answers", "scores", "quality [95%]", "share", "floor", title=title)
            for cls in report.classes:
                for m in cls.models:
                    ev = m.evidence
                    table.add_row(cls.name, m.model, f"{ev.successes:.0f}/{ev.answers:.0f}", f"{ev.scores:.0f}",
                                  f"{m.mean:.2f} [{m.low:.2f}-{m.high:.2f}]", f"{m.share:.0%}",
                                  "below" if m.excluded else "")  # fmt: skip
            out.print(table)
            if not report.classes:
                out.print("no evidence yet: answers of this route are folded in once the monitor sees them")

        run(body)

    @app.command()
    def metrics(
        window: str = typer.Option("15m", "--window", "-w", help="90s, 15m, 2h, 1d."),
        model: str | None = typer.Option(None, "--model", "-m"),
    ) -> None:
        """Requests, errors, latency and time-to-first-token percentiles, tokens/s, quality signals
        and feedback, for the fleet and each model, over a recent window."""

        def body() -> None:
            data = MetricsSummary.model_validate(client().get("/api/v1/metrics/summary", window=window, model=model))
            table = Table("model", "requests", "errors", "error rate", "latency ms p50/95/99", "TTFT ms p50/95/99", "tokens/s",
                          "signals", "feedback", title=f"last {window}")  # fmt: skip
            for name, f in [*data.models.items(), ("(fleet)", data.fleet)]:
                rate = "-" if f.error_rate is None else f"{f.error_rate * 100:.1f}%"
                signals = ", ".join(f"{k} {v}" for k, v in sorted(f.signals.items())) or "-"
                fb = f.feedback
                votes = f"{fb.mean_score:.2f} ({fb.count})" if fb.count and fb.mean_score is not None else "-"
                tps = "-" if f.tokens_per_s is None else f"{f.tokens_per_s:g}"
                table.add_row(name, str(f.requests), str(f.errors), rate, _ms(f.latency_ms), _ms(f.ttft_ms), tps, signals, votes)
            out.print(table)

        run(body)

    @app.command()
    def feedback(
        request_id: str = typer.Argument(..., help="The x-request-id of the answer."),
        score: float | None = typer.Option(None, "--score", help="0 (bad) to 1 (good)."),
        thumbs: str | None = typer.Option(None, "--thumbs", help="up or down."),
        label: list[str] = typer.Option([], "--label", help="Repeatable."),
        comment: str = typer.Option("", "--comment"),
    ) -> None:
        """Judge one answer."""

        def body() -> None:
            payload = {"request_id": request_id, "score": score, "thumbs": thumbs, "labels": label, "comment": comment}
            answer = client().post("/api/v1/feedback", {k: v for k, v in payload.items() if v is not None})
            sent = FeedbackOut.model_validate(answer)
            out.print(f"feedback {sent.id} on {sent.model} at {sent.node} (route {sent.route or '-'}, "
                      f"variant {sent.variant or '-'})")  # fmt: skip

        run(body)
