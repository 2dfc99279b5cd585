"""Department tools, named in the departments file by import path ("module:attribute").

Tools run on the host (never in the sandbox), so they may use secrets and network clients. Who asked is
bound here by the runner from the chat platform; a tool reads it with current_caller() and never takes
an identity from the model's arguments.
"""
from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Iterator

from agents.chat import Caller, Source

_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("agentdesk_caller", default=None)
_sources: contextvars.ContextVar[list[Source] | None] = contextvars.ContextVar("agentdesk_sources", default=None)


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


def report_source(source: Source) -> None:
    """A tool names where its result came from; the answer shows it (Teams citations, Slack sources)."""
    found = _sources.get()
    if found is not None:
        found.append(source)


@contextmanager
def bind_sources(found: list[Source]) -> Iterator[None]:
    token = _sources.set(found)
    try:
        yield
    finally:
        _sources.reset(token)
