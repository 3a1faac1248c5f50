"""llmctl's fine-tuning commands: ``finetune submit`` (with a progress bar while it runs),
``status``, ``logs`` (``--follow`` streams them), ``cancel`` and ``list``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.client import ApiError, Client
from cli.output import emit
from schemas.finetune import FineTuneJob, JobState, LogLine

BASE = "/api/v1/fine-tune"
ENDED = {"succeeded", "failed", "cancelled"}


def parse_params(pairs: list[str], file: Path | None) -> dict[str, Any]:
    """``--param key=value`` (values read as JSON when they parse: numbers, lists, objects) over a
    YAML/JSON ``--params-file``; dotted keys nest (``parameters.temperature=0.2``)."""
    params: dict[str, Any] = {}
    if file is not None:
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ApiError(f"{file}: cannot read the hyperparameters ({exc})") from exc
        if not isinstance(loaded, dict):
            raise ApiError(f"{file}: the hyperparameters must be a mapping")
        params.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ApiError(f"--param {pair!r}: write key=value")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        target = params
        *parents, leaf = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return params


def log_line(line: LogLine) -> str:
    """A log line for the console; the message is the job's text, not markup (tracebacks, [INST] …)."""
    return f"[dim]{line.level:>7}[/dim] {escape(line.message)}"


def describe(job: FineTuneJob) -> str:
    """The job in a line, escaped for the console (its error is the worker's text)."""
    text = f"{job.id}: {job.state.value}"
    if job.state is JobState.RUNNING:
        text += f" {job.progress * 100:.0f}%"
    loss, held_out = job.metrics.loss, job.metrics.eval_loss
    if loss:
        text += f", loss {loss[0][1]:.4f} → {loss[-1][1]:.4f} after {loss[-1][0]} steps"
    if held_out:
        text += f", held-out loss {held_out[0][1]:.4f} → {held_out[-1][1]:.4f}"
    if job.attempt > 1:
        text += f" (attempt {job.attempt})"
    if job.error:
        text += f": {job.error}"
    if job.state is JobState.SUCCEEDED:
        text += f"; model {job.output_model} registered at revision {job.model_revision}"
        if job.experiment:
            text += f", experiment {job.experiment} running"
    return escape(text)


def follow(api: Client, job_id: str, out: Console, *, logs: bool) -> FineTuneJob | None:
    """Stream the job until it ends: a progress bar, and its log lines when ``logs``."""
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn())
    with Progress(*columns, console=out, transient=False) as bar:
        task: TaskID = bar.add_task(f"{job_id}: queued", total=1.0)
        for event, data in api.events(f"{BASE}/{job_id}/logs/stream"):
            if event == "log":
                if logs:
                    bar.console.print(log_line(LogLine.model_validate(data)))
            elif event in ("progress", "end"):
                job = FineTuneJob.model_validate(data)
                tail = f", loss {job.metrics.loss[-1][1]:.4f}" if job.metrics.loss else ""
                bar.update(task, completed=job.progress, description=f"{job_id}: {job.state.value}{tail}")
                if event == "end":
                    return job
    return None


def register(app: typer.Typer, client: Callable[[], Client], run: Callable[[Callable[[], None]], None], out: Console) -> None:
    ft_app = typer.Typer(help="Fine-tuning jobs: derive or train a model variant from examples.", no_args_is_help=True)
    app.add_typer(ft_app, name="finetune")

    @ft_app.command("submit")
    def submit(
        dataset: Path = typer.Option(..., "--dataset", "-d", help="JSONL: {prompt, response} or {messages} per line."),
        base: str = typer.Option(..., "--base", help="The Model to start from."),
        output: str = typer.Option(..., "--output", "-o", help="Name of the Model the job creates."),
        method: str = typer.Option("modelfile", "--method", help="modelfile (no GPU) or lora."),
        param: list[str] = typer.Option([], "--param", "-p", help="Hyperparameter key=value (repeatable)."),
        params_file: Path | None = typer.Option(None, "--params-file", help="Hyperparameters as YAML or JSON."),
        job_id: str | None = typer.Option(None, "--id", help="Job id; submitting it again is idempotent."),
        experiment: bool = typer.Option(False, "--experiment", help="A/B test the new model against the base when done."),
        share: float = typer.Option(0.1, "--share", help="The new model's traffic share in that test."),
        wait: bool = typer.Option(True, "--wait/--no-wait", help="Follow the job with a progress bar until it ends."),
    ) -> None:
        """Submit a job; a bad dataset is refused with its line number before anything is queued."""

        def body() -> None:
            try:
                text = dataset.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ApiError(f"{dataset}: cannot read it as UTF-8 text ({exc})") from exc
            request = {
                "base_model": base, "output_model": output, "method": method, "dataset": text,
                "hyperparameters": parse_params(param, params_file), "auto_experiment": experiment, "experiment_share": share,
            }  # fmt: skip
            if job_id:
                request["job_id"] = job_id
            api = client()
            job = FineTuneJob.model_validate(api.post(BASE, request))
            out.print(f"job {job.id} {job.state.value} ({job.dataset.rows} rows, method {job.method.value})")
            if wait:
                final = follow(api, job.id, out, logs=False)
                if final is None:
                    raise ApiError(f"the job's stream ended before the job did: llmctl finetune status {job.id}")
                out.print(describe(final))
                if final.state is not JobState.SUCCEEDED:
                    raise typer.Exit(1)

        run(body)

    @ft_app.command("status")
    def status(
        job_id: str, output: str = typer.Option("text", "-o", "--output", help="text, yaml or json")
    ) -> None:  # fmt: skip
        """One job: state, progress, loss, the model it registered."""

        def body() -> None:
            job = FineTuneJob.model_validate(client().get(f"{BASE}/{job_id}"))
            if output == "text":
                out.print(describe(job))
            else:
                emit(job.model_dump(mode="json"), output)

        run(body)

    @ft_app.command("logs")
    def logs(job_id: str, follow_: bool = typer.Option(False, "--follow", "-f", help="Stream until the job ends.")) -> None:
        """The job's log lines."""

        def body() -> None:
            api = client()
            if follow_:
                final = follow(api, job_id, out, logs=True)
                if final is not None:
                    out.print(describe(final))
                return
            for line in api.get(f"{BASE}/{job_id}/logs"):
                out.print(log_line(LogLine.model_validate(line)))

        run(body)

    @ft_app.command("cancel")
    def cancel(job_id: str) -> None:
        """Cancel a queued or running job (a running one stops after its current step)."""

        def body() -> None:
            job = FineTuneJob.model_validate(client().post(f"{BASE}/{job_id}/cancel", {}))
            state = "cancelled" if job.state is JobState.CANCELLED else "cancellation requested"
            out.print(f"job {job_id}: {state}")

        run(body)

    @ft_app.command("list")
    def list_(state: str | None = typer.Option(None, "--state", help="Only jobs in this state.")) -> None:
        """Jobs, newest first."""

        def body() -> None:
            table = Table()
            table.add_column("ID", no_wrap=True)  # the one a person copies: never cut
            for header in ("STATE", "METHOD", "BASE", "OUTPUT", "DONE", "TRY", "CREATED"):
                table.add_column(header)
            for job in (FineTuneJob.model_validate(item) for item in client().get(BASE, state=state)):
                progress = f"{job.progress * 100:.0f}%"
                table.add_row(job.id, job.state.value, job.method.value, job.base_model, job.output_model, progress,
                              str(job.attempt), job.created_at.strftime("%m-%d %H:%M"))  # fmt: skip
            out.print(table)

        run(body)
