"""Generation for RAG answers: the prompt from the collection's template with numbered sources,
sent through the router (native ``/api/v1/route``, pinned to the collection's generation route),
so routing, A/B splits and fallbacks apply to RAG answers like to any other call."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from rag.errors import GenerationFailed
from rag.router_client import RouterClient, RouterError
from schemas import ollama
from schemas.rag import RagCollection, RagSource


def build_prompt(collection: RagCollection, question: str, sources: Sequence[RagSource]) -> str:
    context = "\n\n".join(f"[{s.n}] (document {s.document_id}, chunk {s.chunk})\n{s.snippet}" for s in sources)
    # str.replace, not str.format: a template or a source may hold other braces
    template = collection.spec.prompt_template
    return template.replace("{context}", context or "(no sources found)").replace("{question}", question)


@dataclass(frozen=True, slots=True)
class Generated:
    text: str
    model: str | None
    node: str | None


class Generator:
    def __init__(self, router: RouterClient, *, timeout_s: float = 300.0) -> None:
        self._router, self._timeout = router, timeout_s

    def _body(self, collection: RagCollection, prompt: str, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}], "stream": stream, "task": "chat"}
        if collection.spec.generation_route:
            body["route"] = collection.spec.generation_route
        return body

    async def generate(self, collection: RagCollection, prompt: str) -> Generated:
        try:
            resp = await self._router.post("/api/v1/route", self._body(collection, prompt, stream=False), timeout_s=self._timeout)
        except RouterError as exc:
            raise GenerationFailed(_why(collection, exc)) from exc
        answer = resp.json().get("answer") or {}
        return Generated(ollama.text(answer), resp.headers.get("x-route-model"), resp.headers.get("x-route-node"))

    async def stream(self, collection: RagCollection, prompt: str) -> tuple[Generated, AsyncIterator[str]]:
        """The decision (model, node) once the router answered, and the answer's text pieces."""
        try:
            body = self._body(collection, prompt, stream=True)
            resp = await self._router.stream("/api/v1/route", body, timeout_s=self._timeout)
        except RouterError as exc:
            raise GenerationFailed(_why(collection, exc)) from exc

        async def pieces() -> AsyncIterator[str]:
            lines = ollama.Lines()
            try:
                async for chunk in resp.aiter_bytes():
                    for text in _texts(lines.feed(chunk)):
                        yield text
                for text in _texts(lines.end()):
                    yield text
            except httpx.HTTPError as exc:
                raise GenerationFailed(f"the answer broke off: {exc}") from exc
            finally:
                await resp.aclose()

        return Generated("", resp.headers.get("x-route-model"), resp.headers.get("x-route-node")), pieces()


def _texts(items: list[dict[str, Any]]) -> list[str]:
    """The text pieces of streamed answer lines; a line with an error ends the answer."""
    out = []
    for item in items:
        if item.get("error"):
            raise GenerationFailed(f"the answer broke off: {item['error']}")
        if text := ollama.text(item):
            out.append(text)
    return out


def _why(collection: RagCollection, exc: RouterError) -> str:
    if exc.status is None:
        return str(exc)
    route = collection.spec.generation_route
    hint = "" if route else "; the collection names no generation_route, so the router matched by hints"
    return f"generation through the router failed ({exc.status}): {exc.reason}{hint}"
