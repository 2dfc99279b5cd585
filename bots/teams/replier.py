"""ThreadReplier for Teams: streaming in 1:1 chats, one progress message edited in place elsewhere.

Personal chats use the Teams streaming protocol: a `typing` activity with a `streaminfo` entity starts the
stream (the connector answers with the streamId), each agent step is an informative update with the next
`streamSequence`, and the final answer is a `message` whose streaminfo says `streamType: final`.
botbuilder's Entity drops every field but `type`, so StreamInfo declares its own attribute map. If the
stream is refused (403 ContentStreamNotAllowed, 400 BadSyntax, e.g. an older client or the 2-minute cap),
the replier falls back to the progress message that channels and group chats always use.

Updates are coalesced to one per second per thread (Teams' streaming guidance; also far below the 7/s
thread limit, which ConversationSender enforces for every send), so a burst of fast steps never queues up:
the newest text always wins and is sent before the final answer.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import time

from botbuilder.schema import Activity, ActivityTypes, Attachment, Entity

from agents.chat import ApprovalDecision, ApprovalPrompt, FinalAnswer, OutputFile, StepUpdate, ThreadReplier
from bots.teams import approvals
from bots.teams import text as fmt
from bots.teams.files import PendingUploads, consent_card
from bots.teams.outbound import ConversationSender, SendFailed

log = logging.getLogger("agentdesk.teams")

#: Images up to this size go inline as data: URLs in channels (Teams caps a message at about 40 KB).
INLINE_IMAGE_MAX_BYTES = 24_000
INLINE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif"})
#: Teams ends a stream after 2 minutes; stop streaming a little before that and edit a message instead.
STREAM_MAX_S = 105.0


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


def message_activity(text: str, attachments: list[dict] | None = None) -> Activity:
    return Activity(
        type=ActivityTypes.message,
        text=text,
        text_format="markdown",
        attachments=[Attachment(content_type=a["contentType"], name=a.get("name"), content=a.get("content"),
                                content_url=a.get("contentUrl")) for a in attachments or ()] or None,
    )


class TeamsReplier(ThreadReplier):
    def __init__(
        self,
        sender: ConversationSender,
        *,
        personal: bool,
        uploads: PendingUploads,
        owner: str,
        min_interval_s: float = 1.0,
    ) -> None:
        self._sender = sender
        self._personal = personal
        self._uploads = uploads
        self._owner = owner
        self._interval = min_interval_s
        self._mode = "stream" if personal else "edit"
        self._stream_id: str | None = None
        self._stream_started = 0.0
        self._sequence = 0
        self._progress_id: str | None = None
        self._lines: list[str] = []
        self._pending: str | None = None
        self._last_sent = 0.0
        self._lock = asyncio.Lock()
        self._flusher: asyncio.Task | None = None
        self._sleeping = False
        self._closed = False

    # -- ThreadReplier ------------------------------------------------------------------------------------

    async def status(self, text: str) -> None:
        await self._progress(fmt.neutralize(text))

    async def step(self, update: StepUpdate) -> None:
        line = fmt.step_line(update)
        self._lines.append(line)
        await self._progress(line)

    async def final(self, answer: FinalAnswer) -> None:
        await self._stop_flusher()
        body = self._final_text(answer)
        async with self._lock:
            self._closed = True
            try:
                if self._personal:
                    await self._final_personal(body, answer)
                else:
                    await self._final_shared(body, answer)
            except SendFailed as exc:
                log.error("teams: could not deliver the final answer: %s", exc)

    async def error(self, message: str) -> None:
        await self._stop_flusher()
        text = f"⚠️ {fmt.neutralize(message)}"
        async with self._lock:
            self._closed = True
            try:
                if not await self._end_stream(text):
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
        if self._closed:
            return
        self._pending = line
        wait = self._interval - (time.monotonic() - self._last_sent)
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

    async def _stop_flusher(self) -> None:
        """Before the final answer: drop a waiting update (the answer replaces it), let a running one end."""
        self._pending = None
        if self._flusher and not self._flusher.done():
            if self._sleeping:
                self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def _flush(self) -> None:
        async with self._lock:
            line, self._pending = self._pending, None
            if line is None or self._closed:
                return
            self._last_sent = time.monotonic()
            try:
                if self._mode == "stream" and await self._stream_update(line):
                    return
                await self._edit_progress(line)
            except SendFailed as exc:
                log.warning("teams: progress update dropped: %s", exc)

    async def _stream_update(self, line: str) -> bool:
        """One informative update; False (and edit mode from now on) when Teams won't stream."""
        if self._stream_id and time.monotonic() - self._stream_started > STREAM_MAX_S:
            self._mode = "edit"
            return False
        self._sequence += 1
        activity = Activity(type=ActivityTypes.typing, text=fmt.truncate(line, fmt.INFORMATIVE_LIMIT),
                            entities=[StreamInfo("informative", self._sequence, self._stream_id)])
        try:
            stream_id = await self._sender.send(activity)
        except SendFailed as exc:
            if exc.status in (400, 403, 404):
                log.info("teams: streaming refused (%s); editing a progress message instead", exc)
                self._mode = "edit"
                return False
            raise
        if self._stream_id is None:
            if not stream_id:
                self._mode = "edit"
                return False
            self._stream_id = stream_id
            self._stream_started = time.monotonic()
        return True

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

    async def _end_stream(self, text: str, attachments: list[dict] | None = None) -> bool:
        """Send `text` as the stream's final message; False if there is no live stream or Teams refused."""
        if self._mode != "stream" or self._stream_id is None:
            return False
        activity = message_activity(text, attachments)
        activity.entities = [StreamInfo("final", None, self._stream_id)]
        try:
            await self._sender.send(activity)
            return True
        except SendFailed as exc:
            if exc.status in (400, 403, 404):
                log.info("teams: stream could not be finished (%s); sending a plain message", exc)
                return False
            raise

    # -- final answer -------------------------------------------------------------------------------------

    def _final_text(self, answer: FinalAnswer) -> str:
        parts = [fmt.neutralize(answer.text) or "(no answer)"]
        parts += [f"_{fmt.neutralize(n)}_" for n in answer.notices]
        if answer.trace_url:
            parts.append(f"Trace: {fmt.escape(answer.trace_url)}")
        return "\n\n".join(parts)

    def _summary(self, answer: FinalAnswer) -> str:
        """What the progress message becomes: the outcome, then the steps it showed along the way."""
        steps = f"{answer.steps} step{'s' if answer.steps != 1 else ''}"
        head = f"✅ {fmt.department_label(answer.department)} · done in {steps}, {answer.duration_s:.1f} s"
        return "\n\n".join([head, *self._lines[-8:]])

    async def _final_personal(self, body: str, answer: FinalAnswer) -> None:
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
        if not await self._end_stream(chunks[0]):
            await self._finish_progress(self._summary(answer))
            await self._sender.send(message_activity(chunks[0]))
        for chunk in chunks[1:]:
            await self._sender.send(message_activity(chunk))
        for pending in offers:
            card = consent_card(pending, f"{pending.name} from the {answer.department} agent")
            await self._sender.send(message_activity("", [card]))

    async def _final_shared(self, body: str, answer: FinalAnswer) -> None:
        inline = [f for f in answer.files if f.mimetype in INLINE_IMAGE_TYPES and f.size <= INLINE_IMAGE_MAX_BYTES]
        other = [f for f in answer.files if f not in inline]
        if other:
            names = ", ".join(f"{fmt.escape(f.name)} ({fmt.human_size(f.size)})" for f in other)
            body += (f"\n\n📎 I made {names}, but Teams doesn't let bots upload files into channels or group "
                     "chats. Send me the same request in a personal (1:1) chat and I'll offer the file(s) "
                     "for download there.")
        await self._finish_progress(self._summary(answer))
        for chunk in fmt.split_message(body):
            await self._sender.send(message_activity(chunk))
        for file in inline:
            await self._sender.send(message_activity("", [_inline_image(file)]))


def _inline_image(file: OutputFile) -> dict:
    data = base64.b64encode(file.path.read_bytes()).decode()
    return {"contentType": file.mimetype, "name": file.name, "contentUrl": f"data:{file.mimetype};base64,{data}"}
