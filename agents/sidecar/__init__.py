"""The sidecar agent: makes one Ollama node match the configuration and reports its status."""
