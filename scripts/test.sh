#!/usr/bin/env bash
# The one test command (README and .ci/run): installs what the tests need, then runs pytest.
# Installs the project into .venv, starts a Docker engine when none runs (Debian docker.io + dockerd),
# builds the sandbox image offline-capable, installs the WebAssembly sandbox (Deno from PyPI, Pyodide from
# npm, Debian's npm when missing), installs Debian's redis-server (tests start their own on loopback),
# installs Debian's chromium for the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  step "creating .venv"
  "$PYTHON" -m venv .venv
fi
step "installing agentdesk and test dependencies"
.venv/bin/pip install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/pip install --quiet -e '.[test,bench]' 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import agents, bots, smolagents, slack_bolt, botbuilder.core" \
  || { echo "dependency install failed" >&2; exit 1; }

step "Docker engine"
bash scripts/ensure_docker.sh

step "Redis server (scale-out tests)"
bash scripts/ensure_redis.sh

step "sandbox image"
.venv/bin/agentdesk sandbox build

step "WebAssembly sandbox (Deno + Pyodide)"
bash scripts/install_wasm.sh

if ! command -v chromium >/dev/null 2>&1; then
  step "installing Debian's chromium for the browser tests"
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "chromium could not be installed; browser tests will fail under CI=true" >&2
  fi
fi

if command -v npm >/dev/null 2>&1; then
  step "Microsoft 365 Agents Playground (npm) for the Teams client test"
  npm ci --prefix tests/playground --no-audit --no-fund --loglevel=error \
    || echo "the Agents Playground could not be installed; its browser test will fail under CI=true" >&2
fi

step "pytest"
set +e
.venv/bin/python -m pytest -ra "$@"
status=$?
set -e
if [ "$status" = 5 ]; then
  echo "pytest collected no tests" >&2
fi
exit "$status"
