#!/usr/bin/env bash
# `make image-test`: builds both images (deploy/image/build.sh) and runs the container
# topology test (tests/deploy/test_image.py): Valkey, ingester, two fan-out nodes, HAProxy;
# a node stopped, a node killed, the store restarted. Needs root (Debian packages, dockerd)
# unless a Docker daemon is already usable.
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/image/lib.sh
start=$(date +%s)
IMAGE=oddsfeed:image-test
HAPROXY_IMAGE=oddsfeed-haproxy:image-test
need_packages docker.io:dockerd docker.io:docker debootstrap:debootstrap
ensure_docker
deploy/image/build.sh "$IMAGE" "$HAPROXY_IMAGE"
ODDSFEED_IMAGE=$IMAGE ODDSFEED_HAPROXY_IMAGE=$HAPROXY_IMAGE \
    .venv/bin/pytest -q -s -p no:cacheprovider tests/deploy/test_image.py
echo "image-test: passed in $(( $(date +%s) - start )) s"
