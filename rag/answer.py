"""Generation for RAG answers: the prompt from the collection's template with numbered sources,
sent through the router (native ``/api/v1/route``, pinned to the collection's generation route),
so routing, A/B splits and fallbacks apply to RAG answers like to any other call."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from rag.errors import GenerationFailed
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
    def __init__(self, *, router_url: str, client: httpx.AsyncClient, timeout_s: float = 300.0) -> None:
        self._url, self._client, self._timeout = router_url.rstrip("/"), client, timeout_s

    def _body(self, collection: RagCollection, prompt: str, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}], "stream": stream, "task": "chat"}
        if collection.spec.generation_route:
            body["route"] = collection.spec.generation_route
        return body

    async def generate(self, collection: RagCollection, prompt: str) -> Generated:
        try:
            resp = await self._client.post(f"{self._url}/api/v1/route", json=self._body(collection, prompt, stream=False),
                                           timeout=self._timeout)  # fmt: skip
        except httpx.HTTPError as exc:
            raise GenerationFailed(f"the router at {self._url} could not be reached: {exc}") from exc
        if resp.status_code != 200:
            raise GenerationFailed(_why(collection, resp.status_code, resp.content))
        answer = resp.json().get("answer") or {}
        return Generated(ollama.text(answer), resp.headers.get("x-route-model"), resp.headers.get("x-route-node"))

    async def stream(self, collection: RagCollection, prompt: str) -> tuple[Generated, AsyncIterator[str]]:
        """The decision (model, node) once the router answered, and the answer's text pieces."""
        request = self._client.build_request(
            "POST", f"{self._url}/api/v1/route", json=self._body(collection, prompt, stream=True), timeout=self._timeout
        )
        try:
            resp = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise GenerationFailed(f"the router at {self._url} could not be reached: {exc}") from exc
        if resp.status_code != 200:
            content = await resp.aread()
            await resp.aclose()
            raise GenerationFailed(_why(collection, resp.status_code, content))

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


def _why(collection: RagCollection, status: int, content: bytes) -> str:
    try:
        detail = orjson.loads(content).get("error") or content.decode(errors="replace")
    except (orjson.JSONDecodeError, AttributeError):
        detail = content.decode(errors="replace")[:300]
    route = collection.spec.generation_route
    hint = "" if route else "; the collection names no generation_route, so the router matched by hints"
    return f"generation through the router failed ({status}): {detail}{hint}"
