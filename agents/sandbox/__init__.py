"""Code sandboxes: Docker (default, hardened containers) or local (development only)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from agents.sandbox.base import Sandbox, SandboxProvider, SandboxUnavailable
from agents.settings import Settings


@contextmanager
def pause_step_clock() -> Iterator[None]:
    """A host-side tool's wait (a person approving) that must not count toward the step timeout.

    Stand-in: the Docker bridge already leaves tool time out of the step deadline; the step clock of the
    other executors is paused here once they expose one.
    """
    yield


def make_provider(settings: Settings) -> SandboxProvider:
    """The provider SANDBOX selects; Docker is imported lazily so `local` works without the SDK."""
    if settings.sandbox == "local":
        from agents.sandbox.local_sandbox import LocalSandboxProvider

        return LocalSandboxProvider(settings)
    from agents.sandbox.docker_sandbox import DockerSandboxProvider

    return DockerSandboxProvider(settings)


__all__ = ["Sandbox", "SandboxProvider", "SandboxUnavailable", "make_provider", "pause_step_clock"]
