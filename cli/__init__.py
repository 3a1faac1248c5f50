"""llmctl: the operator CLI; talks only to the control plane's REST API."""
