#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info` and debootstrap is present (for `agentdesk sandbox build`).
# Idempotent: installs docker.io/debootstrap from apt only when missing and starts dockerd only when the
# engine does not answer. Run as root (or with sudo). Log of a dockerd started here: $DOCKERD_LOG.
#
# Optional gVisor (SECURITY.md): only when this script is about to START dockerd itself, it installs
# Debian's `runsc` if apt can (failure is fine), checks that it runs here (ptrace platform), and merges a
# `runsc` runtime into $DOCKER_DAEMON_JSON (other keys and runtimes are kept) before dockerd starts, so
# SANDBOX_RUNTIME=runsc and tests/test_gvisor.py work. A running engine is never reconfigured or reloaded.
# AGENTDESK_GVISOR=0 skips this.
set -euo pipefail

DOCKERD_LOG="${DOCKERD_LOG:-/var/log/agentdesk-dockerd.log}"
WAIT_S="${DOCKER_WAIT_S:-60}"
DOCKER_DAEMON_JSON="${DOCKER_DAEMON_JSON:-/etc/docker/daemon.json}"

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

# gVisor for a dockerd this script is about to start. Every failure here is a message, never an exit.
setup_gvisor() {
  if [ "${AGENTDESK_GVISOR:-1}" = 0 ]; then say "gVisor: skipped (AGENTDESK_GVISOR=0)"; return 0; fi
  local runsc
  runsc=$(command -v runsc 2>/dev/null || true)
  if [ -z "$runsc" ]; then
    if ! apt_install runsc; then
      say "gVisor: apt-get install runsc failed or no package; continuing without it (optional)"
      return 0
    fi
    runsc=$(command -v runsc 2>/dev/null || true)
    [ -n "$runsc" ] || { say "gVisor: runsc not found after install; continuing without it"; return 0; }
  fi
  # Only register a runtime that works on this machine (KVM would be nested in VMs: ptrace works everywhere).
  if ! (cd / && as_root timeout 60 "$runsc" --platform=ptrace --network=none do /bin/true) >/dev/null 2>&1; then
    say "gVisor: $runsc cannot start a sandbox here (ptrace platform); not registering it"
    return 0
  fi
  if ! command -v python3 >/dev/null 2>&1; then
    say "gVisor: python3 is needed to merge $DOCKER_DAEMON_JSON; not registering runsc"
    return 0
  fi
  # Merge into the existing file; keep every other key and runtime; an unreadable file is left alone.
  if as_root python3 - "$DOCKER_DAEMON_JSON" "$runsc" <<'PY'
import json, os, sys, tempfile
path, runsc = sys.argv[1], sys.argv[2]
config = {}
if os.path.exists(path):
    try:
        with open(path) as f:
            text = f.read()
        config = json.loads(text) if text.strip() else {}
    except (OSError, ValueError) as exc:
        print(f"[ensure_docker] gVisor: {path} is not valid JSON ({exc}); left unchanged", file=sys.stderr)
        sys.exit(2)
    if not isinstance(config, dict) or not isinstance(config.get("runtimes", {}), dict):
        print(f"[ensure_docker] gVisor: unexpected structure in {path}; left unchanged", file=sys.stderr)
        sys.exit(2)
runtimes = config.setdefault("runtimes", {})
if "runsc" in runtimes:
    print(f"[ensure_docker] gVisor: {path} already has a runsc runtime; kept as is")
    sys.exit(0)
# --oci-seccomp: enforce the sandbox's own seccomp profile inside gVisor too (SECURITY.md, "The seccomp profile")
runtimes["runsc"] = {"path": runsc, "runtimeArgs": ["--platform=ptrace", "--network=none", "--oci-seccomp"]}
os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".daemon.json.")
with os.fdopen(fd, "w") as f:
    json.dump(config, f, indent=2)
    f.write("\n")
os.chmod(tmp, 0o644)
os.replace(tmp, path)
print(f"[ensure_docker] gVisor: registered runtime runsc ({runsc}, ptrace) in {path}")
PY
  then :; else say "gVisor: not registered (see above); continuing without it"; fi
  return 0
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
  setup_gvisor
  say "starting dockerd in the background (log: $DOCKERD_LOG)"
  config_arg=""
  if [ "$DOCKER_DAEMON_JSON" != /etc/docker/daemon.json ] && [ -f "$DOCKER_DAEMON_JSON" ]; then
    config_arg="--config-file '$DOCKER_DAEMON_JSON'"
  fi
  as_root sh -c "nohup dockerd $config_arg >>'$DOCKERD_LOG' 2>&1 &"
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
