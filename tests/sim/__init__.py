"""An Ollama simulator that follows Ollama's REST API closely enough for the official client."""
