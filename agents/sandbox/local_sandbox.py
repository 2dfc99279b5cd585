"""SANDBOX=local: smolagents' LocalPythonExecutor in the bot's own process (development only).

There is no isolation at all: the code runs as the bot, next to its secrets. Every reply says so.
"""
from __future__ import annotations

import shutil
import uuid
import weakref
from pathlib import Path
from typing import Any

from smolagents.local_python_executor import CodeOutput, LocalPythonExecutor

from agents.chat import Caller
from agents.sandbox.base import Sandbox, SandboxProvider
from agents.settings import Settings
from agents.telemetry import execution_span, set_output, tool_span
from agents.tools import bind_caller

WARNING = "⚠️ SANDBOX=local: code ran on the bot's host without isolation — development only"


class _CallerBound:
    """Wraps a tool so it runs with the task's caller bound, like the Docker bridge does."""

    def __init__(self, tool: Any, caller: Caller):
        self._tool = tool
        self._caller = caller

    def __call__(self, *args, **kwargs):
        with tool_span(getattr(self._tool, "name", "tool"), kwargs) as span, bind_caller(self._caller):
            value = self._tool(*args, **kwargs)
            set_output(span, value)
            return value

    def __getattr__(self, name: str):
        return getattr(self._tool, name)


class LocalSandbox(Sandbox):
    warning = WARNING

    def __init__(self, folder: Path, authorized_imports: list[str], step_timeout_s: float, caller: Caller):
        self._folder = folder
        self.host_input_dir = folder / "in"
        self.host_output_dir = folder / "out"
        self.host_input_dir.mkdir(parents=True)
        self.host_output_dir.mkdir()
        self.input_dir = str(self.host_input_dir)
        self.output_dir = str(self.host_output_dir)
        self._caller = caller
        self._executor = LocalPythonExecutor(
            additional_authorized_imports=list(authorized_imports),
            timeout_seconds=max(1, int(step_timeout_s)),
        )

    @property
    def state(self) -> dict[str, Any]:
        """The interpreter's state; CodeAgent reads its `_print_outputs` when a step fails."""
        return self._executor.state

    def send_tools(self, tools: dict[str, Any]) -> None:
        # The executor runs code in a worker thread (its timeout), where context variables are not
        # inherited, so each tool binds the caller itself.
        wrapped = {name: tool if name == "final_answer" else _CallerBound(tool, self._caller)
                   for name, tool in tools.items()}
        self._executor.send_tools(wrapped)

    def send_variables(self, variables: dict[str, Any]) -> None:
        self._executor.send_variables(variables)

    def __call__(self, code_action: str) -> CodeOutput:
        with execution_span(code_action) as span:
            result = self._executor(code_action)
            set_output(span, result.logs)
            return result

    def finish_outputs(self) -> list[str]:
        """The code writes straight into host_output_dir (no isolation, no size limit): nothing to copy."""
        return []

    def cleanup(self) -> None:
        shutil.rmtree(self._folder, ignore_errors=True)


class LocalSandboxProvider(SandboxProvider):
    def __init__(self, settings: Settings):
        self.settings = settings
        self.root = (Path(settings.data_dir) / "local-sandboxes").resolve()
        self._live: weakref.WeakSet[LocalSandbox] = weakref.WeakSet()

    def acquire(self, *, authorized_imports: list[str], step_timeout_s: float, caller: Caller) -> Sandbox:
        sandbox = LocalSandbox(self.root / uuid.uuid4().hex[:12], authorized_imports, step_timeout_s, caller)
        self._live.add(sandbox)
        return sandbox

    def check(self) -> tuple[bool, str]:
        return True, "SANDBOX=local: code runs on the bot's host WITHOUT isolation (development only)"

    def start(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def close(self) -> None:
        for sandbox in list(self._live):
            sandbox.cleanup()
        self._live.clear()
