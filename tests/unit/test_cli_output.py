"""llmctl prints the service's text as text: brackets in log lines, errors and answers ([INST],
[/INST], a traceback's [1, 2]) are not rich markup, which would drop them or fail to render."""

from __future__ import annotations

import io

from rich.console import Console

from cli.finetune import describe, log_line

TEXT = "prompt [INST] hi [/INST] shapes [1, 2] [bold]"


def rendered(markup: str) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(markup)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(out, str)
    return out


def test_log_lines_and_job_errors_print_as_they_are() -> None:
    assert rendered(log_line({"level": "error", "message": TEXT})).strip() == f"error {TEXT}"
    job = {"id": "ft-1", "state": "failed", "metrics": {}, "attempt": 1, "error": TEXT, "output_model": "x"}
    assert rendered(describe(job)).strip() == f"ft-1: failed: {TEXT}"
