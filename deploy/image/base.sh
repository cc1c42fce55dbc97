#!/usr/bin/env bash
# Builds the base image oddsfeed-base:bookworm (Debian bookworm minbase + Python 3.11) with
# debootstrap from the Debian mirror and `docker import`, for machines that cannot pull
# python:3.11-slim from a registry. Does nothing when the image exists already.
#   deploy/image/base.sh [IMAGE]      (DEBIAN_MIRROR overrides the mirror)
set -euo pipefail
IMAGE=${1:-oddsfeed-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' \
    /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "base: $IMAGE exists"
    exit 0
fi
ROOT=$(mktemp -d /var/tmp/oddsfeed-rootfs.XXXXXX)
trap 'rm -rf "$ROOT"' EXIT
start=$(date +%s)
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$ROOT" "$MIRROR" >"$ROOT.log" 2>&1 || { tail -n 30 "$ROOT.log"; exit 1; }
rm -f "$ROOT.log"
# What a container never needs: package caches and lists, docs, man pages, translations.
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* \
    "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* \
    "$ROOT"/usr/share/locale/* "$ROOT"/var/log/*.log "$ROOT"/var/cache/debconf/*-old
# The image's apt uses the same mirror (the HAProxy image installs from it).
echo "deb $MIRROR bookworm main" >"$ROOT/etc/apt/sources.list"
tar -C "$ROOT" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$IMAGE" >/dev/null
echo "base: $IMAGE built in $(( $(date +%s) - start )) s," \
    "$(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
