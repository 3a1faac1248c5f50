"""Control plane: configuration store, write path, REST API and control loops."""
