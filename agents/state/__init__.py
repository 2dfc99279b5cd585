"""Shared state behind one seam: records, counters and leased locks, and what is built from them.

Two implementations hold the primitives: SQLite in the data dir (one process, the default) and Redis
(`REDIS_URL`: every web replica and worker shares it). Everything above the primitives (event dedupe,
thread -> department, thread memory, task records, per-user limits, per-thread locks, stop signals,
answers, feedback, approvals) is written once here, so both backends run the same code paths.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any

from agents.chat import ChatRequest
from agents.memory import steps_from_data, steps_to_data

TASK_RECORD_TTL_S = 7 * 24 * 3600
DEDUPE_TTL_S = 3600.0  # Slack retries for up to ~5 minutes, Teams for less; an hour leaves a wide margin
MAX_THREAD_STEPS = 60


class StoreUnavailable(RuntimeError):
    """The shared store cannot be reached; the message says what the operator should check."""


@dataclass(frozen=True)
class TaskRecord:
    task_id: str
    thread_key: str
    platform: str
    request: dict
    department: str | None
    status: str
    started_at: float


class StateStore(ABC):
    """Async primitives each backend implements, and the domain operations built on them."""

    #: Shown by /readyz and in log lines ("SQLite at ...", "Redis at host:port").
    description = ""

    # -- primitives ---------------------------------------------------------------------------------
    @abstractmethod
    async def put_record(self, namespace: str, key: str, value: dict, ttl_s: float | None = None) -> None:
        """Write (or overwrite) one record; it disappears after `ttl_s` seconds when given."""

    @abstractmethod
    async def add_record(self, namespace: str, key: str, value: dict, ttl_s: float | None = None) -> bool:
        """Write a record only if none (or only an expired one) exists (SET NX): True for the one caller that wins."""

    @abstractmethod
    async def get_record(self, namespace: str, key: str) -> dict | None: ...

    @abstractmethod
    async def delete_record(self, namespace: str, key: str) -> None: ...

    @abstractmethod
    async def list_records(self, namespace: str, prefix: str = "") -> dict[str, dict]:
        """Every live record of a namespace whose key starts with `prefix`."""

    @abstractmethod
    async def incr(self, name: str, delta: int, ttl_s: float, *, refresh_ttl: bool = True) -> int:
        """Add `delta` to a counter atomically and return the new value. The counter expires `ttl_s` after
        its creation (refresh_ttl=False: a fixed window) or after its last change (True: a leak guard)."""

    @abstractmethod
    async def acquire_lock(self, name: str, owner: str, lease_s: float) -> bool:
        """Take `name` for `owner` for `lease_s` seconds unless someone else holds an unexpired lease."""

    @abstractmethod
    async def extend_lock(self, name: str, owner: str, lease_s: float) -> bool:
        """Renew `owner`'s lease; False when the lease was lost (expired and taken by someone else)."""

    @abstractmethod
    async def release_lock(self, name: str, owner: str) -> None:
        """Release `name` if `owner` still holds it."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise StoreUnavailable (with what to do) when the store cannot be reached."""

    @abstractmethod
    async def close(self) -> None: ...

    # -- event dedupe -------------------------------------------------------------------------------
    async def claim_event(self, key: str, ttl_s: float = DEDUPE_TTL_S) -> bool:
        """True exactly once per delivery key within the TTL, across processes and restarts."""
        return await self.add_record("dedupe", key, {"at": time.time()}, ttl_s)

    # -- threads and memory -------------------------------------------------------------------------
    async def thread_department(self, thread_key: str) -> str | None:
        record = await self.get_record("threads", thread_key)
        return record["department"] if record else None

    async def claim_thread(self, thread_key: str, department: str) -> None:
        """Record the department answering in a thread (routing keeps it for every follow-up)."""
        await self.put_record("threads", thread_key, {"department": department, "at": time.time()})

    @staticmethod
    def memory_key(thread_key: str, department: str) -> str:
        """Memory is kept per thread and department, so switching department in a DM starts clean."""
        return f"{thread_key}#{department}"

    async def load_steps(self, memory_key: str) -> list:
        record = await self.get_record("memory", memory_key)
        return steps_from_data(record["steps"]) if record else []

    async def save_steps(self, memory_key: str, department: str, steps: list[Any]) -> None:
        data = steps_to_data(steps)[-MAX_THREAD_STEPS:]
        await self.put_record("memory", memory_key, {"department": department, "steps": data, "at": time.time()})

    # -- tasks --------------------------------------------------------------------------------------
    async def task_started(self, task_id: str, request: ChatRequest, **fields: Any) -> None:
        """A task record (kept a week) and an entry in the running index (what a restart reports)."""
        payload = asdict(request)
        payload["attachments"] = [{"name": a.name} for a in request.attachments]
        payload.pop("trace_carrier", None)
        record = {"task_id": task_id, "thread_key": request.thread_key, "platform": request.platform,
                  "request": payload, "department": None, "status": "running", "started_at": time.time(),
                  "steps_done": 0, **fields}
        await self.put_record("tasks", task_id, record, TASK_RECORD_TTL_S)
        await self.put_record("running", task_id, {"task_id": task_id}, TASK_RECORD_TTL_S)

    async def task_update(self, task_id: str, **fields: Any) -> dict | None:
        record = await self.get_record("tasks", task_id)
        if record is None:
            return None
        record.update(fields)
        await self.put_record("tasks", task_id, record, TASK_RECORD_TTL_S)
        return record

    async def get_task(self, task_id: str) -> dict | None:
        return await self.get_record("tasks", task_id)

    async def task_finished(self, task_id: str, status: str, department: str | None = None) -> None:
        fields: dict[str, Any] = {"status": status, "finished_at": time.time()}
        if department:
            fields["department"] = department
        await self.task_update(task_id, **fields)
        await self.delete_record("running", task_id)

    async def interrupted_tasks(self, platform: str | None = None) -> list[TaskRecord]:
        """Tasks still marked running: with the in-process queue, what the dead process was doing."""
        found = []
        for task_id in await self.list_records("running"):
            r = await self.get_record("tasks", task_id)
            if r and r.get("status") == "running" and (platform is None or r["platform"] == platform):
                found.append(TaskRecord(r["task_id"], r["thread_key"], r["platform"], r["request"],
                                        r.get("department"), r["status"], r["started_at"]))
        return found

    # -- runs in progress and stop signals ----------------------------------------------------------
    async def run_started(self, thread_key: str, task_id: str, requester: str, worker: str, ttl_s: float) -> None:
        await self.put_record("runs", thread_key, {"task_id": task_id, "requester": requester, "worker": worker},
                              ttl_s)

    async def run_in(self, thread_key: str) -> dict | None:
        """The run in progress in a thread (any worker), or None."""
        return await self.get_record("runs", thread_key)

    async def run_ended(self, thread_key: str, task_id: str) -> None:
        current = await self.get_record("runs", thread_key)
        if current and current.get("task_id") == task_id:
            await self.delete_record("runs", thread_key)

    async def signal_stop(self, task_id: str, by_user: str) -> None:
        await self.put_record("stops", task_id, {"by": by_user, "at": time.time()}, 3600)

    async def stop_signal(self, task_id: str) -> str | None:
        """Who asked to stop this task, or None; the worker polls this while it runs."""
        record = await self.get_record("stops", task_id)
        return record["by"] if record else None


def open_store(settings) -> StateStore:
    """Redis when REDIS_URL is set, else SQLite under the data dir."""
    if settings.redis_url:
        from agents.state.redis import RedisStore

        return RedisStore(settings.redis_url)
    from agents.state.sqlite import SqliteStore

    return SqliteStore(settings.data_dir)


class PatientStore(StateStore):
    """The same store, waiting out an outage (up to `give_up_s`) instead of failing: for work already
    accepted, such as a running task's bookkeeping, which must not be lost for a Redis restart. The web
    ack path uses the store itself, so it can answer 503 at once."""

    def __init__(self, inner: StateStore, give_up_s: float = 600.0) -> None:
        self.inner = inner
        self.give_up_s = give_up_s
        self.description = inner.description

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        import asyncio
        import logging

        started = time.monotonic()
        warned = False
        while True:
            try:
                return await getattr(self.inner, name)(*args, **kwargs)
            except StoreUnavailable as exc:
                if time.monotonic() - started > self.give_up_s:
                    raise
                if not warned:
                    logging.getLogger("agentdesk.state").error("waiting for the state store: %s", exc)
                    warned = True
                await asyncio.sleep(1.0)

    async def put_record(self, namespace, key, value, ttl_s=None):
        return await self._call("put_record", namespace, key, value, ttl_s)

    async def add_record(self, namespace, key, value, ttl_s=None):
        return await self._call("add_record", namespace, key, value, ttl_s)

    async def get_record(self, namespace, key):
        return await self._call("get_record", namespace, key)

    async def delete_record(self, namespace, key):
        return await self._call("delete_record", namespace, key)

    async def list_records(self, namespace, prefix=""):
        return await self._call("list_records", namespace, prefix)

    async def incr(self, name, delta, ttl_s, *, refresh_ttl=True):
        return await self._call("incr", name, delta, ttl_s, refresh_ttl=refresh_ttl)

    async def acquire_lock(self, name, owner, lease_s):
        return await self._call("acquire_lock", name, owner, lease_s)

    async def extend_lock(self, name, owner, lease_s):
        return await self._call("extend_lock", name, owner, lease_s)

    async def release_lock(self, name, owner):
        return await self._call("release_lock", name, owner)

    async def ping(self):
        return await self.inner.ping()

    async def close(self):
        return None
