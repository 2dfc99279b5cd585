"""The runner inside a sandbox container: one persistent Python process per task.

It speaks JSON lines with the host over the container's stdin/stdout (never pickle) and executes code
through smolagents' LocalPythonExecutor, so `additional_authorized_imports` is enforced inside the
container too and Python state persists across the steps of a task. Tools are stubs that ask the host
to run the real tool and block for its answer; final_answer stays inside.

The protocol file descriptors are private duplicates taken at start; fds 0/1/2 are then pointed at
/dev/null and a capture file, so nothing the agent's code (or a C library) writes can corrupt the
channel, and stray output is returned to the model as part of the step's logs.

This file runs with the image's Python only (stdlib + smolagents); it must not import agentdesk.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import traceback

MAX_LOG_CHARS = 20_000
MAX_VALUE_BYTES = 1_000_000
CAPTURE_PATH = "/tmp/.agentdesk-stdio"
OUTPUT_DIR = "/workspace/out"
MAX_STATE_ENTRIES = 5_000


def output_state() -> str:
    """A fingerprint of OUTPUT_DIR ("" when empty), so the host copies the folder out only when it changed.

    Only a hint: the agent's code runs in this process and could make it lie, which can only cost it the
    copy of its own files after a crash; the host always copies the folder out at the end of the task.
    """
    seen = []
    folders = [OUTPUT_DIR]
    while folders and len(seen) < MAX_STATE_ENTRIES:
        folder = folders.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            seen.append((entry.path, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
            if stat.S_ISDIR(st.st_mode):
                folders.append(entry.path)
    if not seen:
        return ""
    return hashlib.sha256(repr(sorted(seen)).encode("utf-8", "surrogateescape")).hexdigest()[:32]


class ToolError(Exception):
    """A host-side tool failed; the agent's code sees this exception and may handle it."""


class Channel:
    """JSON lines over private copies of the original stdin/stdout."""

    def __init__(self) -> None:
        self._in = os.fdopen(os.dup(0), "rb", buffering=0)
        self._out = os.fdopen(os.dup(1), "wb", buffering=0)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        self._capture = os.open(CAPTURE_PATH, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        os.dup2(self._capture, 1)
        os.dup2(self._capture, 2)
        self._buf = b""

    def send(self, message: dict) -> None:
        # A raw write may be partial (gVisor's pipes take 64 KB at a time): loop until the line is out.
        view = memoryview(json.dumps(message, ensure_ascii=True).encode() + b"\n")
        while view:
            view = view[self._out.write(view):]

    def receive(self) -> dict | None:
        while b"\n" not in self._buf:
            chunk = self._in.read(65536)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def take_captured(self) -> str:
        """Whatever was written to fds 1/2 since the last call (capped), then reset the capture file."""
        sys.stdout.flush()
        sys.stderr.flush()
        data = os.pread(self._capture, MAX_LOG_CHARS + 1, 0)
        os.ftruncate(self._capture, 0)
        text = data.decode("utf-8", "replace")
        return text[:MAX_LOG_CHARS] + ("\n[stray output truncated]" if len(text) > MAX_LOG_CHARS else "")


def to_json_value(value):
    """The value itself when JSON can carry it (leaves that cannot become str()), else str(value)."""
    try:
        encoded = json.dumps(value, default=str, ensure_ascii=True)
    except (TypeError, ValueError, RecursionError):
        encoded = json.dumps(str(value))
    if len(encoded) > MAX_VALUE_BYTES:
        text = str(value)
        return text[: MAX_VALUE_BYTES // 2] + f"\n[value truncated: {len(text)} characters in total]"
    return json.loads(encoded)


def cap(text: str) -> str:
    if len(text) <= MAX_LOG_CHARS:
        return text
    half = MAX_LOG_CHARS // 2
    return f"{text[:half]}\n[... {len(text) - MAX_LOG_CHARS} characters cut ...]\n{text[-half:]}"


class Runner:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.executor = None
        self.tools: dict = {}

    def make_stub(self, name: str, input_names: list[str]):
        channel = self.channel

        def stub(*args, **kwargs):
            if len(args) == 1 and not kwargs and isinstance(args[0], dict) and set(args[0]) <= set(input_names):
                args, kwargs = (), dict(args[0])
            if len(args) > len(input_names):
                raise TypeError(f"{name}() takes {len(input_names)} arguments, {len(args)} given")
            for key, value in zip(input_names, args):
                if key in kwargs:
                    raise TypeError(f"{name}() got multiple values for argument {key!r}")
                kwargs[key] = value
            channel.send({"type": "tool_call", "name": name, "kwargs": to_json_value(kwargs)})
            reply = channel.receive()
            if reply is None:
                raise SystemExit(0)
            if reply.get("type") != "tool_result":
                raise ToolError(f"protocol error: expected a tool result, got {reply.get('type')!r}")
            if not reply.get("ok"):
                raise ToolError(reply.get("error") or f"tool {name} failed")
            return reply.get("value")

        stub.__name__ = name
        return stub

    def handle(self, msg: dict) -> dict:
        kind = msg.get("type")
        if kind == "init":
            from smolagents.local_python_executor import LocalPythonExecutor

            self.executor = LocalPythonExecutor(
                additional_authorized_imports=list(msg.get("authorized_imports") or []),
                max_print_outputs_length=MAX_LOG_CHARS,
                timeout_seconds=None,  # the host enforces the step timeout by killing the container
            )
            self.executor.send_tools({})
            return {"type": "ok"}
        if self.executor is None:
            return {"type": "error", "message": "sandbox not initialised"}
        if kind == "tools":
            stubs = {t["name"]: self.make_stub(t["name"], list(t.get("inputs") or [])) for t in msg["tools"]}
            if msg.get("final_answer"):
                stubs["final_answer"] = final_answer
            self.executor.send_tools(stubs)
            return {"type": "ok"}
        if kind == "variables":
            self.executor.send_variables(dict(msg.get("variables") or {}))
            return {"type": "ok"}
        if kind == "run":
            return self.run(msg.get("code") or "")
        return {"type": "error", "message": f"unknown request {kind!r}"}

    def run(self, code: str) -> dict:
        self.channel.take_captured()
        try:
            result = self.executor(code)
        except BaseException as exc:  # noqa: BLE001 - every failure of the agent's code goes back as text
            if isinstance(exc, KeyboardInterrupt):
                raise
            logs = str(self.executor.state.get("_print_outputs", "")) + self.channel.take_captured()
            message = str(exc) or type(exc).__name__
            if not isinstance(exc, Exception):
                message = f"{type(exc).__name__}: {message}"
            return {"type": "error", "message": cap(message), "logs": cap(logs), "out": output_state()}
        logs = (result.logs or "") + self.channel.take_captured()
        return {
            "type": "result",
            "output": to_json_value(result.output),
            "logs": cap(logs),
            "is_final_answer": bool(result.is_final_answer),
            "out": output_state(),
        }


def final_answer(answer=None, *args, **kwargs):
    """Returns its argument; smolagents turns the call into the end of the run."""
    return answer


def main() -> int:
    channel = Channel()
    runner = Runner(channel)
    import smolagents.local_python_executor  # noqa: F401 - imported before "ready" so the first step is fast

    channel.send({"type": "ready", "pid": os.getpid()})
    while True:
        msg = channel.receive()
        if msg is None:
            return 0
        try:
            reply = runner.handle(msg)
        except Exception as exc:  # noqa: BLE001 - a runner bug must answer, not hang the host
            reply = {"type": "error", "message": f"sandbox runner error: {type(exc).__name__}: {exc}",
                     "detail": cap(traceback.format_exc())}
        channel.send(reply)


if __name__ == "__main__":
    sys.exit(main())
