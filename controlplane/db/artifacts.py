"""Files kept by content digest in SQL (fine-tuned adapters): written whole by the fine-tuning
worker, read chunk by chunk by the API for the agents. The ``artifacts`` row is written last, in
the same transaction as the chunks, so a reader never sees a partial file."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controlplane.db.models import Artifact, ArtifactChunk

#: Bytes per chunk row: small enough for any database's row, large enough to keep rows few.
CHUNK_BYTES = 4 << 20


def file_digest(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            hasher.update(chunk)
    return f"sha256:{hasher.hexdigest()}"


class ArtifactStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def put_file(self, path: Path) -> str:
        """Keep the file; its digest. A file kept already is not written again."""
        digest = file_digest(path)
        if self.info(digest) is not None:
            return digest
        size = seq = 0
        again = hashlib.sha256()
        with Session(self._engine) as session, path.open("rb") as f:
            try:
                while chunk := f.read(CHUNK_BYTES):  # Core inserts: the session holds no copy of the bytes
                    again.update(chunk)
                    session.execute(insert(ArtifactChunk).values(digest=digest, seq=seq, data=chunk))
                    size, seq = size + len(chunk), seq + 1
                if f"sha256:{again.hexdigest()}" != digest:
                    session.rollback()
                    raise OSError(f"{path} changed while it was being stored")
                session.execute(insert(Artifact).values(digest=digest, size=size, chunks=seq, created_at=time.time()))
                session.commit()
            except IntegrityError:  # the same file kept by another writer at the same moment
                session.rollback()
        return digest

    def info(self, digest: str) -> Artifact | None:
        with Session(self._engine, expire_on_commit=False) as session:
            return session.get(Artifact, digest)

    def kept(self, digests: Iterable[str]) -> set[str]:
        """Those of ``digests`` that are kept."""
        with Session(self._engine) as session:
            return set(session.scalars(select(Artifact.digest).where(Artifact.digest.in_(set(digests)))))

    def chunk(self, digest: str, seq: int) -> bytes:
        with Session(self._engine) as session:
            data = session.scalar(select(ArtifactChunk.data).where(ArtifactChunk.digest == digest, ArtifactChunk.seq == seq))
        if data is None:
            raise LookupError(f"artifact {digest} has no chunk {seq}")
        return data
