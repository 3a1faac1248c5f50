"""Reranking: a cross-encoder reads the query and each of a collection's top fused candidates
together and scores how well the chunk answers it; the candidates are then ordered by that score
(a collection's ``rerank: {enabled, top_n}``).

No cross-encoder ships with the product: none could be found as a package installable offline
with a licence we may ship (PyPI's rerankers, flashrank, fastembed and the like fetch their
weights from the Hugging Face hub at first use; the one package with weights inside holds an
unlicensed pickled LightGBM model). An operator who has one, for example
cross-encoder/ms-marco-MiniLM-L-6-v2 (Apache-2.0) exported to ONNX, puts ``model.onnx`` and its
``tokenizer.json`` in a folder and names it with ``LLMTUNE_RAG__RERANKER_DIR``; onnxruntime runs
it as it runs the local embedder. bench/rag_quality.py measures what a model of that size costs
per query at top_n 20 and 50."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rag.errors import RerankUnavailable

if TYPE_CHECKING:
    import numpy as np

MODEL_FILE, TOKENIZER_FILE = "model.onnx", "tokenizer.json"


class Reranker(Protocol):
    @property
    def fingerprint(self) -> str:
        """Names the model: cached retrievals of another reranker are not reused."""

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        """How well each text answers ``query``, higher is better (blocks: run it in a thread)."""


class CrossEncoder:
    """An ONNX cross-encoder (BERT-like inputs ``input_ids``, ``attention_mask`` and, if the model
    takes them, ``token_type_ids``; one logit per pair, or two of which the last is "relevant").
    Pairs are cut to ``max_tokens``, the chunk's end first."""

    def __init__(self, folder: Path, *, max_tokens: int = 512, batch: int = 16, threads: int = 2) -> None:
        missing = [name for name in (MODEL_FILE, TOKENIZER_FILE) if not (folder / name).is_file()]
        if missing:
            raise RerankUnavailable(f"the reranker folder {folder} lacks {', '.join(missing)}: it needs an ONNX "
                                    f"cross-encoder ({MODEL_FILE}) and its {TOKENIZER_FILE}")  # fmt: skip
        self._folder, self._max_tokens, self._batch, self._threads = folder, max_tokens, batch, threads
        self._lock = threading.Lock()  # one inference at a time: onnxruntime already uses every core
        self._inputs: set[str] = set()

    @cached_property
    def fingerprint(self) -> str:
        digest = hashlib.blake2b(digest_size=8)
        with (self._folder / MODEL_FILE).open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        return f"onnx-cross-encoder:{digest.hexdigest()}"

    @cached_property
    def _session(self) -> tuple[Any, Any]:
        import onnxruntime
        from tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_file(str(self._folder / TOKENIZER_FILE))
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = self._threads
            options.log_severity_level = 3
            session = onnxruntime.InferenceSession(str(self._folder / MODEL_FILE), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # a corrupt file or a tokenizer of another format
            raise RerankUnavailable(f"the reranker in {self._folder} cannot be loaded: {exc}") from exc
        self._inputs = {i.name for i in session.get_inputs()}
        if not {"input_ids", "attention_mask"} <= self._inputs:
            raise RerankUnavailable(f"the reranker in {self._folder} takes {sorted(self._inputs)}; a cross-encoder "
                                    "takes input_ids and attention_mask")  # fmt: skip
        tokenizer.enable_truncation(self._max_tokens, strategy="only_second")
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        return tokenizer, session

    def load(self) -> CrossEncoder:
        """Load the model now (at start), so that a broken one is found before the first query."""
        _ = self._session
        return self

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        import numpy as np

        tokenizer, session = self._session
        out: list[float] = []
        with self._lock:
            for start in range(0, len(texts), self._batch):
                encoded = tokenizer.encode_batch([(query, t) for t in texts[start : start + self._batch]])
                ids = np.array([e.ids for e in encoded], dtype=np.int64)
                feed = {"input_ids": ids, "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64)}
                if "token_type_ids" in self._inputs:
                    feed["token_type_ids"] = np.array([e.type_ids for e in encoded], dtype=np.int64)
                out += self._logits(session.run(None, feed)[0]).tolist()
        return out

    def _logits(self, output: np.ndarray) -> np.ndarray:
        if output.ndim != 2:
            raise RerankUnavailable(f"the reranker in {self._folder} answers an array of shape {output.shape}; "
                                    "a cross-encoder answers one row of logits per pair")  # fmt: skip
        return output[:, -1]


def open_reranker(folder: Path | None) -> Reranker | None:
    """The operator's cross-encoder (loaded, so that a broken one stops the start), or None."""
    return None if folder is None else CrossEncoder(folder).load()
