"""The RAG catalog in PostgreSQL (shared by every control-plane replica): collections, documents,
chunks with their ``tsvector`` and token count, and the keyword index: postings (lexeme, chunk,
term frequency, the chunk's length) and each lexeme's document frequency, kept in the same
transactions, for BM25 ranking. On SQLite nothing is created: the catalog there is its own SQLite
file with FTS5 (``rag.catalog``).

Revision ID: 0010
Revises: 0009
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("""
        CREATE TABLE rag_collections (
            name TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, generation BIGINT NOT NULL,
            chunks BIGINT NOT NULL DEFAULT 0, tokens BIGINT NOT NULL DEFAULT 0)""")
    op.execute("""
        CREATE TABLE rag_documents (
            collection TEXT NOT NULL, doc_id TEXT NOT NULL, hash TEXT NOT NULL, chunks INTEGER NOT NULL,
            bytes BIGINT NOT NULL, metadata JSONB NOT NULL, updated DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (collection, doc_id))""")
    op.execute("""
        CREATE TABLE rag_chunks (
            collection TEXT NOT NULL, id TEXT NOT NULL, doc_id TEXT NOT NULL, idx INTEGER NOT NULL, text TEXT NOT NULL,
            metadata JSONB NOT NULL, words TSVECTOR NOT NULL, tokens INTEGER NOT NULL, PRIMARY KEY (collection, id))""")
    op.execute("CREATE INDEX rag_chunks_by_doc ON rag_chunks (collection, doc_id)")
    op.execute("""
        CREATE TABLE rag_postings (
            collection TEXT NOT NULL, lexeme TEXT NOT NULL, chunk TEXT NOT NULL, tf INTEGER NOT NULL, tokens INTEGER NOT NULL,
            PRIMARY KEY (collection, lexeme, chunk) INCLUDE (tf, tokens))""")
    op.execute("CREATE INDEX rag_postings_by_chunk ON rag_postings (collection, chunk)")
    op.execute("""
        CREATE TABLE rag_terms (
            collection TEXT NOT NULL, lexeme TEXT NOT NULL, df INTEGER NOT NULL, PRIMARY KEY (collection, lexeme))""")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in ("rag_terms", "rag_postings", "rag_chunks", "rag_documents", "rag_collections"):
        op.execute(f"DROP TABLE {table}")
