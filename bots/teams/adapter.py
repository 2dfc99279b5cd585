"""Microsoft Teams at POST /api/messages: Bot Framework activities in, ChatRequests to the runner.

botbuilder (end of life, 4.17.1 is final) is used for exactly two things and stays inside bots/teams:
authenticating the inbound JWT (ConfigurationBotFrameworkAuthentication) and sending through a stored
conversation reference (CloudAdapter.continue_conversation). The HTTP handler is our own rather than
CloudAdapter.process, because process() answers 500 for forged tokens (garbage, no `iss`, wrong key,
expired), for `deliveryMode: expectReplies` and for invoke bodies that are plain dicts, and it awaits the
whole turn before answering, while Teams expects an answer within ~15 s.

So: authenticate (any failure is 401), turn the activity into a ChatRequest, start the agent in a tracked
background task and answer 201 at once. The agent replies through the conversation reference, as a reply
to the person's message. A `deliveryMode: expectReplies` caller (Copilot, another agent) reads only the
HTTP response, so that one waits, boundedly, for the run to resolve its answer. Invokes are dispatched by
name (bots/teams/invokes.py); the ones the bot does not handle get Teams' documented "nothing here" reply.
"""
from __future__ import annotations

import asyncio
import html
import json
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable

import requests
from aiohttp import web
from botbuilder.core import TurnContext
from botbuilder.integration.aiohttp import (
    CloudAdapter,
    ConfigurationBotFrameworkAuthentication,
    ConfigurationServiceClientCredentialFactory,
)
from botbuilder.schema import Activity, ConversationReference
from botframework.connector.auth import AuthenticationConstants, ServiceClientCredentialsFactory

from agents.chat import Attachment, ChatRequest, OutputFile
from agents.answer import ANSWER_RECORD_TTL_S
from agents.settings import Settings, SettingsError
from agents.state import StoreUnavailable
from agents.telemetry import request_span
from bots.recovery import INTERRUPTION_NOTIFIERS, interrupted_message
from bots.tasks import BackgroundTasks
from bots.teams import approvals
from bots.teams.files import PendingUploads, UploadFailed, file_info_card, inbound_attachments, upload
from bots.teams.graph import GraphClient, GraphError, MessageLocation
from bots.teams.invokes import Invokes, unsupported_invoke
from bots.teams.outbound import ConversationSender, RateLimiters, SendFailed
from bots.teams.delivery import reference_of, with_credentials
from bots.teams.replier import ExpectReplies, TeamsReplier, message_activity
from bots.teams.text import escape, welcome_text

log = logging.getLogger("agentdesk.teams")

#: Test-only: OpenID metadata URL whose keys sign the channel's tokens (production uses Microsoft's).
OPENID_METADATA_ENV = "TEAMS_OPENID_METADATA_URL"
AUTH_TIMEOUT_S = 20.0
APP_TYPES = {"singletenant": "SingleTenant", "multitenant": "MultiTenant", "userassignedmsi": "UserAssignedMSI"}

_AT_TAG = re.compile(r"<at[^>]*>(.*?)</at>", re.IGNORECASE | re.DOTALL)


class _Config:
    """The attribute-style configuration object botbuilder's factories read."""

    def __init__(self, **values: Any) -> None:
        for key, value in values.items():
            if value is not None:
                setattr(self, key, value)


def _configuration(settings: Settings, metadata_url: str | None) -> _Config:
    app_id = settings.teams_app_id or ""
    if not app_id:
        # Auth disabled (local development): botbuilder only allows that with MultiTenant and no id.
        return _Config(APP_ID="", APP_PASSWORD="", APP_TYPE="MultiTenant")
    app_type = APP_TYPES.get((settings.teams_app_type or "SingleTenant").lower())
    if app_type is None:
        raise SettingsError("TEAMS_APP_TYPE must be SingleTenant, MultiTenant or UserAssignedMSI, "
                            f"got {settings.teams_app_type!r}")
    if app_type != "MultiTenant" and not settings.teams_app_tenant_id:
        raise SettingsError(f"TEAMS_APP_TYPE={app_type} needs TEAMS_APP_TENANT_ID (the Entra tenant of the "
                            "bot registration: Azure portal > Azure Bot > Configuration)")
    if app_type != "UserAssignedMSI" and not settings.teams_app_password:
        raise SettingsError(f"TEAMS_APP_TYPE={app_type} needs TEAMS_APP_PASSWORD (a client secret of the "
                            "bot's app registration)")
    values: dict[str, Any] = dict(
        APP_ID=app_id,
        APP_PASSWORD=settings.teams_app_password,
        APP_TYPE=app_type,
        APP_TENANTID=settings.teams_app_tenant_id,
    )
    if metadata_url:
        # Setting one URL switches botbuilder to its parameterized authentication, which needs every
        # public-cloud value spelled out.
        values.update(
            TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL=metadata_url,
            TO_BOT_FROM_EMULATOR_OPENID_METADATA_URL=metadata_url,
            TO_BOT_FROM_CHANNEL_TOKEN_ISSUER=AuthenticationConstants.TO_BOT_FROM_CHANNEL_TOKEN_ISSUER,
            TO_CHANNEL_FROM_BOT_LOGIN_URL=AuthenticationConstants.TO_CHANNEL_FROM_BOT_LOGIN_URL_PREFIX,
            TO_CHANNEL_FROM_BOT_OAUTH_SCOPE=AuthenticationConstants.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE,
            OAUTH_URL=AuthenticationConstants.OAUTH_URL,
            CALLER_ID="urn:botframework:azure",
        )
    return _Config(**values)


class _CachedCredentials(ServiceClientCredentialsFactory):
    """Reuses credentials across connectors.

    botbuilder builds new credentials, and so a new MSAL client with an empty token cache, for every
    connector, i.e. for every send through continue_conversation; and msrest asks them for a token
    synchronously on the event loop. Cached here, a token is fetched about once an hour, and
    `token()` refreshes it in a worker thread before a send, so the loop only ever reads the cache.
    """

    def __init__(self, inner: ServiceClientCredentialsFactory) -> None:
        self._inner = inner
        self._made: dict[tuple, Any] = {}

    async def is_valid_app_id(self, app_id: str) -> bool:
        return await self._inner.is_valid_app_id(app_id)

    async def is_authentication_disabled(self) -> bool:
        return await self._inner.is_authentication_disabled()

    async def create_credentials(self, app_id: str, oauth_scope: str, login_endpoint: str,
                                 validate_authority: bool) -> Any:
        key = (app_id, oauth_scope, login_endpoint, validate_authority)
        if key not in self._made:
            self._made[key] = await self._inner.create_credentials(*key)
        return self._made[key]

    async def for_channel(self, app_id: str) -> Any:
        """The credentials botbuilder's connector factory asks for when the bot talks to Teams."""
        return await self.create_credentials(app_id, AuthenticationConstants.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE,
                                             AuthenticationConstants.TO_CHANNEL_FROM_BOT_LOGIN_URL_PREFIX, True)

    async def token(self, app_id: str) -> str:
        """A current token, fetched (or read from MSAL's cache) in a worker thread."""
        credentials = await self.for_channel(app_id)
        return await asyncio.to_thread(credentials.get_access_token)


@dataclass(frozen=True)
class _Turn:
    """What the background work needs from one inbound activity."""

    request: ChatRequest
    conversation_type: str
    owner: str
    team_group: str | None = None  # the team's Microsoft 365 group id, for Graph
    channel_id: str | None = None


class TeamsBot:
    def __init__(self, settings: Settings, runner: Any, tasks: BackgroundTasks) -> None:
        self.settings = settings
        self.runner = runner
        self.tasks = tasks
        self.app_id = settings.teams_app_id or ""
        self.enabled = bool(self.app_id) or settings.teams_allow_unauthenticated
        metadata_url = os.environ.get(OPENID_METADATA_ENV) or None
        config = _configuration(settings, metadata_url)
        self.credentials = _CachedCredentials(ConfigurationServiceClientCredentialFactory(config))
        self.auth = ConfigurationBotFrameworkAuthentication(config, credentials_factory=self.credentials)
        self.adapter = CloudAdapter(self.auth)
        self.limiters = RateLimiters()
        self.uploads = PendingUploads(settings.data_dir / "teams" / "uploads")
        self.store = runner.store
        self.graph = GraphClient(settings) if GraphClient.configured(settings) else None
        self.invokes = Invokes({
            "fileConsent/invoke": self._on_file_consent,
            "message/submitAction": self._on_submit_action,
            approvals.INVOKE_NAME: lambda activity: approvals.on_invoke(self, activity),
        })
        company = getattr(runner, "company", None)
        self._wanted_groups = frozenset(g for d in getattr(company, "departments", {}).values()
                                        for g in d.access.teams_groups)
        if self._wanted_groups and self.graph is None:
            log.warning("teams: the departments file has teams_groups rules, but Microsoft Graph is not configured "
                        "(GRAPH_CLIENT_SECRET): nobody matches them until it is.")
        if metadata_url and self.app_id:
            log.warning("%s is set: Teams tokens are checked against keys from %s. This is for tests only; "
                        "unset it in production.", OPENID_METADATA_ENV, metadata_url)
        if not self.app_id and settings.teams_allow_unauthenticated:
            log.warning("TEAMS_ALLOW_UNAUTHENTICATED=1 and no TEAMS_APP_ID: /api/messages accepts UNSIGNED "
                        "activities from anyone who can reach it. Use this for local development only.")
        elif self.app_id and settings.teams_allow_unauthenticated:
            log.warning("TEAMS_ALLOW_UNAUTHENTICATED is ignored because TEAMS_APP_ID is set: every Teams "
                        "request must carry a valid Bot Framework token.")
        elif not self.enabled:
            log.info("Teams is not configured (no TEAMS_APP_ID): /api/messages refuses every request.")

    # -- HTTP ---------------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not self.enabled:
            return _error(401, "Teams is not configured on this server (TEAMS_APP_ID is unset)")
        if "application/json" not in request.headers.get("Content-Type", ""):
            return _error(415, "expected a JSON Bot Framework activity")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the body is not JSON")
        if not isinstance(body, dict) or not body.get("type"):
            return _error(400, "the body is not a Bot Framework activity")
        try:
            activity = Activity().deserialize(body)
        except Exception:  # noqa: BLE001 - msrest raises several types for malformed input
            return _error(400, "the body is not a Bot Framework activity")

        denied = await self._authenticate(activity, request.headers.get("Authorization", ""))
        if denied is not None:
            return denied

        if activity.type == "message":
            if self.runner.draining:
                return _error(503, "shutting down; deliver again")
            try:
                if activity.delivery_mode == "expectReplies":
                    return await self._expect_replies(activity)
                await self._on_message(activity)
            except StoreUnavailable as exc:
                log.error("teams: answering 503 so the activity is delivered again: %s", exc)
                return _error(503, "state store unavailable; deliver again")
            return web.Response(status=201)
        if activity.type == "invoke":
            return await self.invokes.dispatch(activity)
        if activity.type in ("conversationUpdate", "installationUpdate") and self._bot_was_added(activity):
            # Teams sends both when the bot is added: one welcome per conversation.
            conversation = activity.conversation.id.partition(";")[0] if activity.conversation else ""
            if conversation and await self.store.claim_event(f"teams:welcome|{conversation}"):
                self.tasks.spawn(self._welcome(activity), name=f"teams-welcome:{activity.id}")
        return web.Response(status=201)

    async def _authenticate(self, activity: Activity, header: str) -> web.Response | None:
        """None when the request may proceed; a 401 (or 503 when Microsoft's keys are unreachable)."""
        if not self.app_id:
            return None  # TEAMS_ALLOW_UNAUTHENTICATED: enabled only without an app id
        if not header:
            return _error(401, "missing Authorization header")

        def check() -> None:
            # botbuilder fetches signing keys with blocking `requests` calls; keep them off the event loop.
            asyncio.run(self.auth.authenticate_request(activity, header))

        try:
            await asyncio.wait_for(asyncio.to_thread(check), AUTH_TIMEOUT_S)
        except PermissionError as exc:
            log.warning("teams: rejected a request: %s", _short(str(exc)))
            return _error(401, "invalid Bot Framework token")
        except (TimeoutError, requests.RequestException) as exc:
            log.error("teams: could not fetch the Bot Framework signing keys (%s); check outbound HTTPS to "
                      "login.botframework.com", type(exc).__name__)
            return _error(503, "cannot verify the token right now")
        except Exception as exc:  # noqa: BLE001 - every failure to validate a token is a 401
            log.warning("teams: rejected a request with an invalid token (%s: %s)", type(exc).__name__,
                        _short(str(exc)))
            return _error(401, "invalid Bot Framework token")
        return None

    # -- messages -----------------------------------------------------------------------------------------

    async def _first_time(self, activity: Activity) -> bool:
        """Teams redelivers an activity it thinks timed out; the same id must not start a second run, even
        across a restart (the same store as Slack's)."""
        if not activity.id:
            return True
        conversation = activity.conversation.id if activity.conversation else ""
        return await self.store.claim_event(f"teams:{conversation}|{activity.id}")

    async def _on_message(self, activity: Activity, expect: ExpectReplies | None = None) -> bool:
        """Start answering `activity` in the background; False if it is not answerable or a redelivery."""
        if activity.conversation is None or activity.from_property is None or not activity.service_url:
            log.warning("teams: ignored a message without conversation, sender or serviceUrl")
            return False
        if not await self._first_time(activity):
            log.info("teams: ignored a redelivered activity")
            return False
        self.tasks.spawn(self._run(activity, expect), name=f"teams:{activity.id}")
        return True

    async def _expect_replies(self, activity: Activity) -> web.Response:
        """The answer in the HTTP response, within TEAMS_EXPECT_REPLIES_WAIT_S.

        The run resolves `expect` with its answer activities; if it outlives the wait, the caller gets a
        clear "still working" message and the answer goes to the conversation when it is ready.
        """
        expect = ExpectReplies()
        if not await self._on_message(activity, expect):
            return web.json_response({"activities": []}, status=200)
        wait = self.settings.teams_expect_replies_wait_s
        try:
            activities = await asyncio.wait_for(asyncio.shield(expect.result), wait)
        except TimeoutError:
            expect.outlived()
            activities = [message_activity(
                f"I'm still working on this (it takes longer than {wait:.0f} seconds). I'll post the answer in "
                "this conversation when it is ready.").serialize()]
        return web.json_response({"activities": activities}, status=200)

    async def _run(self, activity: Activity, expect: ExpectReplies | None = None) -> None:
        sender = self._sender(TurnContext.get_conversation_reference(activity))
        try:
            await self._answer(activity, sender, expect)
        except SendFailed as exc:
            log.error("teams: could not reply in a conversation: %s", exc)
        except Exception:
            log.exception("teams: handling a message failed")
            if expect is not None and expect.resolve([message_activity(
                    "Something went wrong on my side; the error was logged. Please try again.").serialize()]):
                return
            try:
                await sender.send(message_activity("Something went wrong on my side; the error was logged. "
                                                   "Please try again."))
            except SendFailed as exc:
                log.error("teams: could not report a failure in the conversation: %s", exc)

    async def _answer(self, activity: Activity, sender: ConversationSender,
                      expect: ExpectReplies | None = None) -> None:
        turn = await self._turn(activity)
        if not turn.request.text and not turn.request.attachments:
            hint = message_activity("Ask me a question. To pick a department, start with its name, "
                                    "e.g. “hr: how many leave days do I have?”")
            if expect is None or not expect.resolve([hint.serialize()]):
                await sender.send(hint)
            return
        replier = self.replier_for(turn.request)
        if expect is not None:
            replier = expect.wrap(replier)
        with request_span("teams.activity", turn.request, **{"agentdesk.teams.conversation_type":
                                                                  turn.conversation_type}):
            await self.runner.handle(turn.request, replier)

    def replier_for(self, request: ChatRequest) -> TeamsReplier:
        """The replier for one request, from the request and shared clients only: the process that received
        the activity and a worker that runs the task (maybe another process) build it the same way."""
        address = request.reply_address
        sender = self._sender(reference_of(request))
        conversation_type = address.get("conversation_type", "personal" if request.is_direct else "channel")
        team_group, channel_id = address.get("team_group"), address.get("channel_id")

        async def stop() -> None:
            accepted, why = await self.runner.request_stop(request.thread_key, request.user)
            if not accepted:
                log.info("teams: Stop pressed but not applied: %s", why)

        async def remember(activity_id: str, answer) -> None:
            if answer.task_id:
                for key in (activity_id, LATEST):
                    await self.runner.store.put_record("teams_answers", _answer_key(request.channel, key),
                                                       {"task_id": answer.task_id}, ANSWER_RECORD_TTL_S)

        def label_for(department: str):
            found = getattr(self.runner, "company", None) and self.runner.company.departments.get(department)
            return getattr(found, "sensitivity_label", None)

        share = None
        if self.graph is not None and not request.is_direct:
            graph = self.graph
            if conversation_type == "channel" and team_group and channel_id:
                async def share(file: OutputFile) -> str:
                    return await graph.upload_to_channel(team_group, channel_id, file)
            elif conversation_type == "groupChat":
                async def share(file: OutputFile) -> str:
                    return await graph.upload_to_chat(request.user, file)
        return TeamsReplier(sender, personal=request.is_direct, uploads=self.uploads, owner=request.user,
                            on_stop=stop, on_answer=remember, label_for=label_for, share_file=share)

    async def _turn(self, activity: Activity) -> _Turn:
        conversation = activity.conversation
        data = activity.channel_data if isinstance(activity.channel_data, dict) else {}
        conversation_type = conversation.conversation_type or ("personal" if not conversation.is_group else "groupChat")
        personal = conversation_type == "personal"
        user = activity.from_property
        owner = user.aad_object_id or user.id
        team = (data.get("team") or {}).get("id")
        team_group = (data.get("team") or {}).get("aadGroupId")
        channel = data.get("channel") or {}
        where = MessageLocation(
            message_id=activity.id or "", team_id=team_group, channel_id=channel.get("id"),
            root_id=conversation.id.partition(";messageid=")[2] or activity.id,
            chat_id=conversation.id if conversation_type == "groupChat" else None)
        request = ChatRequest(
            platform="teams",
            workspace=_tenant(conversation, data),
            channel=conversation.id,
            thread=conversation.id,
            user=owner,
            user_name=user.name,
            text=strip_bot_mention(activity),
            attachments=await inbound_attachments(activity, personal=personal, token=self._bot_token,
                                                  shared=self._shared_files(where) if self.graph else None),
            message_id=activity.id or "",
            channel_name=channel.get("name") if conversation_type == "channel" else None,
            is_direct=personal,
            team=team,
            user_groups=await self.groups_of(owner),
            reply_address={
                "conversation_reference": json.dumps(TurnContext.get_conversation_reference(activity).serialize()),
                "conversation_type": conversation_type, "team_group": team_group or "",
                "channel_id": channel.get("id") or "",
            },
        )
        return _Turn(request, conversation_type, owner, team_group, channel.get("id"))

    def _shared_files(self, where: MessageLocation):
        graph = self.graph
        assert graph is not None

        async def fetch() -> tuple[Attachment, ...]:
            if not where.chat_id and not (where.team_id and where.channel_id):
                log.warning("teams: a file shared in a channel whose activity has no team or channel id")
                return (Attachment(name="shared-file", unavailable="Teams did not say which channel this file is in, "
                                   "so I can't fetch it. Try sharing it again."),)
            try:
                return await graph.message_files(where)
            except GraphError as exc:
                return (Attachment(name="shared-file", unavailable=f"I couldn't fetch the shared file: {exc}."),)

        return fetch

    async def groups_of(self, user: str, among: Iterable[str] | None = None, *,
                        fresh: bool = False) -> tuple[str, ...]:
        """The person's groups among `among` (default: those teams_groups rules name), looked up through Graph;
        an approval asks about its approvers `fresh`, so a membership just removed no longer approves."""
        wanted = self._wanted_groups if among is None else frozenset(among)
        if self.graph is None or not wanted or not user:
            return ()
        try:
            return tuple(sorted(await self.graph.groups_of(user, fresh=fresh) & wanted))
        except GraphError as exc:
            log.warning("teams: could not look up a person's groups: %s", exc)
            return ()

    async def with_credentials(self, request: ChatRequest) -> ChatRequest:
        graph = self.graph
        return await with_credentials(request, self._bot_token, graph.api if graph else None,
                                      graph.token if graph else None)

    def _sender(self, reference: ConversationReference) -> ConversationSender:
        return ConversationSender(reference, self._continue, self.limiters.for_thread(reference.conversation.id))

    async def _continue(self, reference: ConversationReference,
                        logic: Callable[[TurnContext], Awaitable[None]]) -> None:
        if self.app_id:
            try:
                await self.credentials.token(self.app_id)
            except Exception as exc:  # noqa: BLE001 - the send below reports the same failure
                log.error("teams: could not get a Bot Framework token (%s); check TEAMS_APP_PASSWORD and "
                          "TEAMS_APP_TENANT_ID", type(exc).__name__)
        await self.adapter.continue_conversation(reference, logic, bot_app_id=self.app_id or None)

    async def _bot_token(self) -> str | None:
        """The bot's own Bot Framework token, for images pasted into a chat (they live on the connector)."""
        if not self.app_id:
            return None
        try:
            return await self.credentials.token(self.app_id)
        except Exception as exc:  # noqa: BLE001 - the download then fails with a clear 401 message
            log.error("teams: could not get a bot token to download an image (%s); check TEAMS_APP_PASSWORD "
                      "and TEAMS_APP_TENANT_ID", type(exc).__name__)
            return None

    # -- invokes ------------------------------------------------------------------------------------------

    async def _on_file_consent(self, activity: Activity) -> web.Response:
        if activity.conversation is not None and activity.from_property is not None and await self._first_time(activity):
            self.tasks.spawn(self._file_consent(activity), name=f"teams-consent:{activity.id}")
        return web.json_response(None, status=200)

    async def _on_submit_action(self, activity: Activity) -> web.Response:
        """The feedback buttons of an answer (`message/submitAction`, actionName feedback)."""
        value = activity.value if isinstance(activity.value, dict) else {}
        if value.get("actionName") != "feedback":
            return unsupported_invoke(activity)
        action = value.get("actionValue") if isinstance(value.get("actionValue"), dict) else {}
        reaction = {"like": "positive", "dislike": "negative"}.get(str(action.get("reaction")))
        comment = _feedback_text(action.get("feedback"))
        user = activity.from_property
        if reaction is None or user is None or activity.conversation is None:
            return _error(400, "feedback needs a reaction (like or dislike) and the conversation it is in")
        # Teams names the answer in replyToId; clients that don't (the Agents Playground) mean the latest one.
        record = await self.runner.store.get_record(
            "teams_answers", _answer_key(activity.conversation.id, activity.reply_to_id or LATEST))
        stored = record is not None and await self.runner.record_feedback(
            record["task_id"], platform="teams", user=user.aad_object_id or user.id, value=reaction, comment=comment)
        if not stored:
            log.info("teams: feedback on an unknown or expired answer was ignored")
        return web.json_response({}, status=200)  # Teams clients read an empty object as "received"

    # -- welcome ------------------------------------------------------------------------------------------

    def _bot_was_added(self, activity: Activity) -> bool:
        if activity.type == "installationUpdate":
            return (activity.action or "add").startswith("add")
        bot_id = activity.recipient.id if activity.recipient else None
        return any(m.id == bot_id for m in activity.members_added or ())

    async def _welcome(self, activity: Activity) -> None:
        if activity.conversation is None or not activity.service_url:
            return
        reference = TurnContext.get_conversation_reference(activity)
        reference.activity_id = None  # a welcome starts its own message, it answers nothing
        try:
            await self._sender(reference).send(message_activity(welcome_text(self.runner.company)))
        except SendFailed as exc:
            log.error("teams: could not send the welcome message: %s", exc)

    async def _file_consent(self, activity: Activity) -> None:
        value = activity.value if isinstance(activity.value, dict) else {}
        context = value.get("context") if isinstance(value.get("context"), dict) else {}
        user = activity.from_property
        pending = self.uploads.get(context.get("upload"), user.aad_object_id or user.id)
        sender = self._sender(TurnContext.get_conversation_reference(activity))
        try:
            if pending is None:
                await sender.send(message_activity("That file is no longer available (offers expire after a day). "
                                           "Ask again and I'll make it again."))
                return
            if value.get("action") != "accept":
                self.uploads.discard(pending.token)
                await sender.send(message_activity(f"Okay, I won't upload {escape(pending.name)}."))
                return
            info = value.get("uploadInfo") if isinstance(value.get("uploadInfo"), dict) else {}
            try:
                await upload(str(info.get("uploadUrl") or ""), pending)
            except UploadFailed as exc:
                log.warning("teams: file upload to OneDrive failed: %s", exc)
                await sender.send(message_activity(f"I couldn't upload {escape(pending.name)}: {escape(str(exc))}. "
                                           "Accept the card again to retry."))
                return
            self.uploads.discard(pending.token)
            await sender.send(message_activity("", [file_info_card(pending.name, info)]))
        except SendFailed as exc:
            log.error("teams: could not answer a file consent: %s", exc)


#: The key of a conversation's most recent answer, for feedback that names no message.
LATEST = "latest"


def _answer_key(conversation_id: str, activity_id: str) -> str:
    """An answer's key in the store: the conversation (without a channel thread's suffix) and its id."""
    return f"{conversation_id.partition(';')[0]}|{activity_id}"


def _feedback_text(raw: object) -> str | None:
    """Teams sends the comment as a JSON string `{"feedbackText": "..."}`."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        parsed = json.loads(raw)
    except ValueError:
        return raw
    text = parsed.get("feedbackText") if isinstance(parsed, dict) else None
    return text if isinstance(text, str) and text.strip() else None


def strip_bot_mention(activity: Activity) -> str:
    """The message text without the bot's own @mention; other mentions become plain `@Name`.

    botbuilder's remove_recipient_mention deletes every occurrence of the bot's name; this removes only
    the mention markup the entity points at (its `text`, e.g. `<at>HR Bot</at>`), once per mention.
    """
    text = activity.text or ""
    bot_id = activity.recipient.id if activity.recipient else None
    for entity in activity.entities or ():
        props = entity.serialize() if hasattr(entity, "serialize") else dict(entity)
        props.update(getattr(entity, "additional_properties", None) or {})
        mentioned = props.get("mentioned") or {}
        if props.get("type") == "mention" and bot_id and mentioned.get("id") == bot_id and props.get("text"):
            text = text.replace(props["text"], "", 1)
    text = _AT_TAG.sub(lambda m: "@" + m.group(1), text)
    return re.sub(r"[ \t]{2,}", " ", html.unescape(text)).strip()


def _tenant(conversation: Any, channel_data: dict) -> str:
    """Teams sends `conversation.tenantId`, which botbuilder maps as `tenantID` (so it lands in extras)."""
    extras = getattr(conversation, "additional_properties", None) or {}
    return (conversation.tenant_id or extras.get("tenantId") or (channel_data.get("tenant") or {}).get("id")
            or "")


def _short(text: str, limit: int = 160) -> str:
    """Exception text for a log line: bounded, and never a token (botbuilder puts none in its messages)."""
    return text if len(text) <= limit else text[:limit] + "…"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def mount(app: web.Application, settings: Settings, runner: Any, tasks: BackgroundTasks, *,
          webhooks: bool = True) -> TeamsBot:
    """Serve Teams at POST /api/messages on the shared app (`webhooks=False`, a worker: replies only)."""
    bot = TeamsBot(settings, runner, tasks)
    runner.register_platform("teams", bot.replier_for, bot.with_credentials)
    if webhooks:
        app.router.add_post("/api/messages", bot.handle)

    async def notify_interrupted(record) -> None:
        stored = record.request.get("reply_address", {}).get("conversation_reference")
        if not stored:
            return
        reference = ConversationReference().deserialize(json.loads(stored))
        await bot._sender(reference).send(message_activity(interrupted_message(record)))

    app[INTERRUPTION_NOTIFIERS]["teams"] = notify_interrupted

    async def close(app: web.Application) -> None:
        if bot.graph is not None:
            await bot.graph.close()

    app.on_cleanup.append(close)
    return bot
