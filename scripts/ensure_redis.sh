#!/usr/bin/env bash
# Make sure Redis runs on this machine for the scale-out tests (the way ensure_docker.sh makes sure of dockerd).
# Idempotent: installs Debian's redis-server only when missing, then proves it starts on loopback with
# appendonly on (a server on $REDIS_TEST_PORT, left running like dockerd; the tests start their own
# servers on free ports so they can stop and restart them). Log and data: $REDIS_TEST_DIR.
set -euo pipefail

PORT="${REDIS_TEST_PORT:-6390}"
DIR="${REDIS_TEST_DIR:-/tmp/agentdesk-test-redis}"

say() { echo "[ensure_redis] $*"; }
die() { echo "[ensure_redis] ERROR: $*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root for: $* (run this script as root, or install redis-server yourself)"; fi
}

if ! command -v redis-server >/dev/null 2>&1; then
  say "installing Debian's redis-server"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  # The package starts a system service on 6379 where an init system runs; the tests use their own server.
fi
command -v redis-server >/dev/null || die "redis-server is not installed and could not be installed"

if redis-cli -p "$PORT" ping 2>/dev/null | grep -q PONG; then
  say "Redis already answers on 127.0.0.1:$PORT"
  exit 0
fi
mkdir -p "$DIR"
redis-server --port "$PORT" --bind 127.0.0.1 --protected-mode yes --appendonly yes --dir "$DIR" \
  --daemonize yes --logfile "$DIR/redis.log" --pidfile "$DIR/redis.pid" --save ""
for _ in $(seq 1 50); do
  if redis-cli -p "$PORT" ping 2>/dev/null | grep -q PONG; then
    say "Redis started on 127.0.0.1:$PORT (data and log in $DIR)"
    exit 0
  fi
  sleep 0.1
done
die "Redis did not answer on 127.0.0.1:$PORT; see $DIR/redis.log"
