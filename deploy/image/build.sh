#!/usr/bin/env bash
# `make image`: the oddsfeed image and the HAProxy image, from the lock, with no registry
# needed: BASE defaults to oddsfeed-base:bookworm, bootstrapped here (deploy/image/base.sh)
# when missing; BASE=python:3.11-slim builds on the official image where a registry is
# reachable. Dependencies come from .wheelhouse/ (deploy/image/wheelhouse.sh).
#   deploy/image/build.sh [IMAGE [HAPROXY_IMAGE]]
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/image/lib.sh
IMAGE=${1:-oddsfeed:latest}
HAPROXY_IMAGE=${2:-oddsfeed-haproxy:latest}
BASE=${BASE:-oddsfeed-base:bookworm}
HAPROXY_BASE=${HAPROXY_BASE:-$BASE}

need_packages docker.io:dockerd docker.io:docker debootstrap:debootstrap
ensure_docker
t0=$(date +%s)
if [ "$BASE" = oddsfeed-base:bookworm ]; then
    deploy/image/base.sh "$BASE"
fi
t1=$(date +%s)
deploy/image/wheelhouse.sh 2> >(grep -v "^WARNING: Location 'file:" >&2)
t2=$(date +%s)
export DOCKER_BUILDKIT=0  # the classic builder: docker.io ships without buildx
quiet() { grep -v -i -e deprecated -e buildx -e buildkit -e environment-variable -e '^ *$' >&2 || true; }
docker build -q --build-arg BASE="$BASE" -t "$IMAGE" . >/dev/null 2> >(quiet)
docker build -q --build-arg BASE="$HAPROXY_BASE" -t "$HAPROXY_IMAGE" deploy/haproxy \
    >/dev/null 2> >(quiet)
t3=$(date +%s)
size() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1/1e6}'; }
echo "image: $IMAGE $(size "$IMAGE"), $HAPROXY_IMAGE $(size "$HAPROXY_IMAGE");" \
    "base $((t1 - t0)) s, wheelhouse $((t2 - t1)) s, docker build $((t3 - t2)) s"
