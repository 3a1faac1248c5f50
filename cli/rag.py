"""llmctl's RAG commands: ``rag ingest`` (files and folders, with a progress bar), ``rag query``,
``rag docs`` and ``rag delete``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.client import ApiError, Client
from schemas.rag import RagAnswer, RagDocumentList, RagDocumentsDeleted, RagIngestResult

SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".rst": "text", ".text": "text"}


def documents(paths: list[Path]) -> Iterator[dict[str, Any]]:
    """One document per file; folders are walked for the known suffixes. The id is the path from
    the argument's parent folder (``docs/ops/backups.md`` for ``/x/docs``), so it does not change
    when the same tree is ingested from elsewhere."""
    for path in paths:
        if not path.exists():
            raise ApiError(f"{path}: no such file or folder")
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES) if path.is_dir() else [path]
        for file in files:
            try:
                text = file.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError) as exc:
                raise ApiError(f"{file}: cannot read it as UTF-8 text ({exc})") from exc
            if text.strip():
                kind = SUFFIXES.get(file.suffix.lower(), "text")
                yield {"id": str(file.relative_to(path.parent)), "text": text, "format": kind, "metadata": {"source": file.name}}


def batches(docs: Iterator[dict[str, Any]], *, max_docs: int, max_bytes: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    size = 0
    for doc in docs:
        length = len(doc["text"].encode())
        if batch and (len(batch) >= max_docs or size + length > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(doc)
        size += length
    if batch:
        yield batch


def register(app: typer.Typer, client: Callable[[], Client], run: Callable[[Callable[[], None]], None], out: Console) -> None:
    rag_app = typer.Typer(help="RAG collections: ingest documents, query them.", no_args_is_help=True)
    app.add_typer(rag_app, name="rag")

    @rag_app.command("ingest")
    def ingest(
        paths: list[Path] = typer.Argument(..., help="Files or folders (.md, .txt, .rst)."),
        collection: str = typer.Option(..., "--collection", "-c"),
        batch_docs: int = typer.Option(100, "--batch", help="Documents per request."),
    ) -> None:
        """Ingest files; unchanged ones are skipped by the server. Each batch is all or nothing."""

        def body() -> None:
            api, totals = client(), {"ingested": 0, "unchanged": 0, "chunks": 0}
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            with Progress(*columns, console=out, transient=False) as bar:
                for number, batch in enumerate(batches(documents(paths), max_docs=batch_docs, max_bytes=8 * 1024 * 1024), 1):
                    task = bar.add_task(f"batch {number} ({len(batch)} files): embedding", total=None)
                    path = f"/api/v1/rag/collections/{collection}/documents"
                    for line in api.lines(path, {"documents": batch}, progress="true"):
                        if line["type"] == "progress":
                            bar.update(task, completed=line["embedded"], total=line["total"])
                        elif line["type"] == "error":
                            raise ApiError(f"batch {number} failed, nothing of it was stored: {line['error']}")
                        else:
                            done = RagIngestResult.model_validate({k: v for k, v in line.items() if k != "type"})
                            totals["ingested"] += len(done.ingested)
                            totals["unchanged"] += len(done.unchanged)
                            totals["chunks"] += done.chunks
                            bar.update(task, description=f"batch {number} ({len(batch)} files): done", total=1, completed=1)
            out.print(f"{totals['ingested']} ingested, {totals['unchanged']} unchanged, {totals['chunks']} chunks written")

        run(body)

    @rag_app.command("query")
    def query(
        question: str = typer.Argument(...),
        collection: str = typer.Option(..., "--collection", "-c"),
        top_k: int | None = typer.Option(None, "--top-k", "-k"),
        retrieve_only: bool = typer.Option(False, "--retrieve-only", help="Sources only, no generated answer."),
        where: list[str] = typer.Option([], "--filter", help="metadata field=value (repeatable)."),
    ) -> None:
        """Answer a question from a collection, with numbered sources and timings."""

        def body() -> None:
            pairs = [w.partition("=") for w in where]
            if any(not sep for _, sep, _ in pairs):
                raise ApiError("--filter takes field=value")
            payload: dict[str, Any] = {"collection": collection, "query": question, "retrieve_only": retrieve_only}
            payload |= {"top_k": top_k} if top_k else {}
            payload |= {"filters": {k: v for k, _, v in pairs}} if pairs else {}
            result = RagAnswer.model_validate(client().post("/api/v1/rag/query", payload))
            if result.answer is not None:
                out.print(result.answer, highlight=False, markup=False)  # the model's text: brackets are not markup
                out.print(f"[dim]model {result.model} on {result.node}[/dim]")
            reranked = any(s.rerank_score is not None for s in result.sources)
            columns = ["n", "document", "chunk", "score", "similarity", "bm25 rank", *(["rerank"] if reranked else []), "snippet"]
            table = Table(*columns)
            table.columns[1].overflow = "fold"  # ids are paths: show them whole
            for s in result.sources:
                snippet = " ".join(s.snippet.split())[:80]
                sim = f"{s.similarity:.3f}" if s.similarity is not None else "-"
                rank = str(s.keyword_rank or "-")
                rerank = [f"{s.rerank_score:.3f}" if s.rerank_score is not None else "-"] if reranked else []
                row = [str(s.n), escape(s.document_id), str(s.chunk), f"{s.score:.3f}", sim, rank, *rerank, escape(snippet)]
                table.add_row(*row)
            out.print(table)
            t = result.timings
            cached = " (retrieval cached)" if result.cached else ""
            rerank_ms = f" (rerank {t.rerank_ms} ms)" if t.rerank_ms else ""
            out.print(f"embed {t.embed_ms} ms, retrieve {t.retrieve_ms} ms{rerank_ms}, generate {t.generate_ms} ms, "
                      f"total {t.total_ms} ms{cached}")  # fmt: skip

        run(body)

    @rag_app.command("docs")
    def docs(collection: str = typer.Option(..., "--collection", "-c"), offset: int = 0, limit: int = 100) -> None:
        """List a collection's documents."""

        def body() -> None:
            answer = client().get(f"/api/v1/rag/collections/{collection}/documents", offset=offset, limit=limit)
            listing = RagDocumentList.model_validate(answer)
            table = Table("document", "chunks", "bytes", "hash")
            table.columns[0].overflow = "fold"
            for d in listing.documents:
                table.add_row(d.id, str(d.chunks), str(d.bytes), d.hash[:12])
            out.print(table)
            out.print(f"{len(listing.documents)} of {listing.total}")

        run(body)

    @rag_app.command("delete")
    def delete(doc_id: str, collection: str = typer.Option(..., "--collection", "-c")) -> None:
        """Remove one document from a collection."""

        def body() -> None:
            done = RagDocumentsDeleted.model_validate(client().delete(f"/api/v1/rag/collections/{collection}/documents/{doc_id}"))
            out.print(f"deleted {', '.join(done.deleted)} from {done.collection}")

        run(body)
