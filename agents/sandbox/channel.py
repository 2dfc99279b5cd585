"""The frame channel: JSON lines between the host and a sandbox's runner, over any pair of byte streams.

A backend supplies a ByteStream (Docker: the container's attach socket, demultiplexed; a subprocess: its
stdin/stdout pipes, PipeStream below). FrameChannel adds the framing every backend shares: one JSON
object per line, never pickle, a size cap per line, a deadline on every read and write (a sandbox that
stops reading cannot hold the host), and a count of bytes received so a step can be capped.
"""
from __future__ import annotations

import collections
import json
import os
import select
import threading
import time
from abc import ABC, abstractmethod
from typing import IO, Callable

MAX_LINE_BYTES = 4_000_000  # a protocol line larger than this is treated as a runaway sandbox
STDERR_TAIL = 32


class ChannelError(Exception):
    """The channel cannot carry the next message; the sandbox is replaced."""


class ChannelGone(ChannelError):
    """The sandbox's runner ended (end of its stdout)."""


class ChannelTimeout(ChannelError):
    """No message (or no room to write one) before the deadline."""


class ChannelBreach(ChannelError):
    """The sandbox broke the protocol: oversized, malformed or unexpected frames, or too many of them."""


#: A deadline is an absolute time.monotonic() value, or a callable returning one (a step clock that can pause).
Deadline = float | Callable[[], float]


def _remaining(deadline: Deadline) -> float:
    return (deadline() if callable(deadline) else deadline) - time.monotonic()


class ByteStream(ABC):
    """The runner's stdin and stdout (and, where the backend has it, stderr) as seen from the host."""

    def __init__(self) -> None:
        self.stderr_tail: collections.deque[bytes] = collections.deque(maxlen=STDERR_TAIL)

    @abstractmethod
    def read(self, timeout: float) -> bytes:
        """Some bytes of the runner's stdout; b"" at its end; raises ChannelTimeout after `timeout` seconds
        (0 = only what is already available, which may be nothing: then raises ChannelTimeout at once)."""

    @abstractmethod
    def write(self, data: bytes, timeout: float) -> None:
        """All of data to the runner's stdin within `timeout` seconds, else ChannelTimeout / ChannelGone."""

    @abstractmethod
    def close(self) -> None:
        """Release the streams at once (never blocks, never raises)."""

    def shutdown(self) -> None:
        """Make a read or write blocked in another thread end now, where the backend can without releasing
        the descriptor (that thread may be about to wait on it; a closed number can be reused by a new
        connection, which it would then wait on instead). Here: close()."""
        self.close()


class PipeStream(ByteStream):
    """A subprocess's stdin/stdout pipes (stderr drained into a diagnostic tail by a daemon thread)."""

    def __init__(self, stdin: IO[bytes], stdout: IO[bytes], stderr: IO[bytes] | None = None):
        super().__init__()
        self._in = stdin
        self._out = stdout
        os.set_blocking(self._in.fileno(), False)
        if stderr is not None:
            threading.Thread(target=self._drain, args=(stderr,), name="sandbox-stderr", daemon=True).start()

    def _drain(self, stderr: IO[bytes]) -> None:
        try:
            for chunk in iter(lambda: os.read(stderr.fileno(), 65536), b""):
                self.stderr_tail.append(chunk[-2000:])
        except (OSError, ValueError):
            pass

    def read(self, timeout: float) -> bytes:
        try:
            ready, _, _ = select.select([self._out], [], [], max(timeout, 0))
            if not ready:
                raise ChannelTimeout()
            return os.read(self._out.fileno(), 262144)
        except (OSError, ValueError) as exc:
            raise ChannelGone(str(exc)) from exc

    def write(self, data: bytes, timeout: float) -> None:
        end = time.monotonic() + timeout
        view = memoryview(data)
        try:
            while view:
                left = end - time.monotonic()
                if left <= 0:
                    raise ChannelTimeout()
                _, ready, _ = select.select([], [self._in], [], left)
                if ready:
                    try:
                        view = view[os.write(self._in.fileno(), view):]
                    except BlockingIOError:
                        continue
        except BrokenPipeError as exc:
            raise ChannelGone("the runner closed its stdin") from exc
        except (OSError, ValueError) as exc:
            raise ChannelGone(str(exc)) from exc

    def close(self) -> None:
        for stream in (self._in, self._out):
            try:
                stream.close()
            except OSError:
                pass


class FrameChannel:
    """JSON lines over a ByteStream. Not thread-safe: one step (or control request) at a time."""

    def __init__(self, stream: ByteStream, max_line_bytes: int = MAX_LINE_BYTES):
        self.stream = stream
        self.max_line_bytes = max_line_bytes
        self._lines = b""
        self._ended = False
        #: Bytes of stdout received so far (a step's cap is checked against the difference).
        self.received_bytes = 0

    def send(self, message: dict, deadline: Deadline) -> None:
        remaining = _remaining(deadline)
        if remaining <= 0:
            raise ChannelTimeout()
        self.stream.write(json.dumps(message, ensure_ascii=True).encode() + b"\n", remaining)

    def _fill(self, timeout: float) -> None:
        chunk = self.stream.read(timeout)
        if not chunk:
            self._ended = True
            raise ChannelGone("end of stream")
        self.received_bytes += len(chunk)
        self._lines += chunk

    def receive(self, deadline: Deadline) -> dict:
        """The next JSON message; ChannelTimeout when none is complete before the deadline."""
        while b"\n" not in self._lines:
            if len(self._lines) > self.max_line_bytes:
                raise ChannelBreach(f"the sandbox sent more than {self.max_line_bytes // 1_000_000} MB in one message")
            if self._ended:
                raise ChannelGone("end of stream")
            remaining = _remaining(deadline)
            if remaining <= 0:
                raise ChannelTimeout()
            self._fill(remaining)
        line, self._lines = self._lines.split(b"\n", 1)
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise ChannelBreach("the sandbox sent a malformed message") from exc
        if not isinstance(message, dict):
            raise ChannelBreach("the sandbox sent a message that is not an object")
        return message

    def request(self, message: dict, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        self.expect_quiet()
        self.send(message, deadline)
        return self.receive(deadline)

    def pending(self) -> bool:
        """Whether the runner has sent anything the host has not asked for yet (checked without waiting)."""
        if self._lines:
            return True
        try:
            self._fill(0)
        except ChannelTimeout:
            return False
        except ChannelGone:
            return False
        return bool(self._lines)

    def expect_quiet(self) -> None:
        """The runner speaks only when spoken to: bytes waiting before a request are a breach."""
        if self.pending():
            raise ChannelBreach("the sandbox sent a message nobody asked for")

    def stderr_text(self) -> str:
        return b"".join(self.stream.stderr_tail).decode("utf-8", "replace")[-4000:]

    def shutdown(self) -> None:
        """End a receive blocked in another thread (see ByteStream.shutdown); close() releases the stream."""
        self.stream.shutdown()

    def close(self) -> None:
        self.stream.close()
