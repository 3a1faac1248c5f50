"""Processes that run beside the fleet: the sidecar agent beside each Ollama node and the fine-tuning worker."""
