"""The RAG engine's errors; controlplane/api/errors.py maps them to HTTP answers."""

from __future__ import annotations


class RagError(Exception):
    """Base of every RAG error; the message is meant for the person who sent the request."""


class UnknownCollection(RagError):
    """No RagCollection of that name is configured (404)."""


class UnknownDocument(RagError):
    """The collection holds no document of that id (404)."""


class BadInput(RagError):
    """The request cannot be served as sent: an empty query, a filter of the wrong shape (422)."""


class DocumentTooLarge(RagError):
    """A document or a batch exceeds the configured limits (413)."""


class EmbeddingFailed(RagError):
    """The embedding model could not embed the texts (502): the router or the node failed."""


class GenerationFailed(RagError):
    """The answer could not be generated through the router (502)."""


class VectorStoreUnavailable(RagError):
    """The vector database cannot be reached or failed (503)."""


class RerankUnavailable(RagError):
    """A collection asks for reranking and this control plane has no usable reranker (409)."""
