"""The task runner: the one object adapters hold. It wires the stages of the request path together.

Where a request arrives (roles `web` and `all`): admission (agents.admission: input checks, per-person
limits) -> routing and access policy (agents.routing) -> the queue (agents.taskqueue), with what a worker
needs to reply. Where it runs (roles `worker` and `all`): agents.execution (slot, sandbox, attachments),
agents.agent_run (the agent and its steps), agents.answer (the final answer, feedback). State shared by
all of them lives behind agents.state (SQLite embedded, Redis with REDIS_URL).
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from typing import Callable

from opentelemetry import propagate, trace
from smolagents import Model

from agents import approvals, metrics
from agents.admission import Admission, looks_like_injection
from agents.agent_run import AgentRunner, safe
from agents.answer import feedback_for, record_feedback
from agents.audit import close_audit, configure_audit
from agents.chat import ChatRequest, ThreadReplier
from agents.departments import Company, load_company
from agents.execution import RequestPreparer, ReplierFactory, Worker
from agents.models import NO_MODEL_MESSAGE, build_model
from agents.routing import Router, RoutingError, access_refusal
from agents.sandbox import make_provider
from agents.sandbox.base import SandboxProvider
from agents.security import Redactor
from agents.settings import Settings
from agents.state import PatientStore, StoreUnavailable, open_store
from agents.taskqueue import LocalQueue, open_queue, pack_request
from agents.telemetry import current_trace_id, tracer

log = logging.getLogger("agentdesk.runner")
audit = logging.getLogger("agentdesk.audit")

STORE_RETRY_S = 600.0  # an acked request waits this long for the store to come back before giving up
NO_MODEL_REPLY = ("I can't answer yet: no AI model is configured for this bot. An administrator needs to set "
                  "MODEL_API_BASE (any OpenAI-compatible endpoint) or HF_TOKEN.")


class TaskRunner:
    def __init__(
        self,
        settings: Settings,
        *,
        company: Company | None = None,
        sandboxes: SandboxProvider | None = None,
        model_factory: Callable[[], Model] | None = None,
        role: str | None = None,
    ) -> None:
        self.settings = settings
        self.role = role or settings.role
        if self.role in ("web", "worker") and not settings.redis_url:
            raise ValueError(f"--role {self.role} needs REDIS_URL (the queue and state every process shares); "
                             "without it use --role all")
        self.company = company or load_company(settings.config_path)
        self.store = open_store(settings)
        self.queue = open_queue(self.store)
        self.model_factory = model_factory or self._shared_model
        self._model: Model | None = None
        self._model_lock = threading.Lock()
        self.redact = Redactor(settings.secrets())
        self.router = Router(self.company, self.store, self.model_factory)
        self.admission = Admission(settings, self.company, self.store, self.queue)
        self.worker: Worker | None = None
        self.sandboxes: SandboxProvider | None = None
        if self.role in ("all", "worker"):
            self.sandboxes = sandboxes or make_provider(settings)
            patient = PatientStore(self.store)  # a task in progress waits out a Redis restart
            agents = AgentRunner(settings, patient, self.model_factory, self.redact, self.company, self.sandboxes)
            self.worker = Worker(settings, self.company, patient, self.queue, self.sandboxes, agents,
                                 Admission(settings, self.company, patient, self.queue), self.redact)
        self.interrupted: list = []
        self.draining = False
        self._stats: asyncio.Task | None = None
        self._store_problem: str | None = None

    # lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Check the store, collect tasks a crash interrupted (embedded queue), warm the sandbox pool."""
        configure_audit(self.settings)
        try:
            await self.store.ping()
            if isinstance(self.queue, LocalQueue):  # the in-process queue died with the last process
                queued = await self.store.list_records("queued")
                for job in sorted(queued.values(), key=lambda j: j.get("enqueued_at", 0)):
                    await self.queue.put(job, max_waiting=len(queued) + 1)  # accepted then: runs now
                self.interrupted = [r for r in await self.store.interrupted_tasks() if r.task_id not in queued]
                for record in self.interrupted:
                    await self.store.task_finished(record.task_id, "interrupted")
                await approvals.expire_interrupted(self.store, {r.task_id for r in self.interrupted})
        except StoreUnavailable as exc:  # the process still starts; /readyz says why it is not ready
            log.error("%s", exc)
        if self.sandboxes is not None:
            try:
                await asyncio.to_thread(self.sandboxes.start)
            except Exception as exc:  # the bot still starts; /readyz says what is wrong
                log.error("sandbox provider failed to start: %s", exc)
        if self.settings.model_configured:
            try:
                await asyncio.to_thread(self.model_factory)
            except Exception as exc:  # reported per request, with what to do
                log.error("the model client could not be created: %s", exc)
        if self.worker is not None:
            self.worker.start()
        self._stats = asyncio.ensure_future(self._watch())

    async def drain(self, timeout: float | None = None) -> None:
        """SIGTERM: stop taking work, finish what is held within AGENTDESK_DRAIN_S, hand back the rest."""
        self.draining = True
        if self.worker is not None:
            await self.worker.drain(self.settings.drain_s if timeout is None else timeout)

    async def close(self) -> None:
        if self._stats is not None:
            self._stats.cancel()
        if self.worker is not None and not self.worker._draining:
            await self.worker.drain(0)
        if self.sandboxes is not None:
            await asyncio.to_thread(self.sandboxes.close)
        await self.store.close()
        close_audit()

    async def _watch(self) -> None:
        """Queue depth and lag for /metrics, and whether the store answers (for /readyz), every 2 s."""
        while True:
            try:
                depth, lag = await self.queue.stats()
                metrics.QUEUE_DEPTH.set(depth)
                metrics.QUEUE_LAG.set(lag)
                if self._store_problem:
                    log.info("%s answers again", self.store.description)
                self._store_problem = None
                metrics.STORE_UP.set(1)
            except StoreUnavailable as exc:
                if self._store_problem is None:
                    log.error("%s", exc)
                self._store_problem = str(exc)
                metrics.STORE_UP.set(0)
            except Exception as exc:  # noqa: BLE001 - metrics only
                log.debug("queue stats failed: %s", exc)
            await asyncio.sleep(2.0)

    def _shared_model(self) -> Model:
        """One model client per process: building one costs an SSL context and, the first time, the openai
        import; done per task in worker threads, that CPU competes with the event loop for the GIL."""
        with self._model_lock:
            if self._model is None:
                self._model = build_model(self.settings)
            return self._model

    async def ready(self) -> tuple[bool, str]:
        if self.draining:
            return False, "shutting down: finishing held work, taking no new work"
        try:
            await self.store.ping()
        except StoreUnavailable as exc:
            return False, str(exc)
        if not self.settings.model_configured:
            return False, NO_MODEL_MESSAGE
        if self.sandboxes is not None:
            return await asyncio.to_thread(self.sandboxes.check)
        return True, f"ready ({self.role}; state in {self.store.description})"

    # adapters' seams -------------------------------------------------------------------------------
    def register_platform(self, platform: str, replier_for: ReplierFactory,
                          prepare: RequestPreparer | None = None) -> None:
        """How a worker replies to `platform` (a ThreadReplier built from a request's reply address) and how it
        gives a queued request its credentials back."""
        if self.worker is not None:
            self.worker.repliers[platform] = replier_for
            if prepare is not None:
                self.worker.preparers[platform] = prepare

    async def knows_thread(self, thread_key: str) -> bool:
        """True when the bot already works in this thread (follow-ups need no mention)."""
        return await self.store.thread_department(thread_key) is not None

    def take_interrupted(self, platform: str) -> list:
        """Requests of `platform` that a crash interrupted; the adapter tells each person once."""
        mine = [r for r in self.interrupted if r.platform == platform]
        self.interrupted = [r for r in self.interrupted if r.platform != platform]
        return mine

    async def request_stop(self, thread_key: str, by_user: str) -> tuple[bool, str]:
        """Stop the run in `thread_key` (the Stop button, Slack's native stop, Teams' Stop), on any worker.

        Only the person who asked, or an admin (AGENTDESK_ADMINS), may stop it. Returns whether the stop
        was accepted and a short message for the person who pressed.
        """
        run = await self.store.run_in(thread_key)
        if run is None:
            return False, "There is nothing running in this thread to stop."
        if by_user != run["requester"] and by_user not in self.settings.admins:
            return False, "Only the person who asked (or an admin of this bot) can stop this run."
        await self.store.signal_stop(run["task_id"], by_user)
        if self.worker is not None:
            self.worker.agents.stop_here(run["task_id"], by_user)
        return True, "Stopping…"

    async def record_feedback(self, task_id: str, *, platform: str, user: str, value: str,
                              comment: str | None = None) -> bool:
        """Keep one person's feedback on an answer (the last press wins), in its trace and in /metrics.

        False when the answer is unknown (too old, or a forged id) or the value is not one we offer.
        """
        return await record_feedback(self.store, self.redact, task_id, platform=platform, user=user, value=value,
                                     comment=comment)

    async def decide_approval(self, approval_id: str, platform: str, user: str, user_groups: tuple[str, ...],
                              decision: str, user_name: str | None = None) -> tuple[bool, str]:
        """One person's Approve/Deny on a gated tool call, from a verified platform interaction, on any replica.

        Only the requester (or a listed approver) decides, once; (accepted, a message for the clicker).
        """
        waiters = self.worker.agents.approval_waiters if self.worker is not None else {}
        return await approvals.decide(self.store, waiters, approval_id, platform=platform, user=user,
                                      user_groups=tuple(user_groups), decision=decision, user_name=user_name)

    async def approval_view(self, approval_id: str):
        """(prompt, decision or None) of an approval, for redrawing its message; None when unknown."""
        return await approvals.view(self.store, approval_id)

    async def feedback_for(self, task_id: str) -> dict[str, dict]:
        """Every person's latest feedback on one answer, by user id."""
        return await feedback_for(self.store, task_id)

    # the request path -------------------------------------------------------------------------------
    async def handle(self, request: ChatRequest, replier: ThreadReplier) -> None:
        """Admit, route and enqueue one request; never raises: every failure becomes replier.error().

        With the in-process queue this returns once the task is over (its worker is this process).
        """
        task_id = uuid.uuid4().hex
        deadline = time.monotonic() + STORE_RETRY_S
        warned = False
        while True:
            try:
                await self._admit_and_enqueue(request, replier, task_id)
                return
            except StoreUnavailable as exc:
                if not warned:
                    log.error("a %s request waits for the state store: %s", request.platform, exc)
                    warned = True
                if time.monotonic() > deadline or self.draining:
                    await safe(replier.error("I couldn't take your request because my storage is unreachable. "
                                             "Please send it again in a few minutes."))
                    return
                await asyncio.sleep(1.0)

    async def _admit_and_enqueue(self, request: ChatRequest, replier: ThreadReplier, task_id: str) -> None:
        department = "-"
        outcome = "error"
        admitted = False
        try:
            problem = self.admission.check_input(request)
            if problem:
                outcome = "bad_input"
                await safe(replier.error(problem))
                return
            problem = await self.admission.admit(request)
            if problem:
                outcome = "limited"
                await safe(replier.error(problem))
                return
            admitted = True
            try:
                with tracer.start_as_current_span("agentdesk.route") as span:
                    route = await self.router.route(request)
                    span.set_attribute("agentdesk.department", route.department.name)
                    span.set_attribute("agentdesk.route_reason", route.reason)
                    if looks_like_injection(request.text):
                        span.set_attribute("agentdesk.input.injection_suspected", True)
                        log.warning("possible prompt injection in a %s request (see its trace)", request.platform)
            except RoutingError as exc:
                outcome = "unrouted"
                await safe(replier.error(str(exc)))
                return
            department = route.department.name
            trace.get_current_span().set_attribute("agentdesk.department", department)
            refusal = access_refusal(route, request)
            if refusal:
                outcome = "denied"
                await safe(replier.error(refusal))
                return
            if not self.settings.model_configured:
                outcome = "no_model"
                await safe(replier.error(NO_MODEL_REPLY))
                return
            busy = await self.admission.busy()
            if busy:
                outcome = "busy"
                await safe(replier.error(busy))
                return
            await self.store.claim_thread(request.thread_key, department)
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            job = {"task_id": task_id, "request": pack_request(request), "department": department,
                   "route_text": route.text, "route_reason": route.reason, "enqueued_at": time.time(),
                   "trace": carrier}
            waiter = None
            if self.worker is not None:  # this process may run it: reuse the replier it already has
                self.worker.local_repliers[task_id] = replier
                if isinstance(self.queue, LocalQueue):
                    waiter = asyncio.get_running_loop().create_future()
                    self.worker.waiters[task_id] = waiter
            local = isinstance(self.queue, LocalQueue)
            if local:  # kept until a worker starts it, so a restart runs what was only queued
                await self.store.put_record("queued", task_id, job, self.settings.max_queue_age_s + 3600)
            try:
                busy = await self.admission.enqueue(job)
            except BaseException:
                self._forget(task_id)
                raise
            if busy:
                if local:
                    await self.store.delete_record("queued", task_id)
                self._forget(task_id)
                outcome = "busy"
                await safe(replier.error(busy))
                return
            admitted = False  # the worker releases the person's in-flight count when the task is over
            await safe(replier.status(f"{department.upper()} agent is working on it…"))
            outcome = "queued"
            if waiter is not None:
                outcome = await waiter
        except StoreUnavailable:
            raise
        except Exception as exc:  # last line of defence: the person hears about it, the operator sees why
            log.exception("request failed unexpectedly")
            await safe(replier.error(
                f"Something went wrong on my side ({type(exc).__name__}); the error was logged. Please try again."
            ))
        finally:
            if admitted:
                try:
                    await self.admission.release(request)
                except StoreUnavailable:
                    pass  # the count expires by itself
            metrics.REQUESTS.labels(request.platform, department, outcome).inc()
            audit.info(json.dumps({
                "event": "request", "platform": request.platform, "user": request.caller.hashed_user,
                "department": department, "outcome": outcome,
                "trace_id": current_trace_id(), "chars": len(request.text), "files": len(request.attachments),
            }))

    def _forget(self, task_id: str) -> None:
        if self.worker is not None:
            self.worker.local_repliers.pop(task_id, None)
            self.worker.waiters.pop(task_id, None)
