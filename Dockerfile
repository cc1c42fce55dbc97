# oddsfeed container image: `oddsfeed serve` by default; the same image runs
# `oddsfeed ingest ADAPTER` and `oddsfeed run`.

# ---- builder: compile wheels (hiredis, msgpack, uvloop fall back to gcc if needed)
FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# uv itself from its hash-pinned requirement; then exactly uv.lock, nothing resolved.
COPY requirements-uv.txt ./
RUN pip install --require-hashes --no-deps --target /opt/uv -r requirements-uv.txt
ENV UV_PROJECT_ENVIRONMENT=/opt/venv UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
# Dependencies first (a layer that changes only with the lock), then the project.
COPY pyproject.toml uv.lock ./
COPY clients/python/pyproject.toml clients/python/
RUN /opt/uv/bin/uv sync --frozen --no-install-project --no-install-workspace --no-editable
COPY . .
RUN /opt/uv/bin/uv sync --frozen --no-editable && rm -rf build

# ---- final: slim runtime, non-root
FROM python:3.11-slim
RUN useradd --system --create-home --uid 10001 oddsfeed
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY config ./config
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ODDSFEED_CONFIG=/app/config/production.example.toml \
    ODDSFEED_SERVER__HOST=0.0.0.0 \
    ODDSFEED_LOG__FORMAT=json
USER oddsfeed
EXPOSE 8765 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]
CMD ["oddsfeed", "serve"]
