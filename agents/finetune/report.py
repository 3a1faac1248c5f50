"""What a training thread tells the worker's event loop: progress, metrics, log lines (thread-safe),
and the two ways a run ends early."""

from __future__ import annotations

import threading
import time
from typing import Any


class JobError(Exception):
    """The run cannot succeed; the message says why, for the person who submitted it."""


class Cancelled(Exception):
    """The run stopped because it was asked to (cancel) or lost its claim."""


class Report:
    MAX_POINTS = 1000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._progress = 0.0
        self._metrics: dict[str, Any] = {}
        self._lines: list[tuple[float, str, str]] = []
        self._strides: dict[str, int] = {}

    def log(self, message: str, level: str = "info") -> None:
        with self._lock:
            self._lines.append((time.time(), level, message))

    def progress(self, value: float) -> None:
        with self._lock:
            self._progress = value

    def metric(self, name: str, value: Any) -> None:
        with self._lock:
            self._metrics[name] = value

    def point(self, series: str, step: int, value: float) -> None:
        """One point of a curve (``loss``: [[step, value], ...]). A curve keeps at most
        ``MAX_POINTS``: past that every other point goes and only every 2nd (4th, …) step is kept,
        so a long run's heartbeat does not rewrite an ever longer curve."""
        with self._lock:
            stride = self._strides.get(series, 1)
            if step % stride:
                return
            curve = self._metrics.setdefault(series, [])
            curve.append([step, round(value, 6)])
            if len(curve) >= self.MAX_POINTS:
                stride *= 2
                curve[:] = [p for p in curve if p[0] % stride == 0]
                self._strides[series] = stride

    def requeue_lines(self, lines: list[tuple[float, str, str]]) -> None:
        """Lines that could not be written: they go out with the next drain, in order."""
        with self._lock:
            self._lines[:0] = lines

    def drain(self) -> tuple[float, dict[str, Any], list[tuple[float, str, str]]]:
        """Progress, a copy of the metrics, and the lines logged since the last drain."""
        with self._lock:
            lines, self._lines = self._lines, []
            return self._progress, {k: list(v) if isinstance(v, list) else v for k, v in self._metrics.items()}, lines
