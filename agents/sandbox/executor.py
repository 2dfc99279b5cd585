"""The sandbox executor shared by every backend: one task's smolagents executor over a SandboxInstance.

A backend provides SandboxInstance (one started sandbox: a container, a process) with one hook per thing
only it knows how to do: kill it, destroy it, freeze it, say how it ended, copy its OUTPUT_DIR in and out.
The executor does the rest the same way for all of them: the protocol (through the bridge), timeouts and
crashes (the instance is killed and replaced by a fresh one on the same task folders, and the model is
told that Python state was reset), the host copy of the output folder, and cleanup.

It gets instances from an InstanceSource (the pool) through two public calls, start_instance() and
retire(); the pool opens executors with SandboxExecutor.open().

cleanup() never waits for a running step: it kills the instance first (a separate call that ends the
step's channel), and whichever of cleanup and the step leaves last removes what is left.
"""
from __future__ import annotations

import json
import logging
import shutil
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from smolagents.local_python_executor import CodeOutput
from smolagents.monitoring import AgentLogger, LogLevel
from smolagents.utils import AgentExecutionError

from agents.chat import Caller
from agents.sandbox.base import Sandbox, SandboxUnavailable
from agents.sandbox.bridge import MAX_STEP_BYTES, MAX_STEP_TOOL_CALLS, StepClock, ToolBridge, cap_text
from agents.sandbox.channel import ChannelBreach, ChannelError, ChannelGone, ChannelTimeout, FrameChannel
from agents.sandbox.output_mirror import OutputMirror
from agents.telemetry import execution_span, set_output

log = logging.getLogger("agentdesk.sandbox")

MAX_MODEL_OUTPUT = 20_000  # characters of logs/errors handed to the model per step
CONTROL_TIMEOUT_S = 30.0
_QUIET = AgentLogger(level=LogLevel.OFF)


class SandboxExecutionError(AgentExecutionError):
    """A step failed in the sandbox; CodeAgent turns the message into an observation for the model."""

    def __init__(self, message: str):
        super().__init__(message, _QUIET)


@dataclass(frozen=True)
class SandboxLimits:
    """What one sandbox may use, as the executor enforces and reports it."""

    memory_mb: int
    output_bytes: int
    output_entries: int
    step_tool_calls: int = MAX_STEP_TOOL_CALLS
    step_bytes: int = MAX_STEP_BYTES


class SandboxInstance(ABC):
    """One started sandbox (a container, a process) whose runner has said "ready"; the backend's hooks."""

    #: Paths as the agent's code sees them.
    input_dir: str
    output_dir: str

    def __init__(self, id: str, folder: Path, channel: FrameChannel):
        self.id = id
        self.folder = folder
        self.channel = channel

    @abstractmethod
    def kill(self) -> None:
        """Stop the sandbox now, from any thread, without waiting on anything a step holds; idempotent."""

    @abstractmethod
    def destroy(self) -> None:
        """Kill it and release everything it holds (blocking, bounded); idempotent, never raises."""

    def freeze(self) -> None:
        """Stop its code from running (before its outputs are copied out of a live sandbox); optional."""

    @abstractmethod
    def exit_status(self) -> tuple[int | None, bool]:
        """(exit code, ran out of memory) after its runner ended; (None, False) when unknown."""

    @abstractmethod
    def read_outputs(self, staging: Path, *, max_entries: int, max_bytes: int) -> tuple[bool, list[str]]:
        """Copy its OUTPUT_DIR into the empty folder `staging` (untrusted content: only regular files and
        folders, capped). (complete, notices); complete is False when the folder could not be read whole
        or the sandbox was no longer running at the end (its files may be gone). Never raises."""

    @abstractmethod
    def write_outputs(self, source: Path, *, max_bytes: int) -> int:
        """Put the files under `source` into its (empty) OUTPUT_DIR; the number of files. Raises OSError."""


class InstanceSource(Protocol):
    """What an executor needs from its pool (SandboxPool implements it)."""

    limits: SandboxLimits

    def start_instance(self, folder: Path | None = None) -> SandboxInstance:
        """A fresh started instance (on `folder`, or on a new task folder); raises SandboxUnavailable."""

    def retire(self, instance: SandboxInstance, *, wait: bool) -> None:
        """Forget the instance and destroy it (now, or in the background when wait is False)."""


class SandboxExecutor(Sandbox):
    """One task's executor; its instance is replaced transparently after a timeout or a crash."""

    def __init__(self, source: InstanceSource, instance: SandboxInstance, *,
                 authorized_imports: list[str], step_timeout_s: float, caller: Caller):
        self._source = source
        self._instance: SandboxInstance | None = instance
        self._imports = list(authorized_imports)
        self.step_timeout_s = float(step_timeout_s)
        self.limits = source.limits
        self.input_dir = instance.input_dir
        self.output_dir = instance.output_dir
        self._folder = instance.folder
        self.host_input_dir = instance.folder / "in"
        self.host_output_dir = instance.folder / "out"
        self._bridge = ToolBridge(caller)
        self._outputs = OutputMirror(instance.folder, self.host_output_dir, self.limits)
        self._tools_message: dict | None = None
        self._variables: dict[str, Any] = {}
        self._step_lock = threading.Lock()  # held for a whole step or control request
        self._flag_lock = threading.Lock()  # held only to flip _closed
        self._closed = False
        self._torn_down = False
        #: Mirrors LocalPythonExecutor.state["_print_outputs"], which CodeAgent reads when a step fails.
        self.state: dict[str, Any] = {"_print_outputs": ""}

    @classmethod
    def open(cls, source: InstanceSource, instance: SandboxInstance, **kwargs: Any) -> "SandboxExecutor":
        """An executor whose instance accepted its configuration. Raises ChannelError (the instance is
        dead: take another) or SandboxUnavailable (it refused: do not retry)."""
        executor = cls(source, instance, **kwargs)
        executor._configure(instance)
        return executor

    @property
    def instance_id(self) -> str | None:
        instance = self._instance
        return instance.id if instance else None

    container_id = instance_id

    # -- configuration -------------------------------------------------------------------------------
    def _configure(self, instance: SandboxInstance) -> None:
        reply = instance.channel.request({"type": "init", "authorized_imports": self._imports}, CONTROL_TIMEOUT_S)
        if reply.get("type") != "ok":
            raise SandboxUnavailable(f"the sandbox refused its configuration: {reply.get('message')}")

    def _control(self, message: dict) -> None:
        with self._step():
            self._ensure_instance()
            assert self._instance is not None
            try:
                reply = self._instance.channel.request(message, CONTROL_TIMEOUT_S)
            except ChannelError as exc:
                self._replace(save_outputs=False)
                raise SandboxExecutionError(f"the sandbox stopped while being configured ({exc}); it was restarted")
            if reply.get("type") != "ok":
                raise SandboxExecutionError(str(reply.get("message")))

    def send_tools(self, tools: dict[str, Any]) -> None:
        """Tell the runner which tools to stub; the real tools stay here and run on the host."""
        self._bridge.tools = {name: tool for name, tool in tools.items() if name != "final_answer"}
        self._tools_message = {
            "type": "tools",
            "tools": [{"name": name, "inputs": list(getattr(tool, "inputs", {}) or {})}
                      for name, tool in self._bridge.tools.items()],
            "final_answer": "final_answer" in tools,
        }
        self._control(self._tools_message)

    def send_variables(self, variables: dict[str, Any]) -> None:
        """Send the JSON-able variables (others are skipped with a log line: no pickle crosses)."""
        clean = {}
        for name, value in variables.items():
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                log.warning("variable %r (%s) is not JSON-able and is not sent to the sandbox", name, type(value).__name__)
                continue
            clean[name] = value
        self._variables.update(clean)
        if clean:
            self._control({"type": "variables", "variables": clean})

    # -- steps ---------------------------------------------------------------------------------------
    def __call__(self, code_action: str) -> CodeOutput:
        with self._step():
            self._ensure_instance()
            instance = self._instance
            assert instance is not None
            self.state["_print_outputs"] = ""
            try:
                with execution_span(code_action) as span:
                    reply = self._bridge.run_step(instance.channel, code_action, StepClock(self.step_timeout_s),
                                                  max_tool_calls=self.limits.step_tool_calls,
                                                  max_bytes=self.limits.step_bytes)
                    set_output(span, reply.get("logs", ""))
            except ChannelError as exc:
                if self._closed:
                    raise SandboxExecutionError("The task was stopped, so this step was cut short.") from None
                raise self._failed(instance, exc) from None
            state = reply.get("out")
            if isinstance(state, str) and not reply.get("is_final_answer"):
                self._outputs.note_step(instance, state)  # so the files survive a crash of a later step
        logs = cap_text(reply.get("logs") or "", MAX_MODEL_OUTPUT)
        self.state["_print_outputs"] = logs
        if reply.get("type") == "error":
            raise SandboxExecutionError(cap_text(str(reply.get("message")), MAX_MODEL_OUTPUT))
        return CodeOutput(output=reply.get("output"), logs=logs, is_final_answer=bool(reply.get("is_final_answer")))

    def _failed(self, instance: SandboxInstance, exc: ChannelError) -> SandboxExecutionError:
        """Replace the instance after a failed step; the message tells the model what happened."""
        if isinstance(exc, ChannelTimeout):
            self._replace(save_outputs=True)
            return SandboxExecutionError(
                f"The step timed out after {self.step_timeout_s:g} s and was stopped. The sandbox was restarted: "
                "Python state (variables, imports, functions) was reset; files in OUTPUT_DIR are kept. "
                "Write faster code or split the work into smaller steps.")
        if isinstance(exc, ChannelGone):
            message = self._death_message(instance)
            self._replace(save_outputs=False)
            return SandboxExecutionError(message)
        assert isinstance(exc, ChannelBreach)
        self._replace(save_outputs=True)
        return SandboxExecutionError(
            f"The step was stopped because {exc}. The sandbox was restarted and Python state was reset; "
            "print less or write large results to a file in OUTPUT_DIR.")

    def _death_message(self, instance: SandboxInstance) -> str:
        code, oom = instance.exit_status()
        stderr = instance.channel.stderr_text()
        if stderr:
            log.warning("sandbox %s ended (exit %s); stderr tail: %s", instance.id[:12], code, stderr[-1000:])
        if oom or code == 137:
            return (f"The sandbox ran out of memory ({self.limits.memory_mb} MB) and was "
                    "restarted: Python state was reset; files in OUTPUT_DIR are kept as they were at the end of "
                    "the previous step. Use less memory (process data in chunks, read only the columns you need; "
                    "files in OUTPUT_DIR count towards the memory too).")
        return (f"The sandbox process ended unexpectedly (exit code {code}) and was restarted: Python state "
                "was reset; files in OUTPUT_DIR are kept as they were at the end of the previous step.")

    # -- outputs -------------------------------------------------------------------------------------
    def finish_outputs(self) -> list[str]:
        """Copy OUTPUT_DIR to host_output_dir now (the agent has stopped); notices for the person."""
        if self._closed:
            return []
        try:
            with self._step():
                return self._outputs.finish(self._instance)
        except SandboxExecutionError:  # cleaned up meanwhile: the task has ended
            return []

    # -- instances -----------------------------------------------------------------------------------
    def _replace(self, save_outputs: bool) -> None:
        """Retire the current instance and start a fresh one on the same folders, re-sending tools/variables.

        save_outputs: the instance is still alive (timeout, protocol breach): freeze it and copy its
        OUTPUT_DIR out first. After a crash its files are already gone and the last copy is kept.
        """
        old, self._instance = self._instance, None
        if old is not None:
            if save_outputs:
                old.freeze()
                self._outputs.save(old)
            self._outputs.forget_state()
            self._source.retire(old, wait=False)  # off the critical path: the model waits for the new one
        if self._closed:
            return
        try:
            self._ensure_instance()
        except SandboxExecutionError as exc:
            if not self._closed:
                log.error("could not restart a sandbox: %s", exc)

    def _ensure_instance(self) -> None:
        if self._instance is not None:
            return
        if self._closed:
            raise SandboxExecutionError("this sandbox was already cleaned up")
        try:
            instance = self._source.start_instance(self._folder)
        except SandboxUnavailable as exc:
            raise SandboxExecutionError(f"the sandbox could not be restarted: {exc}") from None
        try:
            self._outputs.restore(instance)
            self._configure(instance)
            if self._tools_message:
                if instance.channel.request(self._tools_message, CONTROL_TIMEOUT_S).get("type") != "ok":
                    raise SandboxUnavailable("the restarted sandbox refused the tools")
            if self._variables:
                instance.channel.request({"type": "variables", "variables": self._variables}, CONTROL_TIMEOUT_S)
        except (ChannelError, SandboxUnavailable) as exc:
            self._source.retire(instance, wait=True)
            raise SandboxExecutionError(f"the sandbox could not be restarted: {exc}") from None
        self._instance = instance
        if self._closed:  # cleaned up while this one was starting: the step's exit removes it
            raise SandboxExecutionError("The task was stopped, so this step was cut short.")

    # -- cleanup -------------------------------------------------------------------------------------
    class _StepGuard:
        def __init__(self, executor: "SandboxExecutor"):
            self.executor = executor

        def __enter__(self) -> None:
            self.executor._step_lock.acquire()
            if self.executor._closed:
                self.__exit__()
                raise SandboxExecutionError("this sandbox was already cleaned up")

        def __exit__(self, *exc: object) -> None:
            executor = self.executor
            executor._step_lock.release()
            if executor._closed:
                executor._teardown_if_free()

    def _step(self) -> "SandboxExecutor._StepGuard":
        return SandboxExecutor._StepGuard(self)

    def cleanup(self) -> None:
        """Destroy the sandbox without waiting for a running step: kill first, then remove what is left."""
        with self._flag_lock:
            if self._closed:
                return
            self._closed = True
        instance = self._instance
        if instance is not None:
            instance.kill()  # a running step's channel ends now; its thread sees _closed and stops
        self._teardown_if_free()

    def _teardown_if_free(self) -> None:
        """Remove the instance and the task folders, unless a step still runs (it calls this as it leaves)."""
        if not self._step_lock.acquire(blocking=False):
            return
        try:
            if self._torn_down:
                return
            self._torn_down = True
            instance, self._instance = self._instance, None
            if instance is not None:
                self._source.retire(instance, wait=True)
            shutil.rmtree(self._folder, ignore_errors=True)
        finally:
            self._step_lock.release()
