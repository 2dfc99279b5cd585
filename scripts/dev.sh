#!/usr/bin/env bash
# One command to try agentdesk locally: installs it into .venv and starts `agentdesk dev`
# (the bot plus a Slack/Teams emulator in the browser). Uses the Docker sandbox when an engine is
# reachable (building the image on first use), otherwise the WebAssembly sandbox (Pyodide on Deno),
# which this script installs: Deno from PyPI, Pyodide from npm into ~/.cache/agentdesk/wasm.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install --quiet -e . 2>&1 | grep -v "^WARNING: Location" || true
bash scripts/install_wasm.sh || echo "the WebAssembly sandbox is not installed; agentdesk dev needs Docker then" >&2
exec .venv/bin/agentdesk dev "$@"
