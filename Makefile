# LLM Tuning Service — developer entry points. Everything installs into .venv (git-ignored).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
STACK   := $(BIN)/python deploy/local/stack.py

.PHONY: install ui ui-if-node llm-tuning-up llm-tuning-status llm-tuning-logs llm-tuning-down test lint bench schemas openapi image-size clean

install: $(STAMP)

# Pinned by constraints.txt so a fresh machine gets the versions the tests passed with.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,postgres,etcd-local,redis-local,finetune]'
	@touch $(STAMP)

# The web UI (web/, served by the control plane at /ui): npm ci from the committed lock, then the
# build (types generated from openapi.json, type check, Vite). Only where Node.js and npm are.
UI_DEPS  := web/node_modules/.installed
UI_BUILD := web/dist/index.html
UI_SRC   := $(shell find web/src web/public -type f ! -name '*.gen.ts' 2>/dev/null) web/index.html web/vite.config.ts \
            web/tsconfig.json openapi.json

$(UI_DEPS): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	@touch $@

$(UI_BUILD): $(UI_DEPS) $(UI_SRC)
	cd web && npm run build

ui: $(UI_BUILD)

ui-if-node:
	@if command -v npm >/dev/null 2>&1; then $(MAKE) --no-print-directory ui; \
	else echo "note: Node.js/npm are not here: the web UI is not built (install Node.js 20, then make ui)"; fi

# SIM=N: N simulated Ollama nodes with an agent each (for machines without Ollama).
SIM     ?= 0
llm-tuning-up: install ui-if-node
	@SIM=$(SIM) $(STACK) up

llm-tuning-status:
	@$(STACK) status

llm-tuning-logs:
	@$(STACK) logs

llm-tuning-down:
	@$(STACK) down

test: install ui-if-node
	@if command -v npm >/dev/null 2>&1; then cd web && npm test; fi
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
	$(BIN)/python bench/rag_catalog.py
	$(BIN)/python bench/rag_quality.py
	$(BIN)/python bench/replicas.py
	$(BIN)/python bench/monitor.py
	$(BIN)/python bench/metrics_stream.py
	$(BIN)/python bench/abuse.py
	$(BIN)/python bench/finetune.py
	$(BIN)/python bench/autoscale.py
	$(BIN)/python bench/quality.py

# The container image's expected size, from the Dockerfile's own install into a fresh venv (no Docker needed).
image-size:
	$(PY) deploy/docker/image_size.py

schemas: install
	$(BIN)/python -m schemas.jsonschema schemas/json

openapi: install
	$(BIN)/python -m controlplane.api.openapi_file openapi.json

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache web/node_modules web/dist
