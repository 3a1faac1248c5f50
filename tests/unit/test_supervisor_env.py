"""The supervised Ollama inherits only what it needs of the agent's environment."""

from __future__ import annotations

from agents.sidecar.supervisor import ollama_environment


def test_ollama_never_sees_the_agents_secrets() -> None:
    agent = {
        "PATH": "/usr/bin", "HOME": "/home/a", "LC_ALL": "C.UTF-8", "CUDA_VISIBLE_DEVICES": "0", "HTTPS_PROXY": "http://p:3128",
        "OLLAMA_MODELS": "/models", "OLLAMA_NUM_PARALLEL": "9",
        "LLMTUNE_STORE__PASSWORD": "etcd-secret", "LLMTUNE_AGENT__CONTROL_PLANE_TOKEN": "llmt_secret",
        "AWS_SECRET_ACCESS_KEY": "x",
    }  # fmt: skip
    env = ollama_environment(agent, {"OLLAMA_NUM_PARALLEL": "2", "OLLAMA_CONTEXT_LENGTH": "8192"})
    assert env == {
        "PATH": "/usr/bin", "HOME": "/home/a", "LC_ALL": "C.UTF-8", "CUDA_VISIBLE_DEVICES": "0", "HTTPS_PROXY": "http://p:3128",
        "OLLAMA_MODELS": "/models", "OLLAMA_NUM_PARALLEL": "2", "OLLAMA_CONTEXT_LENGTH": "8192",
    }  # fmt: skip
