"""Department tools, named in the departments file by import path ("module:attribute").

Tools run on the host (never in the sandbox), so they may use secrets and network clients. Who asked is
bound here by the runner from the chat platform; a tool reads it with current_caller() and never takes
an identity from the model's arguments.
"""
from __future__ import annotations

import contextvars
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from agents.chat import Caller

_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("agentdesk_caller", default=None)


class NoCaller(RuntimeError):
    pass


def current_caller() -> Caller:
    caller = _caller.get()
    if caller is None:
        raise NoCaller("this tool needs to know who asked, and no caller is bound")
    return caller


@contextmanager
def bind_caller(caller: Caller) -> Iterator[None]:
    token = _caller.set(caller)
    try:
        yield
    finally:
        _caller.reset(token)


_output_dir: contextvars.ContextVar[Path | None] = contextvars.ContextVar("agentdesk_output_dir", default=None)


def current_output_dir() -> Path | None:
    """The host folder for files a tool makes for the person (sent to the thread with the answer), or None."""
    return _output_dir.get()


@contextmanager
def bind_output_dir(path: Path) -> Iterator[None]:
    token = _output_dir.set(path)
    try:
        yield
    finally:
        _output_dir.reset(token)


_state_dir: contextvars.ContextVar[Path | None] = contextvars.ContextVar("agentdesk_state_dir", default=None)


def current_state_dir() -> Path | None:
    """AGENTDESK_DATA_DIR of the running bot (where writes to the bundled example company go), or None."""
    return _state_dir.get()


@contextmanager
def bind_state_dir(path: Path) -> Iterator[None]:
    token = _state_dir.set(path)
    try:
        yield
    finally:
        _state_dir.reset(token)
