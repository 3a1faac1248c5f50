"""REST API (FastAPI): app factory, thin routes, auth, and the one domain-error → HTTP map."""
