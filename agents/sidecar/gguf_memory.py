"""How much memory a model will take once Ollama loads it, estimated from its GGUF file's header
before it has ever run (the weights' bytes, the KV cache for ``num_ctx`` tokens in each of the
parallel slots, and a margin for the compute graph): what the autoscaler books for a model no
node has loaded yet. Once a node has loaded it, the size Ollama reports replaces the estimate.
The only module that reads GGUF (PyPI ``gguf``, llama.cpp's own reader)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf

KV_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}  # bytes per cached value, by OLLAMA_KV_CACHE_TYPE
MARGIN = 0.10  # of weights and cache: Ollama's own estimate adds graph and per-layer buffers
GRAPH_BYTES = 256 * 1024 * 1024  # a floor for the compute graph


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
