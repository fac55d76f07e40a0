# Two commands on a fresh machine: `make demo` and `make test`. `make check` = lint + types + tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test check lint types install dev clean

$(BIN)/switchyard: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.dev: $(BIN)/switchyard
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/switchyard

dev: $(VENV)/.dev

demo: install
	$(BIN)/switchyard demo

test: dev
	$(BIN)/pytest

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: dev
	$(BIN)/mypy

check: lint types test

clean:
	rm -rf $(VENV) .switchyard .pytest_cache .mypy_cache .ruff_cache
