"""Helpers for tests that need a real Docker engine and the sandbox image.

Without an engine or image the tests are skipped with the reason, except under CI=true, where a
missing engine is a failure: CI must never pass by skipping the sandbox.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from agents.settings import Settings


def sandbox_settings(data_dir: Path, **overrides) -> Settings:
    base = Settings.from_env(dotenv=False)
    return dataclasses.replace(base, data_dir=Path(data_dir), sandbox="docker", **overrides)


def require_docker_sandbox(settings: Settings) -> None:
    """Skip (or fail under CI=true) unless the engine answers and the sandbox image exists."""
    from agents.sandbox.docker_sandbox import DockerSandboxProvider

    provider = DockerSandboxProvider(settings)
    try:
        ready, why = provider.check()
    finally:
        provider.close()
    if ready:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and the Docker sandbox is not available: {why}")
    pytest.skip(f"Docker sandbox not available: {why}")


def inspect(container_id: str) -> dict:
    """`docker inspect` of one container, as the engine reports it."""
    import docker

    client = docker.from_env()
    try:
        return client.api.inspect_container(container_id)
    finally:
        client.close()


def labelled_containers(provider_id: str) -> list[dict]:
    """Containers (running or not) created by the provider with this instance id."""
    import docker

    client = docker.from_env()
    try:
        return client.api.containers(all=True, filters={"label": f"agentdesk.sandbox.provider={provider_id}"})
    finally:
        client.close()


def labelled_volumes(provider_id: str) -> list[dict]:
    """Volumes (the sandboxes' OUTPUT_DIR tmpfs volumes) created by the provider with this instance id."""
    import docker

    client = docker.from_env()
    try:
        found = client.api.volumes(filters={"label": f"agentdesk.sandbox.provider={provider_id}"})
        return found.get("Volumes") or []
    finally:
        client.close()


def require_wasm_sandbox() -> None:
    """Skip (or fail under CI=true) unless Deno, Pyodide and the smolagents wheel are installed
    (scripts/install_wasm.sh, which scripts/test.sh runs)."""
    from agents.sandbox.wasm_runtime import WasmRuntimeMissing, locate

    try:
        locate(need_snapshot=False)
    except WasmRuntimeMissing as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and the WebAssembly sandbox is not installed: {exc}")
        pytest.skip(f"WebAssembly sandbox not installed: {exc}")


def backend_provider(kind: str, data_dir: Path, **overrides):
    """A started-or-not provider of the given backend ("docker" or "wasm"), skipping when it cannot run."""
    settings = dataclasses.replace(sandbox_settings(data_dir, **overrides), sandbox=kind)
    if kind == "docker":
        from agents.sandbox.docker_sandbox import DockerSandboxProvider

        require_docker_sandbox(settings)
        return DockerSandboxProvider(settings)
    from agents.sandbox.wasm_sandbox import WasmSandboxProvider

    require_wasm_sandbox()
    return WasmSandboxProvider(settings)


def wasm_processes(provider_id: str) -> list[int]:
    """PIDs of live Deno sandbox processes started by the Wasm provider with this instance id."""
    from agents.sandbox.wasm_runtime import RUNNER

    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            args = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(RUNNER).encode() in args and provider_id.encode() in args[-2] and state != "Z":
            found.append(int(name))
    return found
