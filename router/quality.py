"""Automatic quality signals of one answer, from Ollama's own answer object (pure functions):
``empty`` (no text), ``truncated`` (stopped by the length limit), ``refusal`` (a refusal phrase
opens the answer) and ``invalid_json`` (JSON was asked for and the text does not parse).

A streamed answer is seen only by its last line here: it yields ``truncated`` alone."""

from __future__ import annotations

import re
from typing import Any

import orjson

from schemas import ollama

REFUSALS = re.compile(
    r"^\s*(i'?m sorry,? but|i am sorry,? but|i can(?:'|no)t (?:help|assist|comply|provide)"
    r"|i cannot (?:help|assist|comply|provide)|i'?m (?:not able|unable) to (?:help|assist|comply|provide)"
    r"|as an ai(?: language model)?,? i can(?:'|no)t)",
    re.IGNORECASE,
)


def signals(final: dict[str, Any] | None, *, whole: bool, wants_json: bool = False) -> tuple[str, ...]:
    """``final``: ``ollama.final_object`` of the whole answer (``whole``) or of a stream's tail."""
    if final is None:
        return ()
    out = []
    if ollama.finish_reason(final) == "length":
        out.append("truncated")
    if whole:
        text = ollama.text(final)
        if not text.strip() and not ollama.tool_calls(final):  # a tool call is an answer without text
            out.append("empty")
        elif REFUSALS.match(text):
            out.append("refusal")
        if wants_json and text.strip():
            try:
                orjson.loads(text)
            except orjson.JSONDecodeError:
                out.append("invalid_json")
    return tuple(out)
