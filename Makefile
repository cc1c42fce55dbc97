# oddsfeed developer entry points. A fresh machine needs only python3.11 (or python3),
# pip, make and gcc; everything else is installed into .venv by `make venv`.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CLIENT := $(wildcard clients/python/pyproject.toml)
# Lint only the packages that exist yet (ingest/ arrives later).
LINT_PATHS := $(wildcard oddsfeed ingest)

.PHONY: venv test lint pytest run bench clean

venv: $(STAMP)

# Re-installs only when pyproject.toml (or the client's), setup.py or the C extension
# changes; otherwise a no-op. (gcc builds oddsfeed/fanout/_send.c, the fan-out's C send
# loop; without a compiler the install still succeeds and the server does without it.)
$(STAMP): pyproject.toml setup.py oddsfeed/fanout/_send.c $(CLIENT)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@if [ -f clients/python/pyproject.toml ]; then \
		$(BIN)/python -m pip install -q -e clients/python; fi
	@touch $@

lint: venv
	$(BIN)/ruff check $(LINT_PATHS) tests
	$(BIN)/mypy $(LINT_PATHS)

pytest: venv
	$(BIN)/pytest -q

# style.md: ruff + mypy (strict) run in `make test`, before the suite.
test: lint pytest

run: venv
	$(BIN)/oddsfeed run

bench: venv
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis \
		tests/artifacts
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
