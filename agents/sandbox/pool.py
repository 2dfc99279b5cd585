"""The warm pool shared by backends: ready sandboxes handed out one per task, refilled in the background.

The pool owns the task folders (<data dir>/sandboxes/<id>/in and out), the registry of live instances
(so close() destroys all of them), the background reapers of replaced instances, and the sweep of
folders nobody uses. Everything a backend knows (how to start, check and sweep its sandboxes) is behind
SandboxBackend; executors reach the pool only through start_instance() and retire().
"""
from __future__ import annotations

import collections
import logging
import os
import shutil
import threading
import time
import uuid
from abc import ABC, abstractmethod
from pathlib import Path

from agents.chat import Caller
from agents.sandbox.base import Sandbox, SandboxProvider, SandboxUnavailable
from agents.sandbox.channel import ChannelError
from agents.sandbox.executor import SandboxExecutor, SandboxInstance, SandboxLimits
from agents.settings import Settings


def pid_alive(pid: int) -> bool:
    """Whether the process that owns a sandbox still runs (sweeps remove the sandboxes of dead owners)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

log = logging.getLogger("agentdesk.sandbox")

READY_TIMEOUT_S = 60.0
REAPER_JOIN_S = 30.0


class SandboxBackend(ABC):
    """One kind of sandbox (Docker, WebAssembly): the hooks the pool calls."""

    @abstractmethod
    def start(self, sid: str, folder: Path) -> SandboxInstance:
        """Start a sandbox on the task folder and wait until its runner is ready (blocking, at most
        READY_TIMEOUT_S). Cleans up after itself and raises SandboxUnavailable (operator-facing) on failure."""

    @abstractmethod
    def check(self) -> tuple[bool, str]:
        """(ready, explanation) for /readyz and `agentdesk doctor`; cheap, blocking."""

    def sweep(self, live_ids: set[str]) -> set[str] | None:
        """Remove sandboxes left by dead processes (never one in live_ids). Returns the names of task folders
        still in use by other processes, or None when it could not tell (then no folder is removed)."""
        return set()

    def close(self) -> None:
        """Release the backend's own resources (clients, connections)."""


class SandboxPool(SandboxProvider):
    """Hands out instances of one backend from a warm pool; thread-safe. The InstanceSource of executors."""

    executor_class = SandboxExecutor

    def __init__(self, settings: Settings, backend: SandboxBackend, limits: SandboxLimits,
                 *, instance_id: str | None = None):
        self.settings = settings
        self.backend = backend
        self.limits = limits
        self.instance_id = instance_id or uuid.uuid4().hex[:12]
        self.root = (Path(settings.data_dir) / "sandboxes").resolve()
        self._lock = threading.Lock()
        self._pool: collections.deque[SandboxInstance] = collections.deque()
        self._live: dict[str, SandboxInstance] = {}
        self._wake = threading.Event()
        self._filled = threading.Event()
        self._closed = False
        self._swept = False
        self._reapers: list[threading.Thread] = []
        self._thread: threading.Thread | None = None

    # -- the seam executors use ----------------------------------------------------------------------
    def start_instance(self, folder: Path | None = None) -> SandboxInstance:
        """A fresh started instance on `folder` (a replacement) or on a new task folder (blocking)."""
        if self._closed:
            raise SandboxUnavailable("the sandbox provider is shut down")
        new_folder = folder is None
        sid = uuid.uuid4().hex[:12] if folder is None else f"{folder.name}-{uuid.uuid4().hex[:4]}"
        if folder is None:
            folder = self._make_folder(sid)
        try:
            instance = self.backend.start(sid, folder)
        except BaseException:
            if new_folder:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        with self._lock:
            closed = self._closed
            if not closed:
                self._live[instance.id] = instance
        if closed:
            instance.destroy()
            if new_folder:
                shutil.rmtree(folder, ignore_errors=True)
            raise SandboxUnavailable("the sandbox provider is shut down")
        return instance

    def retire(self, instance: SandboxInstance, *, wait: bool) -> None:
        """Forget the instance and destroy it: now, or in a background reaper (close() waits for those)."""
        with self._lock:
            self._live.pop(instance.id, None)
        if wait:
            instance.destroy()
            return
        thread = threading.Thread(target=instance.destroy, name="sandbox-reaper", daemon=True)
        with self._lock:
            self._reapers = [t for t in self._reapers if t.is_alive()] + [thread]
        thread.start()

    # -- folders -------------------------------------------------------------------------------------
    def _make_folder(self, sid: str) -> Path:
        folder = self.root / sid
        (folder / "in").mkdir(parents=True, mode=0o755)
        (folder / "out").mkdir(mode=0o700)  # host-side copy of OUTPUT_DIR; never mounted into a sandbox
        os.chmod(folder, 0o755)
        os.chmod(folder / "in", 0o755)
        return folder

    def _live_snapshot(self) -> list[SandboxInstance]:
        with self._lock:
            return list(self._live.values())

    # -- SandboxProvider -----------------------------------------------------------------------------
    def acquire(self, *, authorized_imports: list[str], step_timeout_s: float, caller: Caller) -> Sandbox:
        if self._closed:
            raise SandboxUnavailable("the sandbox provider is shut down")
        while True:
            with self._lock:
                instance = self._pool.popleft() if self._pool else None
            self._wake.set()
            if instance is None:
                instance = self.start_instance()
            try:
                return self.executor_class.open(self, instance, authorized_imports=authorized_imports,
                                                step_timeout_s=step_timeout_s, caller=caller)
            except (ChannelError, OSError) as exc:
                log.warning("discarding a dead warm sandbox %s: %s", instance.id[:12], exc)
                self._discard(instance)
            except SandboxUnavailable:
                self._discard(instance)
                raise

    def _discard(self, instance: SandboxInstance) -> None:
        self.retire(instance, wait=True)
        shutil.rmtree(instance.folder, ignore_errors=True)

    def check(self) -> tuple[bool, str]:
        ready, why = self.backend.check()
        if ready:
            with self._lock:
                warm = len(self._pool)
            why = f"{why}, {warm}/{self.settings.sandbox_pool_size} warm sandboxes"
        return ready, why

    def start(self) -> None:
        """Sweep leftovers and warm the pool. If the backend is not ready yet the refill thread still starts:
        it retries with backoff, fills the pool (and sweeps) once the backend answers."""
        ready, why = self.check()
        if ready:
            self.sweep()
            self._swept = True
        else:
            log.error("sandbox not ready: %s (the warm pool is filled once it is)", why)
        if self._thread is None and self.settings.sandbox_pool_size > 0:
            self._thread = threading.Thread(target=self._refill_loop, name="sandbox-pool", daemon=True)
            self._thread.start()
            self._wake.set()
            if ready:
                self._filled.wait(timeout=READY_TIMEOUT_S * 2)

    def _refill_loop(self) -> None:
        backoff = 0.0
        while not self._closed:
            self._wake.wait(timeout=backoff or 5.0)
            self._wake.clear()
            while not self._closed:
                with self._lock:
                    missing = self.settings.sandbox_pool_size - len(self._pool)
                if missing <= 0:
                    self._filled.set()
                    backoff = 0.0
                    break
                try:
                    instance = self.start_instance()
                except SandboxUnavailable as exc:
                    if not backoff:
                        log.error("cannot warm the sandbox pool: %s", exc)
                    backoff = min(max(backoff * 2, 2.0), 60.0)
                    self._filled.set()
                    break
                with self._lock:
                    closed = self._closed
                    if not closed:
                        self._pool.append(instance)
                if closed:
                    self._discard(instance)
                elif not self._swept:  # the backend was down at start: sweep now that it answers
                    self._swept = True
                    try:
                        self.sweep()
                    except SandboxUnavailable:
                        self._swept = False

    def sweep(self) -> None:
        """Remove sandboxes left by dead processes and task folders nobody uses."""
        keep = self.backend.sweep({i.id for i in self._live_snapshot()})
        if keep is None:
            return
        keep |= {i.folder.name for i in self._live_snapshot()}
        if self.root.is_dir():
            now = time.time()
            for folder in self.root.iterdir():
                # a folder younger than a minute may belong to a sandbox another process is creating
                if folder.name not in keep and now - folder.stat().st_mtime > 60:
                    shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=READY_TIMEOUT_S + 5)
            self._thread = None
        with self._lock:
            victims = list(self._live.values())
            reapers = list(self._reapers)
            self._pool.clear()
            self._live.clear()
        for instance in victims:
            instance.destroy()
            shutil.rmtree(instance.folder, ignore_errors=True)
        for thread in reapers:
            thread.join(timeout=REAPER_JOIN_S)
        self.backend.close()

    @property
    def warm(self) -> int:
        with self._lock:
            return len(self._pool)
