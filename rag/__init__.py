"""RAG engine (issue 6): VectorStore protocol, Chroma/Weaviate adapters, retrieval."""
