"""Approvals: a person says yes in the thread before a sensitive tool runs.

The departments file names the tools that need it (`[departments.<d>.tool_policy."<import path>"]`). When the
agent's code calls one, the host holds the bridge call (the sandbox process waits), records the pending
approval in the state store, asks the thread through the replier (buttons or a card), and waits for one
decision or the timeout. Approve: the tool runs once and the code gets its result. Deny, timeout or the run
ending: the code gets a clear refusal it can act on.

One decision per approval: it is written with the store's insert-if-absent (`add_record`), so a double
click, a replayed request, a click on another replica or a click after the timeout cannot decide twice.
The waiting side polls the decision record (another process may have written it) and is also woken in
process. Pending approvals are store records, so they survive a restart: a click after one is told the
request expired, never silently dropped.
"""
from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from opentelemetry import trace
from smolagents import Tool

from agents.chat import ApprovalDecision, ApprovalPrompt, ChatRequest, ThreadReplier
from agents.sandbox import pause_step_clock
from agents.telemetry import tracer

log = logging.getLogger("agentdesk.approvals")
audit = logging.getLogger("agentdesk.audit")

APPROVALS = "approvals"  # the pending approval: who asked, what, where the message is, its final status
DECISIONS = "approval_decisions"  # the one decision (insert-if-absent)
RECORD_TTL_S = 7 * 24 * 3600
POLL_S = 0.25
ASK_TIMEOUT_S = 60.0
MODES = ("requester", "approvers")
DEFAULT_TIMEOUT_S = 600.0
ARGUMENT_CHARS = 300
MAX_ARGUMENTS = 12
TASK_MARGIN_S = 15.0


@dataclass(frozen=True)
class ToolPolicy:
    """What a tool needs before it runs: the requester's or a listed approver's yes, within timeout_s."""

    approval: str = "requester"
    approvers: tuple[str, ...] = ()
    timeout_s: float = DEFAULT_TIMEOUT_S


_POLICY_KEYS = {"approval", "approvers", "approval_timeout_s"}


def parse_policies(prefix: str, department: str, raw: Any, tools: tuple[str, ...]
                   ) -> tuple[dict[str, ToolPolicy], list[str]]:
    """The `tool_policy` tables of one department; errors name the file, the department and the key."""
    if raw is None:
        return {}, []
    if not isinstance(raw, dict):
        return {}, [f'{prefix} tool_policy must be tables like [departments.{department}.tool_policy."module:tool"], '
                    f"got {json.dumps(raw, default=str)}"]
    policies: dict[str, ToolPolicy] = {}
    errors: list[str] = []
    file = prefix.split(": [", 1)[0]
    for path, table in raw.items():
        where = f'{file}: [departments.{department}.tool_policy."{path}"]'
        if path not in tools:
            errors.append(f"{where} names a tool that is not in this department's tools; add it to tools "
                          "or remove the policy")
            continue
        if not isinstance(table, dict):
            errors.append(f"{where} must be a table with approval = \"requester\" or \"approvers\"")
            continue
        for key in table:
            if key not in _POLICY_KEYS:
                errors.append(f'{where} unknown key "{key}"; allowed keys: {", ".join(sorted(_POLICY_KEYS))}')
        mode = table.get("approval", "requester")
        if mode not in MODES:
            errors.append(f'{where} approval must be "requester" or "approvers", got {json.dumps(mode, default=str)}')
            continue
        approvers = table.get("approvers", [])
        if not isinstance(approvers, list) or not all(isinstance(a, str) and a.strip() for a in approvers):
            errors.append(f"{where} approvers must be a list of Slack user/user-group ids or Teams AAD ids, "
                          f"got {json.dumps(approvers, default=str)}")
            continue
        if mode == "approvers" and not approvers:
            errors.append(f'{where} approvers is empty, so nobody could approve; list ids or use approval = "requester"')
            continue
        if mode == "requester" and approvers:
            errors.append(f'{where} approvers is set but approval = "requester" ignores it; set approval = "approvers"')
            continue
        timeout = table.get("approval_timeout_s", DEFAULT_TIMEOUT_S)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            errors.append(f"{where} approval_timeout_s must be a positive number of seconds, "
                          f"got {json.dumps(timeout, default=str)}")
            continue
        policies[path] = ToolPolicy(mode, tuple(a.strip() for a in approvers), float(timeout))
    return policies, errors


def may_decide(record: dict, platform: str, user: str, user_groups: tuple[str, ...] = ()) -> bool:
    """Whether this person may approve or deny: the requester, or a listed approver (by id or group)."""
    requester = record["requester"]
    if record["approval"] == "requester":
        return platform == requester["platform"] and user == requester["user"]
    if platform != requester["platform"]:
        return False
    listed = set(record.get("approvers") or ())
    return user in listed or any(g in listed for g in user_groups)


def who_may_decide(record: dict) -> str:
    if record["approval"] == "requester":
        name = record["requester"].get("name")
        return f"the person who asked ({name})" if name else "the person who asked"
    return "the approvers listed for this tool"


def render_arguments(kwargs: dict, redact: Callable[[str | None], str | None]) -> tuple[tuple[str, str], ...]:
    """Arguments as short display strings: redacted, truncated; each platform escapes them for its markup."""
    shown = []
    for name, value in list(kwargs.items())[:MAX_ARGUMENTS]:
        text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
        text = redact(text) or ""
        if len(text) > ARGUMENT_CHARS:
            text = text[: ARGUMENT_CHARS - 1] + "…"
        shown.append((str(name)[:60], text))
    if len(kwargs) > MAX_ARGUMENTS:
        shown.append(("…", f"{len(kwargs) - MAX_ARGUMENTS} more arguments"))
    return tuple(shown)


def prompt_from_record(record: dict) -> ApprovalPrompt:
    return ApprovalPrompt(
        approval_id=record["id"], department=record["department"], tool=record["tool"],
        arguments=tuple((str(k), str(v)) for k, v in record["arguments"]),
        requester=record["requester"]["user"], requester_name=record["requester"].get("name"),
        approval=record["approval"], approvers=tuple(record.get("approvers") or ()),
        expires_at=float(record["expires_at"]),
    )


def decision_from_record(record: dict | None) -> ApprovalDecision | None:
    if not record:
        return None
    return ApprovalDecision(record["decision"], record.get("by"), record.get("by_name"), float(record.get("at") or 0))


def refusal(tool: str, decision: ApprovalDecision) -> str:
    """What the agent's code is told when the tool did not run (it can say so to the person)."""
    who = decision.by_name or decision.by or "the person"
    reasons = {
        "denied": f"{who} declined this {tool} call, so it was not done. Do not retry it; tell the person it was "
                  "not done.",
        "timeout": f"Nobody approved this {tool} call in time, so it was not done. Tell the person they can ask "
                   "again.",
        "expired": f"The approval for this {tool} call expired (the bot restarted), so it was not done.",
        "cancelled": f"The request ended before this {tool} call was approved, so it was not done.",
        "unavailable": f"{tool} needs a person's approval and this conversation cannot show approval buttons, so "
                       "it was not done.",
    }
    return reasons.get(decision.status, f"{tool} was not approved ({decision.status}), so it was not done.")


class ApprovalRefused(PermissionError):
    """A gated tool call that did not run; the message says why (the agent's code sees it)."""


def _hash_user(platform: str, user: str | None) -> str | None:
    return hashlib.sha256(f"{platform}:{user}".encode()).hexdigest()[:16] if user else None


class ApprovalGate:
    """One task's gate: wraps its gated tools and holds each call until a person decides.

    Tools run in the agent's worker thread, so the wait blocks that thread (never the event loop); the
    replier is called on the loop with run_coroutine_threadsafe.
    """

    def __init__(self, *, store: Any, request: ChatRequest, department: str, task_id: str, replier: ThreadReplier,
                 loop: asyncio.AbstractEventLoop, waiters: dict[str, threading.Event],
                 redact: Callable[[str | None], str | None], task_deadline: float | None = None) -> None:
        self.store = store
        self.request = request
        self.department = department
        self.task_id = task_id
        self.replier = replier
        self.loop = loop
        self.waiters = waiters
        self.redact = redact
        #: Epoch seconds when the task's wall time runs out: an approval never outlives its run.
        self.task_deadline = task_deadline
        self._cancelled: str | None = None
        self._mine: set[str] = set()

    def wrap(self, paths: tuple[str, ...], tools: list[Tool], policies: dict[str, ToolPolicy]) -> list[Tool]:
        """The tools with every gated one replaced by a copy whose forward() waits for approval."""
        return [self._gated(t, policies[p]) if p in policies else t for p, t in zip(paths, tools)]

    def _gated(self, tool: Tool, policy: ToolPolicy) -> Tool:
        gated = copy.copy(tool)
        original = tool.forward
        inputs = dict(getattr(tool, "inputs", {}) or {})

        def forward(*args: Any, **kwargs: Any) -> Any:
            if args:
                names = list(inputs)
                if len(args) > len(names):
                    raise TypeError(f"{tool.name}() takes {len(names)} arguments, {len(args)} given")
                kwargs = {**dict(zip(names, args)), **kwargs}
            unknown = [k for k in kwargs if k not in inputs]
            if unknown:  # e.g. a forged caller: the identity is bound on the host, never an argument
                raise TypeError(f"{tool.name}() got unexpected arguments: {', '.join(map(str, unknown))[:200]}")
            decision = self.wait_for_approval(tool.name, kwargs, policy)
            if not decision.approved:
                raise ApprovalRefused(refusal(tool.name, decision))
            return original(**kwargs)

        gated.forward = forward  # type: ignore[method-assign]
        return gated

    def cancel(self, reason: str = "cancelled") -> None:
        """The run ended (stop, task timeout): pending waits of this task give up and say so."""
        self._cancelled = reason
        for approval_id in list(self._mine):
            event = self.waiters.get(approval_id)
            if event is not None:
                event.set()

    # -- the waiting side (worker thread) -------------------------------------------------------------
    def wait_for_approval(self, tool: str, kwargs: dict, policy: ToolPolicy) -> ApprovalDecision:
        approval_id = uuid.uuid4().hex
        now = time.time()
        expires = now + policy.timeout_s
        if self.task_deadline is not None:  # leave the agent time to tell the person after a refusal
            expires = max(min(expires, self.task_deadline - TASK_MARGIN_S), now + 1)
        caller = self.request.caller
        event = threading.Event()
        self.waiters[approval_id] = event
        self._mine.add(approval_id)
        try:
            with tracer.start_as_current_span("agentdesk.approval", attributes={
                "agentdesk.approval.id": approval_id, "agentdesk.approval.tool": tool,
                "agentdesk.approval.mode": policy.approval, "agentdesk.department": self.department,
            }) as span:
                span_context = span.get_span_context()
                record = {
                    "id": approval_id, "task_id": self.task_id, "thread_key": self.request.thread_key,
                    "department": self.department, "tool": tool, "arguments": render_arguments(kwargs, self.redact),
                    "requester": {"platform": caller.platform, "workspace": caller.workspace, "user": caller.user,
                                  "name": caller.user_name},
                    "approval": policy.approval, "approvers": list(policy.approvers),
                    "created_at": now, "expires_at": expires, "status": "pending", "handle": None,
                    # the decision (maybe on another replica) becomes a child of this span
                    "trace_id": format(span_context.trace_id, "032x") if span_context.is_valid else None,
                    "span_id": format(span_context.span_id, "016x") if span_context.is_valid else None,
                }
                decision = self._ask_and_wait(record, event)
                span.set_attribute("agentdesk.approval.outcome", decision.status)
                span.set_attribute("agentdesk.approval.wait_s", round(time.time() - now, 3))
                if decision.by:
                    span.set_attribute("agentdesk.approval.decided_by", _hash_user(caller.platform, decision.by) or "")
            return decision
        finally:
            self.waiters.pop(approval_id, None)
            self._mine.discard(approval_id)

    def _ask_and_wait(self, record: dict, event: threading.Event) -> ApprovalDecision:
        approval_id = record["id"]
        self._call(self.store.put_record(APPROVALS, approval_id, record, RECORD_TTL_S))
        self._audit("approval_requested", record)
        prompt = prompt_from_record(record)
        if self._cancelled:
            return self._finish(record, prompt, self._decide_once(approval_id, "cancelled"))
        try:
            handle = asyncio.run_coroutine_threadsafe(self.replier.approval(prompt), self.loop).result(ASK_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - the tool is refused; the operator sees why
            log.error("could not ask for approval of %s in the thread: %s", record["tool"], type(exc).__name__)
            handle = None
        if handle is None:
            return self._finish(record, prompt, self._decide_once(approval_id, "unavailable"))
        record["handle"] = handle
        self._call(self.store.put_record(APPROVALS, approval_id, record, RECORD_TTL_S))
        with pause_step_clock():
            decision = self._wait(approval_id, float(record["expires_at"]), event)
        return self._finish(record, prompt, decision)

    def _wait(self, approval_id: str, deadline: float, event: threading.Event) -> ApprovalDecision:
        while True:
            found = decision_from_record(self._call(self.store.get_record(DECISIONS, approval_id)))
            if found is not None:
                return found
            if self._cancelled:
                return self._decide_once(approval_id, "cancelled")
            remaining = deadline - time.time()
            if remaining <= 0:
                return self._decide_once(approval_id, "timeout")
            event.wait(min(POLL_S, remaining))  # a decision here wakes it; one from another process is polled
            event.clear()

    def _decide_once(self, approval_id: str, status: str) -> ApprovalDecision:
        """Write this outcome unless a person's decision got there first (then that one stands)."""
        mine = {"decision": status, "by": None, "by_name": None, "at": time.time()}
        if self._call(self.store.add_record(DECISIONS, approval_id, mine, RECORD_TTL_S)):
            return decision_from_record(mine)  # type: ignore[return-value]
        return decision_from_record(self._call(self.store.get_record(DECISIONS, approval_id))) or decision_from_record(mine)  # type: ignore[return-value]

    def _finish(self, record: dict, prompt: ApprovalPrompt, decision: ApprovalDecision) -> ApprovalDecision:
        record["status"] = decision.status
        self._call(self.store.put_record(APPROVALS, record["id"], record, RECORD_TTL_S))
        self._audit("approval_finished", record, outcome=decision.status,
                    decided_by=_hash_user(record["requester"]["platform"], decision.by))
        if record.get("handle") is not None:
            future = asyncio.run_coroutine_threadsafe(
                self.replier.approval_decided(prompt, decision, record["handle"]), self.loop)
            try:
                future.result(ASK_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - the decision stands; the message may lag
                log.warning("could not update the approval message: %s", type(exc).__name__)
        return decision

    def _call(self, coro: Any) -> Any:
        """A store call from the tool's worker thread, awaited on the loop the store belongs to."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def _audit(self, event: str, record: dict, **extra: Any) -> None:
        requester = record["requester"]
        audit.info(json.dumps({
            "event": event, "approval_id": record["id"], "task_id": record["task_id"], "tool": record["tool"],
            "department": record["department"], "platform": requester["platform"],
            "requester": _hash_user(requester["platform"], requester["user"]), "mode": record["approval"],
            "trace_id": record.get("trace_id"), **extra,
        }))


async def decide(store: Any, waiters: dict[str, threading.Event], approval_id: str, *, platform: str, user: str,
                 user_groups: tuple[str, ...] = (), decision: str, user_name: str | None = None
                 ) -> tuple[bool, str]:
    """Record one person's Approve/Deny; (accepted, a short message for the person who clicked)."""
    status = {"approve": "approved", "approved": "approved", "deny": "denied", "denied": "denied"}.get(decision)
    if status is None:
        return False, "That is not an approval answer I know."
    record = await store.get_record(APPROVALS, str(approval_id)[:64])
    if record is None:
        return False, "This approval request is unknown or has expired."
    if not may_decide(record, platform, user, tuple(user_groups)):
        return False, f"You can't approve this: only {who_may_decide(record)} can."
    existing = decision_from_record(await store.get_record(DECISIONS, record["id"]))
    if existing is None and record.get("status") == "pending" and time.time() >= float(record["expires_at"]):
        mine = {"decision": "timeout", "by": None, "by_name": None, "at": time.time()}
        await store.add_record(DECISIONS, record["id"], mine, RECORD_TTL_S)
        existing = decision_from_record(await store.get_record(DECISIONS, record["id"]))
    if existing is None and record.get("status") == "pending":  # its run died on another process
        task = await store.get_task(record["task_id"])
        if task is not None and task.get("status") not in (None, "running"):
            await store.add_record(DECISIONS, record["id"], {"decision": "expired", "by": None, "by_name": None,
                                                             "at": time.time()}, RECORD_TTL_S)
            existing = decision_from_record(await store.get_record(DECISIONS, record["id"]))
    if existing is not None:
        return False, already(existing)
    mine = {"decision": status, "by": user, "by_name": user_name, "at": time.time(), "platform": platform}
    won = await store.add_record(DECISIONS, record["id"], mine, RECORD_TTL_S)
    if not won:
        existing = decision_from_record(await store.get_record(DECISIONS, record["id"]))
        return False, already(existing) if existing else "This approval was already decided."
    event = waiters.get(record["id"])
    if event is not None:
        event.set()
    _decision_span(record, status, platform, user)
    audit.info(json.dumps({
        "event": "approval_decided", "approval_id": record["id"], "task_id": record["task_id"],
        "tool": record["tool"], "department": record["department"], "platform": platform, "decision": status,
        "by": _hash_user(platform, user), "trace_id": record.get("trace_id"),
    }))
    verb = "Approved" if status == "approved" else "Denied"
    return True, f"{verb}: {record['tool']} {'will run now' if status == 'approved' else 'will not run'}."


def already(decision: ApprovalDecision) -> str:
    when = time.strftime("%H:%M UTC", time.gmtime(decision.at)) if decision.at else ""
    by = f" by {decision.by_name or decision.by}" if decision.by else ""
    words = {"approved": "already approved", "denied": "already denied", "timeout": "timed out",
             "expired": "expired (the bot restarted)", "cancelled": "no longer needed (the request ended)",
             "unavailable": "not possible here"}
    return f"This request was {words.get(decision.status, decision.status)}{by}{' at ' + when if when else ''}; " \
           "nothing changed."


def _decision_span(record: dict, status: str, platform: str, user: str) -> None:
    """The decision as a span in the request's trace (the click may reach another process)."""
    parent = None
    if record.get("trace_id") and record.get("span_id"):
        parent = trace.set_span_in_context(trace.NonRecordingSpan(trace.SpanContext(
            trace_id=int(record["trace_id"], 16), span_id=int(record["span_id"], 16), is_remote=True,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))))
    with tracer.start_as_current_span("agentdesk.approval.decision", context=parent) as span:
        span.set_attribute("agentdesk.approval.id", record["id"])
        span.set_attribute("agentdesk.approval.tool", record["tool"])
        span.set_attribute("agentdesk.approval.decision", status)
        span.set_attribute("agentdesk.platform", platform)
        span.set_attribute("agentdesk.approval.decided_by", _hash_user(platform, user) or "")


async def view(store: Any, approval_id: str) -> tuple[ApprovalPrompt, ApprovalDecision | None] | None:
    """An approval as the platforms draw it: the prompt and its decision, if any."""
    record = await store.get_record(APPROVALS, str(approval_id)[:64])
    if record is None:
        return None
    decision = decision_from_record(await store.get_record(DECISIONS, record["id"]))
    return prompt_from_record(record), decision


async def expire_interrupted(store: Any, task_ids: set[str]) -> int:
    """After a restart: approvals whose task died are expired, so a later click says so."""
    count = 0
    for approval_id, record in (await store.list_records(APPROVALS)).items():
        if record.get("status") == "pending" and record.get("task_id") in task_ids:
            await store.add_record(DECISIONS, approval_id, {"decision": "expired", "by": None, "by_name": None,
                                                      "at": time.time()}, RECORD_TTL_S)
            record["status"] = "expired"
            await store.put_record(APPROVALS, approval_id, record, RECORD_TTL_S)
            count += 1
    return count
