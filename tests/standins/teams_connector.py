"""A local stand-in for the Bot Framework connector (what an activity's serviceUrl points at), over HTTP.

It speaks the connector's REST shapes the bot uses: POST/PUT/DELETE under /v3/conversations/{id}/activities
(answering 201 {"id": ...}), the Teams streaming protocol (a typing activity with a `streaminfo` entity
starts a stream and gets its streamId; later informative updates and the final message must carry it;
streaming only in 1:1 chats, whose ids start with "a:", like Teams), plus the OneDrive-style upload session
a FileConsentCard accept points at, and pre-authenticated download URLs like a file.download.info's.
Faults (429/502/...) can be injected for the next N calls.
"""
from __future__ import annotations

import contextlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web

from tests.support import eventually, serve

PREFIX = "/amer"  # Teams service URLs carry a region path (https://smba.trafficmanager.net/amer/)


@dataclass
class Call:
    method: str
    conversation_id: str
    activity_id: str | None
    body: dict | None
    headers: dict[str, str]
    status: int = 0
    reply: dict | None = None  # what the connector answered (e.g. {"id": "act-3"})

    @property
    def activity_type(self) -> str | None:
        return (self.body or {}).get("type")

    @property
    def text(self) -> str:
        return (self.body or {}).get("text") or ""

    def streaminfo(self) -> dict | None:
        for entity in (self.body or {}).get("entities") or ():
            if entity.get("type") == "streaminfo":
                return entity
        return None


@dataclass
class Fault:
    status: int
    count: int
    methods: frozenset[str]
    body: dict = field(default_factory=dict)


class TeamsConnector:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.uploads: dict[str, bytearray] = {}
        self.upload_ranges: dict[str, list[str]] = {}
        self.downloads: list[tuple[str, dict[str, str]]] = []
        self._files: dict[str, tuple[bytes, str]] = {}
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)
        self._streams: dict[str, dict[str, Any]] = {}
        #: Answer every stream start with 403 ContentStreamNotAllowed (an older client, a policy).
        self.refuse_streaming = False
        self._stack = contextlib.AsyncExitStack()
        self.base_url = ""

    # -- lifecycle --------------------------------------------------------------------------------------
    async def __aenter__(self) -> "TeamsConnector":
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", PREFIX + "/v3/conversations/{cid}/activities", self._activities)
        app.router.add_route("*", PREFIX + "/v3/conversations/{cid}/activities/{aid}", self._activities)
        app.router.add_put("/upload/{name}", self._upload)
        app.router.add_get("/download/{name}", self._download)
        self.base_url = await self._stack.enter_async_context(serve(app))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    @property
    def service_url(self) -> str:
        return f"{self.base_url}{PREFIX}/"

    # -- test controls ----------------------------------------------------------------------------------
    def fail_next(self, status: int, count: int = 1, methods: tuple[str, ...] = ("POST", "PUT"),
                  code: str = "Throttled") -> None:
        self._faults.append(Fault(status, count, frozenset(methods), {"error": {"code": code, "message": code}}))

    def serve_file(self, name: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """A pre-authenticated download URL, like file.download.info's downloadUrl."""
        self._files[name] = (data, content_type)
        return f"{self.base_url}/download/{name}"

    def upload_url(self, name: str) -> str:
        return f"{self.base_url}/upload/{name}"

    def sent(self, conversation_id: str | None = None, method: str | None = None) -> list[Call]:
        """Calls the connector accepted, in order."""
        return [c for c in self.calls if c.status < 300
                and (conversation_id is None or c.conversation_id == conversation_id)
                and (method is None or c.method == method)]

    def messages(self, conversation_id: str | None = None) -> list[Call]:
        return [c for c in self.sent(conversation_id, "POST") if c.activity_type == "message"]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
        return await eventually(predicate, timeout, what, self.describe)

    def describe(self) -> str:
        def show(c: Call) -> str:
            body = c.body or {}
            kinds = [a.get("contentType") for a in body.get("attachments") or ()]
            return (f"  {c.method} {c.conversation_id} {c.activity_id} -> {c.status} {c.activity_type} "
                    f"{json.dumps(c.text[:300])} {c.streaminfo() or ''} {kinds or ''}")

        return "\n".join(show(c) for c in self.calls)

    # -- handlers ---------------------------------------------------------------------------------------
    async def _activities(self, request: web.Request) -> web.Response:
        cid = request.match_info["cid"]
        aid = request.match_info.get("aid")
        body = await request.json() if request.can_read_body else None
        call = Call(request.method, cid, aid, body, dict(request.headers))
        self.calls.append(call)
        status, payload = self._answer(call)
        call.status, call.reply = status, payload
        return web.json_response(payload, status=status)

    def _answer(self, call: Call) -> tuple[int, dict]:
        for fault in self._faults:
            if call.method in fault.methods and fault.count > 0:
                fault.count -= 1
                return fault.status, fault.body
        if call.method == "DELETE":
            return 200, {}
        if call.method == "PUT":
            return 200, {"id": call.activity_id}
        if call.method != "POST" or not isinstance(call.body, dict) or not call.body.get("type"):
            return 400, {"error": {"code": "BadArgument", "message": "expected an activity"}}
        info = call.streaminfo()
        if info is not None:
            return self._stream(call, info)
        return 201, {"id": f"act-{next(self._ids)}"}

    def _stream(self, call: Call, info: dict) -> tuple[int, dict]:
        if self.refuse_streaming or not call.conversation_id.startswith("a:"):
            return 403, {"error": {"code": "ContentStreamNotAllowed", "message": "streaming is 1:1 only"}}
        stream_id = info.get("streamId")
        if call.activity_type == "typing":
            if info.get("streamType") not in ("informative", "streaming"):
                return 400, {"error": {"code": "BadSyntax", "message": "Only start streaming and continue "
                                       "streaming types are allowed as a typing activity"}}
            if stream_id is None:
                if info.get("streamSequence") != 1:
                    return 400, {"error": {"code": "BadSyntax", "message": "a stream starts at sequence 1"}}
                stream_id = f"stream-{next(self._ids)}"
                self._streams[stream_id] = {"seq": 1, "done": False}
                return 201, {"id": stream_id}
            stream = self._streams.get(stream_id)
            if stream is None or stream["done"] or info.get("streamSequence", 0) <= stream["seq"]:
                return 403, {"error": {"code": "ContentStreamNotAllowed", "message": "bad stream state"}}
            stream["seq"] = info["streamSequence"]
            return 202, {"id": stream_id}
        if call.activity_type == "message" and info.get("streamType") == "final":
            stream = self._streams.get(stream_id or "")
            if stream is None or stream["done"] or "streamSequence" in info:
                return 403, {"error": {"code": "ContentStreamNotAllowed", "message": "no such stream"}}
            stream["done"] = True
            return 201, {"id": stream_id}
        return 400, {"error": {"code": "BadSyntax", "message": "unexpected streaminfo"}}

    async def _upload(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if "Authorization" in request.headers:
            return web.json_response({"error": "upload sessions are pre-authenticated"}, status=400)
        data = await request.read()
        content_range = request.headers.get("Content-Range", "")
        self.upload_ranges.setdefault(name, []).append(content_range)
        buffer = self.uploads.setdefault(name, bytearray())
        try:
            span, total = content_range.removeprefix("bytes ").split("/")
            start, end = (int(x) for x in span.split("-"))
        except ValueError:
            return web.json_response({"error": "bad Content-Range"}, status=400)
        if start != len(buffer) or end - start + 1 != len(data):
            return web.json_response({"error": "range does not match"}, status=416)
        buffer.extend(data)
        if len(buffer) < int(total):
            return web.json_response({"nextExpectedRanges": [f"{len(buffer)}-"]}, status=202)
        return web.json_response({"id": f"item-{name}", "name": name, "size": len(buffer)}, status=201)

    async def _download(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.downloads.append((name, dict(request.headers)))
        if name not in self._files:
            return web.json_response({"error": "not found"}, status=404)
        data, ctype = self._files[name]
        return web.Response(body=data, content_type=ctype)


# -- Bot Framework activities as Teams sends them ---------------------------------------------------------

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
BOT_ID = "28:1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d"
BOT_NAME = "HR Bot"
ALICE = {"id": "29:1aliceXYZ", "name": "Alice Jones", "aadObjectId": "6a1e0b55-0000-4000-8000-00000000a11c"}
TEAM_ID = "19:teamgeneral@thread.tacv2"
CHANNEL_ID = "19:c0ffee42@thread.tacv2"
_activity_ids = itertools.count(1700000000001)


def activity(service_url: str, text: str, *, conversation: dict, channel_data: dict | None = None,
             entities: list | None = None, attachments: list | None = None, **extra: Any) -> dict:
    body = {
        "type": "message",
        "id": str(next(_activity_ids)),
        "timestamp": "2026-11-26T10:00:00.000Z",
        "localTimestamp": "2026-11-26T11:00:00.000+01:00",
        "serviceUrl": service_url,
        "channelId": "msteams",
        "from": dict(ALICE),
        "conversation": {"tenantId": TENANT, **conversation},
        "recipient": {"id": BOT_ID, "name": BOT_NAME},
        "textFormat": "plain",
        "locale": "en-US",
        "text": text,
        "entities": [{"type": "clientInfo", "locale": "en-US", "country": "US", "platform": "Web",
                      "timezone": "Europe/Berlin"}, *(entities or [])],
        "channelData": {"tenant": {"id": TENANT}, **(channel_data or {})},
        "attachments": attachments or [],
    }
    body.update(extra)
    return body


def personal_message(service_url: str, text: str, **kw: Any) -> dict:
    return activity(service_url, text, conversation={"conversationType": "personal",
                                                     "id": "a:1personalChatWithAliceAbc"}, **kw)


def mention_entity(name: str = BOT_NAME, id: str = BOT_ID) -> dict:
    return {"type": "mention", "text": f"<at>{name}</at>", "mentioned": {"id": id, "name": name}}


def channel_mention(service_url: str, text: str, root_id: str = "1700000000000", **kw: Any) -> dict:
    """A message in a channel thread that @mentions the bot (`text` should contain `<at>HR Bot</at>`)."""
    return activity(
        service_url, text,
        conversation={"isGroup": True, "conversationType": "channel", "id": f"{CHANNEL_ID};messageid={root_id}"},
        channel_data={"teamsChannelId": CHANNEL_ID, "teamsTeamId": TEAM_ID,
                      "channel": {"id": CHANNEL_ID, "name": "People questions"},
                      "team": {"id": TEAM_ID, "name": "Contoso"}},
        entities=[mention_entity(), *kw.pop("entities", [])], **kw)


def group_message(service_url: str, text: str, **kw: Any) -> dict:
    return activity(service_url, text,
                    conversation={"isGroup": True, "conversationType": "groupChat",
                                  "id": "19:meeting_Nzk5MzIxZjAtNTg4Ny00@thread.v2"},
                    entities=[mention_entity()], **kw)


def file_consent_invoke(service_url: str, conversation_id: str, reply_to: str, context: dict,
                        upload_info: dict | None, action: str = "accept") -> dict:
    body = activity(service_url, "", conversation={"conversationType": "personal", "id": conversation_id},
                    type="invoke", name="fileConsent/invoke", replyToId=reply_to,
                    value={"type": "fileUpload", "action": action, "context": context,
                           **({"uploadInfo": upload_info} if upload_info else {})})
    body.pop("text")
    return body


def card_action_invoke(service_url: str, conversation: dict, reply_to: str, data: dict,
                       sender: dict | None = None, verb: str = "agentdesk_approval") -> dict:
    """The invoke Teams sends when a person presses an Action.Execute button on a bot's Adaptive Card."""
    body = activity(service_url, "", conversation=conversation, type="invoke", name="adaptiveCard/action",
                    replyToId=reply_to, value={"action": {"type": "Action.Execute", "verb": verb, "data": data},
                                               "trigger": "manual"})
    body.pop("text")
    if sender is not None:
        body["from"] = sender
    return body


def adaptive_cards(call: Call) -> list[dict]:
    return [a.get("content") or {} for a in (call.body or {}).get("attachments") or ()
            if a.get("contentType") == "application/vnd.microsoft.card.adaptive"]
