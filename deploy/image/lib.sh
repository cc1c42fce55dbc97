# Sourced by deploy/image/build.sh and deploy/image-test.sh: Debian packages, and a Docker
# daemon (the running one, or one started here and stopped, by its pid, on exit).

# need_packages PKG:BINARY ... : installs the Debian packages whose binary is missing (root).
need_packages() {
    local missing=() spec
    for spec in "$@"; do
        command -v "${spec#*:}" >/dev/null 2>&1 || missing+=("${spec%%:*}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "missing Debian packages: ${missing[*]} (install them, or run as root)" >&2
        return 1
    fi
    echo "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# ensure_docker: uses DOCKER_HOST (or the default socket) when a daemon answers there; else
# starts dockerd with its own socket, pid file and data under ODDSFEED_DOCKER_DIR (kept, so
# images survive between runs) and stops it on exit.
ensure_docker() {
    if docker info >/dev/null 2>&1; then
        return 0
    fi
    local dir=${ODDSFEED_DOCKER_DIR:-/var/tmp/oddsfeed-docker}
    mkdir -p "$dir"
    export DOCKER_HOST="unix://$dir/docker.sock"
    if docker info >/dev/null 2>&1; then
        return 0  # ours, left running by an earlier run that was interrupted
    fi
    echo "starting dockerd (log: $dir/dockerd.log)"
    dockerd --host "$DOCKER_HOST" --pidfile "$dir/dockerd.pid" --data-root "$dir/data" \
        --exec-root "$dir/exec" >"$dir/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    trap 'stop_docker' EXIT
    local i
    for i in $(seq 1 150); do
        docker info >/dev/null 2>&1 && return 0
        kill -0 "$DOCKERD_PID" 2>/dev/null || break
        sleep 0.2
    done
    echo "dockerd did not start:" >&2
    tail -n 20 "$dir/dockerd.log" >&2
    return 1
}

stop_docker() {
    if [ -n "${DOCKERD_PID:-}" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
        kill "$DOCKERD_PID"
        wait "$DOCKERD_PID" 2>/dev/null || true
    fi
}
