"""SlackReplier: agent progress and answers into the Slack thread a request came from.

Slack allows about one chat.postMessage per second per channel, so step updates are buffered and flushed
at most once per second (several steps in one message when the agent is fast). The final answer and
error messages are never dropped for a rate limit or a transient 5xx: they are retried with backoff (and
Retry-After) for a bounded time. Everything the agent produced goes through mrkdwn neutralization.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Awaitable, Callable

import aiohttp
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.models.messages.chunk import TaskUpdateChunk
from slack_sdk.web.async_client import AsyncWebClient

from agents.telemetry import reply_span
from agents.chat import ApprovalDecision, ApprovalPrompt, FinalAnswer, StepUpdate, ThreadReplier
from bots.slack import approvals
from bots.slack.mrkdwn import MESSAGE_LIMIT, escape, neutralize, split_text, to_mrkdwn

log = logging.getLogger("agentdesk.slack.replier")

MODES = ("replies", "stream", "edit", "off")
TRANSIENT_ERRORS = {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
STEP_DEADLINE_S = 30.0  # progress is best effort; a step stuck longer than this is skipped
FINAL_DEADLINE_S = 600.0  # a final answer keeps trying through long rate limits and outages
CODE_EXCERPT = 600
OBSERVATION_EXCERPT = 300


class ChannelPacer:
    """At most one message per `interval` per channel, shared by every replier in the process."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._next: dict[str, float] = {}

    async def wait(self, channel: str) -> None:
        now = time.monotonic()
        slot = max(now, self._next.get(channel, 0.0))
        self._next[channel] = slot + self.interval  # reserved before awaiting: no two callers get one slot
        if len(self._next) > 10_000:
            self._next = {c: t for c, t in self._next.items() if t > now}
        if slot > now:
            await asyncio.sleep(slot - now)


def _excerpt(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plain(text: str) -> str:
    """Untrusted text for fields whose markup rules are unclear (stream chunks, status): no markup at all."""
    return neutralize(text).replace("&lt;", "‹").replace("&gt;", "›").replace("&amp;", "&")


def render_step(update: StepUpdate) -> str:
    """One step as a compact mrkdwn block: title, the code it ran, what came back or went wrong."""
    icon = ":x:" if update.error else (":white_check_mark:" if update.is_final else ":gear:")
    lines = [f"{icon} *{neutralize(update.department)}* · step {update.step_number}: {neutralize(update.title)}"]
    if update.code:
        lines.append("```\n" + neutralize(_excerpt(update.code, CODE_EXCERPT)) + "\n```")
    if update.observation:
        lines.append("> " + neutralize(_excerpt(update.observation, OBSERVATION_EXCERPT)).replace("\n", "\n> "))
    if update.error:
        lines.append(":warning: " + neutralize(_excerpt(update.error, OBSERVATION_EXCERPT)))
    return "\n".join(lines)


def _step_chunk(update: StepUpdate) -> TaskUpdateChunk:
    return TaskUpdateChunk(
        id=f"step-{update.step_number}",
        title=_plain(_excerpt(f"{update.department}: {update.title}", 200)),
        status="error" if update.error else "complete",
        details=_plain(_excerpt(update.code, CODE_EXCERPT)) if update.code else None,
        output=_plain(_excerpt(update.error or update.observation or "", OBSERVATION_EXCERPT)) or None,
    )


def _retry_delay(exc: BaseException, attempt: int) -> float | None:
    """Seconds to wait before retrying, or None when the failure is not transient."""
    if isinstance(exc, SlackApiError):
        response = exc.response
        status = getattr(response, "status_code", 0) or 0
        data = getattr(response, "data", None)
        error = data.get("error") if isinstance(data, dict) else None
        if status == 429 or error == "ratelimited":
            retry_after = (getattr(response, "headers", None) or {}).get("Retry-After") or (
                getattr(response, "headers", None) or {}).get("retry-after")
            try:
                return max(float(retry_after), 0.0) + random.random() * 0.25
            except (TypeError, ValueError):
                return 1.0 + random.random()
        if status >= 500 or error in TRANSIENT_ERRORS:
            return min(30.0, 0.5 * 2 ** attempt) * (0.5 + random.random())
        return None
    if isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError, SlackRequestError, OSError)):
        return min(30.0, 0.5 * 2 ** attempt) * (0.5 + random.random())
    return None


def _error_name(exc: BaseException) -> str:
    """Slack's error code (or the exception type): safe to log and show, never carries a token."""
    if isinstance(exc, SlackApiError):
        data = getattr(exc.response, "data", None)
        error = data.get("error") if isinstance(data, dict) else None
        return str(error or f"HTTP {getattr(exc.response, 'status_code', '?')}")
    return type(exc).__name__


async def call_with_retry(call: Callable[..., Awaitable[Any]], deadline_s: float, **kwargs: Any) -> Any:
    """Run a Web API call, retrying transient failures (429 with Retry-After, 5xx, network) until deadline."""
    with reply_span("slack", getattr(call, "__name__", "call")):
        return await _call_with_retry(call, deadline_s, **kwargs)


async def _call_with_retry(call: Callable[..., Awaitable[Any]], deadline_s: float, **kwargs: Any) -> Any:
    start = time.monotonic()
    attempt = 0
    while True:
        try:
            return await call(**kwargs)
        except Exception as exc:  # noqa: BLE001 - classified below, re-raised when not transient
            delay = _retry_delay(exc, attempt)
            if delay is None or time.monotonic() - start + delay > deadline_s:
                raise
            log.info("Slack call %s failed (%s); retrying in %.1fs", getattr(call, "__name__", "?"),
                     _error_name(exc), delay)
            attempt += 1
            await asyncio.sleep(delay)


class SlackReplier(ThreadReplier):
    """Replies into one Slack thread in the configured step-update mode (replies, edit, stream, off)."""

    def __init__(
        self,
        client: AsyncWebClient,
        channel: str,
        thread_ts: str,
        *,
        mode: str = "replies",
        pacer: ChannelPacer | None = None,
        recipient_team_id: str | None = None,
        recipient_user_id: str | None = None,
        is_direct: bool = False,
        final_deadline_s: float = FINAL_DEADLINE_S,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"step update mode must be one of {', '.join(MODES)}")
        self.client = client
        self.channel = channel
        self.thread_ts = thread_ts
        self.mode = mode
        self.pacer = pacer or ChannelPacer()
        self.recipient_team_id = recipient_team_id
        self.recipient_user_id = recipient_user_id
        self.is_direct = is_direct
        self.final_deadline_s = final_deadline_s
        self._pending: list[StepUpdate] = []
        self._flusher: asyncio.Task | None = None
        self._status_supported = True
        self._progress_ts: str | None = None
        self._progress_text = ""
        self._stream_ts: str | None = None

    # ThreadReplier ---------------------------------------------------------------------------------

    async def status(self, text: str) -> None:
        if not self._status_supported:
            return
        try:
            await self.client.assistant_threads_setStatus(
                channel_id=self.channel, thread_ts=self.thread_ts, status=_plain(_excerpt(text, 100)))
        except Exception as exc:  # noqa: BLE001 - status is decoration: remember and stop trying
            self._status_supported = False
            log.debug("assistant.threads.setStatus unavailable here (%s)", _error_name(exc))

    async def step(self, update: StepUpdate) -> None:
        if self.mode == "off":
            return
        self._pending.append(update)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop(), name="slack-step-flush")

    async def final(self, answer: FinalAnswer) -> None:
        await self._finish_progress()
        text = to_mrkdwn(answer.text) if answer.text.strip() else "_(The agent finished without a text answer.)_"
        extra = [f":information_source: {neutralize(n)}" for n in answer.notices]
        if answer.trace_url:
            label = escape(answer.trace_id or "open trace")
            extra.append(f":mag: Trace: <{escape(answer.trace_url).replace('|', '%7C')}|{label}>")
        elif answer.trace_id:
            extra.append(f":mag: Trace id: `{escape(answer.trace_id)}`")
        if extra:
            text += "\n\n" + "\n".join(extra)
        for piece in split_text(text):
            await self._post(piece, self.final_deadline_s)
        if answer.files:
            await self._upload(answer)

    async def error(self, message: str) -> None:
        await self._finish_progress()
        for piece in split_text(f":warning: {neutralize(message)}"):
            await self._post(piece, self.final_deadline_s)

    async def approval(self, prompt: ApprovalPrompt) -> dict | None:
        return await approvals.post_prompt(self, prompt)

    async def approval_decided(self, prompt: ApprovalPrompt, decision: ApprovalDecision, handle: dict) -> None:
        await approvals.show_decision(self.client, prompt, decision, handle)

    # internals -------------------------------------------------------------------------------------

    async def _post(self, text: str, deadline_s: float) -> str | None:
        await self.pacer.wait(self.channel)
        response = await call_with_retry(
            self.client.chat_postMessage, deadline_s,
            channel=self.channel, thread_ts=self.thread_ts, text=text,
            unfurl_links=False, unfurl_media=False,
        )
        return response.get("ts")

    async def _upload(self, answer: FinalAnswer) -> None:
        uploads = [{"file": str(f.path), "filename": f.name, "title": f.name} for f in answer.files]
        try:
            await call_with_retry(
                self.client.files_upload_v2, self.final_deadline_s,
                file_uploads=uploads, channel=self.channel, thread_ts=self.thread_ts,
            )
        except Exception as exc:  # noqa: BLE001 - the user is told which files are missing
            names = ", ".join(f.name for f in answer.files)
            reason = _error_name(exc)
            if reason == "missing_scope":
                log.error("files upload refused: add the files:write scope to the Slack app and reinstall it")
            else:
                log.error("files upload failed: %s", reason)
            await self._post(f":warning: I couldn't upload {neutralize(names)} (Slack said: {escape(reason)}).",
                             self.final_deadline_s)

    async def _flush_loop(self) -> None:
        while self._pending:
            if self.mode != "stream":
                await self.pacer.wait(self.channel)
            batch, self._pending = self._pending, []
            try:
                await self._send_steps(batch)
            except Exception as exc:  # noqa: BLE001 - progress is best effort; the final answer is not
                log.warning("step update not delivered to Slack: %s", _error_name(exc))

    async def _send_steps(self, batch: list[StepUpdate]) -> None:
        if self.mode == "stream":
            try:
                await self._stream_steps(batch)
                return
            except Exception as exc:  # noqa: BLE001 - any refusal: plain replies from here on
                log.warning("Slack refused streaming (%s); falling back to thread replies", _error_name(exc))
                self.mode = "replies"
                await self.pacer.wait(self.channel)
        text = "\n".join(render_step(u) for u in batch)
        if self.mode == "edit":
            await self._edit_progress(text)
            return
        for index, piece in enumerate(split_text(text)):
            if index:
                await self.pacer.wait(self.channel)
            await call_with_retry(
                self.client.chat_postMessage, STEP_DEADLINE_S,
                channel=self.channel, thread_ts=self.thread_ts, text=piece,
                unfurl_links=False, unfurl_media=False,
            )

    async def _edit_progress(self, text: str) -> None:
        combined = f"{self._progress_text}\n{text}" if self._progress_text else text
        if self._progress_ts and len(combined) <= MESSAGE_LIMIT:
            await call_with_retry(self.client.chat_update, STEP_DEADLINE_S,
                                  channel=self.channel, ts=self._progress_ts, text=combined)
            self._progress_text = combined
            return
        pieces = split_text(text)
        for index, piece in enumerate(pieces):
            if index:
                await self.pacer.wait(self.channel)
            response = await call_with_retry(
                self.client.chat_postMessage, STEP_DEADLINE_S,
                channel=self.channel, thread_ts=self.thread_ts, text=piece,
                unfurl_links=False, unfurl_media=False,
            )
            self._progress_ts, self._progress_text = response.get("ts"), piece

    async def _stream_steps(self, batch: list[StepUpdate]) -> None:
        chunks = [_step_chunk(u) for u in batch]
        if self._stream_ts is None:
            recipients = {}
            if not self.is_direct:
                recipients = {"recipient_team_id": self.recipient_team_id,
                              "recipient_user_id": self.recipient_user_id}
            response = await call_with_retry(
                self.client.chat_startStream, STEP_DEADLINE_S,
                channel=self.channel, thread_ts=self.thread_ts, chunks=chunks,
                task_display_mode="timeline", **recipients,
            )
            self._stream_ts = response.get("ts")
        else:
            await call_with_retry(self.client.chat_appendStream, STEP_DEADLINE_S,
                                  channel=self.channel, ts=self._stream_ts, chunks=chunks)

    async def _finish_progress(self) -> None:
        """Let buffered steps go out first (so the answer comes after them), then close a stream."""
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        if self._pending:
            await self._flush_loop()
        if self._stream_ts is not None:
            ts, self._stream_ts = self._stream_ts, None
            try:
                await call_with_retry(self.client.chat_stopStream, STEP_DEADLINE_S, channel=self.channel, ts=ts)
            except Exception as exc:  # noqa: BLE001 - an unclosed stream expires by itself
                log.warning("chat.stopStream failed: %s", _error_name(exc))
