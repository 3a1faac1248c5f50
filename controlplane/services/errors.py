"""Domain errors of the services; ``controlplane.api.errors`` is the one place mapping them to HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from schemas.validation import Problem


class ServiceError(Exception):
    """Base of the domain errors."""


class NotFound(ServiceError):
    def __init__(self, kind: str, name: str | None = None) -> None:
        self.kind, self.name = kind, name
        super().__init__(f"{kind} '{name}' does not exist" if name else f"unknown kind '{kind}'")


class Invalid(ServiceError):
    """The change would make the configuration invalid; nothing was written."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{p.kind}/{p.name} {p.field}: {p.message}" for p in self.problems))


class StaleRevision(ServiceError):
    """A precondition (If-Match / expected revision) failed: the object changed meanwhile."""

    def __init__(self, kind: str, name: str, *, expected: int | None, actual: int | None) -> None:
        self.kind, self.name, self.expected, self.actual = kind, name, expected, actual
        now = f"revision {actual}" if actual else "no object"
        super().__init__(f"{kind}/{name} changed: you expected revision {expected}, the store has {now}; re-read and retry")


class Busy(ServiceError):
    """Concurrent change sets kept moving the configuration; nothing was written."""


class TooManyStreams(ServiceError):
    """Every slot for a kind of live stream is taken: the client should retry later (503)."""


class AlreadyExists(ServiceError):
    def __init__(self, kind: str, name: str) -> None:
        self.kind, self.name = kind, name
        super().__init__(f"{kind} '{name}' already exists")


class BadRequest(ServiceError):
    """The request is well-formed JSON but asks for something impossible."""


class TooLarge(ServiceError):
    """The change set exceeds what one store transaction may hold."""


class StoreBehind(ServiceError):
    """The store lost its history (wiped, or restored from an older backup) and is behind the audit
    log: writes wait until an operator restores it or accepts it as it is (409)."""


class HistoryUnavailable(ServiceError):
    """The metadata database cannot be reached; no change was written."""


class NotConfigured(ServiceError):
    """A feature needs a setting this process was started without (503, naming the setting)."""


class Unauthorized(ServiceError):
    pass


class Forbidden(ServiceError):
    pass


class UnknownRequest(ServiceError):
    """Feedback for a request id no outcome was recorded for (404)."""


class Unprocessable(ServiceError):
    """The request is understood but cannot be run; ``errors`` name the fields (422), each
    ``{field, message}`` and whatever more says where (``schemas.problem.FieldProblem``)."""

    def __init__(self, message: str, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        super().__init__(message)


class QueueUnavailable(ServiceError):
    """Redis (the job queue) did not answer; nothing was queued (503)."""


class InUse(ServiceError):
    """The name or id is taken by something else (409): the message says by what."""
