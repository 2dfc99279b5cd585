"""The Teams connector fake (bots/emulator/teams_connector.py, the one the emulator uses) served for tests.

The connector at `service_url` enforces Teams' rules (streaming pacing and sequence, 1:1 only, informative
size, ids on create); this wrapper adds what tests need around it: the OneDrive-style upload session a
FileConsentCard accept points at, pre-authenticated download URLs like a file.download.info's, and
helpers to read what the bot sent.
"""
from __future__ import annotations

import contextlib
import itertools
import json
from typing import Any, Callable

from aiohttp import web

from bots.emulator.teams_connector import Call, TeamsConnector as Connector
from tests.support import eventually, serve

PREFIX = "/amer"  # Teams service URLs carry a region path (https://smba.trafficmanager.net/amer/)

__all__ = ["Call", "TeamsConnector"]


class TeamsConnector:
    def __init__(self) -> None:
        self.connector = Connector()
        self.uploads: dict[str, bytearray] = {}
        self.upload_ranges: dict[str, list[str]] = {}
        self.downloads: list[tuple[str, dict[str, str]]] = []
        self._files: dict[str, tuple[bytes, str]] = {}
        self._stack = contextlib.AsyncExitStack()
        self.base_url = ""

    # -- lifecycle --------------------------------------------------------------------------------------
    async def __aenter__(self) -> "TeamsConnector":
        app = web.Application(client_max_size=64 * 1024 * 1024)
        self.connector.mount(app, PREFIX)
        app.router.add_put("/upload/{name}", self._upload)
        app.router.add_get("/download/{name}", self._download)
        self.base_url = await self._stack.enter_async_context(serve(app))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    @property
    def service_url(self) -> str:
        return f"{self.base_url}{PREFIX}/"

    @property
    def calls(self) -> list[Call]:
        return self.connector.calls

    @property
    def refuse_streaming(self) -> bool:
        return self.connector.refuse_streaming

    @refuse_streaming.setter
    def refuse_streaming(self, value: bool) -> None:
        self.connector.refuse_streaming = value

    # -- test controls ----------------------------------------------------------------------------------
    def fail_next(self, status: int, count: int = 1, methods: tuple[str, ...] = ("POST", "PUT"),
                  code: str = "Throttled") -> None:
        self.connector.fail_next(status, count, methods, code)

    def press_stop(self, stream_id: str) -> None:
        self.connector.press_stop(stream_id)

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

    def refused(self) -> list[Call]:
        return [c for c in self.calls if c.status >= 400]

    def messages(self, conversation_id: str | None = None) -> list[Call]:
        return [c for c in self.sent(conversation_id, "POST") if c.activity_type == "message"]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
        return await eventually(predicate, timeout, what, self.describe)

    def describe(self) -> str:
        def show(c: Call) -> str:
            body = c.body or {}
            kinds = [a.get("contentType") for a in body.get("attachments") or ()]
            return (f"  {c.at:.2f} {c.method} {c.conversation_id} {c.activity_id} -> {c.status} {c.activity_type} "
                    f"{json.dumps(c.text[:300])} {c.streaminfo() or ''} {kinds or ''} {c.answer if c.status >= 400 else ''}")

        return "\n".join(show(c) for c in self.calls)

    # -- files ------------------------------------------------------------------------------------------
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
TEAM_GROUP = "5e1d0c8a-3b2f-4e6d-9a7c-00000000te4m"
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
                      "team": {"id": TEAM_ID, "name": "Contoso", "aadGroupId": TEAM_GROUP}},
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
