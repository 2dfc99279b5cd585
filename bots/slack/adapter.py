"""Slack in the bot's aiohttp app: POST /slack/events (Events API) and Socket Mode, both via one Bolt app.

The Events API ack path does the size, signature and JSON checks and claims the event_id in the shared store
(503 when the store is down, so Slack delivers again); Bolt (listeners, (channel, ts) dedupe) runs after
the 200 in a deferred background task that yields the event loop to other requests' acks, and every listener
hands the agent work to deferred BackgroundTasks, so Slack gets its 200 fast even under a burst.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from agents.chat import ChatRequest
from agents.settings import Settings
from agents.state import StoreUnavailable
from agents.telemetry import request_span
from bots.recovery import INTERRUPTION_NOTIFIERS, interrupted_message
from bots.slack import approvals
from bots.slack.delivery import with_credentials
from bots.slack.files import attachments_from_event
from bots.slack.actions import ACTION_PREFIX, COMMENT_CALLBACK, SlackActions
from bots.slack.agent_view import UserGroups, remember_context, suggested_prompts, take_context
from bots.slack.replier import ChannelPacer, SlackAddress, SlackReplier, _error_name, call_with_retry
from bots.tasks import BackgroundTasks

if TYPE_CHECKING:
    from agents.runner import TaskRunner

log = logging.getLogger("agentdesk.slack")

MAX_BODY_BYTES = 1024 * 1024
HANDLED_SUBTYPES = {None, "file_share", "thread_broadcast"}
CHANNEL_NAME_TTL_S = 600.0
GREETING = (
    "Hi! I can hand your question to a department agent. Start with a department name and a colon "
    "(for example `hr: how many leave days do I have left?`) to choose one, or just ask and I'll route it. "
    "You can attach files too."
)


def web_client(settings: Settings) -> AsyncWebClient:
    """The Web API client: retries 429 (honouring Retry-After), 500/503 and dropped connections itself."""
    return AsyncWebClient(
        token=settings.slack_bot_token,
        base_url=settings.slack_api_url,
        retry_handlers=[
            AsyncRateLimitErrorRetryHandler(max_retry_count=3),
            AsyncServerErrorRetryHandler(max_retry_count=2),
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
        ],
    )


def clean_text(text: str, bot_user_id: str | None) -> str:
    """Slack message markup to the plain text a person typed: no bot mention, links as URLs, entities decoded."""
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", "", text)
    text = re.sub(r"<mailto:([^|>]+)(?:\|[^>]*)?>", r"\1", text)
    text = re.sub(r"<(https?://[^|>]+)(?:\|[^>]*)?>", r"\1", text)
    text = re.sub(r"<#[A-Z0-9]+\|([^>]*)>", r"#\1", text)
    text = re.sub(r"<!(here|channel|everyone)(?:\|[^>]*)?>", r"@\1", text)
    text = re.sub(r"<!subteam\^[A-Z0-9]+\|([^>]*)>", r"\1", text)
    text = re.sub(r"<@([A-Z0-9]+)(?:\|[^>]*)?>", r"@\1", text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return re.sub(r"[ \t]{2,}", " ", text).strip()


class SlackBot:
    """The Bolt app plus what it needs to turn Slack events into runner tasks."""

    def __init__(self, settings: Settings, runner: "TaskRunner", tasks: BackgroundTasks) -> None:
        self.settings = settings
        self.runner = runner
        self.tasks = tasks
        self.pacer = ChannelPacer()
        self.store = runner.store
        self._channel_names: dict[str, tuple[str | None, float]] = {}
        self._channel_scope_warned = False
        # Socket-Mode-only deployments have no signing secret (and slack-sdk refuses an empty one)
        self.verifier = SignatureVerifier(settings.slack_signing_secret) if settings.slack_signing_secret else None
        self.app = AsyncApp(
            client=web_client(settings),
            signing_secret=settings.slack_signing_secret or "",
            request_verification_enabled=bool(settings.slack_signing_secret),
            # Listeners run inside async_dispatch, so inside the deferred dispatch task (they only spawn work)
            process_before_response=True,
        )
        self.app.use(self._dedupe_middleware)
        self.app.event("app_mention")(self._on_app_mention)
        self.app.event("message")(self._on_message)
        self.app.event("assistant_thread_started")(self._on_assistant_thread_started)
        self.app.event("assistant_thread_context_changed")(self._ignore)
        self.app.event("app_home_opened")(self._on_app_home_opened)
        self.app.event("app_context_changed")(self._on_app_context_changed)
        self.actions = SlackActions(runner, tasks)
        self.app.action(re.compile(f"^{re.escape(ACTION_PREFIX)}"))(self.actions.dispatch)
        self.app.action(re.compile(".*"))(self._ack_only)
        self.app.view(COMMENT_CALLBACK)(self.actions.comment_submitted)
        self.usergroups = UserGroups(self.app.client, runner.company)
        self.actions.register(approvals.ACTION_PREFIX, approvals.handler(runner, self.usergroups))

    # HTTP ------------------------------------------------------------------------------------------

    async def handle_http(self, request: web.Request) -> web.Response:
        """POST /slack/events: size, signature and JSON checks, then Bolt.

        Event callbacks are acknowledged as soon as their signature checks out and Bolt dispatches them in a
        deferred background task (Bolt verifies again, dedupes and runs the listeners): the ack never waits
        behind listener matching, the dedupe store or other requests' work, and deferred work runs only while
        no ack is in progress (bots.tasks.AckGate), so acks stay fast under a burst. Everything else
        (url_verification, interactivity) goes through Bolt in the request.
        """
        with self.tasks.gate.acking():
            if (request.content_length or 0) > MAX_BODY_BYTES:
                return web.json_response({"error": "request body too large"}, status=413)
            try:
                body = await request.text()
            except web.HTTPRequestEntityTooLarge:
                return web.json_response({"error": "request body too large"}, status=413)
            timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
            signature = request.headers.get("X-Slack-Signature", "")
            if not (self.verifier and timestamp.isdigit() and signature
                    and self.verifier.is_valid(body, timestamp, signature)):
                return web.json_response({"error": "invalid request"}, status=401)
            if body.startswith("{"):  # JSON (Events API); Bolt parses any body starting with "{" as JSON too
                try:
                    payload = json.loads(body)
                except ValueError:
                    return web.json_response({"error": "malformed request body"}, status=400)
                if isinstance(payload, dict) and payload.get("type") == "event_callback":
                    if self.runner.draining:
                        return web.json_response({"error": "shutting down; deliver again"}, status=503)
                    try:  # a redelivery (same event_id) is acked and dropped, on every replica
                        first = await self.store.claim_event(f"slack:event:{payload.get('event_id')}")
                    except StoreUnavailable as exc:
                        log.error("answering Slack 503 so it delivers the event again: %s", exc)
                        return web.json_response({"error": "state store unavailable; deliver again"}, status=503)
                    if not first:
                        return web.Response(status=200)
                    # Bolt's request (parsing again, context) is built in the deferred task, off the ack path
                    self.tasks.spawn(self._dispatch(body, request.query_string, request.headers), deferred=True,
                                     name=f"slack-event:{payload.get('event_id')}")
                    return web.Response(status=200)
            try:
                bolt_request = AsyncBoltRequest(body=body, query=request.query_string, headers=request.headers)
            except ValueError:
                return web.json_response({"error": "malformed request body"}, status=400)
            return await to_aiohttp_response(await self.app.async_dispatch(bolt_request))

    async def _dispatch(self, body: str, query: str, headers: Any) -> None:
        bolt_request = AsyncBoltRequest(body=body, query=query, headers=headers)
        response = await self.app.async_dispatch(bolt_request)
        if response.status >= 400:
            log.warning("Slack event %s was not handled: HTTP %s %s", bolt_request.body.get("event_id"),
                        response.status, response.body[:200])

    # middleware and listeners ----------------------------------------------------------------------

    async def _dedupe_middleware(self, body: dict, request: AsyncBoltRequest, next) -> BoltResponse | None:
        """A redelivered Socket Mode event (same event_id) is dropped (HTTP events are claimed at the ack)."""
        event_id = body.get("event_id") if isinstance(body, dict) else None
        if event_id and request.mode == "socket_mode" and not await self._claim(f"slack:event:{event_id}"):
            return BoltResponse(status=200, body="")
        return await next()

    async def _claim(self, key: str) -> bool:
        """Claim a delivery once across replicas; after the ack, wait for the store rather than lose it."""
        for attempt in range(600):
            try:
                return await self.store.claim_event(key)
            except StoreUnavailable as exc:
                if attempt == 0:
                    log.error("a Slack event waits for the state store: %s", exc)
                await asyncio.sleep(1.0)
        return False

    async def _ignore(self) -> None:
        return None

    async def _ack_only(self, ack) -> None:
        await ack()

    async def _on_app_mention(self, event: dict, body: dict, context, client: AsyncWebClient) -> None:
        await self._maybe_handle(event, body, context, client, via="app_mention")

    async def _on_message(self, event: dict, body: dict, context, client: AsyncWebClient) -> None:
        await self._maybe_handle(event, body, context, client, via="message")

    async def _on_assistant_thread_started(self, event: dict, client: AsyncWebClient) -> None:
        thread = event.get("assistant_thread") or {}
        if thread.get("channel_id") and thread.get("thread_ts"):
            self.tasks.spawn(self._greet(client, thread["channel_id"], thread["thread_ts"]), name="slack-greeting",
                            deferred=True)

    async def _greet(self, client: AsyncWebClient, channel: str, thread_ts: str) -> None:
        await call_with_retry(client.chat_postMessage, 60.0, channel=channel, thread_ts=thread_ts, text=GREETING)

    async def _wanted(self, event: dict, team_id: str, bot_user_id: str | None, via: str) -> bool:
        """Is this message for the bot? Mentions, DMs, and follow-ups in threads it already answered."""
        if event.get("subtype") not in HANDLED_SUBTYPES or event.get("bot_id") or not event.get("user"):
            return False
        if event.get("user") == bot_user_id or not event.get("channel") or not event.get("ts"):
            return False
        if via == "app_mention" or event.get("channel_type") == "im":
            return True
        if bot_user_id and f"<@{bot_user_id}" in (event.get("text") or ""):
            return True  # a mention delivered only as a message event (bolt-python #925)
        thread_ts = event.get("thread_ts")
        if thread_ts and thread_ts != event["ts"]:
            key = f"slack:{team_id}:{event['channel']}:{thread_ts}"
            for attempt in range(600):
                try:
                    return await self.runner.knows_thread(key)
                except StoreUnavailable:
                    await asyncio.sleep(1.0)
        return False

    async def _maybe_handle(self, event: dict, body: dict, context, client: AsyncWebClient, via: str) -> None:
        team_id = context.team_id or body.get("team_id") or event.get("team") or ""
        if not await self._wanted(event, team_id, context.bot_user_id, via):
            return
        # One channel mention arrives as app_mention and as message.channels: answer the first only.
        if not await self._claim(f"slack:message:{team_id}:{event['channel']}:{event['ts']}"):
            return
        self.tasks.spawn(self._work(event, team_id, context.bot_user_id, client, via),
                         name=f"slack-{event['channel']}-{event['ts']}", deferred=True)

    async def _work(self, event: dict, team_id: str, bot_user_id: str | None, client: AsyncWebClient,
                    via: str) -> None:
        channel, ts = event["channel"], event["ts"]
        thread_ts = event.get("thread_ts") or ts
        is_direct = event.get("channel_type") == "im" or channel.startswith("D")
        address = SlackAddress(channel, thread_ts, team_id, event["user"],
                               event.get("user_team") or event.get("team") or team_id, is_direct)
        request = ChatRequest(
            platform="slack", workspace=team_id, channel=channel, thread=thread_ts, user=event["user"],
            text=clean_text(event.get("text") or "", bot_user_id), message_id=ts, is_direct=is_direct,
            reply_address=address.to_mapping(),
        )
        replier = self.replier_for(request)
        with request_span("slack.event", request, **{"slack.event_type": via}):
            try:
                attachments = await attachments_from_event(event, client, self.settings.slack_bot_token or "")
                channel_name = None if is_direct else await self._channel_name(client, channel)
                groups = await self.usergroups.groups_of(event["user"], team_id)
                # what the person had open reaches only their own DM with the bot, never a shared channel
                viewing = await take_context(self.runner.store, team_id, event["user"]) if is_direct else ()
                request = dataclasses.replace(request, attachments=attachments, channel_name=channel_name,
                                              user_groups=groups, viewing=viewing)
                await self.runner.handle(request, replier)
            except Exception:
                log.exception("Slack request in %s could not be handed to the runner", channel)
                await replier.error("Sorry, something went wrong on my side with this message. Please try again.")

    def replier_for(self, request: ChatRequest) -> SlackReplier:
        """The replier for a request, from its reply address alone (a worker process can do the same)."""
        return SlackReplier.from_address(
            self.app.client, request.reply_address, mode=self.settings.slack_step_updates,
            task_display=self.settings.slack_task_display, pacer=self.pacer, runner=self.runner)

    async def _on_app_home_opened(self, event: dict, client: AsyncWebClient) -> None:
        """The agent's Messages tab opened (agent_view): offer each department's suggested prompts."""
        if event.get("tab") != "messages" or not event.get("channel"):
            return
        prompts = suggested_prompts(self.runner.company)
        if prompts:
            self.tasks.spawn(self._suggest(client, event["channel"], prompts), name="slack-prompts", deferred=True)

    async def _suggest(self, client: AsyncWebClient, channel: str, prompts: list[dict]) -> None:
        try:  # no thread_ts: agent_view apps set the tab's prompts (with one the call silently does nothing)
            await call_with_retry(client.assistant_threads_setSuggestedPrompts, 30.0, channel_id=channel,
                                  prompts=prompts, title="Ask a department agent")
        except Exception as exc:  # noqa: BLE001 - prompts are an offer; the greeting still works without
            log.warning("assistant.threads.setSuggestedPrompts failed: %s", _error_name(exc))

    async def _on_app_context_changed(self, event: dict, body: dict) -> None:
        """What the person is looking at in Slack, kept for their next request (bolt has no listener for it)."""
        team_id = body.get("team_id") or event.get("team") or ""
        user = event.get("user") or next((a.get("user_id") for a in body.get("authorizations") or []
                                          if not a.get("is_bot")), None)
        await remember_context(self.runner.store, team_id, event, user)

    async def _channel_name(self, client: AsyncWebClient, channel: str) -> str | None:
        """Channel name for the departments file's channel map (cached; needs channels:read/groups:read)."""
        cached = self._channel_names.get(channel)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        name = None
        try:
            response = await client.conversations_info(channel=channel)
            name = (response.get("channel") or {}).get("name")
        except Exception as exc:  # noqa: BLE001 - routing falls back to prefix/classifier
            if not self._channel_scope_warned:
                self._channel_scope_warned = True
                log.warning("conversations.info failed (%s): channel-to-department mapping is off; "
                            "add the channels:read and groups:read scopes and reinstall the app", _error_name(exc))
        self._channel_names[channel] = (name, time.monotonic() + CHANNEL_NAME_TTL_S)
        return name

    async def with_credentials(self, request: ChatRequest) -> ChatRequest:
        return await with_credentials(request, self.settings.slack_bot_token or "")


async def _slack_disabled(request: web.Request) -> web.Response:
    return web.json_response(
        {"error": "Slack is not configured on this server: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET"},
        status=404,
    )


async def _http_disabled(request: web.Request) -> web.Response:
    return web.json_response(
        {"error": "Slack runs in Socket Mode here: set SLACK_SIGNING_SECRET to accept Events API requests"},
        status=404,
    )


SLACK_BOT = web.AppKey("slack_bot", SlackBot)


def mount(app: web.Application, settings: Settings, runner: "TaskRunner", tasks: BackgroundTasks, *,
          webhooks: bool = True) -> SlackBot | None:
    """Add Slack to the bot's aiohttp app (or a 404 route that says Slack is not configured).

    `webhooks=False` (a worker): no /slack/events and no Socket Mode, only the replies of queued tasks.
    """
    if not settings.slack_enabled:
        if webhooks:
            log.info("Slack disabled: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET (or SLACK_APP_TOKEN) to enable it")
            app.router.add_post("/slack/events", _slack_disabled)
        return None
    bot = SlackBot(settings, runner, tasks)
    app[SLACK_BOT] = bot
    runner.register_platform("slack", bot.replier_for, bot.with_credentials)
    if webhooks:
        app.router.add_post("/slack/events", bot.handle_http if settings.slack_signing_secret else _http_disabled)
    if webhooks and settings.slack_app_token:
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        handler = AsyncSocketModeHandler(bot.app, settings.slack_app_token)

        async def connect(app: web.Application) -> None:
            await handler.connect_async()
            log.info("Slack Socket Mode connected")

        async def disconnect(app: web.Application) -> None:
            await handler.close_async()

        app.on_startup.append(connect)
        app.on_cleanup.append(disconnect)
    log.info("Slack enabled: %s%s", "Events API at POST /slack/events" if settings.slack_signing_secret else "",
             " + Socket Mode" if settings.slack_app_token else "")

    async def notify_interrupted(record) -> None:
        request = record.request
        await call_with_retry(bot.app.client.chat_postMessage, 120, channel=request["channel"],
                              thread_ts=request["thread"], text=interrupted_message(record))

    app[INTERRUPTION_NOTIFIERS]["slack"] = notify_interrupted
    return bot
