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
