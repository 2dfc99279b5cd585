"""SlackReplier: agent progress and answers into the Slack thread a request came from.

`stream` (the default) is Slack's agent surface: one streamed message per run with a task card per step
(`in_progress` when it starts, `complete`/`error` when it ends), the answer as Markdown, feedback buttons
at the bottom, and Slack's native stop control. Stream calls are Tier 4, so they go out as soon as a step
ends. Where a workspace refuses streaming the thread falls back to `replies`, remembered in the state store
so every process (and a restarted one) knows. In `replies`/`edit` Slack allows about one chat.postMessage
per second per channel, so step updates are buffered and flushed at most once per second, with a Stop
button. The final answer and error messages are never dropped for a rate limit or a transient 5xx: they
are retried with backoff (and Retry-After) for a bounded time. Everything the agent produced is
neutralized (bots.slack.mrkdwn) before it reaches Slack.

A replier holds nothing a worker process could not rebuild: its address is `ChatRequest.reply_address`
(see `SlackReplier.from_address`), its memory lives in the state store.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping

import aiohttp
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.async_client import AsyncWebClient

from agents.telemetry import reply_span
from agents.chat import ApprovalDecision, ApprovalPrompt, FinalAnswer, StepUpdate, ThreadReplier
from bots.slack import approvals, blocks as b
from bots.slack.mrkdwn import MESSAGE_LIMIT, escape, neutralize, split_text, to_markdown, to_mrkdwn

if TYPE_CHECKING:
    from agents.runner import TaskRunner

log = logging.getLogger("agentdesk.slack.replier")

MODES = ("replies", "stream", "edit", "off")
TRANSIENT_ERRORS = {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
STEP_DEADLINE_S = 30.0  # progress is best effort; a step stuck longer than this is skipped
FINAL_DEADLINE_S = 600.0  # a final answer keeps trying through long rate limits and outages
MARKDOWN_PIECE = 11500  # Slack caps markdown_text and a payload's markdown blocks at 12,000 characters
STREAM_REFUSED = "slack_stream_refused"  # state-store namespace: threads where streaming was refused
STREAM_REFUSED_TTL_S = 30 * 24 * 3600
HEARTBEAT_S = 1.0  # a stream call at least this often while a step runs (appendStream is Tier 4)
BLOCK_ERRORS = {"invalid_blocks", "invalid_blocks_format", "msg_blocks_too_long"}


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


@dataclass(frozen=True)
class SlackAddress:
    """Where a run's replies go, as kept in `ChatRequest.reply_address` (strings only)."""

    channel: str
    thread_ts: str
    team: str = ""
    user: str = ""  # who asked: recipient of the stream, the only person (besides admins) who may stop it
    recipient_team_id: str = ""
    is_direct: bool = False

    @property
    def thread_key(self) -> str:
        return f"slack:{self.team}:{self.channel}:{self.thread_ts}"

    def to_mapping(self) -> dict[str, str]:
        return {"channel": self.channel, "thread_ts": self.thread_ts, "team": self.team, "user": self.user,
                "recipient_team_id": self.recipient_team_id, "is_direct": "1" if self.is_direct else ""}

    @classmethod
    def from_mapping(cls, values: Mapping[str, str]) -> "SlackAddress":
        return cls(channel=values["channel"], thread_ts=values["thread_ts"], team=values.get("team", ""),
                   user=values.get("user", ""), recipient_team_id=values.get("recipient_team_id", ""),
                   is_direct=bool(values.get("is_direct")))


class SlackReplier(ThreadReplier):
    """Replies into one Slack thread in the configured step-update mode (stream, replies, edit, off)."""

    def __init__(
        self,
        client: AsyncWebClient,
        channel: str,
        thread_ts: str,
        *,
        mode: str = "replies",
        pacer: ChannelPacer | None = None,
        team: str = "",
        recipient_team_id: str | None = None,
        recipient_user_id: str | None = None,
        is_direct: bool = False,
        runner: "TaskRunner | None" = None,
        task_display: str = "timeline",
        final_deadline_s: float = FINAL_DEADLINE_S,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"step update mode must be one of {', '.join(MODES)}")
        self.client = client
        self.address = SlackAddress(channel, thread_ts, team, recipient_user_id or "", recipient_team_id or team,
                                    is_direct)
        self.channel = channel
        self.thread_ts = thread_ts
        self.mode = mode
        self.pacer = pacer or ChannelPacer()
        self.runner = runner
        self.task_display = task_display
        self.final_deadline_s = final_deadline_s
        self._pending: list[StepUpdate] = []
        self._flusher: asyncio.Task | None = None
        self._status_supported = True
        self._progress_ts: str | None = None
        self._progress_text = ""
        # stream state: chunks waiting to go out, the stream's ts, the card in progress
        self._chunks: list[dict] = []
        self._stream_ts: str | None = None
        self._stream_over = False  # stopped by the person, refused, or expired: nothing more goes to it
        self._stream_checked = False
        self._open: tuple[str, int] | None = None  # (department, step number) of the card in progress
        self._streamed: list[StepUpdate] = []  # re-sent as replies if the stream is refused at its start
        self._heartbeat: asyncio.Task | None = None
        self._last_stream_call = 0.0

    @classmethod
    def from_address(cls, client: AsyncWebClient, address: Mapping[str, str], *, mode: str, task_display: str,
                     pacer: ChannelPacer, runner: "TaskRunner | None" = None) -> "SlackReplier":
        """A replier for a request's `reply_address` (what a worker process rebuilds it from)."""
        a = SlackAddress.from_mapping(address)
        return cls(client, a.channel, a.thread_ts, mode=mode, pacer=pacer, team=a.team,
                   recipient_team_id=a.recipient_team_id, recipient_user_id=a.user, is_direct=a.is_direct,
                   runner=runner, task_display=task_display)

    # ThreadReplier ---------------------------------------------------------------------------------

    async def status(self, text: str) -> None:
        if self.mode == "stream" and self._stream_ts is None and self._open is None and not self._stream_over:
            self._queue_open("", 1)  # card 1: the run has started
        if not self._status_supported:
            return
        try:
            await self.client.assistant_threads_setStatus(
                channel_id=self.channel, thread_ts=self.thread_ts, status=b.plain(b.excerpt(text, 100)),
                loading_messages=[b.plain(b.excerpt(text, 100)), *b.LOADING_MESSAGES])
        except Exception as exc:  # noqa: BLE001 - status is decoration: remember and stop trying
            self._status_supported = False
            log.debug("assistant.threads.setStatus unavailable here (%s)", _error_name(exc))

    async def step(self, update: StepUpdate) -> None:
        if self.mode == "off":
            return
        if self.mode == "stream":
            self._streamed.append(update)
            self._chunks.append(b.finished_card(update))
            if self._open and self._open[1] == update.step_number and not update.agent_path:
                self._open = None
            if not update.is_final and not update.agent_path:
                self._queue_open(update.department, update.step_number + 1)
            else:
                self._kick()
            return
        self._pending.append(update)
        self._kick()

    async def final(self, answer: FinalAnswer) -> None:
        await self._finish_progress()
        markdown, mrkdwn = self._answer_texts(answer)
        blocks = [b.feedback_block(answer.task_id)] if answer.task_id else []
        if self._stream_ts is not None and not self._stream_over:
            if await self._finish_stream(markdown, blocks):
                if answer.files:
                    await self._upload(answer)
                return
        await self._post_answer(markdown, mrkdwn, blocks)
        if answer.files:
            await self._upload(answer)

    async def error(self, message: str) -> None:
        await self._finish_progress(failure=message)
        for piece in split_text(f":warning: {neutralize(message)}"):
            await self._post(piece, self.final_deadline_s)

    # answers ---------------------------------------------------------------------------------------

    @staticmethod
    def _answer_texts(answer: FinalAnswer) -> tuple[str, str]:
        """The answer as standard Markdown (markdown block, stream) and as mrkdwn (fallback text)."""
        if not answer.text.strip():
            empty = "_(The agent finished without a text answer.)_"
            markdown, mrkdwn = empty, empty
        else:
            markdown, mrkdwn = to_markdown(answer.text), to_mrkdwn(answer.text)
        md_extra = [f"ℹ️ {to_markdown(n)}" for n in answer.notices]
        mk_extra = [f":information_source: {neutralize(n)}" for n in answer.notices]
        if answer.trace_url:
            label = (answer.trace_id or "open trace").replace("[", "").replace("]", "")
            md_extra.append(f"🔍 Trace: [{to_markdown(label)}]({answer.trace_url.replace(')', '%29')})")
            mk_extra.append(f":mag: Trace: <{escape(answer.trace_url).replace('|', '%7C')}|{escape(label)}>")
        elif answer.trace_id:
            md_extra.append(f"🔍 Trace id: `{to_markdown(answer.trace_id)}`")
            mk_extra.append(f":mag: Trace id: `{escape(answer.trace_id)}`")
        if md_extra:
            markdown += "\n\n" + "\n".join(md_extra)
            mrkdwn += "\n\n" + "\n".join(mk_extra)
        return markdown, mrkdwn

    async def _post_answer(self, markdown: str, mrkdwn: str, blocks: list[dict]) -> None:
        """Markdown blocks (tables, headings and code as written) with mrkdwn as the notification text."""
        pieces = split_text(markdown, MARKDOWN_PIECE)
        try:
            for index, piece in enumerate(pieces):
                last = index == len(pieces) - 1
                fallback = mrkdwn if len(pieces) == 1 else to_mrkdwn(piece)
                await self._post(b.excerpt(fallback, MESSAGE_LIMIT), self.final_deadline_s,
                                 blocks=[{"type": "markdown", "text": piece}, *(blocks if last else [])])
        except SlackApiError as exc:
            if _error_name(exc) not in BLOCK_ERRORS:
                raise
            log.warning("Slack refused the markdown block (%s); sending the answer as mrkdwn", _error_name(exc))
            for piece in split_text(mrkdwn):
                await self._post(piece, self.final_deadline_s)

    async def _finish_stream(self, markdown: str, blocks: list[dict]) -> bool:
        """The answer into the stream and the stream closed with the feedback block; False if it went away."""
        ts = self._stream_ts
        try:
            for piece in split_text(markdown, MARKDOWN_PIECE):
                await call_with_retry(self.client.chat_appendStream, self.final_deadline_s,
                                      channel=self.channel, ts=ts, markdown_text=piece)
            await call_with_retry(self.client.chat_stopStream, self.final_deadline_s,
                                  channel=self.channel, ts=ts, blocks=blocks or None)
            self._stream_ts = None
            return True
        except Exception as exc:  # noqa: BLE001 - the answer then goes out as a reply
            log.warning("the answer could not go into the stream (%s); posting it as a reply", _error_name(exc))
            self._stream_over = True
            await self._on_stream_error(exc)
            return False

    # approvals -------------------------------------------------------------------------------------

    async def approval(self, prompt: ApprovalPrompt) -> dict | None:
        return await approvals.post_prompt(self, prompt)

    async def approval_decided(self, prompt: ApprovalPrompt, decision: ApprovalDecision, handle: dict) -> None:
        await approvals.show_decision(self.client, prompt, decision, handle)

    # internals -------------------------------------------------------------------------------------

    def _queue_open(self, department: str, step_number: int) -> None:
        self._open = (department, step_number)
        self._chunks.append(b.open_card(department, step_number))
        self._kick()

    def _kick(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop(), name="slack-step-flush")

    async def _post(self, text: str, deadline_s: float, **extra: Any) -> str | None:
        await self.pacer.wait(self.channel)
        response = await call_with_retry(
            self.client.chat_postMessage, deadline_s,
            channel=self.channel, thread_ts=self.thread_ts, text=text,
            unfurl_links=False, unfurl_media=False, **extra,
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
        while self._pending or self._chunks:
            if self.mode == "stream":
                try:
                    await self._flush_stream()
                except Exception as exc:  # noqa: BLE001 - progress is best effort; the final answer is not
                    log.warning("task update not delivered to Slack: %s", _error_name(exc))
                if self.mode == "stream":
                    continue
            if not self._pending:
                return
            await self.pacer.wait(self.channel)
            batch, self._pending = self._pending, []
            try:
                await self._send_steps(batch)
            except Exception as exc:  # noqa: BLE001 - progress is best effort; the final answer is not
                log.warning("step update not delivered to Slack: %s", _error_name(exc))

    async def _flush_stream(self) -> None:
        """Send every waiting chunk in one call: the stream's first call starts it."""
        if not self._stream_checked:
            self._stream_checked = True
            if await self._stream_refused_here():
                self._fall_back("streaming was refused in this thread before")
                return
        if self._stream_over:
            self._chunks = []
            return
        chunks, self._chunks = self._chunks, []
        try:
            if self._stream_ts is None:
                recipients = {}
                if not self.address.is_direct:
                    recipients = {"recipient_team_id": self.address.recipient_team_id,
                                  "recipient_user_id": self.address.user}
                response = await call_with_retry(
                    self.client.chat_startStream, STEP_DEADLINE_S, channel=self.channel, thread_ts=self.thread_ts,
                    chunks=chunks, task_display_mode=self.task_display, **recipients)
                self._stream_ts = response.get("ts")
                self._heartbeat = asyncio.get_running_loop().create_task(self._beat(), name="slack-stream-beat")
            else:
                await call_with_retry(self.client.chat_appendStream, STEP_DEADLINE_S,
                                      channel=self.channel, ts=self._stream_ts, chunks=chunks)
            self._last_stream_call = time.monotonic()
        except SlackApiError as exc:
            if self._stream_ts is None:
                log.warning("Slack refused streaming (%s); this thread gets thread replies from now on",
                            _error_name(exc))
                await self._remember_refusal(_error_name(exc))
                self._fall_back(_error_name(exc))
                return
            self._stream_over = True
            await self._on_stream_error(exc)

    async def _beat(self) -> None:
        """While a step runs, re-send its card about once a second: Slack answers a stream call with
        `stopped_by_user` only when one is made, so this is what makes the native stop take effect in ~1 s."""
        while self._stream_ts is not None and not self._stream_over:
            idle = time.monotonic() - self._last_stream_call
            await asyncio.sleep(HEARTBEAT_S if self._open is None else max(0.05, HEARTBEAT_S - idle))
            if self._stream_over or self._stream_ts is None or self._open is None:
                continue
            if time.monotonic() - self._last_stream_call >= HEARTBEAT_S and not self._chunks:
                department, number = self._open
                self._chunks.append(b.open_card(department, number))
                self._kick()

    def _fall_back(self, reason: str) -> None:
        """Replies from here on; the steps that already ended are re-sent as replies."""
        self.mode = "replies"
        self._stream_over = True
        self._chunks = []
        self._open = None
        self._pending = [*self._streamed, *self._pending]

    async def _on_stream_error(self, exc: BaseException) -> None:
        """The stream is gone: Slack's stop control (`stopped_by_user`) stops the run for the requester."""
        if _error_name(exc) == "stopped_by_user" and self.runner is not None:
            accepted, message = await self.runner.request_stop(self.address.thread_key, self.address.user)
            log.info("Slack's stop control pressed in a thread: %s", "stopping" if accepted else message)
        else:
            log.warning("Slack stream ended early (%s); thread replies from here on", _error_name(exc))
            self.mode = "replies"

    async def _stream_refused_here(self) -> bool:
        if self.runner is None:
            return False
        return await self.runner.store.get_record(STREAM_REFUSED, self.address.thread_key) is not None

    async def _remember_refusal(self, reason: str) -> None:
        if self.runner is not None:
            await self.runner.store.put_record(STREAM_REFUSED, self.address.thread_key,
                                               {"reason": reason, "at": time.time()}, STREAM_REFUSED_TTL_S)

    async def _send_steps(self, batch: list[StepUpdate]) -> None:
        text = "\n".join(b.render_step(u) for u in batch)
        if self.mode == "edit":
            await self._edit_progress(text)
            return
        for index, piece in enumerate(split_text(text)):
            if index:
                await self.pacer.wait(self.channel)
            await self._post_progress(piece)

    async def _post_progress(self, text: str) -> str | None:
        """A progress message with the Stop button under it."""
        response = await call_with_retry(
            self.client.chat_postMessage, STEP_DEADLINE_S,
            channel=self.channel, thread_ts=self.thread_ts, text=text, unfurl_links=False, unfurl_media=False,
            blocks=[*b.section_blocks(text), b.stop_block(self.thread_ts)],
        )
        return response.get("ts")

    async def _edit_progress(self, text: str) -> None:
        combined = f"{self._progress_text}\n{text}" if self._progress_text else text
        if self._progress_ts and len(combined) <= MESSAGE_LIMIT:
            await call_with_retry(self.client.chat_update, STEP_DEADLINE_S, channel=self.channel,
                                  ts=self._progress_ts, text=combined,
                                  blocks=[*b.section_blocks(combined), b.stop_block(self.thread_ts)])
            self._progress_text = combined
            return
        pieces = split_text(text)
        for index, piece in enumerate(pieces):
            if index:
                await self.pacer.wait(self.channel)
            if self._progress_ts:
                await self._retire_stop_button()
            self._progress_ts, self._progress_text = await self._post_progress(piece), piece

    async def _retire_stop_button(self) -> None:
        """The edited progress message keeps its text and loses its Stop button once it is not the latest."""
        try:
            await call_with_retry(self.client.chat_update, STEP_DEADLINE_S, channel=self.channel,
                                  ts=self._progress_ts, text=self._progress_text,
                                  blocks=b.section_blocks(self._progress_text))
        except Exception as exc:  # noqa: BLE001 - a stale Stop button only answers "nothing to stop"
            log.debug("could not remove a Stop button: %s", _error_name(exc))

    async def _finish_progress(self, failure: str | None = None) -> None:
        """Let buffered steps go out first (so the answer comes after them); close the card in progress."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        if self._open is not None and self.mode == "stream" and not self._stream_over:
            department, number = self._open
            self._open = None
            if failure is not None:
                self._chunks.append(b.failed_card(department, number, failure))
            elif self._stream_ts is not None:  # the answer came without another step: the card was its writing
                self._chunks.append(b.open_card(department, number) | {"status": "complete"})
        if self._pending or self._chunks:
            await self._flush_loop()
        if self.mode == "edit" and self._progress_ts:
            await self._retire_stop_button()
        if failure is not None and self._stream_ts is not None and not self._stream_over:
            ts, self._stream_ts = self._stream_ts, None
            try:
                await call_with_retry(self.client.chat_stopStream, STEP_DEADLINE_S, channel=self.channel, ts=ts)
            except Exception as exc:  # noqa: BLE001 - an unclosed stream expires by itself
                log.warning("chat.stopStream failed: %s", _error_name(exc))
