"""The Slack fake for tests: bots/emulator/slack.py (the one implementation, also behind `agentdesk dev`)
served on its own port with any channel id open, plus helpers to sign and send Events API requests.

It speaks the wire formats slack_sdk uses (form bodies for auth.test and the upload handshake, JSON for
chat.* and assistant.*, raw bytes to the upload URL without a token), records every call, can answer
the next N calls of a method with 429 + Retry-After or a 5xx, serves url_private_download files that
need the bot token (or an HTML login page, as Slack does when files:read is missing), keeps streams'
task cards and feedback buttons, and runs Socket Mode (apps.connections.open -> ws://).
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import json
import tempfile
import time
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import aiohttp
from aiohttp import web

from bots.emulator import store as s
from bots.emulator.slack import LOGIN_PAGE, Call, SlackSide
from bots.emulator.store import Store
from tests.support import eventually, serve

BOT_USER_ID = s.SLACK_BOT_USER
BOT_ID = s.SLACK_BOT_ID
TEAM_ID = s.SLACK_TEAM
APP_TOKEN = "xapp-1-A0EMULATOR-do-not-leak"

__all__ = ["BOT_ID", "BOT_USER_ID", "TEAM_ID", "LOGIN_PAGE", "Call", "Message", "SlackAPI"]


@dataclass
class Message:
    """A bot message as the fake holds it (a view of the store's dict)."""

    channel: str
    ts: str
    text: str
    thread_ts: str | None
    updates: list[str] = field(default_factory=list)
    files: list[dict] = field(default_factory=list)
    tasks: list[dict] = field(default_factory=list)
    controls: list[dict] = field(default_factory=list)
    markdown: str = ""
    streaming: bool = False
    raw: dict = field(default_factory=dict, repr=False)


class SlackAPI(SlackSide):
    """Run with `async with SlackAPI(token) as slack:`; `slack.api_url` is the SLACK_API_URL to use."""

    def __init__(self, token: str = "xoxb-test-bot-token", *, signing_secret: str = "",
                 app_token: str | None = APP_TOKEN) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="slack-fake-")
        super().__init__(Store(Path(self._tmp.name)), bot_token=token, signing_secret=signing_secret,
                         self_url="", app_token=app_token, events_url="", open_channels=True)
        self.token = token
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> "SlackAPI":
        app = web.Application(client_max_size=50 * 1024 * 1024)
        self.mount(app)
        self.self_url = await self._stack.enter_async_context(serve(app))
        self.session = await self._stack.enter_async_context(aiohttp.ClientSession())
        return self

    async def __aexit__(self, *exc) -> None:
        await self.disconnect_sockets("link_disabled")
        await self._stack.aclose()
        self._tmp.cleanup()

    @property
    def api_url(self) -> str:
        return self.api_base

    @property
    def base_url(self) -> str:
        return self.self_url

    # views for assertions --------------------------------------------------------------------------

    @property
    def messages(self) -> list[Message]:
        return [self._view(m) for m in self.store.snapshot() if m["author"] == "bot"]

    def _view(self, m: dict) -> Message:
        return Message(self.channel_id(m["conversation"]), m["platform_id"], m["text"], m.get("thread_ts"),
                       list(m.get("history") or []), list(m.get("files") or []), list(m.get("tasks") or []),
                       list(m.get("controls") or []), m.get("markdown") or "", bool(m.get("streaming")), m)

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        return [m for m in self.messages if m.channel == channel and m.thread_ts == thread_ts]

    def notices(self) -> list[str]:
        return [m["text"] for m in self.store.snapshot() if m["author"] == "emulator"]

    async def wait_for(self, condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
        """Poll `condition` until truthy; fail with `what` after `timeout` seconds."""
        return await eventually(condition, timeout, what)

    # test controls ---------------------------------------------------------------------------------

    def add_channel(self, channel_id: str, name: str) -> None:
        self.channel_names[channel_id] = name

    def add_message(self, channel: str, user: str, text: str, *, thread_ts: str | None = None) -> dict:
        """A message someone else posted (what conversations.history/replies return)."""
        root = self.store.find("slack", channel, thread_ts) if thread_ts else None
        return self.store.add(flavour="slack", conversation=channel, author="user", text=text,
                              platform_id=self.store.slack_ts(), thread=root["id"] if root else None,
                              thread_ts=thread_ts, slack_user=user)

    def add_file(self, name: str, data: bytes, mimetype: str, *, html_login: bool = False,
                 connect_stub: bool = False) -> dict:
        """Register a file and return it as it appears in an event's `files` list."""
        stored = self.store.new_file(name, mimetype)
        stored.path.write_bytes(data)
        stored.size = len(data)
        if html_login:
            self.login_only.add(stored.id)
        if connect_stub:
            return {"id": stored.id, "mode": "file_access", "file_access": "check_file_info"}
        return self._file_object(stored)


def _blocks(message: Message) -> list[dict]:
    return [b for b in message.raw.get("blocks") or [] if isinstance(b, dict)]


def buttons(message: Message) -> dict[str, dict]:
    """The buttons of a Block Kit message by action_id (what a person could press)."""
    return {e["action_id"]: e for b in _blocks(message) if b.get("type") == "actions" for e in b.get("elements", [])}


def block_text(message: Message) -> str:
    """The visible text of a message's blocks."""
    parts = []
    for block in _blocks(message):
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
                    "bot_id": BOT_ID, "blocks": _blocks(message)},
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
    authorized_imports = ["math", "pandas", "matplotlib", "matplotlib.pyplot", "os", "time"]
    max_steps = 4
    step_timeout_s = 60

    suggested_prompts = ["How many leave days do I have left?", "What is the parental leave policy?"]

    [departments.sales]
    description = "Products, prices and quotes"
    keywords = ["price", "quote"]
    tools = []
    slack_channels = ["sales-floor"]
    max_steps = 3
    suggested_prompts = ["Quote 25 seats"]

    [departments.desk]
    description = "Questions about what the person has open in Slack"
    tools = ["agents.tools.slack_context:viewing_context"]
    max_steps = 3

    [departments.finance]
    description = "Budgets and forecasts"
    keywords = ["budget"]
    tools = []
    max_steps = 2

    [departments.finance.access]
    restricted = true
    slack_usergroups = ["S0FINANCE"]
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
        slack.events_url, slack.signing_secret = f"{url}/slack/events", SECRET
        yield RunningBot(url, settings, app, runner, slack, events)
