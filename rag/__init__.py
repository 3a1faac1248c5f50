"""RAG engine: VectorStore protocol, Chroma/Weaviate adapters, retrieval."""
