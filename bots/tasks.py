"""Tracked background work: agent tasks never run in an HTTP ack path, and none is lost or silent.

Background work also never delays an ack. asyncio runs every ready callback in FIFO order before it polls
its sockets again, so a burst of webhooks whose handlers each spawn work (Bolt dispatch, routing, Web API
calls) would make the later acks of the burst wait behind everyone's background work. Work spawned with
`deferred=True` is therefore driven step by step through an `AckGate`: it runs only while no ack is in
progress (or once it has waited `max_wait_s`), one step per loop iteration, so the loop polls its sockets
between any two background steps.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
from typing import Any, Coroutine, Iterator

log = logging.getLogger("agentdesk.tasks")


class AckGate:
    """Gives the HTTP ack path priority over deferred background work on the event loop.

    Webhook handlers wrap their ack path in `with gate.acking():`. A deferred step is released when no ack
    is in flight and none finished in the last `quiet_s` (a burst's requests arrive a few ms apart; the gap
    also covers writing the response after the handler returns), or when it has waited `max_wait_s`
    (sustained load must not starve the work the acks promised). At most one step is released at a time,
    and the next one only on a later loop iteration.
    """

    def __init__(self, quiet_s: float = 0.02, max_wait_s: float = 0.5) -> None:
        self.quiet_s = quiet_s
        self.max_wait_s = max_wait_s
        self._acking = 0
        self._last_ack = -math.inf
        self._waiters: collections.deque[tuple[float, asyncio.Future]] = collections.deque()
        self._busy = False  # a released step has not finished yet
        self._timer: asyncio.Handle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @contextlib.contextmanager
    def acking(self) -> Iterator[None]:
        self._acking += 1
        try:
            yield
        finally:
            self._acking -= 1
            self._last_ack = asyncio.get_running_loop().time()

    async def turn(self) -> None:
        """Wait until this step may run; the caller must call `step_done()` after it (also on errors)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or the previous loop is gone (tests run one per test)
            self._loop, self._busy, self._timer = loop, False, None
            self._waiters.clear()
        fut = loop.create_future()
        self._waiters.append((loop.time() + self.max_wait_s, fut))
        if not self._busy and self._timer is None:
            self._timer = loop.call_soon(self._release)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted, then cancelled before it ran: pass the turn on
                self.step_done()
            raise

    def step_done(self) -> None:
        self._busy = False
        if self._timer is None and self._waiters:
            # call_soon: the next step runs on a later iteration, after the loop has polled its sockets
            self._timer = asyncio.get_running_loop().call_soon(self._release)

    def _release(self) -> None:
        self._timer = None
        while self._waiters and self._waiters[0][1].cancelled():
            self._waiters.popleft()
        if self._busy or not self._waiters:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline, fut = self._waiters[0]
        quiet_at = self._last_ack + self.quiet_s
        if (self._acking == 0 and now >= quiet_at) or now >= deadline:
            self._waiters.popleft()
            self._busy = True
            fut.set_result(None)
            return
        retry = now + self.quiet_s if self._acking else quiet_at
        self._timer = loop.call_at(min(deadline, retry), self._release)


async def _deferred(coro: Coroutine[Any, Any, Any], gate: AckGate) -> Any:
    """Run `coro` like a Task would, but take a turn at `gate` before every step."""
    throw: BaseException | None = None
    try:
        while True:
            granted = False
            if throw is None:
                try:
                    await gate.turn()
                    granted = True
                except asyncio.CancelledError as exc:
                    throw = exc
            try:
                yielded = coro.send(None) if throw is None else coro.throw(throw)
            except StopIteration as stop:
                return stop.value
            finally:
                if granted:
                    gate.step_done()
            throw = None
            if yielded is None:  # a bare yield (asyncio.sleep(0)): just give the loop a turn
                continue
            if not asyncio.isfuture(yielded):  # what Task does with anything else
                throw = RuntimeError(f"deferred task got bad yield: {yielded!r}")
                continue
            yielded._asyncio_future_blocking = False  # as Task.__step does, so it can be awaited here
            try:
                await yielded  # the coroutine reads the future's outcome itself when resumed
            except asyncio.CancelledError as exc:
                if not yielded.cancelled():  # this task was cancelled, not the future it waited on
                    throw = exc
            except BaseException:  # noqa: BLE001 - delivered to the coroutine by the future
                pass
    finally:
        coro.close()


class BackgroundTasks:
    """Keeps a strong reference to every task (asyncio only keeps weak ones) and logs failures."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()
        self.gate = AckGate()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str, *, deferred: bool = False) -> asyncio.Task:
        """Run `coro` in a tracked task; `deferred=True` runs it behind the HTTP ack path (see AckGate)."""
        inner = coro
        if deferred:
            coro = _deferred(inner, self.gate)
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        if deferred:  # a task cancelled before its first step never enters _deferred: close `inner` anyway
            task.add_done_callback(lambda _: inner.close())
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("background task %s failed: %s", task.get_name(), exc, exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for in-flight tasks (tests, graceful shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
