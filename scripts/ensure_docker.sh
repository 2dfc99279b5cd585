#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info` and debootstrap is present (for `agentdesk sandbox build`).
# Idempotent: installs docker.io/debootstrap from apt only when missing and starts dockerd only when the
# engine does not answer. Run as root (or with sudo). Log of a dockerd started here: $DOCKERD_LOG.
set -euo pipefail

DOCKERD_LOG="${DOCKERD_LOG:-/var/log/agentdesk-dockerd.log}"
WAIT_S="${DOCKER_WAIT_S:-60}"

say() { echo "[ensure_docker] $*"; }
die() { echo "[ensure_docker] ERROR: $*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root for: $* (run this script as root)"; fi
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    say "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  say "apt-get install -y $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

if ! command -v debootstrap >/dev/null 2>&1 && [ ! -x /usr/sbin/debootstrap ]; then
  apt_install debootstrap
fi

if docker info >/dev/null 2>&1; then
  say "Docker engine is up ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo unknown))"
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  apt_install docker.io
fi

if [ -n "${DOCKER_HOST:-}" ] && [ "${DOCKER_HOST#unix://}" = "$DOCKER_HOST" ]; then
  die "DOCKER_HOST=$DOCKER_HOST does not answer and is not a local socket; start that engine yourself"
fi

if pgrep -x dockerd >/dev/null 2>&1; then
  say "dockerd is running but not answering yet; waiting"
else
  say "starting dockerd in the background (log: $DOCKERD_LOG)"
  as_root sh -c "nohup dockerd >>'$DOCKERD_LOG' 2>&1 &"
fi

deadline=$(( $(date +%s) + WAIT_S ))
until docker info >/dev/null 2>&1; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    tail -n 20 "$DOCKERD_LOG" >&2 2>/dev/null || true
    die "Docker engine did not answer within ${WAIT_S}s; see $DOCKERD_LOG"
  fi
  sleep 1
done
say "Docker engine is up ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo unknown))"
