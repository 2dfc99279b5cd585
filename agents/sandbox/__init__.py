"""Code sandboxes: Docker (default, hardened containers), WebAssembly (Pyodide on Deno) or local (development only)."""
from __future__ import annotations

from agents.sandbox.base import Sandbox, SandboxProvider, SandboxUnavailable
from agents.sandbox.bridge import pause_step_clock
from agents.settings import Settings


def make_provider(settings: Settings) -> SandboxProvider:
    """The provider SANDBOX selects; Docker is imported lazily so `local` works without the SDK."""
    if settings.sandbox == "local":
        from agents.sandbox.local_sandbox import LocalSandboxProvider

        return LocalSandboxProvider(settings)
    if settings.sandbox == "wasm":
        from agents.sandbox.wasm_sandbox import WasmSandboxProvider

        return WasmSandboxProvider(settings)
    from agents.sandbox.docker_sandbox import DockerSandboxProvider

    return DockerSandboxProvider(settings)


__all__ = ["Sandbox", "SandboxProvider", "SandboxUnavailable", "make_provider", "pause_step_clock"]
