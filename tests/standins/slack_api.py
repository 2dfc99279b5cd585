"""A local stand-in for the Slack Web API over real HTTP, plus a signer for Events API requests.

It speaks the wire formats slack_sdk uses (form bodies for auth.test and the upload handshake, JSON for
chat.* and assistant.*, raw bytes to the upload URL without a token), records every call, can answer
the next N calls of a method with 429 + Retry-After or a 5xx, and serves url_private_download files
that need the bot token (or an HTML login page, as Slack does when files:read is missing).
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import json
import time
import textwrap
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

import aiohttp
from aiohttp import web

from tests.support import eventually, serve

BOT_USER_ID = "UAGENTBOT"
BOT_ID = "BAGENTBOT"
TEAM_ID = "T0AGENTS"
LOGIN_PAGE = b"<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in to Slack</body></html>"


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    auth: str | None
    content_type: str
    at: float = field(default_factory=time.monotonic)


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    thread_ts: str | None
    updates: list[str] = field(default_factory=list)
    files: list[dict] = field(default_factory=list)
    blocks: list = field(default_factory=list)


@dataclass
class _Fault:
    status: int
    count: int
    retry_after: int | None


class SlackAPI:
    """Run with `async with SlackAPI(token) as slack:`; `slack.api_url` is the SLACK_API_URL to use."""

    def __init__(self, token: str = "xoxb-test-bot-token") -> None:
        self.token = token
        self.calls: list[Call] = []
        self.messages: list[Message] = []
        self.uploads: dict[str, dict] = {}  # file_id -> {filename, length, data, auth}
        self.files: dict[str, dict] = {}  # file id -> Slack file object (for files.info)
        self.file_bodies: dict[str, tuple[bytes, str]] = {}
        self.channels: dict[str, dict] = {}
        self.stream_refusal: str | None = None  # e.g. "not_allowed" makes chat.startStream fail
        self.status_refusal: str | None = None  # e.g. "invalid_thread_ts" for setStatus in channels
        self.ephemerals: list[dict] = []  # chat.postEphemeral calls: only `user` would see them
        self.usergroups: dict[str, list[str]] = {}  # usergroups.users.list: group id -> member ids
        self._faults: dict[str, list[_Fault]] = {}
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._stack = contextlib.AsyncExitStack()
        self.base_url = ""

    # lifecycle -------------------------------------------------------------------------------------

    async def __aenter__(self) -> "SlackAPI":
        app = web.Application(client_max_size=50 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)  # files.info & co. are GETs
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/files-pri/{file_id}/{name}", self._download)
        self.base_url = await self._stack.enter_async_context(serve(app))
        return self

    async def __aexit__(self, *exc) -> None:
        await self._stack.aclose()

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    # test controls ---------------------------------------------------------------------------------

    def fail(self, method: str, status: int, count: int = 1, retry_after: int | None = None) -> None:
        """Answer the next `count` calls of `method` with `status` (429 carries Retry-After)."""
        self._faults.setdefault(method, []).append(_Fault(status, count, retry_after))

    def add_channel(self, channel_id: str, name: str) -> None:
        self.channels[channel_id] = {"id": channel_id, "name": name, "is_channel": True}

    def add_file(self, name: str, data: bytes, mimetype: str, *, html_login: bool = False,
                 connect_stub: bool = False) -> dict:
        """Register a file and return it as it appears in an event's `files` list."""
        file_id = f"F{next(self._ids):08d}"
        url = f"{self.base_url}/files-pri/{file_id}/{name}"
        self.file_bodies[file_id] = (LOGIN_PAGE, "text/html; charset=utf-8") if html_login else (data, mimetype)
        info = {
            "id": file_id, "name": name, "title": name, "mimetype": mimetype, "filetype": name.rsplit(".", 1)[-1],
            "size": len(data), "mode": "hosted", "url_private": url, "url_private_download": url + "?download=1",
        }
        self.files[file_id] = info
        if connect_stub:
            return {"id": file_id, "mode": "file_access", "file_access": "check_file_info"}
        return dict(info)

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        return [m for m in self.messages if m.channel == channel and m.thread_ts == thread_ts]

    async def wait_for(self, condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
        """Poll `condition` until truthy; fail with `what` after `timeout` seconds."""
        return await eventually(condition, timeout, what)

    # HTTP handlers ---------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.method == "GET":
            params = dict(request.query)
        elif request.content_type == "application/json":
            params = await request.json()
        else:
            params = dict(await request.post())
            params.update(request.query)
        auth = request.headers.get("Authorization")
        self.calls.append(Call(method, params, auth, request.content_type))
        faults = self._faults.get(method)
        if faults:
            fault = faults[0]
            fault.count -= 1
            if fault.count <= 0:
                faults.pop(0)
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            error = "ratelimited" if fault.status == 429 else "internal_error"
            return web.json_response({"ok": False, "error": error}, status=fault.status, headers=headers)
        if auth != f"Bearer {self.token}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        return web.json_response(handler(params))

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def _m_auth_test(self, p: dict) -> dict:
        return {"ok": True, "url": "https://acme.slack.com/", "team": "Acme", "user": "agentdesk",
                "team_id": TEAM_ID, "user_id": BOT_USER_ID, "bot_id": BOT_ID, "is_enterprise_install": False}

    def _m_chat_postMessage(self, p: dict) -> dict:
        if not p.get("channel"):
            return {"ok": False, "error": "channel_not_found"}
        if len(p.get("text") or "") > 40000:
            return {"ok": False, "error": "msg_too_long"}
        msg = Message(p["channel"], self._next_ts(), p.get("text") or "", p.get("thread_ts"),
                      blocks=_blocks(p.get("blocks")))
        self.messages.append(msg)
        return {"ok": True, "channel": msg.channel, "ts": msg.ts,
                "message": {"type": "message", "text": msg.text, "user": BOT_USER_ID, "bot_id": BOT_ID, "ts": msg.ts}}

    def _m_chat_update(self, p: dict) -> dict:
        if len(p.get("text") or "") > 4000:
            return {"ok": False, "error": "msg_too_long"}
        for msg in self.messages:
            if msg.channel == p.get("channel") and msg.ts == p.get("ts"):
                msg.updates.append(msg.text)
                msg.text = p.get("text") or ""
                if "blocks" in p:
                    msg.blocks = _blocks(p.get("blocks"))
                return {"ok": True, "channel": msg.channel, "ts": msg.ts, "text": msg.text}
        return {"ok": False, "error": "message_not_found"}

    def _m_chat_postEphemeral(self, p: dict) -> dict:
        if not p.get("channel") or not p.get("user"):
            return {"ok": False, "error": "invalid_arguments"}
        self.ephemerals.append(dict(p))
        return {"ok": True, "message_ts": self._next_ts()}

    def _m_usergroups_users_list(self, p: dict) -> dict:
        members = self.usergroups.get(p.get("usergroup", ""))
        return {"ok": True, "users": members} if members is not None else {"ok": False, "error": "no_such_subteam"}

    def _m_chat_startStream(self, p: dict) -> dict:
        if self.stream_refusal:
            return {"ok": False, "error": self.stream_refusal}
        if not str(p.get("channel", "")).startswith("D"):
            if not p.get("recipient_team_id"):
                return {"ok": False, "error": "missing_recipient_team_id"}
            if not p.get("recipient_user_id"):
                return {"ok": False, "error": "missing_recipient_user_id"}
        msg = Message(p["channel"], self._next_ts(), p.get("markdown_text") or "", p.get("thread_ts"))
        msg.updates.append(json.dumps(p.get("chunks") or []))
        self.messages.append(msg)
        return {"ok": True, "channel": msg.channel, "ts": msg.ts}

    def _m_chat_appendStream(self, p: dict) -> dict:
        for msg in self.messages:
            if msg.channel == p.get("channel") and msg.ts == p.get("ts"):
                msg.updates.append(json.dumps(p.get("chunks") or []))
                return {"ok": True, "channel": msg.channel, "ts": msg.ts}
        return {"ok": False, "error": "message_not_in_streaming_state"}

    def _m_chat_stopStream(self, p: dict) -> dict:
        return self._m_chat_appendStream(p)

    def _m_assistant_threads_setStatus(self, p: dict) -> dict:
        if self.status_refusal:
            return {"ok": False, "error": self.status_refusal}
        return {"ok": True}

    def _m_conversations_info(self, p: dict) -> dict:
        channel = self.channels.get(p.get("channel", ""))
        return {"ok": True, "channel": channel} if channel else {"ok": False, "error": "channel_not_found"}

    def _m_files_info(self, p: dict) -> dict:
        info = self.files.get(p.get("file", ""))
        return {"ok": True, "file": info} if info else {"ok": False, "error": "file_not_found"}

    def _m_files_getUploadURLExternal(self, p: dict) -> dict:
        file_id = f"FUP{next(self._ids):06d}"
        self.uploads[file_id] = {"filename": p.get("filename"), "length": int(p.get("length", 0)), "data": None}
        return {"ok": True, "upload_url": f"{self.base_url}/upload/{file_id}", "file_id": file_id}

    def _m_files_completeUploadExternal(self, p: dict) -> dict:
        entries = json.loads(p.get("files") or "[]")
        done = []
        for entry in entries:
            upload = self.uploads.get(entry.get("id"))
            if upload is None or upload["data"] is None:
                return {"ok": False, "error": "file_not_found"}
            done.append({"id": entry["id"], "name": upload["filename"], "title": entry.get("title") or upload["filename"],
                         "size": len(upload["data"])})
        channel = p.get("channel_id")
        if channel:
            msg = Message(channel, self._next_ts(), p.get("initial_comment") or "", p.get("thread_ts"), files=done)
            self.messages.append(msg)
        return {"ok": True, "files": done}

    async def _upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        data = await request.read()
        self.calls.append(Call("upload", {"file_id": file_id, "bytes": len(data)},
                               request.headers.get("Authorization"), request.content_type))
        upload = self.uploads.get(file_id)
        if upload is None:
            return web.Response(status=404, text="unknown upload")
        upload["data"] = data
        upload["auth"] = request.headers.get("Authorization")
        return web.Response(text=f"OK - {len(data)}", content_type="text/plain")

    async def _download(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        auth = request.headers.get("Authorization")
        self.calls.append(Call("download", {"file_id": file_id}, auth, ""))
        if file_id not in self.file_bodies:
            return web.Response(status=404, text="not found")
        if auth != f"Bearer {self.token}":
            return web.Response(body=LOGIN_PAGE, content_type="text/html")
        data, content_type = self.file_bodies[file_id]
        return web.Response(body=data, headers={"Content-Type": content_type})


def _blocks(raw: Any) -> list:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return []
    return list(raw or [])


def buttons(message: Message) -> dict[str, dict]:
    """The buttons of a Block Kit message by action_id (what a person could press)."""
    return {e["action_id"]: e for b in message.blocks if b.get("type") == "actions" for e in b.get("elements", [])}


def block_text(message: Message) -> str:
    """The visible text of a message's blocks."""
    parts = []
    for block in message.blocks:
        if isinstance(block.get("text"), dict):
            parts.append(block["text"].get("text", ""))
        parts += [e.get("text", "") for e in block.get("elements", []) if block.get("type") == "context"]
    return "\n".join(parts)


def block_actions(message: Message, action_id: str, *, user: str = "U0ALICE", name: str = "alice",
                  team_id: str = TEAM_ID) -> dict:
    """The interactivity payload Slack posts when `user` presses the button `action_id` on `message`."""
    button = buttons(message)[action_id]
    return {
        "type": "block_actions", "user": {"id": user, "username": name, "name": name, "team_id": team_id},
        "api_app_id": "A0AGENTS", "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": message.ts, "channel_id": message.channel,
                      "is_ephemeral": False, "thread_ts": message.thread_ts},
        "trigger_id": f"{int(time.time())}.1.abc", "team": {"id": team_id, "domain": "acme"},
        "channel": {"id": message.channel, "name": "general"},
        "message": {"type": "message", "ts": message.ts, "thread_ts": message.thread_ts, "text": message.text,
                    "bot_id": BOT_ID, "blocks": message.blocks},
        "response_url": "https://hooks.slack.invalid/actions/T0/1/xyz",
        "actions": [{"type": "button", "action_id": action_id, "block_id": "b", "value": button.get("value"),
                     "text": button.get("text"), "action_ts": f"{time.time():.6f}"}],
    }


# Events API --------------------------------------------------------------------------------------------


def sign(secret: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    """Headers Slack sends: X-Slack-Signature = v0=HMAC-SHA256(secret, 'v0:{ts}:{body}')."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


_event_ids = itertools.count(1)


def event_callback(event: dict, *, team_id: str = TEAM_ID, event_id: str | None = None) -> dict:
    """An Events API envelope as Slack posts it."""
    return {
        "token": "legacy-verification-token", "team_id": team_id, "api_app_id": "A0AGENTS", "event": event,
        "type": "event_callback", "event_id": event_id or f"Ev{next(_event_ids):010d}", "event_time": int(time.time()),
        "authorizations": [{"enterprise_id": None, "team_id": team_id, "user_id": BOT_USER_ID, "is_bot": True,
                            "is_enterprise_install": False}],
        "is_ext_shared_channel": False,
    }


_msg_ts = itertools.count(1)


def new_ts() -> str:
    return f"{int(time.time())}.{next(_msg_ts):06d}"


def mention(text: str, *, channel: str = "C0GENERAL", user: str = "U0ALICE", ts: str | None = None,
            thread_ts: str | None = None, files: list[dict] | None = None) -> dict:
    event = {"type": "app_mention", "user": user, "text": f"<@{BOT_USER_ID}> {text}", "ts": ts or new_ts(),
             "channel": channel, "team": TEAM_ID, "event_ts": ts or ""}
    event["event_ts"] = event["ts"]
    if thread_ts:
        event["thread_ts"] = thread_ts
    if files:
        event["files"], event["upload"] = files, True
    return event


def message(text: str, *, channel: str = "C0GENERAL", channel_type: str = "channel", user: str = "U0ALICE",
            ts: str | None = None, thread_ts: str | None = None, files: list[dict] | None = None,
            subtype: str | None = None, **extra: Any) -> dict:
    event = {"type": "message", "user": user, "text": text, "ts": ts or new_ts(), "channel": channel,
             "channel_type": channel_type, "team": TEAM_ID, **extra}
    event["event_ts"] = event["ts"]
    if thread_ts:
        event["thread_ts"] = thread_ts
    if files:
        event["files"], event["upload"], event["subtype"] = files, True, "file_share"
    if subtype:
        event["subtype"] = subtype
    return event


class EventSender:
    """Posts signed Events API requests to a bot's /slack/events over real HTTP."""

    def __init__(self, url: str, secret: str) -> None:
        self.url = url
        self.secret = secret
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "EventSender":
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc) -> None:
        if self._session:
            await self._session.close()

    async def post_raw(self, body: str | bytes, headers: dict[str, str]) -> tuple[int, str]:
        assert self._session is not None
        async with self._session.post(self.url, data=body, headers=headers) as resp:
            return resp.status, await resp.text()

    async def send(self, payload: dict, *, retry_num: int | None = None, timestamp: int | None = None,
                   secret: str | None = None) -> tuple[int, str]:
        body = json.dumps(payload)
        headers = sign(secret or self.secret, body, timestamp)
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        return await self.post_raw(body, headers)

    async def interaction(self, payload: dict, *, timestamp: int | None = None,
                          secret: str | None = None) -> tuple[int, str]:
        """An interactivity request (button press): form-encoded `payload=<json>`, signed like events."""
        from urllib.parse import urlencode

        body = urlencode({"payload": json.dumps(payload)})
        headers = sign(secret or self.secret, body, timestamp)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return await self.post_raw(body, headers)

    async def event(self, event: dict, **kwargs: Any) -> tuple[int, str]:
        event_id = kwargs.pop("event_id", None)
        return await self.send(event_callback(event, event_id=event_id), **kwargs)


# The bot under test ---------------------------------------------------------------------------------

TOKEN = "xoxb-1111-2222-do-not-leak"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"

COMPANY = textwrap.dedent(
    """
    [departments.hr]
    description = "Leave, benefits and HR policy"
    keywords = ["leave", "vacation"]
    tools = []
    authorized_imports = ["math", "pandas", "matplotlib", "matplotlib.pyplot", "os"]
    max_steps = 4
    step_timeout_s = 60

    [departments.sales]
    description = "Products, prices and quotes"
    keywords = ["price", "quote"]
    tools = []
    slack_channels = ["sales-floor"]
    max_steps = 3
    """
)


@dataclass
class RunningBot:
    url: str
    settings: Any
    app: web.Application
    runner: Any
    slack: SlackAPI
    events: EventSender

    async def drain(self, timeout: float = 60.0) -> None:
        """Wait until every background task (agent runs, replies) has finished."""
        from bots.server import TASKS

        await self.app[TASKS].drain(timeout=timeout)
        assert len(self.app[TASKS]) == 0, "background tasks still running"


@contextlib.asynccontextmanager
async def running_bot(tmp_path, model_server, slack: SlackAPI, **overrides) -> AsyncIterator[RunningBot]:
    """The bot's real app (create_app + TaskRunner) served on 127.0.0.1:0, Slack pointed at `slack`."""
    from agents.runner import TaskRunner
    from bots.server import create_app
    from tests.support import make_settings

    company = tmp_path / "departments.toml"
    company.write_text(COMPANY)
    values = dict(sandbox="local", config_path=company, slack_bot_token=TOKEN, slack_signing_secret=SECRET,
                  slack_app_token=None, slack_api_url=slack.api_url)
    values.update(overrides)
    settings = make_settings(tmp_path, model_server.base_url if model_server else None, **values)
    runner = TaskRunner(settings)
    app = create_app(settings, runner)
    async with serve(app) as url, EventSender(f"{url}/slack/events", SECRET) as events:
        yield RunningBot(url, settings, app, runner, slack, events)
