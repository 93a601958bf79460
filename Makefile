# Two commands for a new machine (see README.md):
#   make run    set up a virtualenv, then serve on the embedded SQLite default
#   make test   set up a virtualenv with the test tools, then run the whole suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test install lint bench

$(BIN)/lora-manager: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/lora-manager

run: install
	$(BIN)/lora-manager serve

# The tests also exercise the semantic embedder: the ML extra (CPU torch) goes in once.
$(VENV)/.ml-installed: pyproject.toml $(BIN)/lora-manager
	$(BIN)/pip install --quiet -e ".[dev,ml]"
	touch $@

test: lint $(VENV)/.ml-installed
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check src tests bench infrastructure
	$(BIN)/ruff format --check src tests bench infrastructure
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/bench_migrations.py --out docs/benchmarks.md
	$(BIN)/python bench/bench_deliveries.py --out docs/benchmarks.md
	$(BIN)/python bench/bench_recommendations.py --out docs/benchmarks.md
