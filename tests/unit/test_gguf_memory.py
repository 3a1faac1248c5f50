"""The memory a model is booked for (agents/sidecar/gguf_memory.py, controlplane/services/packing.py):
estimated from a small GGUF file written here, then replaced by the size a node observed."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np

from agents.sidecar.gguf_memory import DEFAULT_CTX, GRAPH_BYTES, MARGIN, Estimator, blob_of, estimate, on_disk, read_shape
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
    claims.observe(ClaimKey("sha256:abc", 4096, 2), 400_000_000)
    assert claims.claim(ClaimKey("sha256:abc", 0, 2), estimate=guess) == 400_000_000  # the default context: any seen
    assert claims.claim(ClaimKey("sha256:abc", 1024, 2), estimate=guess) == 300_000_000  # reported as 2 x 1024 together


async def test_the_agent_estimates_from_ollamas_models_directory_else_from_the_size_on_disk(tmp_path: Path) -> None:
    """Ollama keeps ``manifests/<registry>/<namespace>/<name>/<tag>`` naming the weights' blob."""
    blob = tmp_path / "blobs" / "sha256-abc"
    blob.parent.mkdir()
    write_model(blob)
    manifest = tmp_path / "manifests" / "registry.ollama.ai" / "library" / "tiny" / "1b"
    manifest.parent.mkdir(parents=True)
    layers = [{"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:abc", "size": blob.stat().st_size}]
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": layers}))
    assert blob_of(tmp_path, "tiny:1b") == blob and blob_of(tmp_path, "../x:1b") is None and blob_of(tmp_path, "y:2") is None
    estimator = Estimator(tmp_path)
    got = await estimator.of("tiny:1b", digest="abc", disk_bytes=10, num_ctx=2048, parallel=2)
    assert got.source == "gguf" and got.bytes == estimate(read_shape(blob), num_ctx=2048, parallel=2)
    assert (await estimator.of("tiny:1b", digest="abc", disk_bytes=10, num_ctx=0, parallel=2)).bytes == estimate(
        read_shape(blob), num_ctx=DEFAULT_CTX, parallel=2
    )
    other = await estimator.of("other:7b", digest="def", disk_bytes=4_000_000_000, num_ctx=0, parallel=4)
    assert other.source == "disk" and other.bytes == on_disk(4_000_000_000) == int(4e9 * (1 + MARGIN) + GRAPH_BYTES)
    assert (await Estimator(None).of("tiny:1b", digest="abc", disk_bytes=10, num_ctx=0, parallel=1)).source == "disk"
