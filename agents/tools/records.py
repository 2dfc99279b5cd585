"""Writes of the example company's tools: atomic, serialised, and never into the installed package.

A write goes to a temporary file in the same folder, is flushed to disk and then renamed over the old
file (os.replace), so a crash mid-write leaves the old file or the new one, never half of one. Writers
of one file take an exclusive lock on a sibling `.lock` file, so two bookings cannot both read the old
state. Files of the bundled example company (inside the installed package) are written to a copy under
AGENTDESK_DATA_DIR/company instead; readers use `current_file` to see that copy once it exists.
"""
from __future__ import annotations

import fcntl
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from agents.departments import BUNDLED_COMPANY_DIR
from agents.tools import current_state_dir


def _state_copy(path: Path) -> Path | None:
    try:
        relative = path.resolve().relative_to(BUNDLED_COMPANY_DIR.resolve())
    except ValueError:
        return None
    state = current_state_dir() or Path(os.environ.get("AGENTDESK_DATA_DIR") or ".agentdesk")
    return state.expanduser().resolve() / "company" / relative


def current_file(path: Path) -> Path:
    """Where a company file is read from: its written copy when the bundled example has one."""
    copy = _state_copy(path)
    return copy if copy is not None and copy.exists() else path


def writable_file(path: Path) -> Path:
    """Where a company file is written: the file itself, or for the bundled example its copy."""
    copy = _state_copy(path)
    if copy is None:
        return path
    copy.parent.mkdir(parents=True, exist_ok=True)
    return copy


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock for read-modify-write of `path` (across threads and processes on this host)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Replace `path` with `data` in one step (temp file in the same folder, fsync, os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
