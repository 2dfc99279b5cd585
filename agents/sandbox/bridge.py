"""The tool bridge: one step of agent code, with its tool calls served on the host, inside one deadline.

The step clock bounds the wall time of the whole step, tool time included, so code that floods the
channel or stops reading cannot stretch it. The one exemption is time a host-side tool spends waiting
for a person (an approval): the tool wraps that wait in `pause_step_clock()`.

Frames are accepted only where the runner's own protocol puts them: after "run", a tool call or the
step's result; a tool call only when the previous one has been answered (the runner's stub blocks for
its answer, so a second frame queued behind it was not written by the stub); nothing unasked between
requests. Tool calls and bytes per step are capped. Any breach ends the step and replaces the sandbox.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from agents.chat import Caller
from agents.sandbox.channel import ChannelBreach, ChannelTimeout, FrameChannel
from agents.telemetry import set_output, tool_span
from agents.tools import bind_caller

log = logging.getLogger("agentdesk.sandbox")

MAX_STEP_TOOL_CALLS = 500
MAX_STEP_BYTES = 16 << 20
TOOL_ERROR_CHARS = 2_000


def cap_text(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - limit} characters cut ...]\n{text[-half:]}"


class StepClock:
    """The deadline of one step; time inside `paused()` (a person approving a tool call) is not counted."""

    def __init__(self, limit_s: float):
        self.limit_s = float(limit_s)
        self._lock = threading.Lock()
        self._deadline = time.monotonic() + self.limit_s
        self._paused_since: float | None = None
        self._depth = 0

    def deadline(self) -> float:
        with self._lock:
            if self._paused_since is not None:
                return self._deadline + (time.monotonic() - self._paused_since)
            return self._deadline

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        with self._lock:
            self._depth += 1
            if self._depth == 1:
                self._paused_since = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0 and self._paused_since is not None:
                    self._deadline += time.monotonic() - self._paused_since
                    self._paused_since = None


_clock: contextvars.ContextVar[StepClock | None] = contextvars.ContextVar("agentdesk_step_clock", default=None)


@contextlib.contextmanager
def pause_step_clock() -> Iterator[None]:
    """Stop the running step's deadline while a host-side tool waits for a person (approval).

    Call it from inside a tool function; outside a sandbox step (or in threads that did not copy the
    tool's context) it does nothing. Nested uses count once.
    """
    clock = _clock.get()
    if clock is None:
        yield
        return
    with clock.paused():
        yield


class ToolBridge:
    """Runs the task's real tools on the host, with the asking person bound, and answers in JSON."""

    def __init__(self, caller: Caller):
        self.caller = caller
        self.tools: dict[str, Any] = {}

    def call(self, name: str, kwargs: Any, clock: StepClock | None = None) -> dict:
        tool = self.tools.get(name)
        if tool is None:
            return {"type": "tool_result", "ok": False, "error": f"no tool named {name!r}"}
        if not isinstance(kwargs, dict):
            return {"type": "tool_result", "ok": False, "error": "tool arguments must be keyword arguments"}
        token = _clock.set(clock)
        try:
            with tool_span(name, kwargs) as span, bind_caller(self.caller):
                value = tool(**kwargs)
                set_output(span, value)
        except Exception as exc:  # noqa: BLE001 - the model sees tool failures as exceptions in its code
            log.info("tool %s failed: %s", name, type(exc).__name__)
            return {"type": "tool_result", "ok": False,
                    "error": cap_text(f"{type(exc).__name__}: {exc}", TOOL_ERROR_CHARS)}
        finally:
            _clock.reset(token)
        try:
            encoded = json.loads(json.dumps(value, default=str))
        except (TypeError, ValueError):
            encoded = str(value)
        return {"type": "tool_result", "ok": True, "value": encoded}

    def run_step(self, channel: FrameChannel, code: str, clock: StepClock, *,
                 max_tool_calls: int = MAX_STEP_TOOL_CALLS, max_bytes: int = MAX_STEP_BYTES) -> dict:
        """Send the code, serve its tool calls, return the runner's final message for the step."""
        channel.expect_quiet()
        start = channel.received_bytes
        channel.send({"type": "run", "code": code}, clock.deadline)
        calls = 0
        while True:
            message = channel.receive(clock.deadline)
            if channel.received_bytes - start > max_bytes:
                raise ChannelBreach(f"the sandbox sent more than {max_bytes >> 20} MB in one step")
            kind = message.get("type")
            if kind in ("result", "error"):
                channel.expect_quiet()
                return message
            if kind != "tool_call":
                raise ChannelBreach(f"the sandbox sent an unexpected {str(kind)[:40]!r} message during a step")
            calls += 1
            if calls > max_tool_calls:
                raise ChannelBreach(f"the step made more than {max_tool_calls} tool calls")
            if channel.pending():
                raise ChannelBreach("the sandbox sent a frame before its tool call was answered")
            reply = self.call(str(message.get("name")), message.get("kwargs") or {}, clock)
            if clock.expired():
                raise ChannelTimeout()
            if channel.pending():
                raise ChannelBreach("the sandbox sent a frame before its tool call was answered")
            channel.send(reply, clock.deadline)
