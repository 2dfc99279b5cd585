"""The Bot Framework connector as Teams runs it: the one fake behind the emulator and the tests.

An activity's serviceUrl points here, so botbuilder sends the bot's replies over the connector's REST API:
POST/PUT/DELETE `/v3/conversations/{id}/activities[/{replyToId}]`, each answered like Teams (201 with the
new id, 202 for stream updates). Teams' rules that a bot can break are enforced, so a regression fails:
- streaming only in personal (1:1) chats, one live stream per chat;
- a stream starts with a typing activity (`streaminfo` informative/streaming, streamSequence 1) that gets
  the streamId back; updates carry it with a strictly increasing streamSequence; the final is a message
  with streamType final and no sequence;
- at most one streaming request per second per stream (the final included): 403 ContentStreamNotAllowed;
- informative updates at most 1,000 characters; streams end after 2 minutes; after the person pressed Stop
  every request on that stream gets 403 ContentStreamNotAllowed.
Where messages are kept is the `Conversations` given: the emulator's page store, or a plain record of
what was sent (tests). Every call is logged in `calls` with the status it got.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote

from aiohttp import web

INFORMATIVE_MAX_CHARS = 1000
STREAM_INTERVAL_S = 1.0
STREAM_MAX_S = 120.0


class ConnectorError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> web.Response:
        return web.json_response({"error": {"code": self.code, "message": self.message}}, status=self.status)


class Conversations(Protocol):
    """Where the connector puts what the bot sends; raise ConnectorError for what the place refuses."""

    def is_personal(self, conversation_id: str) -> bool: ...
    def post(self, conversation_id: str, activity: dict) -> str: ...
    def typing(self, conversation_id: str) -> None: ...
    def stream_started(self, conversation_id: str, activity: dict, kind: str, sequence: int) -> str: ...
    def stream_updated(self, conversation_id: str, stream_id: str, activity: dict, kind: str, sequence: int) -> None: ...
    def stream_ended(self, conversation_id: str, stream_id: str, activity: dict) -> None: ...
    def update(self, conversation_id: str, activity_id: str, activity: dict) -> None: ...
    def delete(self, conversation_id: str, activity_id: str) -> None: ...


class SentActivities:
    """Conversations for tests: any id is a conversation, `a:...` ids are personal chats, like Teams."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)

    def is_personal(self, conversation_id: str) -> bool:
        return conversation_id.startswith("a:")

    def post(self, conversation_id: str, activity: dict) -> str:
        return f"act-{next(self._ids)}"

    def typing(self, conversation_id: str) -> None:
        return None

    def stream_started(self, conversation_id: str, activity: dict, kind: str, sequence: int) -> str:
        return f"stream-{next(self._ids)}"

    def stream_updated(self, conversation_id: str, stream_id: str, activity: dict, kind: str, sequence: int) -> None:
        return None

    def stream_ended(self, conversation_id: str, stream_id: str, activity: dict) -> None:
        return None

    def update(self, conversation_id: str, activity_id: str, activity: dict) -> None:
        return None

    def delete(self, conversation_id: str, activity_id: str) -> None:
        return None


@dataclass
class Call:
    method: str
    conversation_id: str
    activity_id: str | None  # the id in the URL: the activity replied to, or the one updated
    body: dict | None
    headers: dict[str, str]
    status: int = 0
    at: float = 0.0
    answer: dict = field(default_factory=dict)

    @property
    def activity_type(self) -> str | None:
        return (self.body or {}).get("type")

    @property
    def text(self) -> str:
        return (self.body or {}).get("text") or ""

    def streaminfo(self) -> dict | None:
        return streaminfo(self.body or {})

    def entity(self, type_: str) -> dict | None:
        return next((e for e in (self.body or {}).get("entities") or () if e.get("type") == type_), None)


@dataclass
class _Stream:
    conversation_id: str
    sequence: int
    started: float
    last: float
    done: bool = False
    stopped: bool = False


@dataclass
class _Fault:
    status: int
    count: int
    methods: frozenset[str]
    body: dict


def streaminfo(activity: dict) -> dict | None:
    return next((e for e in activity.get("entities") or () if isinstance(e, dict) and e.get("type") == "streaminfo"),
                None)


class TeamsConnector:
    def __init__(self, conversations: Conversations | None = None, *, interval_s: float = STREAM_INTERVAL_S,
                 max_stream_s: float = STREAM_MAX_S) -> None:
        self.conversations = conversations or SentActivities()
        self.interval_s = interval_s
        self.max_stream_s = max_stream_s
        self.calls: list[Call] = []
        self.streams: dict[str, _Stream] = {}
        #: Answer every stream start with 403 ContentStreamNotAllowed (an older client, a tenant policy).
        self.refuse_streaming = False
        self._faults: list[_Fault] = []

    def mount(self, app: web.Application, base: str) -> None:
        """Serve the connector's activity routes under `base` (the serviceUrl's path, no trailing slash)."""
        app.router.add_post(base + "/v3/conversations/{cid}/activities", self._activities)
        app.router.add_route("*", base + "/v3/conversations/{cid}/activities/{aid}", self._activities)

    # -- controls -------------------------------------------------------------------------------------

    def press_stop(self, stream_id: str) -> None:
        """The person pressed Stop on a stream: Teams refuses every later request on it."""
        self.streams[stream_id].stopped = True

    def live_stream(self, conversation_id: str) -> str | None:
        return next((sid for sid, s in self.streams.items()
                     if s.conversation_id == conversation_id and not s.done and not s.stopped), None)

    def fail_next(self, status: int, count: int = 1, methods: tuple[str, ...] = ("POST", "PUT"),
                  code: str = "Throttled") -> None:
        self._faults.append(_Fault(status, count, frozenset(methods), {"error": {"code": code, "message": code}}))

    # -- HTTP -----------------------------------------------------------------------------------------

    async def _activities(self, request: web.Request) -> web.Response:
        cid = unquote(request.match_info["cid"])
        aid = request.match_info.get("aid")
        try:
            body = await request.json() if request.can_read_body else None
        except ValueError:
            body = None
        call = Call(request.method, cid, aid, body, dict(request.headers), at=time.monotonic())
        self.calls.append(call)
        try:
            status, payload = self._answer(call)
        except ConnectorError as exc:
            status, payload = exc.status, {"error": {"code": exc.code, "message": exc.message}}
        call.status, call.answer = status, payload
        return web.json_response(payload, status=status)

    def _answer(self, call: Call) -> tuple[int, dict]:
        for fault in self._faults:
            if call.method in fault.methods and fault.count > 0:
                fault.count -= 1
                return fault.status, fault.body
        if call.method == "DELETE":
            self.conversations.delete(call.conversation_id, call.activity_id or "")
            return 200, {}
        if not isinstance(call.body, dict) or not call.body.get("type"):
            raise ConnectorError(400, "BadArgument", "Expected an activity")
        if call.method == "PUT":
            self.conversations.update(call.conversation_id, call.activity_id or "", call.body)
            return 200, {"id": call.activity_id}
        if call.method != "POST":
            raise ConnectorError(405, "MethodNotAllowed", "Use POST, PUT or DELETE")
        info = streaminfo(call.body)
        if info is not None:
            return self._stream(call, info)
        if call.activity_type == "typing":
            self.conversations.typing(call.conversation_id)
            return 201, {"id": ""}
        return 201, {"id": self.conversations.post(call.conversation_id, call.body)}

    def _stream(self, call: Call, info: dict) -> tuple[int, dict]:
        cid = call.conversation_id
        if self.refuse_streaming or not self.conversations.is_personal(cid):
            raise ConnectorError(403, "ContentStreamNotAllowed", "Streaming is only supported in personal (1:1) chats.")
        kind = str(info.get("streamType") or "")
        stream_id = info.get("streamId")
        if call.activity_type == "typing":
            if kind not in ("informative", "streaming"):
                raise ConnectorError(400, "BadSyntax", "Only start streaming and continue streaming types are "
                                     "allowed as a typing activity")
            sequence = info.get("streamSequence")
            if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 1:
                raise ConnectorError(400, "BadSyntax", "streamSequence must be a positive integer")
            if kind == "informative" and len(call.text) > INFORMATIVE_MAX_CHARS:
                raise ConnectorError(403, "ContentStreamNotAllowed",
                                     f"Informative text is limited to {INFORMATIVE_MAX_CHARS} characters.")
            if not stream_id:
                if sequence != 1:
                    raise ConnectorError(400, "BadSyntax", "A stream starts at streamSequence 1")
                if self.live_stream(cid):
                    raise ConnectorError(403, "ContentStreamNotAllowed", "Only one stream per chat at a time.")
                new_id = self.conversations.stream_started(cid, call.body or {}, kind, sequence)
                self.streams[new_id] = _Stream(cid, sequence, call.at, call.at)
                return 201, {"id": new_id}
            stream = self._live(stream_id, cid, call.at, sequence)
            stream.sequence, stream.last = sequence, call.at
            self.conversations.stream_updated(cid, stream_id, call.body or {}, kind, sequence)
            return 202, {"id": stream_id}
        if call.activity_type == "message":
            if kind != "final" or "streamSequence" in info:
                raise ConnectorError(400, "BadSyntax", "A message ending a stream has streamType final and no "
                                     "streamSequence")
            stream = self._live(str(stream_id or ""), cid, call.at)
            stream.done, stream.last = True, call.at
            self.conversations.stream_ended(cid, str(stream_id), call.body or {})
            return 201, {"id": stream_id}
        raise ConnectorError(400, "BadSyntax", "A streaminfo entity belongs on a typing or message activity")

    def _live(self, stream_id: str, conversation_id: str, now: float, sequence: int | None = None) -> _Stream:
        stream = self.streams.get(stream_id)
        if stream is None or stream.conversation_id != conversation_id:
            raise ConnectorError(404, "NotFound", "Unknown streamId")
        if stream.stopped:
            raise ConnectorError(403, "ContentStreamNotAllowed", "Content stream was cancelled by user.")
        if stream.done:
            raise ConnectorError(403, "ContentStreamNotAllowed", "The stream has already completed.")
        if now - stream.started > self.max_stream_s:
            stream.done = True
            raise ConnectorError(403, "ContentStreamNotAllowed", "Content stream timed out (2 minutes).")
        if sequence is not None and sequence <= stream.sequence:
            raise ConnectorError(400, "BadSyntax", "streamSequence must increase with every update")
        if now - stream.last < self.interval_s:
            raise ConnectorError(403, "ContentStreamNotAllowed", "Streaming requests are limited to one per "
                                 "second per stream.")
        return stream
