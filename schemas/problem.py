"""The shape of every error the control plane's API answers: RFC 9457 ``application/problem+json``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class FieldProblem(BaseModel):
    """One field that is wrong, and why."""

    model_config = ConfigDict(extra="allow")

    field: str = Field(description="Where: a dotted path into the request (or the object), '(document)' for the whole.")
    message: str
    object: str | None = Field(default=None, description="kind/name of the configuration object, in a change set.")


class ProblemDetails(BaseModel):
    """An error answer. Members beyond these are the problem type's own (``stored`` for an invalid
    stored object)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="A URI naming the problem type.")
    title: str = Field(description="The problem type in words (the same for every answer of this type).")
    status: int = Field(ge=400, le=599)
    detail: str = Field(description="What went wrong this time and what to do about it.")
    errors: list[FieldProblem] | None = Field(default=None, description="The fields at fault, for validation problems.")
