# oddsfeed developer entry points. A fresh machine needs only python3.11 (or python3),
# pip, make and gcc; everything else is installed into .venv by `make venv`.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# What ruff checks (and tests/); mypy checks the packages pyproject names.
LINT_PATHS := oddsfeed ingest bench
# mypy by package name: ingest/ is the package oddsfeed_ingest (see pyproject's mypy_path).
MYPY_PACKAGES := -p oddsfeed -p oddsfeed_ingest -p bench

# uv installs the lock. It is bootstrapped from PyPI into .uv/ with the hashes in
# requirements-uv.txt, so a fresh machine needs nothing but Python, pip, make and gcc.
UV_VERSION := 0.13.9
UV     := .uv/bin/uv
# uv uses the interpreter make found, never downloads one, and installs into .venv.
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: venv test lint pytest run bench clean lock test-latest image image-test

venv: $(STAMP)

$(UV): requirements-uv.txt
	$(PYTHON) -m pip install -q --disable-pip-version-check --no-deps --require-hashes \
		--upgrade --target .uv -r requirements-uv.txt
	@touch $@

# Installs exactly uv.lock (runtime, dev extras and the SDK; --frozen: nothing is resolved),
# and again only when the lock, a pyproject or the C extension changes. (gcc builds
# oddsfeed/fanout/_send.c, the fan-out's C send loop; without a compiler the install still
# succeeds and the server does without it.)
$(STAMP): $(UV) uv.lock pyproject.toml setup.py oddsfeed/fanout/_send.c clients/python/pyproject.toml
	$(UV) sync -q --frozen --all-extras
	@touch $@

# Refreshes uv.lock to the newest versions pyproject allows (and requirements-uv.txt to
# UV_VERSION's hashes); review the diff, run `make test`, commit both.
lock: $(UV)
	$(UV) lock --upgrade
	echo "uv==$(UV_VERSION)" | $(UV) pip compile -q --generate-hashes --no-header \
		--python-version 3.11 - -o requirements-uv.txt.new
	{ sed -n '1,2p' requirements-uv.txt; cat requirements-uv.txt.new; } > requirements-uv.txt.tmp
	rm requirements-uv.txt.new && mv requirements-uv.txt.tmp requirements-uv.txt

# Lint and tests against the newest releases, in a throw-away venv, without touching the
# lock or .venv: shows upstream drift before `make lock` takes it in.
LATEST := .venv-latest
test-latest: $(UV)
	rm -rf $(LATEST)
	$(UV) venv -q $(LATEST)
	$(UV) pip install -q --python $(LATEST)/bin/python --refresh -e '.[dev]' -e clients/python
	@$(UV) pip list --python $(LATEST)/bin/python --format freeze | grep -iE \
		'^(websockets|redis|aiohttp|pydantic|mypy|ruff|uvloop|msgpack|pytest)==' | tr '\n' ' '; echo
	$(LATEST)/bin/ruff check $(LINT_PATHS) tests
	$(LATEST)/bin/mypy $(MYPY_PACKAGES)
	$(LATEST)/bin/pytest -q

lint: venv
	$(BIN)/ruff check $(LINT_PATHS) tests
	$(BIN)/mypy $(MYPY_PACKAGES)

pytest: venv
	$(BIN)/pytest -q

# style.md: ruff + mypy (strict) run in `make test`, before the suite.
test: lint pytest

run: venv
	$(BIN)/oddsfeed run

bench: venv
	$(BIN)/python -m bench --quick

# The container image (and the HAProxy one) from the lock, on a Debian base bootstrapped
# here unless BASE names another (BASE=python:3.11-slim where a registry is reachable).
IMAGE ?= oddsfeed:latest
image: venv
	deploy/image/build.sh $(IMAGE)

# Builds both images and runs the Docker topology test (failover, store restart).
image-test: venv
	deploy/image-test.sh

clean:
	rm -rf $(VENV) $(LATEST) .uv build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis \
		tests/artifacts
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
