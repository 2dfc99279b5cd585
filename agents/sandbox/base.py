"""The contract between the task runner and a code sandbox.

A Sandbox is a smolagents PythonExecutor that serves exactly one task (a request and its steps) and is
destroyed when the task ends. A SandboxProvider hands them out (from a warm pool for Docker).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from smolagents.local_python_executor import PythonExecutor

from agents.chat import Caller


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot be started (engine down, image missing); the message says what to do."""


class Sandbox(PythonExecutor, ABC):
    """One task's executor. Code sees INPUT_FILES under `input_dir` and writes to `output_dir`."""

    #: Paths as the agent's code sees them.
    input_dir: str
    output_dir: str
    #: The same folders on the host: the runner writes inputs here and collects outputs from here
    #: (after finish_outputs(); until then host_output_dir may lag behind what the code wrote).
    host_input_dir: Path
    host_output_dir: Path
    #: Shown in every reply when the sandbox is not a real isolation boundary (SANDBOX=local).
    warning: str | None = None

    def finish_outputs(self) -> list[str]:
        """Bring the files the code left in `output_dir` into `host_output_dir` (blocking; call once the
        agent has stopped and before collect_outputs). Returns user-facing notices about entries that were
        not brought over (links, special files, over the limits). Default: nothing to do."""
        return []

    @abstractmethod
    def cleanup(self) -> None:
        """Destroy the sandbox: kill the container, remove its folders. Idempotent."""


class SandboxProvider(ABC):
    @abstractmethod
    def acquire(
        self,
        *,
        authorized_imports: list[str],
        step_timeout_s: float,
        caller: Caller,
    ) -> Sandbox:
        """A fresh sandbox for one task (blocking; call from a worker thread).

        Tools sent with send_tools() run on the host with `caller` bound (agents.tools.current_caller()).
        Raises SandboxUnavailable with an operator-facing message when no sandbox can be had.
        """

    @abstractmethod
    def check(self) -> tuple[bool, str]:
        """(ready, explanation) for /readyz and `agentdesk doctor`; cheap, blocking."""

    def missing_imports(self, imports: list[str]) -> list[str]:
        """Authorized imports this kind of sandbox cannot provide (checked when departments are loaded, so a
        department is refused at start rather than failing mid-run). Default: none."""
        return []

    def start(self) -> None:
        """Sweep leftovers and warm the pool (blocking)."""

    def close(self) -> None:
        """Destroy every sandbox this provider created (blocking)."""
