# Local virtualenv in .venv; every target works on a fresh machine with only Python 3.11+.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv demo test lint bench clean

$(BIN)/walrep: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/walrep

venv: $(BIN)/walrep

demo: venv
	$(BIN)/walrep demo

lint: venv
	$(BIN)/ruff check walrep tests benchmarks
	$(BIN)/ruff format --check walrep tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

bench: venv
	$(BIN)/walrep bench all

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
