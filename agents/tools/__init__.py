"""Department tools, named in the departments file by import path ("module:attribute").

Tools run on the host (never in the sandbox), so they may use secrets and network clients. Who asked is
bound here by the runner from the chat platform; a tool reads it with current_caller() and never takes
an identity from the model's arguments. A tool that quotes something (a policy, a web page) reports it with
report_sources(); the runner shows those sources with the step and the final answer.
"""
from __future__ import annotations

import contextvars
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from agents.chat import Caller, Source

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


class SourceCollector:
    """The sources one task's tools reported; thread-safe (sub-agents and tool threads write to it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._all: list[Source] = []
        self._new: list[Source] = []

    def add(self, sources: tuple[Source, ...] | list[Source]) -> None:
        with self._lock:
            self._all.extend(sources)
            self._new.extend(sources)

    def take_new(self) -> tuple[Source, ...]:
        """Sources reported since the last call (those of the step that just ended), deduplicated."""
        with self._lock:
            new, self._new = self._new, []
        return dedupe(new)

    def all(self) -> tuple[Source, ...]:
        with self._lock:
            return dedupe(self._all)


def dedupe(sources: list[Source] | tuple[Source, ...]) -> tuple[Source, ...]:
    """One entry per URL (or per title for sources without one), first report wins."""
    seen: dict[str, Source] = {}
    for source in sources:
        seen.setdefault(source.url or source.title, source)
    return tuple(seen.values())


_sources: contextvars.ContextVar[SourceCollector | None] = contextvars.ContextVar("agentdesk_sources", default=None)


def report_sources(*sources: Source) -> None:
    """Record what a tool quoted, for the step and the final answer; nothing happens outside a task."""
    collector = _sources.get()
    if collector is not None and sources:
        collector.add(sources)


@contextmanager
def bind_sources(collector: SourceCollector | None) -> Iterator[None]:
    token = _sources.set(collector)
    try:
        yield
    finally:
        _sources.reset(token)
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
