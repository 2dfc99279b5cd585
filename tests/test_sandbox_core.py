"""The backend-agnostic sandbox core over a real subprocess's pipes (what a non-Docker backend uses): framing,
deadlines on reads and writes, unsolicited frames, the end of the stream, and the step clock's pause.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from agents.sandbox import pause_step_clock
from agents.sandbox.bridge import StepClock
from agents.sandbox.channel import ChannelBreach, ChannelGone, ChannelTimeout, FrameChannel, PipeStream

ECHO_RUNNER = textwrap.dedent(
    """
    import json, sys
    out = sys.stdout.buffer
    out.write(b'{"type": "ready"}\\n'); out.flush()
    for line in sys.stdin.buffer:
        msg = json.loads(line)
        if msg.get("type") == "stall":
            continue
        if msg.get("type") == "chatty":
            out.write(b'{"type": "ok"}\\n{"type": "extra"}\\n'); out.flush()
            continue
        out.write(json.dumps({"type": "ok", "echo": msg.get("data")}).encode() + b"\\n"); out.flush()
    """
)


@pytest.fixture
def channel():
    proc = subprocess.Popen([sys.executable, "-c", ECHO_RUNNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    chan = FrameChannel(PipeStream(proc.stdin, proc.stdout, proc.stderr))
    assert chan.receive(time.monotonic() + 30) == {"type": "ready"}
    yield chan, proc
    chan.close()
    proc.kill()
    proc.wait(10)


def test_request_and_large_messages_over_pipes(channel):
    chan, _ = channel
    big = "x" * 300_000  # larger than a pipe buffer both ways
    assert chan.request({"type": "echo", "data": big}, timeout=10) == {"type": "ok", "echo": big}


def test_read_deadline_and_unsolicited_frames(channel):
    chan, _ = channel
    started = time.monotonic()
    with pytest.raises(ChannelTimeout):
        chan.request({"type": "stall"}, timeout=0.5)
    assert time.monotonic() - started < 3
    assert chan.request({"type": "chatty"}, timeout=10) == {"type": "ok"}
    time.sleep(0.2)
    with pytest.raises(ChannelBreach, match="nobody asked for"):
        chan.request({"type": "echo", "data": 1}, timeout=10)


def test_write_deadline_when_the_runner_stops_reading(channel):
    chan, proc = channel
    proc.send_signal(19)  # SIGSTOP: it reads nothing more
    try:
        started = time.monotonic()
        with pytest.raises(ChannelTimeout):
            chan.send({"type": "echo", "data": "y" * 4_000_000}, time.monotonic() + 0.5)
        assert time.monotonic() - started < 3
    finally:
        proc.send_signal(18)


def test_end_of_stream(channel):
    chan, proc = channel
    proc.kill()
    with pytest.raises(ChannelGone):
        chan.receive(time.monotonic() + 10)


def test_step_clock_pauses_only_inside_pause_step_clock():
    with pause_step_clock():  # outside a step: nothing to pause, no error
        pass
    clock = StepClock(0.3)
    with clock.paused():
        with clock.paused():  # nested: counted once
            time.sleep(0.4)
    assert not clock.expired()
    time.sleep(0.4)
    assert clock.expired()
