"""Sidecar agent beside each Ollama node (issue 4) and the fine-tune worker (issue 8)."""
