"""llmctl prints the service's text as text: brackets in log lines, errors and answers ([INST],
[/INST], a traceback's [1, 2]) are not rich markup, which would drop them or fail to render."""

from __future__ import annotations

import io

from rich.console import Console

from cli.finetune import describe, log_line
from schemas.finetune import FineTuneJob, LogLine

TEXT = "prompt [INST] hi [/INST] shapes [1, 2] [bold]"


def rendered(markup: str) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(markup)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(out, str)
    return out


def test_log_lines_and_job_errors_print_as_they_are() -> None:
    line = LogLine(id=1, attempt=1, at=0.0, level="error", message=TEXT)
    assert rendered(log_line(line)).strip() == f"error {TEXT}"
    job = FineTuneJob.model_validate({
        "id": "ft-1", "state": "failed", "method": "modelfile", "base_model": "a", "output_model": "x",
        "auto_experiment": False, "dataset": {"id": "d", "rows": 1, "bytes": 10}, "hyperparameters": {}, "progress": 0.5,
        "attempt": 1, "cancel_requested": False, "worker": None, "error": TEXT, "metrics": {}, "model_revision": None,
        "experiment": None, "created_at": "2026-12-05T20:00:00Z", "started_at": None, "finished_at": None,
    })  # fmt: skip
    assert rendered(describe(job)).strip() == f"ft-1: failed: {TEXT}"
