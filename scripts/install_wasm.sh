#!/usr/bin/env bash
# Installs the WebAssembly sandbox (SANDBOX=wasm) into ~/.cache/agentdesk/wasm: Pyodide from npm (Deno
# comes from PyPI with agentdesk itself), smolagents' wheel from PyPI, then Pyodide's memory snapshot.
# Needs npm once; as root on Debian it is installed with apt when missing. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's npm (once, to fetch Pyodide)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
  else
    echo "npm is needed once to install Pyodide: install Node.js/npm (Debian: apt-get install npm)" >&2
    exit 1
  fi
fi
.venv/bin/python -m agents.sandbox.wasm_runtime 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "from agents.sandbox.wasm_runtime import locate; locate()" \
  || { echo "the WebAssembly sandbox could not be installed" >&2; exit 1; }
