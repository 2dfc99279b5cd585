"""ThreadReplier for Teams: streaming in 1:1 chats, one progress message edited in place elsewhere.

Personal chats use the Teams streaming protocol: a `typing` activity with a `streaminfo` entity starts the
stream (the connector answers with the streamId), each agent step is an informative update with the next
`streamSequence`, and the final answer is a `message` whose streaminfo says `streamType: final`.
botbuilder's Entity drops every field but `type`, so StreamInfo and AIMessage declare their own maps.

Teams' rules (learn.microsoft.com, bots/streaming-ux), kept here:
- at most one streaming request per second per stream, the final one included (the next send waits a
  full interval after the previous one, as Microsoft's own SDKs do); a burst of fast steps is coalesced,
  the newest line wins;
- informative updates are at most 1,000 characters;
- a 403 on a live stream means the person pressed Stop (or Teams ended it): streaming ends there and the
  run is stopped through `on_stop`; a refused start (older client, policy) falls back to the progress
  message channels and group chats always use;
- a stream lives at most 2 minutes: a quiet stream gets a keep-alive update, and before the limit the
  stream is closed with a note and the rest goes on in an edited progress message.

Every answer carries Teams' AI UX: the AI-generated label, citations for the answer's sources (`[n]` in
the text, title, URL and abstract in the entity), the feedback buttons and the department's sensitivity
label. State comes only from the conversation reference, settings and shared clients, so a replier can
be rebuilt on any process.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

from botbuilder.schema import Activity, ActivityTypes, Attachment, Entity

from agents.chat import ApprovalDecision, ApprovalPrompt, FinalAnswer, OutputFile, Source, StepUpdate, ThreadReplier
from agents.departments import SensitivityLabel
from bots.teams import approvals, text as fmt
from bots.teams.files import PendingUploads, consent_card
from bots.teams.outbound import ConversationSender, SendFailed

log = logging.getLogger("agentdesk.teams")

#: Images up to this size go inline as data: URLs in channels (Teams caps a message at about 40 KB).
INLINE_IMAGE_MAX_BYTES = 24_000
INLINE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif"})
#: Teams shows at most this many citations; abstracts are cut to Teams' 160 characters.
MAX_CITATIONS = 10
CITATION_ABSTRACT_MAX = 160
CITATION_NAME_MAX = 80
HANDOVER_TEXT = ("⏳ This is taking longer than a Teams stream may last. I'm still working: progress and the "
                 "answer follow in a new message.")


@dataclass(frozen=True)
class StreamLimits:
    """Teams' streaming limits, as the replier keeps them (tests shorten them)."""

    interval_s: float = 1.0  # one streaming request per second per stream
    keepalive_s: float = 15.0  # a quiet stream gets an update this often
    max_s: float = 105.0  # Teams ends a stream at 2 minutes; hand over before that


class StreamInfo(Entity):
    """The `streaminfo` entity with the fields Teams needs (Entity alone would serialize only `type`)."""

    _attribute_map = {
        "type": {"key": "type", "type": "str"},
        "stream_id": {"key": "streamId", "type": "str"},
        "stream_type": {"key": "streamType", "type": "str"},
        "stream_sequence": {"key": "streamSequence", "type": "int"},
    }

    def __init__(self, stream_type: str, stream_sequence: int | None = None, stream_id: str | None = None) -> None:
        super().__init__(type="streaminfo")
        self.stream_type = stream_type
        self.stream_sequence = stream_sequence
        self.stream_id = stream_id


class AIMessage(Entity):
    """The schema.org Message entity behind Teams' AI label, citations and sensitivity label."""

    _attribute_map = {
        "type": {"key": "type", "type": "str"},
        "at_type": {"key": "@type", "type": "str"},
        "at_context": {"key": "@context", "type": "str"},
        "at_id": {"key": "@id", "type": "str"},
        "additional_type": {"key": "additionalType", "type": "[str]"},
        "citation": {"key": "citation", "type": "[object]"},
        "usage_info": {"key": "usageInfo", "type": "object"},
    }

    def __init__(self, sources: tuple[Source, ...] = (), label: SensitivityLabel | None = None) -> None:
        super().__init__(type="https://schema.org/Message")
        self.at_type = "Message"
        self.at_context = "https://schema.org"
        self.at_id = ""
        self.additional_type = ["AIGeneratedContent"]
        self.citation = [_citation(n, s) for n, s in enumerate(sources[:MAX_CITATIONS], 1)] or None
        self.usage_info = ({"@type": "CreativeWork", "name": label.name,
                            **({"description": label.description} if label.description else {})}
                           if label else None)


def _citation(position: int, source: Source) -> dict:
    appearance: dict = {"@type": "DigitalDocument", "name": fmt.truncate(source.title or f"Source {position}",
                                                                         CITATION_NAME_MAX, "…")}
    if source.url:
        appearance["url"] = source.url
    appearance["abstract"] = fmt.truncate(source.abstract or source.title or "", CITATION_ABSTRACT_MAX, "…")
    return {"@type": "Claim", "position": position, "appearance": appearance}


def message_activity(text: str, attachments: list[dict] | None = None) -> Activity:
    return Activity(
        type=ActivityTypes.message,
        text=text,
        text_format="markdown",
        attachments=[Attachment(content_type=a["contentType"], name=a.get("name"), content=a.get("content"),
                                content_url=a.get("contentUrl")) for a in attachments or ()] or None,
    )


def answer_activity(text: str, sources: tuple[Source, ...], label: SensitivityLabel | None,
                    attachments: list[dict] | None = None) -> Activity:
    """A message with the AI label, its citations, the sensitivity label and the feedback buttons."""
    activity = message_activity(text, attachments)
    activity.entities = [AIMessage(sources, label)]
    activity.channel_data = {"feedbackLoopEnabled": True}
    return activity


def unique_sources(answer: FinalAnswer) -> tuple[Source, ...]:
    seen: dict[tuple[str, str], Source] = {}
    for source in answer.sources:
        seen.setdefault((source.title, source.url), source)
    return tuple(seen.values())


OnStop = Callable[[], Awaitable[None]]
OnAnswer = Callable[[str, FinalAnswer], Awaitable[None]]
ShareFile = Callable[[OutputFile], Awaitable[str]]


class TeamsReplier(ThreadReplier):
    def __init__(
        self,
        sender: ConversationSender,
        *,
        personal: bool,
        uploads: PendingUploads,
        owner: str,
        on_stop: OnStop | None = None,
        on_answer: OnAnswer | None = None,
        label_for: Callable[[str], SensitivityLabel | None] = lambda department: None,
        share_file: ShareFile | None = None,
        limits: StreamLimits = StreamLimits(),
    ) -> None:
        self._sender = sender
        self._personal = personal
        self._uploads = uploads
        self._owner = owner
        self._on_stop = on_stop
        self._on_answer = on_answer
        self._label_for = label_for
        self._share_file = share_file
        self._limits = limits
        self._mode = "stream" if personal else "edit"  # "stream" | "edit" | "stopped"
        self._stream_id: str | None = None
        self._stream_started = 0.0
        self._stream_last = 0.0
        self._sequence = 0
        self._shown = ""
        self._progress_id: str | None = None
        self._lines: list[str] = []
        self._pending: str | None = None
        self._last_sent = 0.0
        self._lock = asyncio.Lock()
        self._flusher: asyncio.Task | None = None
        self._watcher: asyncio.Task | None = None
        self._sleeping = False
        self._closed = False

    @property
    def stopped(self) -> bool:
        """True once the person ended the stream with Stop."""
        return self._mode == "stopped"

    # -- ThreadReplier ------------------------------------------------------------------------------------

    async def status(self, text: str) -> None:
        await self._progress(fmt.neutralize(text))

    async def step(self, update: StepUpdate) -> None:
        line = fmt.step_line(update)
        self._lines.append(line)
        await self._progress(line)

    async def final(self, answer: FinalAnswer) -> None:
        await self._quiesce()
        sources = unique_sources(answer)
        body = self._final_text(answer, sources)
        label = self._label_for(answer.department)
        async with self._lock:
            self._closed = True
            try:
                if self._personal:
                    await self._final_personal(body, answer, sources, label)
                else:
                    await self._final_shared(body, answer, sources, label)
            except SendFailed as exc:
                log.error("teams: could not deliver the final answer: %s", exc)

    async def error(self, message: str) -> None:
        await self._quiesce()
        text = f"⚠️ {fmt.neutralize(message)}"
        async with self._lock:
            self._closed = True
            try:
                if await self._end_stream(message_activity(text)) is None:
                    await self._finish_progress("Stopped.")
                    await self._sender.send(message_activity(text))
            except SendFailed as exc:
                log.error("teams: could not deliver an error message: %s", exc)

    async def approval(self, prompt: ApprovalPrompt) -> dict | None:
        return await approvals.post_prompt(self._sender, prompt)

    async def approval_decided(self, prompt: ApprovalPrompt, decision: ApprovalDecision, handle: dict) -> None:
        await approvals.show_decision(self._sender, prompt, decision, handle)

    # -- progress -----------------------------------------------------------------------------------------

    async def _progress(self, line: str) -> None:
        """Show `line` now if a second has passed since the last update, else leave it for the flusher."""
        if self._closed or self._mode == "stopped":
            return
        self._pending = line
        wait = self._limits.interval_s - (time.monotonic() - self._last_sent)
        if wait <= 0 and not self._lock.locked():
            await self._flush()
        elif self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_later(max(wait, 0.05)), name="teams-progress")

    async def _flush_later(self, delay: float) -> None:
        self._sleeping = True
        try:
            await asyncio.sleep(delay)
        finally:
            self._sleeping = False
        await self._flush()

    async def _quiesce(self) -> None:
        """Before the last message: drop a waiting update (the answer replaces it), let a running one end."""
        self._pending = None
        if self._watcher and not self._watcher.done():
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        if self._flusher and not self._flusher.done():
            if self._sleeping:
                self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def _flush(self) -> None:
        async with self._lock:
            line, self._pending = self._pending, None
            if line is None or self._closed or self._mode == "stopped":
                return
            self._last_sent = time.monotonic()
            try:
                if self._mode == "stream" and await self._stream_update(line):
                    return
                if self._mode == "edit":
                    await self._edit_progress(line)
            except SendFailed as exc:
                log.warning("teams: progress update dropped: %s", exc)

    async def _pace(self) -> None:
        """Wait until a full interval has passed since this stream's previous request."""
        wait = self._limits.interval_s - (time.monotonic() - self._stream_last)
        if self._stream_id is not None and wait > 0:
            await asyncio.sleep(wait)

    async def _stream_send(self, activity: Activity) -> str | None:
        await self._pace()
        try:
            return await self._sender.send(activity)
        finally:
            self._stream_last = time.monotonic()

    async def _stream_update(self, line: str) -> bool:
        """One informative update; False when streaming has ended (refused, stopped or handed over)."""
        if self._stream_id and time.monotonic() - self._stream_started > self._limits.max_s:
            await self._hand_over()
            return False
        text = fmt.truncate(line, fmt.INFORMATIVE_LIMIT)
        self._sequence += 1
        activity = Activity(type=ActivityTypes.typing, text=text,
                            entities=[StreamInfo("informative", self._sequence, self._stream_id)])
        try:
            stream_id = await self._stream_send(activity)
        except SendFailed as exc:
            if exc.status not in (400, 403, 404):
                raise
            if self._stream_id is None:
                log.info("teams: streaming refused (%s); editing a progress message instead", exc)
                self._mode = "edit"
            else:
                await self._stopped_by_person(exc)
            return False
        self._shown = text
        if self._stream_id is None:
            if not stream_id:
                self._mode = "edit"
                return False
            self._stream_id = stream_id
            self._stream_started = time.monotonic()
            self._watcher = asyncio.create_task(self._watch_stream(), name="teams-stream-keepalive")
        return True

    async def _stopped_by_person(self, exc: SendFailed) -> None:
        """Teams refuses a live stream once the person pressed Stop: stop the run, answer normally."""
        log.info("teams: the stream was ended (%s); stopping the run", exc)
        self._mode = "stopped"
        if self._on_stop is not None:
            try:
                await self._on_stop()
            except Exception:  # noqa: BLE001 - the run still ends at its own limits
                log.exception("teams: could not stop the run after Stop")

    async def _watch_stream(self) -> None:
        """Keep a quiet stream alive, and hand it over to a progress message before Teams' 2 minutes."""
        while True:
            due = min(self._stream_last + self._limits.keepalive_s, self._stream_started + self._limits.max_s)
            await asyncio.sleep(max(0.05, due - time.monotonic()))
            async with self._lock:
                if self._closed or self._mode != "stream":
                    return
                now = time.monotonic()
                try:
                    if now - self._stream_started >= self._limits.max_s:
                        await self._hand_over()
                        return
                    if now - self._stream_last >= self._limits.keepalive_s:
                        await self._stream_update(fmt.truncate(self._shown, fmt.INFORMATIVE_LIMIT - 20, "…")
                                                  + " · still working…")
                except SendFailed as exc:
                    log.warning("teams: keep-alive update dropped: %s", exc)

    async def _hand_over(self) -> None:
        """Close the stream with a note; progress and the answer continue as normal messages."""
        lines = "\n\n".join(self._lines[-8:])
        await self._end_stream(message_activity(f"{HANDOVER_TEXT}\n\n{lines}".strip()))
        self._mode = "edit"

    async def _edit_progress(self, line: str) -> None:
        """The progress message shows the last steps (or the status line before the first step)."""
        text = "⏳ " + "\n\n".join(self._lines[-8:] or [line])
        if self._progress_id is None:
            self._progress_id = await self._sender.send(message_activity(text))
        else:
            await self._sender.update(self._progress_id, message_activity(text))

    async def _finish_progress(self, summary: str) -> None:
        if self._progress_id is not None:
            try:
                await self._sender.update(self._progress_id, message_activity(summary))
            except SendFailed as exc:
                log.warning("teams: could not close the progress message: %s", exc)

    async def _end_stream(self, activity: Activity) -> str | None:
        """Send `activity` as the stream's final message; its id, or None without a live stream or if refused."""
        if self._mode != "stream" or self._stream_id is None:
            return None
        activity.entities = [StreamInfo("final", None, self._stream_id), *(activity.entities or ())]
        try:
            await self._stream_send(activity)
            return self._stream_id
        except SendFailed as exc:
            if exc.status in (400, 403, 404):
                log.info("teams: stream could not be finished (%s); sending a plain message", exc)
                return None
            raise
        finally:
            self._mode = "edit"

    # -- final answer -------------------------------------------------------------------------------------

    def answer_activities(self, answer: FinalAnswer) -> list[dict]:
        """The answer as activities for an HTTP response (expectReplies): text, citations, labels."""
        sources = unique_sources(answer)
        body = self._final_text(answer, sources)
        if answer.files:
            names = ", ".join(fmt.escape(f.name) for f in answer.files)
            body += f"\n\n📎 I made {names}; ask me in a Teams chat to receive files."
        label = self._label_for(answer.department)
        chunks = fmt.split_message(body)
        return [answer_activity(chunks[0], sources, label).serialize(),
                *(message_activity(c).serialize() for c in chunks[1:])]

    def _final_text(self, answer: FinalAnswer, sources: tuple[Source, ...]) -> str:
        parts = [fmt.neutralize(answer.text) or "(no answer)"]
        if sources:
            parts.append("Sources: " + " ".join(f"[{n}]" for n in range(1, min(len(sources), MAX_CITATIONS) + 1)))
        parts += [f"_{fmt.neutralize(n)}_" for n in answer.notices]
        if answer.trace_url:
            parts.append(f"Trace: {fmt.escape(answer.trace_url)}")
        return "\n\n".join(parts)

    def _summary(self, answer: FinalAnswer) -> str:
        """What the progress message becomes: the outcome, then the steps it showed along the way."""
        steps = f"{answer.steps} step{'s' if answer.steps != 1 else ''}"
        head = f"✅ {fmt.department_label(answer.department)} · done in {steps}, {answer.duration_s:.1f} s"
        return "\n\n".join([head, *self._lines[-8:]])

    async def _send_answer(self, text: str, answer: FinalAnswer, sources: tuple[Source, ...],
                           label: SensitivityLabel | None) -> None:
        """The answer's first message: the stream's final one if a stream is live, else a new message."""
        activity_id = await self._end_stream(answer_activity(text, sources, label))
        if activity_id is None:
            await self._finish_progress(self._summary(answer))
            activity_id = await self._sender.send(answer_activity(text, sources, label))
        if activity_id and self._on_answer is not None:
            try:
                await self._on_answer(activity_id, answer)
            except Exception:  # noqa: BLE001 - feedback on this answer is then refused, the answer stands
                log.exception("teams: could not remember the answer for feedback")

    async def _final_personal(self, body: str, answer: FinalAnswer, sources: tuple[Source, ...],
                              label: SensitivityLabel | None) -> None:
        offers = []
        for file in answer.files:
            try:
                offers.append(await asyncio.to_thread(self._uploads.offer, file, self._owner))  # copy + sweep
            except OSError as exc:
                log.error("teams: could not keep %s for upload: %s", file.name, exc)
                body += f"\n\n_I made {fmt.escape(file.name)} but could not keep it for you to download._"
        if offers:
            body += ("\n\nI made " + ("a file" if len(offers) == 1 else f"{len(offers)} files")
                     + " for you: accept below to save to your OneDrive.")
        chunks = fmt.split_message(body)
        await self._send_answer(chunks[0], answer, sources, label)
        for chunk in chunks[1:]:
            await self._sender.send(message_activity(chunk))
        for pending in offers:
            card = consent_card(pending, f"{pending.name} from the {answer.department} agent")
            await self._sender.send(message_activity("", [card]))

    async def _final_shared(self, body: str, answer: FinalAnswer, sources: tuple[Source, ...],
                            label: SensitivityLabel | None) -> None:
        inline = [f for f in answer.files if f.mimetype in INLINE_IMAGE_TYPES and f.size <= INLINE_IMAGE_MAX_BYTES]
        other = [f for f in answer.files if f not in inline]
        if self._share_file is not None and answer.files:
            body += await self._shared_links(answer.files)
        elif other:
            names = ", ".join(f"{fmt.escape(f.name)} ({fmt.human_size(f.size)})" for f in other)
            body += (f"\n\n📎 I made {names}, but files can only be put into channels and group chats when "
                     "Microsoft Graph is configured for this bot (GRAPH_CLIENT_SECRET). Send me the same request "
                     "in a personal (1:1) chat and I'll offer the file(s) for download there.")
        chunks = fmt.split_message(body)
        await self._send_answer(chunks[0], answer, sources, label)
        for chunk in chunks[1:]:
            await self._sender.send(message_activity(chunk))
        if self._share_file is None:
            for file in inline:
                await self._sender.send(message_activity("", [_inline_image(file)]))

    async def _shared_links(self, files: tuple[OutputFile, ...]) -> str:
        """Upload each output file through Graph and list its link (or why it could not be uploaded)."""
        assert self._share_file is not None
        lines = []
        for file in files:
            try:
                url = await self._share_file(file)
                lines.append(f"📎 [{fmt.escape(file.name)}]({url}) ({fmt.human_size(file.size)})")
            except Exception as exc:  # noqa: BLE001 - each file fails alone, with the reason shown
                log.warning("teams: could not upload %s through Graph: %s", file.name, exc)
                lines.append(f"📎 I made {fmt.escape(file.name)} but could not put it into this conversation's "
                             f"files ({fmt.escape(str(exc))}).")
        return "\n\n" + "\n\n".join(lines)


class ExpectReplies:
    """The answer of a `deliveryMode: expectReplies` request, which the caller reads from the HTTP response.

    The run resolves `result` with the answer's activities; once the HTTP handler stopped waiting
    (`outlived`), the answer goes to the conversation through the normal replier instead.
    """

    def __init__(self) -> None:
        self.result: asyncio.Future[list[dict]] = asyncio.get_running_loop().create_future()
        self._outlived = False

    def resolve(self, activities: list[dict]) -> bool:
        """Hand `activities` to the waiting response; False if nobody waits any more."""
        if self._outlived or self.result.done():
            return False
        self.result.set_result(activities)
        return True

    def outlived(self) -> None:
        self._outlived = True

    def wrap(self, replier: TeamsReplier) -> ThreadReplier:
        return _ReplyInResponse(self, replier)


class _ReplyInResponse(ThreadReplier):
    """Steps are not shown to an expectReplies caller (it reads one response); the answer is the response."""

    def __init__(self, expect: ExpectReplies, inner: TeamsReplier) -> None:
        self._expect = expect
        self._inner = inner

    async def status(self, text: str) -> None:
        if self._expect._outlived:
            await self._inner.status(text)

    async def step(self, update: StepUpdate) -> None:
        if self._expect._outlived:
            await self._inner.step(update)

    async def final(self, answer: FinalAnswer) -> None:
        if not self._expect.resolve(self._inner.answer_activities(answer)):
            await self._inner.final(answer)

    async def error(self, message: str) -> None:
        if not self._expect.resolve([message_activity(f"⚠️ {fmt.neutralize(message)}").serialize()]):
            await self._inner.error(message)


def _inline_image(file: OutputFile) -> dict:
    data = base64.b64encode(file.path.read_bytes()).decode()
    return {"contentType": file.mimetype, "name": file.name, "contentUrl": f"data:{file.mimetype};base64,{data}"}
