"""The one Slack fake: a Slack Web API, Socket Mode and signed Events API requests, for the emulator and tests.

The Web API answers what slack_sdk sends (form or JSON bodies, `Authorization: Bearer xoxb-...`) in
Slack's response shapes and error codes (`invalid_auth`, `channel_not_found`, `missing_recipient_team_id`,
`message_not_in_streaming_state`, `stopped_by_user`, `unknown_method`). Streams keep their task cards
(`task_update` chunks merged by id), plan and Markdown; `stopStream` blocks (feedback buttons) stay on the
message. Events reach the bot either as Events API POSTs to its `/slack/events`, signed exactly as Slack
signs them (v0 HMAC-SHA256 over `v0:{timestamp}:{body}`), or over a Socket Mode WebSocket
(`apps.connections.open` -> `hello` -> envelopes the bot acks by `envelope_id`). Presses on buttons go
back as signed `block_actions` payloads. Every call is recorded (`calls`), and a test can make the next
calls of a method fail (`fail`) or refuse streaming/status the way some workspaces do.

`agentdesk dev` mounts it on the bot's own app (fixed channels of the emulated workspace); tests run it
on its own port with `open_channels=True` (any channel id exists), through tests/standins/slack_api.py.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from bots.emulator import store as s
from bots.emulator.store import Store

log = logging.getLogger("agentdesk.emulator.slack")

MENTION_RE = re.compile(r"@agentdesk\b", re.I)
LOGIN_PAGE = "<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in to Slack</body></html>"
SCOPES = ("app_mentions:read,assistant:write,chat:write,channels:history,channels:read,groups:history,groups:read,"
          "im:history,mpim:history,files:read,files:write,usergroups:read")
ACK_TIMEOUT_S = 3.0  # Slack redelivers an envelope that was not acked in time


def sign(secret: str, timestamp: str, body: str) -> str:
    """Slack's request signature (https://api.slack.com/authentication/verifying-requests-from-slack)."""
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return f"v0={digest}"


def to_slack_text(text: str) -> tuple[str, bool]:
    """What a person typed as Slack sends it: &, <, > escaped and `@agentdesk` as a user mention."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    mentioned = bool(MENTION_RE.search(escaped))
    return MENTION_RE.sub(f"<@{s.SLACK_BOT_USER}>", escaped), mentioned


def _json_value(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return None
    return raw


def _blocks_text(blocks: Any) -> str:
    """A readable rendering of Block Kit for messages the bot sends with blocks."""
    lines = []
    for block in _json_value(blocks) or []:
        if not isinstance(block, dict):
            continue
        text = block.get("text")
        if isinstance(text, dict):
            lines.append(text.get("text") or "")
        elif isinstance(text, str):
            lines.append(text)
        for element in block.get("elements") or []:
            if isinstance(element, dict) and isinstance(element.get("text"), str):
                lines.append(element["text"])
        for item in block.get("fields") or []:
            if isinstance(item, dict):
                lines.append(item.get("text") or "")
    return "\n".join(line for line in lines if line)


def controls_of(blocks: Any) -> list[dict[str, Any]]:
    """The buttons a message shows (actions and context_actions blocks), flattened for the page."""
    out = []
    for block in _json_value(blocks) or []:
        if not isinstance(block, dict) or block.get("type") not in ("actions", "context_actions"):
            continue
        for element in block.get("elements") or []:
            if not isinstance(element, dict):
                continue
            if element.get("type") == "feedback_buttons":
                for kind in ("positive", "negative"):
                    button = element.get(f"{kind}_button") or {}
                    out.append({"kind": "feedback", "action_id": element.get("action_id"), "value": button.get("value"),
                                "text": (button.get("text") or {}).get("text") or kind, "feedback": kind,
                                "block_id": block.get("block_id")})
            elif element.get("type") in ("button", "icon_button"):
                out.append({"kind": "button", "action_id": element.get("action_id"), "value": element.get("value"),
                            "text": (element.get("text") or {}).get("text") or "", "style": element.get("style"),
                            "block_id": block.get("block_id")})
    return out


def _markdown_of(blocks: Any) -> str:
    return "\n\n".join(str(b.get("text") or "") for b in _json_value(blocks) or []
                       if isinstance(b, dict) and b.get("type") == "markdown")


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    auth: str | None
    content_type: str
    at: float = field(default_factory=time.monotonic)
    wall: float = field(default_factory=time.time)  # comparable with smolagents' step timings (benchmarks)


@dataclass
class _Fault:
    status: int
    count: int
    retry_after: int | None
    error: str | None = None


@dataclass
class Envelope:
    """One Socket Mode delivery and whether the bot acked it."""

    envelope_id: str
    payload: dict[str, Any]
    kind: str = "events_api"
    retry_attempt: int = 0
    acked: asyncio.Event = field(default_factory=asyncio.Event)


class SlackSide:
    def __init__(self, store: Store, *, bot_token: str, signing_secret: str, self_url: str,
                 app_token: str | None = None, events_url: str | None = None, open_channels: bool = False) -> None:
        self.store = store
        self.bot_token = bot_token
        self.signing_secret = signing_secret
        self.app_token = app_token
        self.self_url = self_url
        self._events_url = events_url
        self.open_channels = open_channels
        self.session: aiohttp.ClientSession | None = None
        self._conversation_by_id = {cid: key for key, cid in s.SLACK_CHANNEL_IDS.items()}
        # what tests (and the page) look at or set
        self.calls: list[Call] = []
        self.stream_refusal: str | None = None  # e.g. "not_allowed": chat.startStream fails like that
        self.status_refusal: str | None = None  # e.g. "invalid_thread_ts" for setStatus in channels
        self.usergroups: dict[str, list[str]] = {}  # usergroup id -> member user ids
        self.uploads: dict[str, dict] = {}  # file id -> {filename, length, data, auth}
        self.channel_names: dict[str, str] = {}
        self.private_members: dict[str, list[str]] = {}  # private channel id -> members
        self.not_member: set[str] = set()  # channels the bot is not in
        self.login_only: set[str] = set()  # file ids served as Slack's login page (files:read missing)
        self.suggested: list[dict] = []  # setSuggestedPrompts calls
        self.views: list[dict] = []  # views.open calls
        self.ephemeral: list[dict] = []  # chat.postEphemeral calls
        self._faults: dict[str, list[_Fault]] = {}
        # Socket Mode
        self.sockets: list[web.WebSocketResponse] = []
        self.envelopes: list[Envelope] = []
        self._tickets: set[str] = set()
        self.connections_opened = 0

    @property
    def api_base(self) -> str:
        return f"{self.self_url}/_emulator/slack/api/"

    @property
    def events_url(self) -> str:
        return self._events_url or f"{self.self_url}/slack/events"

    @events_url.setter
    def events_url(self, url: str) -> None:
        self._events_url = url

    def mount(self, app: web.Application) -> None:
        app.router.add_route("POST", "/_emulator/slack/api/{method}", self.api)
        app.router.add_route("GET", "/_emulator/slack/api/{method}", self.api)
        app.router.add_post("/_emulator/slack/upload/{file_id}", self.upload)
        app.router.add_get("/_emulator/slack/files/{file_id}/{name}", self.download)
        app.router.add_get("/_emulator/slack/socket", self.socket)

    # test controls ---------------------------------------------------------------------------------

    def fail(self, method: str, status: int, count: int = 1, retry_after: int | None = None,
             error: str | None = None) -> None:
        """Answer the next `count` calls of `method` with `status` (429 carries Retry-After; 200 + `error`)."""
        self._faults.setdefault(method, []).append(_Fault(status, count, retry_after, error))

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    # conversations ---------------------------------------------------------------------------------

    def _conversation(self, channel: Any) -> str | None:
        channel = str(channel or "")
        known = self._conversation_by_id.get(channel)
        if known is None and self.open_channels and re.fullmatch(r"[CDG][A-Z0-9]+", channel):
            return channel
        return known

    def channel_id(self, conversation: str) -> str:
        return s.SLACK_CHANNEL_IDS.get(conversation, conversation)

    def _is_dm(self, conversation: str) -> bool:
        return conversation == s.DM or self.channel_id(conversation).startswith("D")

    def _thread(self, conversation: str, thread_ts: Any) -> dict[str, Any] | None:
        return self.store.find("slack", conversation, str(thread_ts)) if thread_ts else None

    # the page's side: a person posts ---------------------------------------------------------------

    async def post_from_person(self, conversation: str, text: str, thread: str | None,
                               files: list[s.StoredFile]) -> dict[str, Any]:
        """Record the person's message and deliver it to the bot as Slack would."""
        channel = self.channel_id(conversation)
        slack_text, mentioned = to_slack_text(text)
        ts = self.store.slack_ts()
        root = self.store.messages.get(thread) if thread else None
        thread_ts = root["platform_id"] if root else None
        message = self.store.add(flavour="slack", conversation=conversation, author="user", text=slack_text,
                                 platform_id=ts, thread=root["id"] if root else None, thread_ts=thread_ts,
                                 files=[f.public() for f in files])
        event: dict[str, Any] = {
            "user": s.SLACK_HUMAN, "text": slack_text, "ts": ts, "channel": channel, "event_ts": ts,
            "team": s.SLACK_TEAM, "client_msg_id": secrets.token_hex(16),
            "blocks": [{"type": "rich_text", "block_id": secrets.token_hex(3),
                        "elements": [{"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}]}],
        }
        if thread_ts:
            event["thread_ts"] = thread_ts
            event["parent_user_id"] = root.get("slack_user") or s.SLACK_HUMAN
        if files:
            event["files"] = [self._file_object(f) for f in files]
            event["upload"] = True
        is_dm = self._is_dm(conversation)
        deliveries = []
        if mentioned and not is_dm:
            deliveries.append({"type": "app_mention", **event})
        message_event = {"type": "message", **event, "channel_type": "im" if is_dm else "channel"}
        if files:
            message_event["subtype"] = "file_share"
        deliveries.append(message_event)
        for delivered in deliveries:
            await self.deliver(delivered, conversation, message["id"] if not root else root["id"])
        return message

    def _file_object(self, stored: s.StoredFile) -> dict[str, Any]:
        ext = stored.name.rpartition(".")[2].lower() if "." in stored.name else ""
        url = f"{self.self_url}/_emulator/slack/files/{stored.id}/{stored.name}"
        return {
            "id": stored.id, "created": int(time.time()), "timestamp": int(time.time()), "name": stored.name,
            "title": stored.name, "mimetype": stored.mimetype, "filetype": ext, "pretty_type": ext.upper(),
            "user": s.SLACK_HUMAN, "user_team": s.SLACK_TEAM, "editable": False, "size": stored.size,
            "mode": "hosted", "is_external": False, "external_type": "", "is_public": True,
            "url_private": url, "url_private_download": url + "?download=1",
            "permalink": f"{self.self_url}/#file-{stored.id}",
        }

    def event_payload(self, event: dict[str, Any], *, team_id: str = s.SLACK_TEAM,
                      event_id: str | None = None) -> dict[str, Any]:
        """An Events API envelope as Slack posts it."""
        return {
            "token": "emulator-verification-token-unused", "team_id": team_id, "context_team_id": team_id,
            "api_app_id": s.SLACK_APP, "event": event, "type": "event_callback",
            "event_id": event_id or "Ev" + secrets.token_hex(8).upper(), "event_time": int(time.time()),
            "authorizations": [{"enterprise_id": None, "team_id": team_id, "user_id": s.SLACK_BOT_USER,
                                "is_bot": True, "is_enterprise_install": False}],
            "is_ext_shared_channel": False, "event_context": "4-" + secrets.token_hex(12),
        }

    async def deliver(self, event: dict[str, Any], conversation: str, thread: str | None) -> None:
        """One event to the bot (over Socket Mode when it is connected); a refusal shows up as a notice."""
        payload = self.event_payload(event)
        if self.sockets:
            if not await self.send_envelope(payload):
                self.store.notice("slack", conversation, thread, f"The bot did not ack the {event['type']} event")
            return
        try:
            status, answer = await self.post_signed(json.dumps(payload, separators=(",", ":")), "application/json")
            if status != 200:
                self.store.notice("slack", conversation, thread,
                                  f"The bot refused the {event['type']} event: HTTP {status} {answer[:300]}")
        except aiohttp.ClientError as exc:
            self.store.notice("slack", conversation, thread, f"Could not reach the bot's /slack/events: {exc}")

    async def post_signed(self, body: str, content_type: str, headers: dict[str, str] | None = None,
                          timestamp: int | None = None) -> tuple[int, str]:
        """POST a body to the bot's /slack/events, signed with the signing secret."""
        ts = str(int(time.time()) if timestamp is None else timestamp)
        sent = {"Content-Type": content_type, "X-Slack-Request-Timestamp": ts,
                "X-Slack-Signature": sign(self.signing_secret, ts, body),
                "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)", **(headers or {})}
        assert self.session is not None, "SlackSide.session is set when the app starts"
        async with self.session.post(self.events_url, data=body.encode(), headers=sent) as resp:
            return resp.status, await resp.text()

    # presses: buttons, feedback, native stop, the messages tab -------------------------------------

    async def press(self, message: dict[str, Any], action_id: str, value: str | None, *,
                    user: str = s.SLACK_HUMAN, kind: str = "button") -> tuple[int, str]:
        """A person presses a control on a bot message: a signed block_actions payload to the bot."""
        conversation = message["conversation"]
        action = {"action_id": action_id, "block_id": "b" + secrets.token_hex(3), "type": kind,
                  "action_ts": f"{time.time():.6f}"}
        if value is not None:
            action["value"] = value
        payload = {
            "type": "block_actions", "user": {"id": user, "username": "alex", "team_id": s.SLACK_TEAM},
            "api_app_id": s.SLACK_APP, "token": "emulator-verification-token-unused",
            "container": {"type": "message", "message_ts": message["platform_id"], "channel_id": self.channel_id(conversation),
                          "is_ephemeral": False, **({"thread_ts": message["thread_ts"]} if message.get("thread_ts") else {})},
            "trigger_id": f"{int(time.time())}.{secrets.randbelow(10**9)}.{secrets.token_hex(16)}",
            "team": {"id": s.SLACK_TEAM, "domain": "emulator"}, "channel": {"id": self.channel_id(conversation)},
            "message": {"type": "message", "ts": message["platform_id"], "text": message["text"],
                        **({"thread_ts": message["thread_ts"]} if message.get("thread_ts") else {})},
            "response_url": f"{self.self_url}/_emulator/slack/response", "actions": [action],
        }
        if kind == "feedback_buttons":
            picked = "positive" if str(value).startswith("positive") else "negative"
            self.store.update(message, feedback=picked)
        return await self._interactive(payload)

    async def submit_view(self, view: dict[str, Any], values: dict[str, dict[str, str]], *,
                          user: str = s.SLACK_HUMAN) -> tuple[int, str]:
        """A person submits a modal the bot opened: view_submission with the typed values."""
        state = {block: {action: {"type": "plain_text_input", "value": text} for action, text in fields.items()}
                 for block, fields in values.items()}
        payload = {"type": "view_submission", "team": {"id": s.SLACK_TEAM}, "user": {"id": user},
                   "api_app_id": s.SLACK_APP, "trigger_id": secrets.token_hex(8),
                   "view": {**view, "id": "V" + secrets.token_hex(5).upper(), "state": {"values": state}}}
        return await self._interactive(payload)

    async def _interactive(self, payload: dict) -> tuple[int, str]:
        if self.sockets:
            return (200, "") if await self.send_envelope(payload, kind="interactive") else (0, "no ack")
        from urllib.parse import urlencode

        return await self.post_signed(urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded")

    def request_native_stop(self, message: dict[str, Any]) -> None:
        """The stop control on a streaming message: the bot's next stream call hears `stopped_by_user`."""
        self.store.update(message, stop_requested=True)

    async def open_messages_tab(self, conversation: str = s.DM, user: str = s.SLACK_HUMAN) -> None:
        await self.deliver({"type": "app_home_opened", "user": user, "channel": self.channel_id(conversation),
                            "tab": "messages", "event_ts": f"{time.time():.6f}"}, conversation, None)

    # Socket Mode -----------------------------------------------------------------------------------

    async def socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return web.Response(status=401, text="invalid ticket")
        self._tickets.discard(ticket)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": len(self.sockets),
                            "debug_info": {"host": "emulator", "approximate_connection_time": 3600},
                            "connection_info": {"app_id": s.SLACK_APP}})
        try:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    ack = json.loads(message.data)
                except ValueError:
                    continue
                for envelope in self.envelopes:
                    if envelope.envelope_id == ack.get("envelope_id"):
                        envelope.acked.set()
        finally:
            if ws in self.sockets:
                self.sockets.remove(ws)
        return ws

    async def send_envelope(self, payload: dict, *, kind: str = "events_api", retries: int = 2,
                            envelope_id: str | None = None) -> bool:
        """Deliver over the WebSocket and wait for the ack; unacked, Slack redelivers (retry_attempt + 1)."""
        envelope = Envelope(envelope_id or str(uuid.uuid4()), payload, kind)
        self.envelopes.append(envelope)
        for attempt in range(retries + 1):
            envelope.retry_attempt = attempt
            for _ in range(50):  # a reconnecting client gets the envelope on its next socket
                if self.sockets and not self.sockets[-1].closed:
                    break
                await asyncio.sleep(0.1)
            if not self.sockets:
                continue
            frame = {"envelope_id": envelope.envelope_id, "payload": payload, "type": kind,
                     "accepts_response_payload": kind != "events_api", "retry_attempt": attempt,
                     "retry_reason": "timeout" if attempt else ""}
            try:
                await self.sockets[-1].send_json(frame)
            except (ConnectionError, RuntimeError):
                continue
            try:
                await asyncio.wait_for(envelope.acked.wait(), ACK_TIMEOUT_S)
                return True
            except asyncio.TimeoutError:
                continue
        return False

    async def disconnect_sockets(self, reason: str = "refresh_requested") -> None:
        """Slack's server-side `disconnect` (connections are refreshed every few hours), then close."""
        for ws in list(self.sockets):
            try:
                await ws.send_json({"type": "disconnect", "reason": reason,
                                    "debug_info": {"host": "emulator"}})
            except (ConnectionError, RuntimeError):
                pass
            await ws.close()
            if ws in self.sockets:
                self.sockets.remove(ws)

    # the bot's side: Web API -----------------------------------------------------------------------

    async def api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        auth = request.headers.get("Authorization", "")
        params: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                return web.json_response({"ok": False, "error": "invalid_json"})
            params.update(body if isinstance(body, dict) else {})
        elif request.method == "POST":
            params.update(await request.post())
        self.calls.append(Call(method, params, auth or None, request.content_type))
        faults = self._faults.get(method)
        if faults:
            fault = faults[0]
            fault.count -= 1
            if fault.count <= 0:
                faults.pop(0)
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            error = fault.error or ("ratelimited" if fault.status == 429 else "internal_error")
            return web.json_response({"ok": False, "error": error}, status=fault.status, headers=headers)
        token = auth[7:] if auth.startswith("Bearer ") else params.get("token")
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if not token:
            return web.json_response({"ok": False, "error": "not_authed"})
        if not expected or not secrets.compare_digest(str(token), expected):
            return web.json_response({"ok": False, "error": "invalid_auth"})
        handler = getattr(self, "m_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method", "req_method": method})
        result = await handler(params)
        return web.json_response(result, headers={"x-oauth-scopes": SCOPES})

    async def m_auth_test(self, params: dict) -> dict:
        return {"ok": True, "url": "http://emulator.slack.localhost/", "team": "Emulator workspace",
                "user": s.BOT_NAME, "team_id": s.SLACK_TEAM, "user_id": s.SLACK_BOT_USER, "bot_id": s.SLACK_BOT_ID,
                "is_enterprise_install": False}

    async def m_apps_connections_open(self, params: dict) -> dict:
        ticket = secrets.token_urlsafe(16)
        self._tickets.add(ticket)
        self.connections_opened += 1
        ws_url = self.self_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        return {"ok": True, "url": f"{ws_url}/_emulator/slack/socket?ticket={ticket}"}

    def _post(self, conversation: str, params: dict, text: str, **extra: Any) -> dict[str, Any]:
        root = self._thread(conversation, params.get("thread_ts"))
        message = self.store.add(flavour="slack", conversation=conversation, author="bot", text=text,
                                 platform_id=self.store.slack_ts(), thread=root["id"] if root else None,
                                 thread_ts=str(params["thread_ts"]) if params.get("thread_ts") else None,
                                 history=[], **extra)
        self.store.status("slack", conversation, message["thread"], "")
        return message

    def _message_object(self, message: dict[str, Any]) -> dict[str, Any]:
        obj = {"type": "message", "user": s.SLACK_BOT_USER, "bot_id": s.SLACK_BOT_ID, "app_id": s.SLACK_APP,
               "text": message["text"], "ts": message["platform_id"], "team": s.SLACK_TEAM}
        if message.get("thread_ts"):
            obj["thread_ts"] = message["thread_ts"]
        return obj

    async def m_chat_postMessage(self, params: dict) -> dict:
        conversation = self._conversation(params.get("channel"))
        if conversation is None:
            return {"ok": False, "error": "channel_not_found"}
        blocks = _json_value(params.get("blocks"))
        text = params.get("text") or _blocks_text(blocks)
        if not text and not blocks and not params.get("attachments"):
            return {"ok": False, "error": "no_text"}
        if len(text) > 40000:
            return {"ok": False, "error": "msg_too_long"}
        if len(_markdown_of(blocks)) > 12000:
            return {"ok": False, "error": "msg_blocks_too_long"}
        message = self._post(conversation, params, text, format="mrkdwn", blocks=blocks or [],
                             markdown=_markdown_of(blocks), controls=controls_of(blocks))
        return {"ok": True, "channel": params["channel"], "ts": message["platform_id"],
                "message": self._message_object(message)}

    async def m_chat_update(self, params: dict) -> dict:
        conversation = self._conversation(params.get("channel"))
        if conversation is None:
            return {"ok": False, "error": "channel_not_found"}
        message = self.store.find("slack", conversation, str(params.get("ts") or ""))
        if message is None or message["author"] != "bot":
            return {"ok": False, "error": "message_not_found" if message is None else "cant_update_message"}
        blocks = _json_value(params.get("blocks"))
        text = params.get("text") or _blocks_text(blocks)
        if len(text) > 4000:
            return {"ok": False, "error": "msg_too_long"}
        changes: dict[str, Any] = {"text": text, "edited": True, "history": [*message.get("history", []), message["text"]]}
        if blocks is not None:
            changes.update(blocks=blocks, markdown=_markdown_of(blocks), controls=controls_of(blocks))
        self.store.update(message, **changes)
        return {"ok": True, "channel": params["channel"], "ts": message["platform_id"], "text": text}

    async def m_chat_delete(self, params: dict) -> dict:
        conversation = self._conversation(params.get("channel"))
        message = self.store.find("slack", conversation or "", str(params.get("ts") or ""))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        self.store.delete(message)
        return {"ok": True, "channel": params["channel"], "ts": params["ts"]}

    async def m_chat_postEphemeral(self, params: dict) -> dict:
        conversation = self._conversation(params.get("channel"))
        if conversation is None:
            return {"ok": False, "error": "channel_not_found"}
        self.ephemeral.append(dict(params))
        root = self._thread(conversation, params.get("thread_ts"))
        self.store.notice("slack", conversation, root["id"] if root else None,
                          f"Only visible to you: {params.get('text') or ''}")
        return {"ok": True, "message_ts": self.store.slack_ts()}

    async def m_assistant_threads_setStatus(self, params: dict) -> dict:
        if self.status_refusal:
            return {"ok": False, "error": self.status_refusal}
        conversation = self._conversation(params.get("channel_id"))
        if conversation is None:
            return {"ok": False, "error": "channel_not_found"}
        root = self._thread(conversation, params.get("thread_ts"))
        if root is None and not self.open_channels:
            return {"ok": False, "error": "invalid_thread_ts"}
        self.store.status("slack", conversation, root["id"] if root else None, str(params.get("status") or ""))
        return {"ok": True}

    async def m_assistant_threads_setSuggestedPrompts(self, params: dict) -> dict:
        prompts = _json_value(params.get("prompts")) or []
        if not isinstance(prompts, list) or len(prompts) > 4:
            return {"ok": False, "error": "invalid_arguments"}
        self.suggested.append({"channel_id": params.get("channel_id"), "thread_ts": params.get("thread_ts"),
                               "title": params.get("title"), "prompts": prompts})
        return {"ok": True}

    async def m_assistant_threads_setTitle(self, params: dict) -> dict:
        return {"ok": True}

    # streaming -------------------------------------------------------------------------------------

    def _apply_chunks(self, message: dict[str, Any], params: dict) -> dict[str, Any]:
        text = message.get("text") or ""
        tasks = [dict(t) for t in message.get("tasks") or []]
        changes: dict[str, Any] = {}
        if params.get("markdown_text"):
            text += str(params["markdown_text"])
        for chunk in _json_value(params.get("chunks")) or []:
            if not isinstance(chunk, dict):
                continue
            kind = chunk.get("type")
            if kind == "markdown_text":
                text += str(chunk.get("text") or "")
            elif kind == "task_update":
                task = {k: chunk.get(k) for k in ("id", "title", "status", "details", "output", "sources")}
                for existing in tasks:
                    if existing.get("id") == task["id"]:
                        existing.update({k: v for k, v in task.items() if v is not None})
                        break
                else:
                    tasks.append(task)
            elif kind == "plan_update":
                changes["plan"] = chunk.get("title")
        history = [*message.get("history", []), json.dumps(_json_value(params.get("chunks")) or [])]
        return {"text": text, "tasks": tasks, "history": history, **changes}

    async def m_chat_startStream(self, params: dict) -> dict:
        conversation = self._conversation(params.get("channel"))
        if conversation is None:
            return {"ok": False, "error": "channel_not_found"}
        if self.stream_refusal:
            return {"ok": False, "error": self.stream_refusal}
        if not self._is_dm(conversation):
            if not params.get("recipient_team_id"):
                return {"ok": False, "error": "missing_recipient_team_id"}
            if not params.get("recipient_user_id"):
                return {"ok": False, "error": "missing_recipient_user_id"}
        if not params.get("thread_ts"):
            return {"ok": False, "error": "invalid_arguments"}
        if len(str(params.get("markdown_text") or "")) > 12000:
            return {"ok": False, "error": "msg_too_long"}
        message = self._post(conversation, params, "", format="markdown", streaming=True, tasks=[],
                             task_display_mode=params.get("task_display_mode") or "timeline",
                             recipient_user_id=params.get("recipient_user_id"))
        self.store.update(message, **self._apply_chunks(message, params))
        return {"ok": True, "channel": params["channel"], "ts": message["platform_id"]}

    def _stream(self, params: dict) -> tuple[dict | None, dict | None]:
        conversation = self._conversation(params.get("channel"))
        if conversation is None:
            return None, {"ok": False, "error": "channel_not_found"}
        message = self.store.find("slack", conversation, str(params.get("ts") or ""))
        if message is None:
            return None, {"ok": False, "error": "message_not_found"}
        if not message.get("streaming"):
            return None, {"ok": False, "error": "message_not_in_streaming_state"}
        if len(str(params.get("markdown_text") or "")) > 12000:
            return None, {"ok": False, "error": "msg_too_long"}
        if message.get("stop_requested"):  # the person pressed the native stop control
            self.store.update(message, streaming=False, stopped_by_user=True)
            return None, {"ok": False, "error": "stopped_by_user"}
        return message, None

    async def m_chat_appendStream(self, params: dict) -> dict:
        message, error = self._stream(params)
        if error:
            return error
        self.store.update(message, **self._apply_chunks(message, params))
        return {"ok": True, "channel": params["channel"], "ts": message["platform_id"]}

    async def m_chat_stopStream(self, params: dict) -> dict:
        message, error = self._stream(params)
        if error:
            return error
        changes = self._apply_chunks(message, params)
        blocks = _json_value(params.get("blocks")) or []
        self.store.update(message, streaming=False, blocks=blocks, controls=controls_of(blocks), **changes)
        return {"ok": True, "channel": params["channel"], "ts": message["platform_id"],
                "message": self._message_object(message)}

    # modals, user groups ---------------------------------------------------------------------------

    async def m_views_open(self, params: dict) -> dict:
        view = _json_value(params.get("view"))
        if not params.get("trigger_id") or not isinstance(view, dict):
            return {"ok": False, "error": "invalid_arguments"}
        self.views.append(view)
        return {"ok": True, "view": {**view, "id": "V" + secrets.token_hex(5).upper()}}

    async def m_usergroups_users_list(self, params: dict) -> dict:
        group = str(params.get("usergroup") or "")
        if group not in self.usergroups:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": list(self.usergroups[group])}

    # files -----------------------------------------------------------------------------------------

    async def m_files_getUploadURLExternal(self, params: dict) -> dict:
        name, length = params.get("filename"), params.get("length")
        if not name or length is None:
            return {"ok": False, "error": "invalid_arguments"}
        try:
            size = int(length)
        except ValueError:
            return {"ok": False, "error": "invalid_arguments"}
        if size > s.MAX_FILE_BYTES:
            return {"ok": False, "error": "file_too_large"}
        stored = self.store.new_file(str(name))
        stored.size, stored.complete = size, False
        self.uploads[stored.id] = {"filename": str(name), "length": size, "data": None, "auth": None}
        return {"ok": True, "upload_url": f"{self.self_url}/_emulator/slack/upload/{stored.id}", "file_id": stored.id}

    async def upload(self, request: web.Request) -> web.Response:
        """The upload URL: raw bytes, no token (slack_sdk sends none), HTTP 200 with a plain text body."""
        stored = self.store.files.get(request.match_info["file_id"])
        self.calls.append(Call("upload", {"file_id": request.match_info["file_id"]},
                               request.headers.get("Authorization"), request.content_type))
        if stored is None or stored.complete:
            return web.Response(status=404, text="upload URL is not valid")
        size = 0
        with stored.path.open("wb") as out:
            async for chunk in request.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > s.MAX_FILE_BYTES:
                    return web.Response(status=413, text="file too large")
                out.write(chunk)
        stored.size, stored.complete = size, True
        if stored.id in self.uploads:
            self.uploads[stored.id].update(data=stored.path.read_bytes() if size <= 20 * 1024 * 1024 else None,
                                           auth=request.headers.get("Authorization"))
        return web.Response(text=f"OK - {size}")

    async def m_files_completeUploadExternal(self, params: dict) -> dict:
        raw = params.get("files")
        try:
            entries = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            return {"ok": False, "error": "invalid_arguments"}
        files = []
        for entry in entries or []:
            stored = self.store.files.get(str(entry.get("id"))) if isinstance(entry, dict) else None
            if stored is None or not stored.complete:
                return {"ok": False, "error": "file_not_found"}
            files.append((stored, entry.get("title") or stored.name))
        channel = params.get("channel_id") or (str(params.get("channels") or "").split(",")[0] or None)
        if channel:
            conversation = self._conversation(channel)
            if conversation is None:
                return {"ok": False, "error": "channel_not_found"}
            self._post(conversation, params, str(params.get("initial_comment") or ""), format="mrkdwn",
                       files=[f.public() for f, _ in files])
        return {"ok": True, "files": [{"id": f.id, "title": title, "name": f.name, "mimetype": f.mimetype,
                                       "size": f.size} for f, title in files]}

    async def m_files_info(self, params: dict) -> dict:
        stored = self.store.files.get(str(params.get("file") or ""))
        if stored is None:
            return {"ok": False, "error": "file_not_found"}
        return {"ok": True, "file": self._file_object(stored)}

    async def download(self, request: web.Request) -> web.Response:
        """url_private(_download): like Slack, a request without the bot token gets a login page, not the file."""
        stored = self.store.files.get(request.match_info["file_id"])
        auth = request.headers.get("Authorization", "")
        self.calls.append(Call("download", {"file_id": request.match_info["file_id"]}, auth or None, ""))
        if not (auth.startswith("Bearer ") and secrets.compare_digest(auth[7:], self.bot_token)) or (
                stored is not None and stored.id in self.login_only):
            return web.Response(text=LOGIN_PAGE, content_type="text/html")
        if stored is None or not stored.complete or stored.name != request.match_info["name"]:
            return web.Response(status=404, text="file not found")
        return web.FileResponse(stored.path, headers={"Content-Type": stored.mimetype})

    # directory -------------------------------------------------------------------------------------

    async def m_conversations_info(self, params: dict) -> dict:
        channel = str(params.get("channel") or "")
        conversation = self._conversation(channel)
        if conversation is None:
            return {"ok": False, "error": "channel_not_found"}
        if self._is_dm(conversation):
            return {"ok": True, "channel": {"id": channel, "is_im": True, "is_channel": False, "is_private": True,
                                            "user": s.SLACK_HUMAN, "is_open": True}}
        name = dict(s.CHANNELS).get(conversation) or self.channel_names.get(channel)
        if name is None:
            return {"ok": False, "error": "channel_not_found"}
        private = channel in self.private_members
        return {"ok": True, "channel": {"id": channel, "name": name, "name_normalized": name, "is_channel": not private,
                                        "is_group": private, "is_im": False, "is_private": private,
                                        "is_member": channel not in self.not_member,
                                        "is_archived": False, "context_team_id": s.SLACK_TEAM}}

    async def m_users_info(self, params: dict) -> dict:
        user = str(params.get("user") or "")
        if user == s.SLACK_HUMAN:
            return {"ok": True, "user": {
                "id": user, "team_id": s.SLACK_TEAM, "name": "alex", "real_name": s.HUMAN_NAME, "is_bot": False,
                "deleted": False, "tz": "Europe/London",
                "profile": {"real_name": s.HUMAN_NAME, "display_name": "Alex", "email": s.HUMAN_EMAIL}}}
        if user == s.SLACK_BOT_USER:
            return {"ok": True, "user": {"id": user, "team_id": s.SLACK_TEAM, "name": s.BOT_NAME, "is_bot": True,
                                         "deleted": False, "profile": {"real_name": s.BOT_NAME, "bot_id": s.SLACK_BOT_ID}}}
        return {"ok": False, "error": "user_not_found"}

    async def m_conversations_members(self, params: dict) -> dict:
        channel = str(params.get("channel") or "")
        if self._conversation(channel) is None:
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "members": list(self.private_members.get(channel, [s.SLACK_HUMAN])),
                "response_metadata": {"next_cursor": ""}}

    def _history_object(self, m: dict[str, Any]) -> dict[str, Any]:
        obj = {"type": "message", "ts": m["platform_id"], "text": m["text"],
               "user": m.get("slack_user") or (s.SLACK_HUMAN if m["author"] == "user" else s.SLACK_BOT_USER)}
        if m["author"] == "bot":
            obj["bot_id"] = s.SLACK_BOT_ID
        return obj

    async def m_conversations_history(self, params: dict) -> dict:
        conversation = self._conversation(params.get("channel"))
        if conversation is None:
            return {"ok": False, "error": "channel_not_found"}
        if self.channel_id(conversation) in self.not_member:
            return {"ok": False, "error": "not_in_channel"}
        top = [m for m in self.store.snapshot() if m["flavour"] == "slack" and m["conversation"] == conversation
               and not m.get("thread_ts") and m["author"] != "emulator"]
        limit = int(params.get("limit") or 100)
        return {"ok": True, "has_more": False, "messages": [self._history_object(m) for m in reversed(top)][:limit]}

    async def m_conversations_replies(self, params: dict) -> dict:
        conversation = self._conversation(params.get("channel"))
        root = self._thread(conversation or "", params.get("ts"))
        if root is None:
            return {"ok": False, "error": "thread_not_found"}
        replies = [m for m in self.store.snapshot() if m["thread"] == root["id"] and m["author"] != "emulator"]
        return {"ok": True, "has_more": False, "messages": [
            {**self._history_object(m), "thread_ts": root["platform_id"]} for m in [root, *replies]]}

    async def m_reactions_add(self, params: dict) -> dict:
        return {"ok": True}

    async def m_reactions_remove(self, params: dict) -> dict:
        return {"ok": True}


