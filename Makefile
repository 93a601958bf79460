# Two commands for a new machine (see README.md):
#   make run    set up a virtualenv with the runtime only, then serve on the embedded SQLite
#   make test   add the dev tools (not the [ml] extra) to that virtualenv, lint, run the suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test install dev lint bench

$(BIN)/lora-manager: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

install: $(BIN)/lora-manager

run: install
	$(BIN)/lora-manager serve

# The test, lint and benchmark tools. Not the [ml] extra (torch): the semantic-embedder
# tests skip without it; README.md says how to add it with CPU-only torch (.ci/run does).
$(VENV)/.dev-installed: pyproject.toml $(BIN)/lora-manager
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

dev: $(VENV)/.dev-installed

test: lint
	$(BIN)/pytest

lint: dev
	$(BIN)/ruff check src tests bench infrastructure
	$(BIN)/ruff format --check src tests bench infrastructure
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

bench: dev
	$(BIN)/python bench/bench_migrations.py --out docs/benchmarks.md
	$(BIN)/python bench/bench_deliveries.py --out docs/benchmarks.md
	$(BIN)/python bench/bench_recommendations.py --out docs/benchmarks.md
