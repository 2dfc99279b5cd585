"""The Slack half of the emulator: a Slack Web API for the bot, and signed Events API requests to it.

The Web API answers what slack_sdk sends (form or JSON bodies, `Authorization: Bearer xoxb-...`) in
Slack's response shapes, including its error codes (`invalid_auth`, `channel_not_found`,
`missing_recipient_team_id`, `unknown_method`). Events go to the bot's own `/slack/events` signed with
the signing secret exactly as Slack signs them (v0 HMAC-SHA256 over `v0:{timestamp}:{body}`).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from typing import Any

from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from bots.emulator import store as s
from bots.emulator.store import Store

log = logging.getLogger("agentdesk.emulator.slack")

MENTION_RE = re.compile(r"@agentdesk\b", re.I)


def sign(secret: str, timestamp: str, body: str) -> str:
    """Slack's request signature (https://api.slack.com/authentication/verifying-requests-from-slack)."""
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return f"v0={digest}"


def to_slack_text(text: str) -> tuple[str, bool]:
    """What a person typed as Slack sends it: &, <, > escaped and `@agentdesk` as a user mention."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    mentioned = bool(MENTION_RE.search(escaped))
    return MENTION_RE.sub(f"<@{s.SLACK_BOT_USER}>", escaped), mentioned


def _blocks_text(blocks: Any) -> str:
    """A readable rendering of Block Kit for messages the bot sends with blocks."""
    if isinstance(blocks, str):
        try:
            blocks = json.loads(blocks)
        except ValueError:
            return ""
    lines = []
    for block in blocks or []:
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


def _block_list(blocks: Any) -> list[dict]:
    if isinstance(blocks, str):
        try:
            blocks = json.loads(blocks)
        except ValueError:
            return []
    return [b for b in blocks or [] if isinstance(b, dict)]


class SlackSide:
    def __init__(self, store: Store, *, bot_token: str, signing_secret: str, self_url: str) -> None:
        self.store = store
        self.bot_token = bot_token
        self.signing_secret = signing_secret
        self.self_url = self_url
        self.api_base = f"{self_url}/_emulator/slack/api/"
        self.session: aiohttp.ClientSession | None = None
        self._conversation_by_id = {cid: key for key, cid in s.SLACK_CHANNEL_IDS.items()}

    def mount(self, app: web.Application) -> None:
        app.router.add_route("POST", "/_emulator/slack/api/{method}", self.api)
        app.router.add_route("GET", "/_emulator/slack/api/{method}", self.api)
        app.router.add_post("/_emulator/slack/upload/{file_id}", self.upload)
        app.router.add_get("/_emulator/slack/files/{file_id}/{name}", self.download)

    # the page's side: a person posts ---------------------------------------------------------------

    async def post_from_person(self, conversation: str, text: str, thread: str | None,
                               files: list[s.StoredFile]) -> dict[str, Any]:
        """Record the person's message and deliver it to the bot as Slack would."""
        channel = s.SLACK_CHANNEL_IDS[conversation]
        slack_text, mentioned = to_slack_text(text)
        ts = self.store.slack_ts()
        root = self.store.messages.get(thread) if thread else None
        thread_ts = root["platform_id"] if root else None
        message = self.store.add(flavour="slack", conversation=conversation, author="user", text=slack_text,
                                 platform_id=ts, thread=root["id"] if root else None,
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
        is_dm = conversation == s.DM
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

    async def deliver(self, event: dict[str, Any], conversation: str, thread: str | None) -> None:
        """POST one event_callback to /slack/events, signed; a refusal shows up as a notice on the page."""
        payload = {
            "token": "emulator-verification-token-unused", "team_id": s.SLACK_TEAM, "context_team_id": s.SLACK_TEAM,
            "api_app_id": s.SLACK_APP, "event": event, "type": "event_callback",
            "event_id": "Ev" + secrets.token_hex(8).upper(), "event_time": int(time.time()),
            "authorizations": [{"enterprise_id": None, "team_id": s.SLACK_TEAM, "user_id": s.SLACK_BOT_USER,
                                "is_bot": True, "is_enterprise_install": False}],
            "is_ext_shared_channel": False, "event_context": "4-" + secrets.token_hex(12),
        }
        body = json.dumps(payload, separators=(",", ":"))
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-Slack-Request-Timestamp": timestamp,
                   "X-Slack-Signature": sign(self.signing_secret, timestamp, body),
                   "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)"}
        assert self.session is not None
        try:
            async with self.session.post(f"{self.self_url}/slack/events", data=body.encode(), headers=headers) as resp:
                answer = await resp.text()
                if resp.status != 200:
                    self.store.notice("slack", conversation, thread,
                                      f"The bot refused the {event['type']} event: HTTP {resp.status} {answer[:300]}")
        except aiohttp.ClientError as exc:
            self.store.notice("slack", conversation, thread, f"Could not reach the bot's /slack/events: {exc}")

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

    # the bot's side: Web API -----------------------------------------------------------------------

    async def api(self, request: web.Request) -> web.Response:
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
        token = auth[7:] if auth.startswith("Bearer ") else params.get("token")
        if not token:
            return web.json_response({"ok": False, "error": "not_authed"})
        if not secrets.compare_digest(str(token), self.bot_token):
            return web.json_response({"ok": False, "error": "invalid_auth"})
        method = request.match_info["method"]
        handler = getattr(self, "m_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method", "req_method": method})
        result = await handler(params)
        headers = {"x-oauth-scopes": "app_mentions:read,assistant:write,chat:write,channels:history,channels:read,"
                                     "groups:history,groups:read,im:history,mpim:history,files:read,files:write"}
        return web.json_response(result, headers=headers)

    def _conversation(self, channel: Any) -> str | None:
        return self._conversation_by_id.get(str(channel or ""))

    def _thread(self, conversation: str, thread_ts: Any) -> dict[str, Any] | None:
        return self.store.find("slack", conversation, str(thread_ts)) if thread_ts else None

    async def m_auth_test(self, params: dict) -> dict:
        return {"ok": True, "url": "http://emulator.slack.localhost/", "team": "Emulator workspace",
                "user": s.BOT_NAME, "team_id": s.SLACK_TEAM, "user_id": s.SLACK_BOT_USER, "bot_id": s.SLACK_BOT_ID,
                "is_enterprise_install": False}

    def _post(self, conversation: str, params: dict, text: str, **extra: Any) -> dict[str, Any]:
        root = self._thread(conversation, params.get("thread_ts"))
        message = self.store.add(flavour="slack", conversation=conversation, author="bot", text=text,
                                 platform_id=self.store.slack_ts(), thread=root["id"] if root else None, **extra)
        self.store.status("slack", conversation, message["thread"], "")
        return message

    def _message_object(self, message: dict[str, Any]) -> dict[str, Any]:
        obj = {"type": "message", "user": s.SLACK_BOT_USER, "bot_id": s.SLACK_BOT_ID, "app_id": s.SLACK_APP,
               "text": message["text"], "ts": message["platform_id"], "team": s.SLACK_TEAM}
        root = self.store.messages.get(message["thread"] or "")
        if root:
            obj["thread_ts"] = root["platform_id"]
        return obj

    async def m_chat_postMessage(self, params: dict) -> dict:
        conversation = self._conversation(params.get("channel"))
        if conversation is None:
            return {"ok": False, "error": "channel_not_found"}
        text = params.get("text") or _blocks_text(params.get("blocks"))
        if not text and not params.get("blocks") and not params.get("attachments"):
            return {"ok": False, "error": "no_text"}
        message = self._post(conversation, params, text, format="mrkdwn", blocks=_block_list(params.get("blocks")))
        return {"ok": True, "channel": params["channel"], "ts": message["platform_id"],
                "message": self._message_object(message)}

    async def m_chat_postEphemeral(self, params: dict) -> dict:
        """Shown to the one person it is for, like Slack's "Only visible to you" messages."""
        conversation = self._conversation(params.get("channel"))
        if conversation is None:
            return {"ok": False, "error": "channel_not_found"}
        if params.get("user") != s.SLACK_HUMAN:
            return {"ok": False, "error": "user_not_in_channel"}
        message = self._post(conversation, params, str(params.get("text") or _blocks_text(params.get("blocks"))),
                             format="mrkdwn", ephemeral=True)
        return {"ok": True, "message_ts": message["platform_id"]}

    async def press_button(self, message: dict[str, Any], action_id: str) -> str:
        """The person pressed a Block Kit button: a signed block_actions request to /slack/events."""
        button = next((e for b in message.get("blocks") or [] if b.get("type") == "actions"
                       for e in b.get("elements") or [] if e.get("action_id") == action_id), None)
        if button is None:
            raise web.HTTPBadRequest(text="no such button on that message")
        channel = s.SLACK_CHANNEL_IDS[message["conversation"]]
        root = self.store.messages.get(message["thread"] or "")
        payload = {
            "type": "block_actions", "api_app_id": s.SLACK_APP, "token": "emulator-verification-token-unused",
            "user": {"id": s.SLACK_HUMAN, "username": "alex", "name": s.HUMAN_NAME, "team_id": s.SLACK_TEAM},
            "team": {"id": s.SLACK_TEAM, "domain": "emulator"}, "channel": {"id": channel},
            "container": {"type": "message", "message_ts": message["platform_id"], "channel_id": channel,
                          "is_ephemeral": False, **({"thread_ts": root["platform_id"]} if root else {})},
            "message": {**self._message_object(message), "blocks": message.get("blocks") or []},
            "trigger_id": f"{int(time.time())}.{secrets.randbelow(10**9)}", "response_url": f"{self.self_url}/_emulator/slack/respond",
            "actions": [{"type": "button", "action_id": action_id, "block_id": secrets.token_hex(3),
                         "value": button.get("value"), "text": button.get("text"), "action_ts": f"{time.time():.6f}"}],
        }
        body = urlencode({"payload": json.dumps(payload, separators=(",", ":"))})
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": timestamp,
                   "X-Slack-Signature": sign(self.signing_secret, timestamp, body)}
        assert self.session is not None
        try:
            async with self.session.post(f"{self.self_url}/slack/events", data=body.encode(), headers=headers) as resp:
                if resp.status != 200:
                    self.store.notice("slack", message["conversation"], message["thread"],
                                      f"The bot refused the button press: HTTP {resp.status} {(await resp.text())[:300]}")
                    return "failed"
        except aiohttp.ClientError as exc:
            self.store.notice("slack", message["conversation"], message["thread"], f"Could not reach the bot: {exc}")
            return "failed"
        return "sent"

    async def m_chat_update(self, params: dict) -> dict:
        conversation = self._conversation(params.get("channel"))
        if conversation is None:
            return {"ok": False, "error": "channel_not_found"}
        message = self.store.find("slack", conversation, str(params.get("ts") or ""))
        if message is None or message["author"] != "bot":
            return {"ok": False, "error": "message_not_found" if message is None else "cant_update_message"}
        text = params.get("text") or _blocks_text(params.get("blocks"))
        if len(text) > 40000:
            return {"ok": False, "error": "msg_too_long"}
        changes = {"blocks": _block_list(params.get("blocks"))} if "blocks" in params else {}
        self.store.update(message, text=text, edited=True, **changes)
        return {"ok": True, "channel": params["channel"], "ts": message["platform_id"], "text": text}

    async def m_chat_delete(self, params: dict) -> dict:
        conversation = self._conversation(params.get("channel"))
        message = self.store.find("slack", conversation or "", str(params.get("ts") or ""))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        self.store.delete(message)
        return {"ok": True, "channel": params["channel"], "ts": params["ts"]}

    async def m_assistant_threads_setStatus(self, params: dict) -> dict:
        conversation = self._conversation(params.get("channel_id"))
        if conversation is None:
            return {"ok": False, "error": "channel_not_found"}
        root = self._thread(conversation, params.get("thread_ts"))
        if root is None:
            return {"ok": False, "error": "invalid_thread_ts"}
        self.store.status("slack", conversation, root["id"], str(params.get("status") or ""))
        return {"ok": True}

    # streaming -------------------------------------------------------------------------------------

    @staticmethod
    def _chunks(raw: Any) -> list[dict]:
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:
                return []
        return [c for c in raw or [] if isinstance(c, dict)]

    def _apply_chunks(self, message: dict[str, Any], params: dict) -> dict[str, Any]:
        text = message.get("text") or ""
        tasks = list(message.get("tasks") or [])
        if params.get("markdown_text"):
            text += str(params["markdown_text"])
        for chunk in self._chunks(params.get("chunks")):
            kind = chunk.get("type")
            if kind == "markdown_text":
                text += str(chunk.get("text") or "")
            elif kind == "task_update":
                task = {k: chunk.get(k) for k in ("id", "title", "status", "details", "output")}
                tasks = [t for t in tasks if t.get("id") != task["id"]] + [task]
            elif kind == "plan_update":
                message["plan"] = chunk.get("title")
        return {"text": text, "tasks": tasks}

    async def m_chat_startStream(self, params: dict) -> dict:
        conversation = self._conversation(params.get("channel"))
        if conversation is None:
            return {"ok": False, "error": "channel_not_found"}
        if conversation != s.DM:
            if not params.get("recipient_team_id"):
                return {"ok": False, "error": "missing_recipient_team_id"}
            if not params.get("recipient_user_id"):
                return {"ok": False, "error": "missing_recipient_user_id"}
        if not params.get("thread_ts"):
            return {"ok": False, "error": "invalid_arguments"}
        message = self._post(conversation, params, "", format="mrkdwn", streaming=True, tasks=[])
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
        if params.get("blocks"):
            changes["text"] = (changes["text"] + "\n" + _blocks_text(params["blocks"])).strip()
        self.store.update(message, streaming=False, **changes)
        return {"ok": True, "channel": params["channel"], "ts": message["platform_id"],
                "message": self._message_object(message)}

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
        return {"ok": True, "upload_url": f"{self.self_url}/_emulator/slack/upload/{stored.id}", "file_id": stored.id}

    async def upload(self, request: web.Request) -> web.Response:
        """The upload URL: raw bytes, no token (slack_sdk sends none), HTTP 200 with a plain text body."""
        stored = self.store.files.get(request.match_info["file_id"])
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
        if not (auth.startswith("Bearer ") and secrets.compare_digest(auth[7:], self.bot_token)):
            page = "<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in to Slack</body></html>"
            return web.Response(text=page, content_type="text/html")
        if stored is None or not stored.complete or stored.name != request.match_info["name"]:
            return web.Response(status=404, text="file not found")
        return web.FileResponse(stored.path, headers={"Content-Type": stored.mimetype})

    # directory -------------------------------------------------------------------------------------

    async def m_conversations_info(self, params: dict) -> dict:
        channel = str(params.get("channel") or "")
        conversation = self._conversation(channel)
        if conversation is None:
            return {"ok": False, "error": "channel_not_found"}
        if conversation == s.DM:
            return {"ok": True, "channel": {"id": channel, "is_im": True, "is_channel": False, "is_private": True,
                                            "user": s.SLACK_HUMAN, "is_open": True}}
        name = dict(s.CHANNELS)[conversation]
        return {"ok": True, "channel": {"id": channel, "name": name, "name_normalized": name, "is_channel": True,
                                        "is_group": False, "is_im": False, "is_private": False, "is_member": True,
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

    async def m_conversations_replies(self, params: dict) -> dict:
        conversation = self._conversation(params.get("channel"))
        root = self._thread(conversation or "", params.get("ts"))
        if root is None:
            return {"ok": False, "error": "thread_not_found"}
        replies = [m for m in self.store.snapshot() if m["thread"] == root["id"] and m["author"] != "emulator"]
        return {"ok": True, "has_more": False, "messages": [
            {"type": "message", "ts": m["platform_id"], "thread_ts": root["platform_id"],
             "user": s.SLACK_HUMAN if m["author"] == "user" else s.SLACK_BOT_USER, "text": m["text"],
             **({"bot_id": s.SLACK_BOT_ID} if m["author"] == "bot" else {})}
            for m in [root, *replies]]}

    async def m_reactions_add(self, params: dict) -> dict:
        return {"ok": True}

    async def m_reactions_remove(self, params: dict) -> dict:
        return {"ok": True}

    async def m_assistant_threads_setSuggestedPrompts(self, params: dict) -> dict:
        return {"ok": True}

    async def m_assistant_threads_setTitle(self, params: dict) -> dict:
        return {"ok": True}

