"""How much memory a model will take once Ollama loads it, estimated from its GGUF file's header
before it has ever run (the weights' bytes, the KV cache for ``num_ctx`` tokens in each of the
parallel slots, and a margin for the compute graph): what the autoscaler books for a model no
node has loaded yet. Once a node has loaded it, the size Ollama reports replaces the estimate.
Without Ollama's models directory to read, the size on disk and the margin. The only module
that reads GGUF (PyPI ``gguf``, llama.cpp's own reader)."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import gguf

from schemas.status import MemoryEstimate

log = logging.getLogger(__name__)

KV_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}  # bytes per cached value, by OLLAMA_KV_CACHE_TYPE
MARGIN = 0.10  # of weights and cache: Ollama's own estimate adds graph and per-layer buffers
GRAPH_BYTES = 256 * 1024 * 1024  # a floor for the compute graph
DEFAULT_CTX = 4096  # the context Ollama loads a model with when nothing sets one
MAX_KEPT = 4096  # estimates an agent keeps


@dataclass(frozen=True, slots=True)
class Shape:
    """What the header tells: the weights' bytes and the attention's dimensions."""

    architecture: str
    weights: int
    layers: int
    kv_heads: int
    head_dim: int
    context_length: int


def read_shape(path: Path) -> Shape:
    """The header of a GGUF file (tensors are not read: only their descriptions)."""
    reader = gguf.GGUFReader(path)

    def field(name: str, default: int = 0) -> int:
        found = reader.fields.get(name)
        return int(found.parts[found.data[0]][0]) if found is not None and found.data else default

    arch_field = reader.fields["general.architecture"]
    arch = bytes(arch_field.parts[arch_field.data[0]]).decode()
    heads = field(f"{arch}.attention.head_count", 1)
    embedding = field(f"{arch}.embedding_length")
    head_dim = field(f"{arch}.attention.key_length") or (embedding // max(heads, 1))
    return Shape(arch, sum(int(t.n_bytes) for t in reader.tensors), field(f"{arch}.block_count"),
                 field(f"{arch}.attention.head_count_kv", heads), head_dim, field(f"{arch}.context_length"))  # fmt: skip


def estimate(shape: Shape, *, num_ctx: int, parallel: int = 1, kv_cache_type: str = "f16") -> int:
    """Bytes the model takes loaded with ``num_ctx`` (per slot) and ``parallel`` slots."""
    kv = 2 * shape.layers * num_ctx * parallel * shape.kv_heads * shape.head_dim * KV_BYTES.get(kv_cache_type, 2.0)
    return int((shape.weights + kv) * (1 + MARGIN) + GRAPH_BYTES)


def on_disk(size: int) -> int:
    """The estimate from the weights' size on disk alone (the KV cache unknown)."""
    return int(size * (1 + MARGIN) + GRAPH_BYTES)


def blob_of(models_dir: Path, tag: str) -> Path | None:
    """The weights' blob of ``tag`` (``name:version``) in Ollama's models directory, from its manifest."""
    name, _, version = tag.rpartition(":")
    parts = name.split("/")
    if len(parts) < 3:
        parts = ["registry.ollama.ai", *(["library"] if len(parts) == 1 else []), *parts]
    if not version or any(p in ("", ".", "..") for p in (*parts, version)):
        return None
    try:
        manifest = json.loads((models_dir / "manifests" / Path(*parts) / version).read_text())
        layer = next(x for x in manifest["layers"] if x.get("mediaType") == "application/vnd.ollama.image.model")
        digest = str(layer["digest"])
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return None
    blob = models_dir / "blobs" / digest.replace(":", "-")
    return blob if blob.parent == models_dir / "blobs" else None


class Estimator:
    """Estimates for the models on a node's disk, each computed once per weights, context and slots
    (a header read, in a worker thread)."""

    def __init__(self, models_dir: Path | None) -> None:
        self._dir = models_dir
        self._done: dict[tuple[str, str, int, int, str], MemoryEstimate] = {}

    async def of(
        self, tag: str, *, digest: str, disk_bytes: int, num_ctx: int, parallel: int, kv_cache_type: str = "f16",
        default_ctx: int = DEFAULT_CTX,
    ) -> MemoryEstimate:  # fmt: skip
        """``num_ctx`` 0: the server's default context, ``default_ctx`` (its OLLAMA_CONTEXT_LENGTH)."""
        key = (tag, digest, num_ctx or default_ctx, parallel, kv_cache_type)
        found = self._done.get(key)
        if found is None:
            if len(self._done) >= MAX_KEPT:  # models come and go: forget the old ones now and then
                self._done.clear()
            found = await asyncio.to_thread(self._compute, tag, digest, disk_bytes, key[2], parallel, kv_cache_type)
            self._done[key] = found = found.model_copy(update={"num_ctx": num_ctx})
        return found

    def _compute(self, tag: str, digest: str, disk_bytes: int, num_ctx: int, parallel: int, kv: str) -> MemoryEstimate:
        blob = blob_of(self._dir, tag) if self._dir is not None else None
        if blob is not None:
            try:
                shape = read_shape(blob)
                size = estimate(shape, num_ctx=num_ctx, parallel=parallel, kv_cache_type=kv)
                return MemoryEstimate(digest=digest, num_ctx=num_ctx, parallel=parallel, bytes=size, source="gguf")
            except (OSError, ValueError, KeyError, IndexError) as exc:
                log.warning("%s: its GGUF header (%s) could not be read (%s); estimating from its size on disk", tag, blob, exc)
        return MemoryEstimate(digest=digest, num_ctx=num_ctx, parallel=parallel, bytes=on_disk(disk_bytes), source="disk")
