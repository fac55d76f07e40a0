# Two commands on a fresh machine: `make demo` and `make test`. `make check` = lint + types + tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test check lint types install dev clean agent-clis chaos
# The real agent CLIs for tests/test_real_agent_clis.py, pinned, in a project folder (git-ignored).
AGENT_CLIS          ?= .agent-clis
CLAUDE_CODE_VERSION ?= 2.1.328
CODEX_VERSION       ?= 0.169.0

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

# A real fleet through every fault (ops/chaos.py); e.g. CHAOS_ARGS="--database-url postgresql+psycopg://... --tasks 100"
chaos: install
	$(BIN)/python -m ops.chaos $(CHAOS_ARGS)

# In CI a failed install stops `make test`; elsewhere it warns and the real-CLI tests skip.
$(AGENT_CLIS)/.installed: Makefile
	@if npm install --prefix $(AGENT_CLIS) --no-save --no-audit --no-fund --loglevel=error \
	    @anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION) @openai/codex@$(CODEX_VERSION); then touch $@; \
	elif [ -n "$$CI" ]; then echo "agent-clis: npm install failed; CI needs the real agent CLIs" >&2; exit 1; \
	else echo "agent-clis: npm install failed; tests/test_real_agent_clis.py will skip" >&2; fi

agent-clis: $(AGENT_CLIS)/.installed

test: dev agent-clis
	$(BIN)/pytest

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-logo

types: dev
	$(BIN)/mypy

check: lint types test

clean:
	rm -rf $(VENV) .switchyard .pytest_cache .mypy_cache .ruff_cache $(AGENT_CLIS)
