# oddsfeed container image: `oddsfeed serve` by default; the same image runs
# `oddsfeed ingest ADAPTER` and `oddsfeed run`.

# ---- builder: compile wheels (hiredis, msgpack, uvloop fall back to gcc if needed)
FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first so code changes do not re-resolve them.
COPY pyproject.toml ./
RUN mkdir -p oddsfeed && touch oddsfeed/__init__.py \
    && pip install . && pip uninstall -y oddsfeed && rm -rf oddsfeed build
COPY . .
RUN pip install --no-deps . && rm -rf build

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
