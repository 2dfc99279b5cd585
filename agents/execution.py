"""Execution, on a worker: take tasks from the queue and run each in its slot, posting replies itself.

One task, top to bottom: (taken over from a dead worker? tell the person; start again only if no step had
finished) -> the thread's lock (a follow-up waits for the turn before it; never two runs of one thread)
-> a department slot -> a fresh sandbox -> attachments -> the agent run -> one final answer (guarded in
the store, so a task taken over never answers twice) -> memory saved, the sandbox destroyed, the queue
entry removed. A heartbeat renews the queue lease and the thread lock of every task held.

On drain (SIGTERM) the worker takes nothing more, gives its tasks `drain_s` to finish, then stops the
rest and hands them back to the queue for another worker.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from openinference.instrumentation import using_session, using_user
from opentelemetry import propagate

from agents import metrics
from agents.admission import Admission
from agents.agent_run import AgentRunner, TaskFailed, safe, tool_output_dir
from agents.answer import compose_answer, describe_failure
from agents.chat import ChatRequest, ThreadReplier
from agents.departments import Company
from agents.models import NO_MODEL_MESSAGE, ModelNotConfigured
from agents.routing import Route
from agents.sandbox.base import Sandbox, SandboxProvider, SandboxUnavailable
from agents.security import Redactor
from agents.settings import Settings
from agents.state import StateStore, StoreUnavailable
from agents.taskqueue import Delivery, TaskQueue, unpack_request
from agents.telemetry import hashed, tracer
from agents.workspace import AttachmentRejected, fetch_attachments

log = logging.getLogger("agentdesk.worker")

FINISHED = {"ok", "error", "agent_error", "timeout", "stopped", "bad_input", "sandbox_unavailable", "no_model",
            "interrupted", "duplicate"}
LOCK_POLL_S = 0.1
RESTARTED_NOTE = ("⚠️ The worker running your request stopped before finishing a step, so I'm starting it again "
                  "from the beginning.")
HANDED_BACK_NOTE = "⚠️ I was restarted while working on this, so I'm starting it again from the beginning."


def crashed_message(steps: int) -> str:
    return (f"⚠️ The worker running your request stopped unexpectedly after step {steps}, so it wasn't "
            "finished. Please send it again.")


#: platform -> builds the ThreadReplier of a request from its reply address (bots/* register these).
ReplierFactory = Callable[[ChatRequest], ThreadReplier]
#: platform -> gives a request from the queue its credentials back (e.g. the bot token on file downloads).
RequestPreparer = Callable[[ChatRequest], Awaitable[ChatRequest]]


@dataclass
class _Held:
    delivery: Delivery
    task: asyncio.Task
    lock: str | None = None
    lock_owner: str = ""
    handed_back: bool = False
    job: dict = field(default_factory=dict)


def unavailable_departments(company: Company, sandboxes: SandboxProvider) -> dict[str, list[str]]:
    """Departments whose authorized imports this sandbox cannot provide (SANDBOX=wasm has the standard
    library only): name -> the missing modules. Checked when the worker starts, not mid-run."""
    found = {}
    for name, dept in company.departments.items():
        missing = sandboxes.missing_imports(list(dept.authorized_imports))
        if missing:
            found[name] = missing
    return found


class Worker:
    def __init__(self, settings: Settings, company: Company, store: StateStore, queue: TaskQueue,
                 sandboxes: SandboxProvider, agents: AgentRunner, admission: Admission, redact: Redactor) -> None:
        self.settings = settings
        self.company = company
        self.store = store
        self.queue = queue
        self.sandboxes = sandboxes
        self.agents = agents
        self.admission = admission
        self.redact = redact
        self.unavailable = unavailable_departments(company, sandboxes)
        for name, missing in self.unavailable.items():
            log.error("department %s cannot run with SANDBOX=%s: its authorized_imports %s are not available in "
                      "that sandbox (it has the standard library only); use SANDBOX=docker or remove them from %s",
                      name, settings.sandbox, ", ".join(missing), settings.config_path)
        self.name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.repliers: dict[str, ReplierFactory] = {}
        self.preparers: dict[str, RequestPreparer] = {}
        #: Repliers of requests enqueued in this process, used when this process also runs them.
        self.local_repliers: dict[str, ThreadReplier] = {}
        #: Futures of requests enqueued here, resolved with the task's outcome (role all, embedded queue).
        self.waiters: dict[str, asyncio.Future] = {}
        self._departments = {
            name: asyncio.Semaphore(d.max_concurrent or settings.max_concurrent_tasks)
            for name, d in company.departments.items()
        }
        self._held: dict[str, _Held] = {}
        self._loops: list[asyncio.Task] = []
        self._draining = False
        self._capacity = asyncio.Semaphore(settings.max_concurrent_tasks)
        self.store_problem: str | None = None

    # lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        self._loops = [asyncio.ensure_future(self._consume()), asyncio.ensure_future(self._heartbeat())]

    async def drain(self, timeout: float) -> None:
        """Take nothing more; let held tasks finish within `timeout`, then stop them and hand them back.

        With the in-process queue no other worker would run what waits in it, so that is finished first.
        """
        deadline = time.monotonic() + timeout
        if not self.queue.shared:
            while (self._held or (await self.queue.stats())[0]) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        timeout = max(0.0, deadline - time.monotonic())
        self._draining = True
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        held = [h.task for h in self._held.values()]
        if held:
            log.info("draining: waiting up to %.0f s for %d task(s)", timeout, len(held))
            await asyncio.wait(held, timeout=timeout)
        for h in list(self._held.values()):
            h.handed_back = True
            h.task.cancel()
        await asyncio.gather(*(h.task for h in list(self._held.values())), return_exceptions=True)

    @property
    def in_flight(self) -> int:
        return len(self._held)

    # the loops -------------------------------------------------------------------------------------
    async def _consume(self) -> None:
        next_reclaim = 0.0
        while not self._draining:
            deliveries: list[Delivery] = []
            await self._capacity.acquire()  # a free slot before taking anything
            try:
                if time.monotonic() >= next_reclaim:
                    next_reclaim = time.monotonic() + max(1.0, self.settings.task_lease_s / 3)
                    deliveries = await self.queue.reclaim(self.name, self.settings.task_lease_s)
                    if deliveries:
                        metrics.RECLAIMED.inc(len(deliveries))
                if not deliveries:
                    deliveries = await self.queue.take(self.name, 1, 1.0)
                self.store_problem = None
                for index, d in enumerate(deliveries):  # reclaimed extras run beyond the limit, not later
                    self._start(d, holds_slot=index == 0)
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as exc:
                deliveries = []
                if self.store_problem is None:
                    log.error("worker cannot read the task queue: %s", exc)
                self.store_problem = str(exc)
                await asyncio.sleep(1.0)
            except Exception:
                deliveries = []
                log.exception("worker loop failed; retrying in 1 s")
                await asyncio.sleep(1.0)
            finally:
                if not deliveries:
                    self._capacity.release()

    def _start(self, delivery: Delivery, holds_slot: bool) -> None:
        task = asyncio.ensure_future(self._process(delivery))
        self._held[delivery.id] = _Held(delivery, task, job=delivery.job)
        metrics.WORKER_IN_FLIGHT.set(len(self._held))

        def finished(_: asyncio.Task) -> None:
            self._held.pop(delivery.id, None)
            if holds_slot:
                self._capacity.release()
            metrics.WORKER_IN_FLIGHT.set(len(self._held))

        task.add_done_callback(finished)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(max(0.5, self.settings.task_lease_s / 3))
            held = list(self._held.values())
            try:
                await self.queue.renew(self.name, [h.delivery.id for h in held])
                for h in held:
                    if h.lock and not await self.store.extend_lock(h.lock, h.lock_owner, self.settings.task_lease_s):
                        log.warning("lost the thread lock of task %s", h.job.get("task_id"))
            except StoreUnavailable as exc:
                log.error("could not renew task leases: %s", exc)

    # one task --------------------------------------------------------------------------------------
    async def _process(self, delivery: Delivery) -> None:
        job = delivery.job
        task_id = job["task_id"]
        request = unpack_request(job["request"])
        replier = self.local_repliers.pop(task_id, None)
        status = "error"
        release = True
        try:
            if replier is None:
                replier = self.repliers[request.platform](request)
            prepare = self.preparers.get(request.platform)
            if prepare is not None:
                request = await prepare(request)
            context = propagate.extract(job.get("trace") or {})
            # The trace context travels with the task; Phoenix's session and user ids are set again here.
            with tracer.start_as_current_span("agentdesk.task", context=context) as span, \
                    using_session(hashed(request.thread_key)), using_user(request.caller.hashed_user):
                span.set_attribute("agentdesk.task_id", task_id)
                span.set_attribute("agentdesk.worker", self.name)
                status = await self._run(delivery, job, request, replier)
        except asyncio.CancelledError:
            held = self._held.get(delivery.id)
            if held is not None and held.handed_back:
                release = False
                status = "handed_back"
                await self._hand_back(delivery, job)
                return
            raise
        except Exception as exc:  # last line of defence: the person hears about it, the operator sees why
            log.exception("task %s failed unexpectedly", task_id)
            if replier is not None:
                await safe(replier.error(
                    f"Something went wrong on my side ({type(exc).__name__}); the error was logged. Please try again."))
        finally:
            waiter = self.waiters.pop(task_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(status)
            if release:
                await self._settle(delivery, request, release_person=status != "duplicate")

    async def _settle(self, delivery: Delivery, request: ChatRequest, release_person: bool) -> None:
        """Remove the queue entry and release the person's in-flight count (retried while Redis is down)."""
        for attempt in range(600):
            try:
                await self.queue.done(delivery)
                if release_person:
                    await self.admission.release(request)
                return
            except StoreUnavailable as exc:
                if attempt == 0:
                    log.error("could not remove a finished task from the queue: %s", exc)
                if self._draining:
                    return  # the entry is reclaimed, seen finished, and removed by another worker
                await asyncio.sleep(1.0)

    async def _hand_back(self, delivery: Delivery, job: dict) -> None:
        if not self.queue.shared:  # this process is stopping: the next one on this data dir runs it again
            await self.store.put_record("queued", job["task_id"], {**job, "handed_back": True},
                                        self.settings.max_queue_age_s + 3600)
            return
        try:
            await self.queue.hand_back(delivery, {**job, "handed_back": True})
            log.info("handed task %s back to the queue", job["task_id"])
        except StoreUnavailable as exc:
            log.error("could not hand task %s back (%s); another worker reclaims it after its lease",
                      job["task_id"], exc)

    async def _run(self, delivery: Delivery, job: dict, request: ChatRequest, replier: ThreadReplier) -> str:
        task_id = job["task_id"]
        record = await self.store.get_task(task_id)
        if record is not None and record.get("status") in FINISHED:
            return "duplicate"  # answered already (a redelivery after the worker finished)
        steps = int(record.get("steps_done", 0)) if record else 0
        attempt = int(record.get("attempt", 1)) if record else 1
        if delivery.reclaimed and record is not None:
            await asyncio.to_thread(_sweep, self.sandboxes)  # the dead worker's containers
            if steps > 0 or attempt >= 2:
                await safe(replier.error(crashed_message(steps)))
                await self.store.task_finished(task_id, "interrupted")
                return "interrupted"
            await safe(replier.error(RESTARTED_NOTE))
            attempt += 1
        elif job.get("handed_back") and steps > 0:
            await safe(replier.error(HANDED_BACK_NOTE))
            attempt += 1
        dept = self.company.departments.get(job["department"])
        if dept is None:
            await safe(replier.error("The department this request was for no longer exists. Please ask again."))
            return "error"
        route = Route(dept, job["route_text"], job["route_reason"])
        lock, owner = f"thread:{request.thread_key}", f"{task_id}:{self.name}"
        await self._lock(lock, owner, delivery.id)
        try:
            again = await self.store.get_task(task_id)
            if again is not None and again.get("status") in FINISHED:
                return "duplicate"  # finished by the worker that held the lock while this one waited
            async with self._departments[dept.name]:
                metrics.QUEUE_WAIT.observe(max(0.0, time.time() - job.get("enqueued_at", time.time())))
                await self.store.task_started(task_id, request, department=dept.name, attempt=attempt,
                                              worker=self.name)
                if not self.queue.shared:
                    await self.store.delete_record("queued", task_id)
                await self.store.run_started(request.thread_key, task_id, request.user, self.name,
                                             self.settings.task_timeout_s + 60)
                metrics.IN_FLIGHT.inc()
                try:
                    return await self._execute(request, route, replier, task_id)
                finally:
                    metrics.IN_FLIGHT.dec()
                    await self.store.run_ended(request.thread_key, task_id)
        finally:
            held = self._held.get(delivery.id)
            if held is not None:
                held.lock = None
            await self.store.release_lock(lock, owner)

    async def _lock(self, lock: str, owner: str, delivery_id: str) -> None:
        """The thread's lock: a follow-up waits until the turn before it is over (or its lease expired)."""
        waited = time.monotonic()
        if not await self.store.acquire_lock(lock, owner, self.settings.task_lease_s):
            metrics.LOCK_WAITS.inc()
            while not await self.store.acquire_lock(lock, owner, self.settings.task_lease_s):
                await asyncio.sleep(LOCK_POLL_S)
        metrics.LOCK_WAIT.observe(time.monotonic() - waited)
        held = self._held.get(delivery_id)
        if held is not None:
            held.lock, held.lock_owner = lock, owner

    async def _execute(self, request: ChatRequest, route: Route, replier: ThreadReplier, task_id: str) -> str:
        dept = route.department
        started = time.monotonic()
        sandbox: Sandbox | None = None
        status = "error"
        try:
            if dept.name in self.unavailable:
                await safe(replier.error(
                    f"The {dept.name} department can't run here: it needs {', '.join(self.unavailable[dept.name])}, "
                    f"which this bot's code sandbox ({self.settings.sandbox}) does not have. The people who run this "
                    "bot have been told."))
                status = "sandbox_unavailable"
                return status
            try:
                with tracer.start_as_current_span("agentdesk.sandbox.acquire"):
                    t0 = time.monotonic()
                    sandbox = await asyncio.to_thread(
                        self.sandboxes.acquire,
                        authorized_imports=list(dept.authorized_imports),
                        step_timeout_s=dept.step_timeout_s,
                        caller=request.caller,
                    )
                    metrics.SANDBOX_START.labels(self.settings.sandbox).observe(time.monotonic() - t0)
            except SandboxUnavailable as exc:
                log.error("no sandbox for a %s request: %s", dept.name, exc)
                await safe(replier.error(
                    "I can't run code right now because the code sandbox is unavailable. The people who run this "
                    "bot have been told; please try again later."
                ))
                status = "sandbox_unavailable"
                return status
            try:
                with tracer.start_as_current_span("agentdesk.attachments") as span:
                    span.set_attribute("agentdesk.files", len(request.attachments))
                    inputs = await fetch_attachments(
                        request.attachments, sandbox.host_input_dir,
                        allowed_types=tuple(dept.file_types),
                        max_bytes=int(self.settings.max_file_mb * 1024 * 1024),
                        max_files=self.settings.max_files,
                    )
            except AttachmentRejected as exc:
                await safe(replier.error(str(exc)))
                status = "bad_input"
                return status
            try:
                outcome = await self.agents.run(request, route, replier, sandbox, inputs, task_id, started)
            except TaskFailed as exc:
                await safe(replier.error(exc.message))
                status = exc.status
                return status
            if outcome.failure is not None:
                await safe(replier.error(describe_failure(outcome.failure)))
                status = "agent_error"
                return status
            answer = await compose_answer(self.settings, self.store, self.redact, request, dept, sandbox, outcome,
                                          task_id, started)
            if await self.store.add_record("finals", task_id, {"worker": self.name}, 30 * 24 * 3600):
                await replier.final(answer)
            else:
                log.warning("task %s was answered already; not posting a second final answer", task_id)
            status = "ok"
            return status
        except ModelNotConfigured:
            await safe(replier.error(NO_MODEL_MESSAGE))
            status = "no_model"
            return status
        finally:
            metrics.TASK_DURATION.labels(dept.name).observe(time.monotonic() - started)
            if not (status == "error" and asyncio.current_task().cancelling()):
                await self.store.task_finished(task_id, status, dept.name)
            if sandbox is not None:
                await asyncio.to_thread(sandbox.cleanup)
            shutil.rmtree(self.settings.data_dir / "outputs" / task_id, ignore_errors=True)
            shutil.rmtree(tool_output_dir(self.settings, task_id), ignore_errors=True)


def _sweep(sandboxes: SandboxProvider) -> None:
    sweep = getattr(sandboxes, "sweep", None)
    if sweep is not None:
        try:
            sweep()
        except Exception as exc:  # noqa: BLE001 - leftovers are swept again at the next start
            log.warning("could not sweep leftover sandboxes: %s", exc)
