#!/usr/bin/env bash
# Builds .wheelhouse/ from uv.lock: every runtime dependency of oddsfeed as a wheel, with
# requirements.txt carrying the lock's hashes, plus the oddsfeed wheel of this checkout.
# The Dockerfile installs from it with `pip install --no-index --require-hashes` when it is
# in the build context: no network inside the build (air-gapped builds, or a machine whose
# containers cannot verify PyPI's certificate).
#   deploy/image/wheelhouse.sh       (run from the repository root after `make venv`)
set -euo pipefail
OUT=.wheelhouse
UV=${UV:-.uv/bin/uv}
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
mkdir -p "$OUT"
# Runtime dependencies only (no dev extra, not the project itself), pinned and hashed.
"$UV" export --frozen --no-dev --no-emit-project --no-emit-workspace --format requirements-txt \
    --no-header -q -o "$OUT/requirements.new"
if cmp -s "$OUT/requirements.new" "$OUT/requirements.txt" && [ -f "$OUT/.complete" ]; then
    rm "$OUT/requirements.new"  # the same lock: the same wheels (and Docker's cached layer)
else
rm -rf "${OUT:?}"/*.whl "$OUT/.complete"
mv "$OUT/requirements.new" "$OUT/requirements.txt"
# Wheels only, for this machine's CPython 3.11 on x86_64 glibc, the image's (run it on the
# same architecture and Python minor as the base image): the hashes are the lock's, so a
# package built here from an sdist could not be installed with --require-hashes anyway.
"$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || { echo "wheelhouse: needs Python 3.11 (the image's); set PYTHON" >&2; exit 1; }
# Markers are for the image's interpreter to decide (Debian's 3.11.2 needs async-timeout,
# a newer 3.11 does not): download every locked wheel, markers dropped.
sed 's/ ; [^\\]*\\$/ \\/' "$OUT/requirements.txt" >"$OUT/all.txt"
"$PY" -m pip download -q --disable-pip-version-check --require-hashes \
    --no-deps --only-binary=:all: -r "$OUT/all.txt" -d "$OUT"
rm "$OUT/all.txt"
touch "$OUT/.complete"
fi
# This checkout as a wheel, apart (project/): it changes with every commit, the dependency
# wheels only with the lock (the build back-end is pinned in pyproject.toml; the C send
# loop is compiled here, against the glibc of this Debian, the base image's).
rm -rf "$OUT/project"
"$UV" build -q --wheel -o "$OUT/project" .
rm -rf build
echo "wheelhouse: $(ls "$OUT"/*.whl | wc -l) wheels + $(ls "$OUT"/project/*.whl), $(du -sh "$OUT" | cut -f1)"
