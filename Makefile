# LLM Tuning Service — developer entry points. Everything installs into .venv (git-ignored).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
STACK   := $(BIN)/python deploy/local/stack.py

.PHONY: install llm-tuning-up llm-tuning-status llm-tuning-logs llm-tuning-down test lint bench schemas openapi image-size clean

install: $(STAMP)

# Pinned by constraints.txt so a fresh machine gets the versions the tests passed with.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,postgres,etcd-local,redis-local,finetune]'
	@touch $(STAMP)

# SIM=N: N simulated Ollama nodes with an agent each (for machines without Ollama).
SIM     ?= 0
llm-tuning-up: install
	@SIM=$(SIM) $(STACK) up

llm-tuning-status:
	@$(STACK) status

llm-tuning-logs:
	@$(STACK) logs

llm-tuning-down:
	@$(STACK) down

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install
	$(BIN)/python bench/propagation.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/tune.py
	$(BIN)/python bench/router.py
	$(BIN)/python bench/revocation.py
	$(BIN)/python bench/rag.py
	$(BIN)/python bench/monitor.py
	$(BIN)/python bench/metrics_stream.py
	$(BIN)/python bench/abuse.py
	$(BIN)/python bench/finetune.py
	$(BIN)/python bench/autoscale.py

# The container image's expected size, from the Dockerfile's own install into a fresh venv (no Docker needed).
image-size:
	$(PY) deploy/docker/image_size.py

schemas: install
	$(BIN)/python -m schemas.jsonschema schemas/json

openapi: install
	$(BIN)/python -m controlplane.api.openapi openapi.json

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
