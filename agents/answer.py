"""The answer: output files, redaction and notices into a FinalAnswer, its record for feedback, and feedback.

An answer record (kept 30 days in the shared store) is what makes feedback pressed on any replica land on
the right answer, department and trace, whichever worker produced it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from smolagents.utils import AgentError, AgentGenerationError

from agents import metrics
from agents.agent_run import AgentOutcome, tool_output_dir
from agents.chat import ChatRequest, FinalAnswer, OutputFile
from agents.departments import Department
from agents.models import NO_MODEL_MESSAGE, ModelNotConfigured
from agents.sandbox.base import Sandbox
from agents.sandbox.outputs import collect_outputs
from agents.security import Redactor, cap, sanitize_filename
from agents.settings import Settings
from agents.state import StateStore
from agents.telemetry import current_trace_id, trace_link, tracer

log = logging.getLogger("agentdesk.answer")
audit = logging.getLogger("agentdesk.audit")

ANSWER_LIMIT = 20000
ANSWER_RECORD_TTL_S = 30 * 24 * 3600  # feedback on an answer is accepted this long
FEEDBACK_VALUES = ("positive", "negative")


async def compose_answer(settings: Settings, store: StateStore, redact: Redactor, request: ChatRequest,
                         dept: Department, sandbox: Sandbox, outcome: AgentOutcome, task_id: str,
                         started: float) -> FinalAnswer:
    output_notices = await asyncio.to_thread(sandbox.finish_outputs)
    files, notices = await asyncio.to_thread(
        collect_outputs, sandbox.host_output_dir, settings.data_dir / "outputs" / task_id,
        settings.max_files, int(settings.max_file_mb * 1024 * 1024),
    )
    tool_files, tool_notices = await asyncio.to_thread(  # files the host-side tools wrote (a quote)
        collect_outputs, tool_output_dir(settings, task_id), settings.data_dir / "outputs" / task_id / "tools",
        max(settings.max_files - len(files), 0), int(settings.max_file_mb * 1024 * 1024),
    )
    files = _redacted_names([*files, *tool_files], redact)
    notices = [*output_notices, *notices, *tool_notices]
    if sandbox.warning:
        notices.insert(0, sandbox.warning)
    if not outcome.finished:
        notices.append(f"I reached my limit of {dept.max_steps} steps before finishing, so this answer may be "
                       "incomplete. Ask a narrower question to get a complete one.")
    trace_id = current_trace_id()
    span_context = trace.get_current_span().get_span_context()
    await store.put_record("answers", task_id, {
        "department": dept.name, "thread_key": request.thread_key, "platform": request.platform,
        "user": request.user, "trace_id": trace_id,
        "span_id": format(span_context.span_id, "016x") if span_context.is_valid else None,
    }, ANSWER_RECORD_TTL_S)
    text = cap(redact(_answer_text(outcome.output)), ANSWER_LIMIT) or "(The agent returned an empty answer.)"
    return FinalAnswer(
        department=dept.name, text=text, files=tuple(files), notices=tuple(notices), trace_id=trace_id,
        trace_url=trace_link(trace_id, settings), steps=outcome.steps, duration_s=time.monotonic() - started,
        input_tokens=outcome.input_tokens, output_tokens=outcome.output_tokens, task_id=task_id,
        sources=outcome.sources,
    )


async def record_feedback(store: StateStore, redact: Redactor, task_id: str, *, platform: str, user: str,
                          value: str, comment: str | None = None) -> bool:
    """Keep one person's feedback on an answer (the last press wins), in its trace and in /metrics."""
    if value not in FEEDBACK_VALUES:
        return False
    answer = await store.get_record("answers", task_id)
    if answer is None:
        return False
    comment = cap(redact(comment), 2000) if comment else None
    record = {"task_id": task_id, "platform": platform, "user": user, "value": value, "comment": comment,
              "department": answer.get("department"), "at": time.time()}
    await store.put_record("feedback", f"{task_id}:{user}", record, ANSWER_RECORD_TTL_S)
    metrics.FEEDBACK.labels(platform, answer.get("department") or "-", value).inc()
    parent = trace.set_span_in_context(NonRecordingSpan(SpanContext(
        trace_id=int(answer["trace_id"], 16), span_id=int(answer["span_id"], 16), is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED)))) if answer.get("trace_id") and answer.get("span_id") else None
    with tracer.start_as_current_span("agentdesk.feedback", context=parent) as span:
        span.set_attribute("agentdesk.feedback.value", value)
        span.set_attribute("agentdesk.department", answer.get("department") or "-")
        span.set_attribute("agentdesk.platform", platform)
        span.set_attribute("agentdesk.task_id", task_id)
        span.set_attribute("agentdesk.user", user_hash(platform, user))
        if comment:
            span.set_attribute("agentdesk.feedback.comment", comment)
    audit.info(json.dumps({"event": "feedback", "task_id": task_id, "platform": platform, "value": value,
                           "user": user_hash(platform, user), "department": answer.get("department")}))
    return True


async def feedback_for(store: StateStore, task_id: str) -> dict[str, dict]:
    records = await store.list_records("feedback", f"{task_id}:")
    return {r["user"]: r for r in records.values()}


def user_hash(platform: str, user: str) -> str:
    return hashlib.sha256(f"{platform}:{user}".encode()).hexdigest()[:16]


def _redacted_names(files: list[OutputFile], redact: Redactor) -> list[OutputFile]:
    """Output file names pass the same redaction as text (a name can carry a token), and stay unique."""
    seen: set[str] = set()
    result = []
    for f in files:
        name = sanitize_filename(redact(f.name) or f.name)
        stem, dot, ext = name.rpartition(".")
        candidate, n = name, 1
        while candidate in seen:
            n += 1
            candidate = f"{stem}-{n}.{ext}" if dot and stem else f"{name}-{n}"
        seen.add(candidate)
        result.append(dataclasses.replace(f, name=candidate))
    return result


def _answer_text(output: Any) -> str:
    if output is None:
        return ""
    if isinstance(output, str):
        return output
    if isinstance(output, (dict, list)):
        return "```\n" + json.dumps(output, indent=2, default=str, ensure_ascii=False) + "\n```"
    return str(output)


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, ModelNotConfigured):
        return NO_MODEL_MESSAGE
    if isinstance(exc, AgentGenerationError):
        log.error("model call failed: %s", exc)
        return ("The AI model didn't respond (it may be overloaded or unreachable) even after retrying. "
                "Please try again in a minute.")
    if isinstance(exc, AgentError):
        log.error("agent failed: %s", exc)
        return "The agent couldn't finish this request. Please rephrase it or try again."
    log.error("agent run crashed: %r", exc)
    return f"Something went wrong while working on this ({type(exc).__name__}). Please try again."
