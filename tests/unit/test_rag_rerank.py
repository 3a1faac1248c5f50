"""Reranking with an operator's ONNX cross-encoder: no real weights can ship (rag/rerank.py), so
the test builds a tiny model of the same interface with onnx (input_ids, attention_mask,
token_type_ids in; one logit per pair out: how often the passage holds the word "restore") and
runs it through onnxruntime and the real tokenizer, in the engine, as a collection configures it."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from rag.cache import MemoryCache
from rag.catalog import SqliteCatalog
from rag.engine import Limits, RagEngine
from rag.errors import RerankUnavailable
from rag.rerank import MODEL_FILE, TOKENIZER_FILE, CrossEncoder, open_reranker
from rag.store import MemoryVectorStore
from schemas.model import Model
from schemas.rag import RagCollection, RagDocument
from schemas.registry import parse_object
from tests.helpers import model_doc, rag_doc
from tests.unit.test_rag_parts import Words

MINILM_TOKENIZER = Path(__file__).resolve().parents[2] / "rag" / "minilm" / "tokenizer.json"


def make_cross_encoder(folder: Path, word: str = "restore") -> Path:
    """model.onnx scoring a pair by the count of ``word``'s token in its second segment, beside a
    copy of the MiniLM tokenizer (a BERT WordPiece tokenizer, as cross-encoders of that family use)."""
    import onnx
    from onnx import TensorProto, helper
    from tokenizers import Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(MINILM_TOKENIZER, folder / TOKENIZER_FILE)
    tokenizer = Tokenizer.from_file(str(MINILM_TOKENIZER))
    table = np.zeros((tokenizer.get_vocab_size(), 1), dtype=np.float32)
    table[tokenizer.token_to_id(word), 0] = 1.0
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
              for n in ("input_ids", "attention_mask", "token_type_ids")]  # fmt: skip
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["hits"]),  # [batch, seq, 1]
        helper.make_node("Cast", ["token_type_ids"], ["second"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["second", "axis2"], ["second3"]),
        helper.make_node("Mul", ["hits", "second3"], ["counted"]),
        helper.make_node("ReduceSum", ["counted", "axis1"], ["logits"], keepdims=0),  # [batch, 1]
    ]
    initializers = [helper.make_tensor("table", TensorProto.FLOAT, list(table.shape), table.flatten().tolist()),
                    helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
                    helper.make_tensor("axis2", TensorProto.INT64, [1], [2])]  # fmt: skip
    output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1])
    graph = helper.make_graph(nodes, "count-word", inputs, [output], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / MODEL_FILE))
    return folder


def test_a_cross_encoder_scores_pairs_and_a_broken_folder_is_named(tmp_path: Path) -> None:
    encoder = CrossEncoder(make_cross_encoder(tmp_path / "ce")).load()
    assert encoder.score("restore?", ["We restore nightly; restore by hand too.", "nothing here", "restore"]) == [2.0, 0.0, 1.0]
    assert encoder.score("restore", []) == [] and encoder.fingerprint.startswith("onnx-cross-encoder:")
    assert open_reranker(None) is None

    with pytest.raises(RerankUnavailable, match=re.escape("lacks model.onnx, tokenizer.json")):
        CrossEncoder(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / MODEL_FILE).write_bytes(b"not a model")
    shutil.copy(MINILM_TOKENIZER, broken / TOKENIZER_FILE)
    with pytest.raises(RerankUnavailable, match="cannot be loaded"):
        open_reranker(broken)


def test_a_collection_reranks_its_top_candidates(tmp_path: Path) -> None:
    store, words = MemoryVectorStore(), Words()
    reranker = CrossEncoder(make_cross_encoder(tmp_path / "ce")).load()

    def engine(with_reranker: bool) -> RagEngine:
        return RagEngine(catalog=SqliteCatalog(tmp_path / "c.sqlite"), store_for=lambda c: store, embedder_for=lambda m: words,
                         cache=MemoryCache(), limits=Limits(), reranker=reranker if with_reranker else None)  # fmt: skip

    model = Model.model_validate(model_doc("emb", tag="nomic-embed-text", caps=["embed"], ctx=8192))
    plain = parse_object(rag_doc("kb1", "emb", top_k=2))
    reranking = parse_object(rag_doc("kb1", "emb", top_k=2, rerank={"enabled": True, "top_n": 4}) | {"metadata": {"name": "kb1"}})
    assert isinstance(plain, RagCollection) and isinstance(reranking, RagCollection)
    texts = {"quota": "quota error: the quota is full", "backup": "nightly backup", "how": "quota error? restore the last backup",
             "coffee": "coffee"}  # fmt: skip
    docs = [RagDocument(id=i, text=t) for i, t in texts.items()]
    eng = engine(True)
    asyncio.run(eng.ingest(plain, model, docs))

    before = asyncio.run(eng.retrieve(plain, model, "quota error"))
    assert before.sources[0].document_id == "quota" and before.sources[0].rerank_score is None and before.rerank_ms == 0
    after = asyncio.run(eng.retrieve(reranking, model, "quota error"))
    assert [s.document_id for s in after.sources] == ["how", "quota"]  # the cross-encoder's favourite first, then the fused order
    assert after.sources[0].rerank_score == 1.0 and after.sources[1].rerank_score == 0.0 and after.rerank_ms > 0

    with pytest.raises(RerankUnavailable, match="LLMTUNE_RAG__RERANKER_DIR"):  # asked for, not there: said, not skipped
        asyncio.run(engine(False).retrieve(reranking, model, "quota error"))
