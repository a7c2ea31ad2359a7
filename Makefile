# The two commands: `make up` (local stack with demo traffic) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test lint bench report schemas clean

up: $(STAMP)
	$(BIN)/tracebus up --demo

test: $(STAMP)
	$(BIN)/ruff check tracebus tests benchmarks
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check tracebus tests benchmarks
	$(BIN)/ruff format --check tracebus tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/producer_overhead.py

# End-to-end benchmark + long fault suite → benchmarks/REPORT.md (5–10 minutes).
report: $(STAMP)
	$(BIN)/python benchmarks/report.py

schemas: $(STAMP)
	$(BIN)/tracebus schemas export

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# Dify pins langfuse 4.x; its tests run that SDK beside the venv's 5.x (deps shared).
	$(BIN)/pip install --quiet --upgrade --no-deps --target $(VENV)/langfuse-dify 'langfuse>=4.2,<5'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache
