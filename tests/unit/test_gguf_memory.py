"""The memory a model is booked for (agents/sidecar/gguf_memory.py, controlplane/services/packing.py):
estimated from a small GGUF file written here, then replaced by the size a node observed."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from agents.sidecar.gguf_memory import GRAPH_BYTES, MARGIN, estimate, read_shape
from controlplane.services.packing import ClaimKey, Claims


def write_model(path: Path) -> None:
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(4)
    w.add_context_length(4096)
    w.add_embedding_length(256)
    w.add_head_count(8)
    w.add_head_count_kv(2)
    w.add_tensor("token_embd.weight", np.zeros((1000, 256), dtype=np.float16))
    w.add_tensor("blk.0.attn_q.weight", np.zeros((256, 256), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_the_estimate_from_the_header_then_the_observed_size(tmp_path: Path) -> None:
    write_model(tmp_path / "m.gguf")
    shape = read_shape(tmp_path / "m.gguf")
    assert (shape.architecture, shape.weights, shape.layers, shape.kv_heads, shape.head_dim) == (
        "llama",
        512_000 + 262_144,
        4,
        2,
        32,
    )
    kv = 2 * 4 * 2048 * 2 * 2 * 32 * 2  # K and V, layers, context, slots, kv heads, head size, f16
    assert estimate(shape, num_ctx=2048, parallel=2) == int((shape.weights + kv) * (1 + MARGIN) + GRAPH_BYTES)
    assert estimate(shape, num_ctx=2048, parallel=2, kv_cache_type="q8_0") < estimate(shape, num_ctx=2048, parallel=2)
    claims, key = Claims(), ClaimKey("sha256:abc", 2048, 2)
    guess = estimate(shape, num_ctx=2048, parallel=2)
    assert claims.claim(key, estimate=guess) == guess
    claims.observe(key, 300_000_000)  # what /api/ps said once it loaded
    assert claims.claim(key, estimate=guess) == 300_000_000
    assert claims.claim(ClaimKey("sha256:abc", 8192, 2), estimate=guess) == guess  # another context: not the same size
