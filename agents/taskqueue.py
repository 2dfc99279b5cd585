"""The task queue between where a request arrives (web) and where it runs (worker).

Redis Streams with one consumer group (`REDIS_URL` set): a worker reads with XREADGROUP, keeps its lease
by re-claiming its own entries (XCLAIM resets their idle time), and acknowledges and deletes an entry when
the task is over. An entry whose worker died idles past the lease and is taken over by another worker with
XAUTOCLAIM. Streams were chosen over a queue library on Redis because they give exactly these guarantees
(a pending list per consumer, idle times, atomic claim) with redis-py alone. Without REDIS_URL the queue is
in-process (one process runs everything). The length check and the enqueue are one atomic step in both.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

STREAM = "agentdesk:tasks"
GROUP = "workers"

# Enqueue unless `max_waiting` entries wait already (entries not delivered to any worker yet).
_PUT = """
local waiting = redis.call('XLEN', KEYS[1]) - redis.call('XPENDING', KEYS[1], ARGV[1])[1]
if waiting >= tonumber(ARGV[2]) then return false end
return redis.call('XADD', KEYS[1], '*', 'job', ARGV[3])
"""


@dataclass
class Delivery:
    id: str
    job: dict
    #: True when taken over from a worker that stopped renewing its lease (it died or hung).
    reclaimed: bool = False


class TaskQueue(ABC):
    #: True when other processes take from this queue too (a task handed back runs elsewhere).
    shared = True

    @abstractmethod
    async def put(self, job: dict, max_waiting: int) -> bool:
        """Enqueue `job`; False (nothing enqueued) when `max_waiting` tasks already wait."""

    @abstractmethod
    async def take(self, consumer: str, count: int, block_s: float) -> list[Delivery]:
        """Up to `count` new tasks for `consumer`, waiting at most `block_s` for the first."""

    @abstractmethod
    async def reclaim(self, consumer: str, lease_s: float) -> list[Delivery]:
        """Tasks whose worker has not renewed its lease for `lease_s` seconds, now `consumer`'s."""

    @abstractmethod
    async def renew(self, consumer: str, ids: list[str]) -> None:
        """Keep `consumer`'s lease on these tasks."""

    @abstractmethod
    async def done(self, delivery: Delivery) -> None:
        """The task is over (answered, refused or given up): remove it."""

    @abstractmethod
    async def hand_back(self, delivery: Delivery, job: dict) -> None:
        """Return an unfinished task to the queue for another worker (shutdown), as `job`."""

    @abstractmethod
    async def stats(self) -> tuple[int, float]:
        """(tasks waiting for a worker, age in seconds of the oldest of them)."""

    async def close(self) -> None:
        return None


class LocalQueue(TaskQueue):
    """In-process: a deque and a condition; nothing to reclaim (a dead process takes its queue with it)."""

    shared = False

    def __init__(self) -> None:
        self._waiting: collections.deque[tuple[Delivery, float]] = collections.deque()
        self._ids = itertools.count(1)
        self._cond: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    async def put(self, job: dict, max_waiting: int) -> bool:
        if len(self._waiting) >= max_waiting:  # no await between check and append: atomic on the loop
            return False
        self._waiting.append((Delivery(str(next(self._ids)), job), time.time()))
        async with self._condition():
            self._condition().notify()
        return True

    async def take(self, consumer: str, count: int, block_s: float) -> list[Delivery]:
        cond = self._condition()
        async with cond:
            if not self._waiting:
                try:
                    await asyncio.wait_for(cond.wait_for(lambda: bool(self._waiting)), block_s)
                except asyncio.TimeoutError:
                    return []
        taken = []
        while self._waiting and len(taken) < count:
            taken.append(self._waiting.popleft()[0])
        return taken

    async def reclaim(self, consumer: str, lease_s: float) -> list[Delivery]:
        return []

    async def renew(self, consumer: str, ids: list[str]) -> None:
        return None

    async def done(self, delivery: Delivery) -> None:
        return None

    async def hand_back(self, delivery: Delivery, job: dict) -> None:
        self._waiting.appendleft((Delivery(delivery.id, job), time.time()))

    async def stats(self) -> tuple[int, float]:
        if not self._waiting:
            return 0, 0.0
        return len(self._waiting), time.time() - self._waiting[0][1]


class RedisQueue(TaskQueue):
    def __init__(self, store) -> None:
        self.store = store  # RedisStore: its client and its StoreUnavailable translation
        self.client = store.client
        self._group_ready = False

    async def _group(self) -> None:
        if self._group_ready:
            return
        try:
            await self.client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except Exception as exc:  # noqa: BLE001 - BUSYGROUP: it exists (the usual case)
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def _call(self, fn):
        from agents.state.redis import _TRANSIENT
        from agents.state import StoreUnavailable

        try:
            await self._group()
            return await fn()
        except _TRANSIENT as exc:
            self._group_ready = False  # a restarted Redis without its AOF has no group
            raise StoreUnavailable(self.store.down_message(exc)) from exc
        except Exception as exc:
            if "NOGROUP" in str(exc):
                self._group_ready = False
            if "LOADING" in str(exc) or "NOGROUP" in str(exc):
                raise StoreUnavailable(self.store.down_message(exc)) from exc
            raise

    async def put(self, job: dict, max_waiting: int) -> bool:
        added = await self._call(lambda: self.client.eval(_PUT, 1, STREAM, GROUP, max_waiting, json.dumps(job)))
        return bool(added)

    async def take(self, consumer: str, count: int, block_s: float) -> list[Delivery]:
        found = await self._call(lambda: self.client.xreadgroup(
            GROUP, consumer, {STREAM: ">"}, count=count, block=max(1, int(block_s * 1000))))
        return [Delivery(mid, json.loads(fields["job"])) for _, entries in found or [] for mid, fields in entries
                if fields]

    async def reclaim(self, consumer: str, lease_s: float) -> list[Delivery]:
        result = await self._call(lambda: self.client.xautoclaim(
            STREAM, GROUP, consumer, min_idle_time=int(lease_s * 1000), start_id="0-0", count=10))
        entries = result[1] if result else []
        return [Delivery(mid, json.loads(fields["job"]), reclaimed=True) for mid, fields in entries if fields]

    async def renew(self, consumer: str, ids: list[str]) -> None:
        if ids:
            await self._call(lambda: self.client.xclaim(STREAM, GROUP, consumer, 0, ids, justid=True))

    async def done(self, delivery: Delivery) -> None:
        async def ack():
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.xack(STREAM, GROUP, delivery.id)
                pipe.xdel(STREAM, delivery.id)
                await pipe.execute()

        await self._call(ack)

    async def hand_back(self, delivery: Delivery, job: dict) -> None:
        async def swap():
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.xadd(STREAM, {"job": json.dumps(job)})
                pipe.xack(STREAM, GROUP, delivery.id)
                pipe.xdel(STREAM, delivery.id)
                await pipe.execute()

        await self._call(swap)

    async def stats(self) -> tuple[int, float]:
        async def read():
            length = await self.client.xlen(STREAM)
            groups = await self.client.xinfo_groups(STREAM)
            group = next((g for g in groups if g["name"] == GROUP), None)
            if group is None:
                return 0, 0.0
            waiting = length - int(group["pending"])
            if waiting <= 0:
                return 0, 0.0
            first = await self.client.xrange(STREAM, min=f"({group['last-delivered-id']}", count=1)
            if not first:
                return waiting, 0.0
            return waiting, max(0.0, time.time() - int(first[0][0].split("-")[0]) / 1000)

        return await self._call(read)


def open_queue(store) -> TaskQueue:
    from agents.state.redis import RedisStore

    return RedisQueue(store) if isinstance(store, RedisStore) else LocalQueue()


def pack_request(request) -> dict:
    """A ChatRequest as queue data. Attachment headers (the bot's token) are not stored: the worker's
    platform adapter adds its own credentials back (`needs_auth`)."""
    data = dataclasses.asdict(request)
    data["attachments"] = [
        {"name": a.name, "url": a.url, "path": str(a.path) if a.path else None, "mimetype": a.mimetype,
         "size": a.size, "unavailable": a.unavailable, "needs_auth": bool(a.headers)}
        for a in request.attachments
    ]
    data["trace_carrier"] = dict(request.trace_carrier)
    data["reply_address"] = dict(request.reply_address)
    return data


def unpack_request(data: dict):
    from pathlib import Path

    from agents.chat import Attachment, ChatRequest

    values = dict(data)
    values["attachments"] = tuple(
        Attachment(name=a["name"], url=a.get("url"), path=Path(a["path"]) if a.get("path") else None,
                   mimetype=a.get("mimetype"), size=a.get("size"), unavailable=a.get("unavailable"),
                   headers={"X-Agentdesk-Needs-Auth": "1"} if a.get("needs_auth") else {})
        for a in data.get("attachments") or ()
    )
    values["user_groups"] = tuple(data.get("user_groups") or ())
    return ChatRequest(**values)
