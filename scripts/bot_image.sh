#!/usr/bin/env bash
# Build the bot image (the top-level Dockerfile) where no container registry answers.
# Base: python:3.11-slim when it can be pulled, else the Debian bookworm base `agentdesk sandbox build`
# makes with debootstrap (agentdesk-sandbox-base:bookworm). Wheels are downloaded on the host (PyPI works
# there) into .wheels/, so the build runs offline. Usage: scripts/bot_image.sh [image-tag]
set -euo pipefail
cd "$(dirname "$0")/.."
TAG="${1:-agentdesk:latest}"
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

if docker image inspect python:3.11-slim >/dev/null 2>&1 || timeout 60 docker pull -q python:3.11-slim >/dev/null 2>&1; then
  BASE=python:3.11-slim
else
  BASE=agentdesk-sandbox-base:bookworm
  if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    echo "[bot_image] no registry: building the local Debian base with debootstrap (agentdesk sandbox build)"
    "$PY" -m bots sandbox build
  fi
fi
echo "[bot_image] base image: $BASE"
# The base's Python decides which wheels fit: ask it, then download for exactly that interpreter.
PYVER=$(docker run --rm "$BASE" python3 -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
rm -rf .wheels && mkdir -p .wheels
"$PY" -m pip wheel --quiet --wheel-dir .wheels --no-deps . >/dev/null
"$PY" -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
  > .wheels/requirements.txt
"$PY" -m pip download --quiet --dest .wheels --only-binary=:all: --python-version "$PYVER" \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -r .wheels/requirements.txt
docker build --build-arg PYTHON_IMAGE="$BASE" -t "$TAG" .
echo "[bot_image] built $TAG from $BASE"
