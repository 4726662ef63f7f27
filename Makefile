# One command each, on a fresh machine: `make serve` runs the router, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install serve test test-llm llm-setup lint bench demo-up demo-down

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: the CPU wheel on our machines; never let pip pick a CUDA build here.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/dars-router serve

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

llm-setup: $(STAMP)
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(BIN)):$$PATH bash deploy/local-llms/setup.sh

test-llm: llm-setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m llm

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy --strict app router_models

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/overhead.py

demo-up: llm-setup
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(BIN)):$$PATH bash deploy/local-llms/start.sh

demo-down:
	bash deploy/local-llms/stop.sh
