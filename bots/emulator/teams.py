"""The Teams half of the emulator: Bot Framework activities to the bot, and the connector it answers.

Activities go to the bot's own `/api/messages` with `serviceUrl` set to this connector
(`/_emulator/teams/`), so botbuilder sends its replies here over the Bot Framework REST API. The connector
is the one Teams fake (bots/emulator/teams_connector.py, which the tests use too: streaming rules and
pacing, ids on create); this module puts what it accepts on the page, keeps channel threads addressed as
`19:...;messageid=<root>`, files only in personal chats, and the file consent flow (FileConsentCard ->
`fileConsent/invoke` -> PUT to an upload session -> FileInfoCard).
"""
from __future__ import annotations

import datetime as dt
import html
import json
import logging
import re
from typing import Any

import aiohttp
from aiohttp import web

from bots.emulator import store as s
from bots.emulator.store import Store
from bots.emulator.teams_connector import ConnectorError, TeamsConnector

log = logging.getLogger("agentdesk.emulator.teams")

MENTION_RE = re.compile(r"@agentdesk\b", re.I)
FILE_DOWNLOAD_INFO = "application/vnd.microsoft.teams.file.download.info"
FILE_CONSENT_CARD = "application/vnd.microsoft.teams.card.file.consent"
FILE_INFO_CARD = "application/vnd.microsoft.teams.card.file.info"
ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
HERO_CARD = "application/vnd.microsoft.card.hero"
_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TeamsSide:
    def __init__(self, store: Store, *, self_url: str) -> None:
        self.store = store
        self.self_url = self_url
        self.service_url = f"{self_url}/_emulator/teams/"
        self.session: aiohttp.ClientSession | None = None
        self._conversation_by_id = {cid: key for key, cid in s.TEAMS_CHANNEL_IDS.items()}
        self.connector = TeamsConnector(_PageConversations(self))

    def mount(self, app: web.Application) -> None:
        base = "/_emulator/teams/v3/conversations"
        app.router.add_post(base, self.create_conversation)
        self.connector.mount(app, "/_emulator/teams")
        app.router.add_get(base + "/{cid}/members", self.members)
        app.router.add_get(base + "/{cid}/pagedmembers", self.paged_members)
        app.router.add_get(base + "/{cid}/members/{mid}", self.member)
        app.router.add_put("/_emulator/teams/onedrive/{file_id}", self.onedrive_put)
        app.router.add_get("/_emulator/teams/download/{token}", self.download)

    # identities ------------------------------------------------------------------------------------

    def _conversation_object(self, conversation: str, root_pid: str | None) -> dict[str, Any]:
        cid = s.TEAMS_CHANNEL_IDS[conversation]
        if conversation == s.DM:
            return {"conversationType": "personal", "tenantId": s.TEAMS_TENANT, "id": cid}
        return {"isGroup": True, "conversationType": "channel", "tenantId": s.TEAMS_TENANT,
                "id": f"{cid};messageid={root_pid}"}

    def _channel_data(self, conversation: str) -> dict[str, Any]:
        data: dict[str, Any] = {"tenant": {"id": s.TEAMS_TENANT}}
        if conversation != s.DM:
            cid = s.TEAMS_CHANNEL_IDS[conversation]
            data.update({"teamsChannelId": cid, "teamsTeamId": s.TEAMS_TEAM,
                         "channel": {"id": cid, "name": dict(s.CHANNELS)[conversation]},
                         "team": {"id": s.TEAMS_TEAM, "name": "Emulator team",
                                  "aadGroupId": "0b6c1f7e-2a7d-4f0e-9a61-0e0e0e0e0e03"}})
        return data

    def _envelope(self, conversation: str, root_pid: str | None, activity_id: str) -> dict[str, Any]:
        return {
            "id": activity_id, "timestamp": _now(), "localTimestamp": _now(), "localTimezone": "Europe/London",
            "serviceUrl": self.service_url, "channelId": "msteams",
            "from": {"id": s.TEAMS_HUMAN, "name": s.HUMAN_NAME, "aadObjectId": s.TEAMS_HUMAN_AAD},
            "conversation": self._conversation_object(conversation, root_pid),
            "recipient": {"id": s.TEAMS_BOT, "name": s.BOT_NAME},
            "channelData": self._channel_data(conversation), "locale": "en-US",
        }

    def _member(self) -> dict[str, Any]:
        return {"id": s.TEAMS_HUMAN, "name": s.HUMAN_NAME, "aadObjectId": s.TEAMS_HUMAN_AAD, "givenName": "Alex",
                "surname": "Rivera", "email": s.HUMAN_EMAIL, "userPrincipalName": s.HUMAN_EMAIL,
                "tenantId": s.TEAMS_TENANT, "userRole": "user"}

    # the page's side: a person posts ---------------------------------------------------------------

    async def post_from_person(self, conversation: str, text: str, thread: str | None,
                               files: list[s.StoredFile]) -> dict[str, Any]:
        """Record the person's message and deliver it to the bot as Teams would (or say why Teams wouldn't)."""
        personal = conversation == s.DM
        activity_id = self.store.teams_id()
        root = None if personal or not thread else self.store.messages.get(thread)
        root_pid = root["platform_id"] if root else activity_id
        mentioned = bool(MENTION_RE.search(text))
        wire_text = MENTION_RE.sub(f"<at>{s.BOT_NAME}</at>", text)
        message = self.store.add(flavour="teams", conversation=conversation, author="user", text=wire_text,
                                 platform_id=activity_id, thread=root["id"] if root else None,
                                 files=[f.public() for f in files], format="teams-user")
        thread_id = None if personal else (root["id"] if root else message["id"])
        if not personal and not mentioned:
            self.store.notice("teams", conversation, thread_id,
                              "Teams delivers channel messages to a bot only when it is @mentioned: type @agentdesk.")
            return message
        activity = self._envelope(conversation, None if personal else root_pid, activity_id)
        entities: list[dict[str, Any]] = [{"type": "clientInfo", "locale": "en-US", "country": "GB",
                                           "platform": "Web", "timezone": "Europe/London"}]
        if mentioned:
            entities.insert(0, {"type": "mention", "text": f"<at>{s.BOT_NAME}</at>",
                                "mentioned": {"id": s.TEAMS_BOT, "name": s.BOT_NAME}})
        activity.update({"type": "message", "text": wire_text, "textFormat": "plain", "entities": entities,
                         "attachments": self._attachments(wire_text, files, personal)})
        if root:
            activity["replyToId"] = root_pid
        await self.deliver(activity, conversation, thread_id)
        return message

    def _attachments(self, text: str, files: list[s.StoredFile], personal: bool) -> list[dict[str, Any]]:
        if personal:
            return [{"contentType": FILE_DOWNLOAD_INFO, "name": f.name,
                     "contentUrl": f"{self.self_url}/_emulator/teams/download/{f.token}",
                     "content": {"downloadUrl": f"{self.self_url}/_emulator/teams/download/{f.token}",
                                 "uniqueId": f.id, "fileType": f.name.rpartition(".")[2].lower(),
                                 "etag": f'"{f.id}"'}}
                    for f in files]
        body = f"<p>{html.escape(text)}</p>" + "".join(f'<attachment id="{f.id}"></attachment>' for f in files)
        return [{"contentType": "text/html", "content": body}]

    async def deliver(self, activity: dict[str, Any], conversation: str, thread: str | None) -> dict | None:
        """POST one activity to /api/messages (unsigned: dev runs with TEAMS_ALLOW_UNAUTHENTICATED=1)."""
        assert self.session is not None
        try:
            async with self.session.post(f"{self.self_url}/api/messages", json=activity) as resp:
                answer = await resp.text()
                if resp.status not in (200, 201, 202):
                    self.store.notice("teams", conversation, thread,
                                      f"The bot refused the {activity['type']} activity: HTTP {resp.status} "
                                      f"{answer[:300]}")
                    return None
                return {"status": resp.status, "body": answer}
        except aiohttp.ClientError as exc:
            self.store.notice("teams", conversation, thread, f"Could not reach the bot's /api/messages: {exc}")
            return None

    async def answer_consent(self, message: dict[str, Any], index: int, action: str) -> str:
        """The person pressed Accept or Decline on a FileConsentCard: send Teams' fileConsent/invoke."""
        cards = message.get("cards") or []
        if not (0 <= index < len(cards)) or cards[index].get("kind") != "consent":
            raise web.HTTPBadRequest(text="no file consent card there")
        card = cards[index]
        if card.get("state") != "pending":
            return card["state"]
        value: dict[str, Any] = {"type": "fileUpload", "action": action,
                                 "context": card["accept_context" if action == "accept" else "decline_context"]}
        if action == "accept":
            upload = self.store.new_file(card["name"], prefix="T")
            upload.complete = False
            value["uploadInfo"] = {
                "contentUrl": f"{self.self_url}{upload.public()['url']}", "fileType": upload.name.rpartition(".")[2],
                "name": upload.name, "uploadUrl": f"{self.self_url}/_emulator/teams/onedrive/{upload.id}",
                "uniqueId": upload.id}
        card["state"] = "sending"
        self.store.update(message)
        activity = self._envelope(message["conversation"], None, self.store.teams_id())
        activity.update({"type": "invoke", "name": "fileConsent/invoke", "value": value,
                         "replyToId": message["platform_id"]})
        result = await self.deliver(activity, message["conversation"], message["thread"])
        card["state"] = ("accepted" if action == "accept" else "declined") if result else "failed"
        self.store.update(message)
        return card["state"]

    async def press_card_action(self, message: dict[str, Any], index: int, action: int) -> str:
        """The person pressed an Action.Execute button: Teams' adaptiveCard/action invoke; the bot answers with
        the card to show instead (or a message only the presser sees)."""
        cards = message.get("cards") or []
        if not (0 <= index < len(cards)) or cards[index].get("kind") != "actions" \
                or not (0 <= action < len(cards[index]["actions"])):
            raise web.HTTPBadRequest(text="no such card button")
        pressed = cards[index]["actions"][action]
        activity = self._envelope(message["conversation"], None if message["conversation"] == s.DM
                                  else (self.store.messages.get(message["thread"] or "") or {}).get("platform_id"),
                                  self.store.teams_id())
        activity.update({"type": "invoke", "name": "adaptiveCard/action", "replyToId": message["platform_id"],
                         "value": {"action": {"type": "Action.Execute", "verb": pressed.get("verb"),
                                              "data": pressed.get("data") or {}}, "trigger": "manual"}})
        result = await self.deliver(activity, message["conversation"], message["thread"])
        if result is None:
            return "failed"
        try:
            answer = json.loads(result["body"] or "null") or {}
        except ValueError:
            answer = {}
        if answer.get("type") == ADAPTIVE_CARD and isinstance(answer.get("value"), dict):
            cards[index] = self._cards({"attachments": [{"contentType": ADAPTIVE_CARD, "content": answer["value"]}]})[0]
            self.store.update(message, cards=cards)
        elif answer.get("type") == "application/vnd.microsoft.activity.message":
            self.store.notice("teams", message["conversation"], message["thread"],
                              f"Only you can see this: {answer.get('value')}")
        return "sent"

    # the bot's side: connector ---------------------------------------------------------------------

    def _locate(self, cid: str) -> tuple[str, dict[str, Any] | None] | None:
        base, _, rest = cid.partition(";messageid=")
        conversation = self._conversation_by_id.get(base)
        if conversation is None:
            return None
        if conversation == s.DM:
            return conversation, None
        return conversation, self.store.find("teams", conversation, rest) if rest else None

    async def create_conversation(self, request: web.Request) -> web.Response:
        """New channel thread (TeamsInfo.send_message_to_teams_channel) or a 1:1 chat with the person."""
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "BadSyntax", "Body is not JSON")
        channel = ((body.get("channelData") or {}).get("channel") or {}).get("id")
        if channel:
            conversation = self._conversation_by_id.get(channel)
            if conversation is None or conversation == s.DM:
                return _error(404, "ConversationNotFound", "Channel not found.")
            activity = body.get("activity") or {}
            message = self.store.add(flavour="teams", conversation=conversation, author="bot",
                                     text=activity.get("text") or "", platform_id=self.store.teams_id(),
                                     format="markdown", cards=self._cards(activity))
            return web.json_response({"id": f"{channel};messageid={message['platform_id']}",
                                      "activityId": message["platform_id"]}, status=201)
        return web.json_response({"id": s.TEAMS_CHANNEL_IDS[s.DM]}, status=201)

    async def members(self, request: web.Request) -> web.Response:
        if self._locate(request.match_info["cid"]) is None:
            return _error(404, "ConversationNotFound", "Conversation not found.")
        return web.json_response([self._member()])

    async def paged_members(self, request: web.Request) -> web.Response:
        if self._locate(request.match_info["cid"]) is None:
            return _error(404, "ConversationNotFound", "Conversation not found.")
        return web.json_response({"members": [self._member()]})

    async def member(self, request: web.Request) -> web.Response:
        if request.match_info["mid"] not in (s.TEAMS_HUMAN, s.TEAMS_HUMAN_AAD):
            return _error(404, "MemberNotFound", "The member was not found.")
        return web.json_response(self._member())

    def _cards(self, activity: dict) -> list[dict[str, Any]]:
        """Bot attachments as what the page draws: consent cards, file links, images, card text."""
        cards = []
        for att in activity.get("attachments") or []:
            if not isinstance(att, dict):
                continue
            ctype = str(att.get("contentType") or "")
            content = att.get("content") if isinstance(att.get("content"), dict) else {}
            if ctype == FILE_CONSENT_CARD:
                cards.append({"kind": "consent", "name": att.get("name") or "file",
                              "description": content.get("description") or "", "size": content.get("sizeInBytes"),
                              "accept_context": content.get("acceptContext"),
                              "decline_context": content.get("declineContext"), "state": "pending"})
            elif ctype == FILE_INFO_CARD:
                cards.append({"kind": "file", "name": att.get("name") or "file",
                              "url": self._page_url(att.get("contentUrl")), "file_type": content.get("fileType")})
            elif ctype.startswith("image/"):
                url = str(att.get("contentUrl") or "")
                cards.append({"kind": "image", "name": att.get("name") or "image",
                              "url": url if url.startswith("data:image/") else self._page_url(url)})
            elif ctype == ADAPTIVE_CARD and _executes(content):
                cards.append({"kind": "actions", "text": "\n\n".join(_card_lines(content)),
                              "actions": _executes(content)})
            elif ctype in (ADAPTIVE_CARD, HERO_CARD):
                cards.append({"kind": "text", "text": "\n".join(_card_texts(content))})
            else:
                cards.append({"kind": "unknown", "content_type": ctype, "name": att.get("name")})
        return cards

    def _page_url(self, url: Any) -> str | None:
        """Links the page may follow: the emulator's own files (as relative URLs) or other http(s) URLs."""
        url = str(url or "")
        if url.startswith(self.self_url + "/"):
            return url[len(self.self_url):]
        return url if url.startswith(("https://", "http://")) else None

    # files -----------------------------------------------------------------------------------------

    async def onedrive_put(self, request: web.Request) -> web.Response:
        """An upload session like OneDrive's: byte ranges with Content-Range, 202 until the last one, then 201."""
        stored = self.store.files.get(request.match_info["file_id"])
        if stored is None or stored.complete:
            return _error(404, "itemNotFound", "The upload session does not exist or is complete")
        match = _RANGE_RE.match(request.headers.get("Content-Range", ""))
        if not match:
            return _error(400, "invalidRange", "Content-Range must be 'bytes start-end/total'")
        start, end, total = (int(g) for g in match.groups())
        if end < start or end >= total or total > s.MAX_FILE_BYTES:
            return _error(416, "invalidRange", "The range is not satisfiable")
        expected = end - start + 1
        data = b""
        while len(data) <= expected and (chunk := await request.content.read(expected + 1 - len(data))):
            data += chunk  # read(n) returns only what is buffered: loop until the range (plus 1) or EOF
        if len(data) != expected:
            return _error(400, "invalidRange", "The body length does not match Content-Range")
        mode = "r+b" if stored.path.exists() else "wb"
        with stored.path.open(mode) as out:
            out.seek(start)
            out.write(data)
        if end + 1 < total:
            return web.json_response({"expirationDateTime": _now(), "nextExpectedRanges": [f"{end + 1}-"]},
                                     status=202)
        stored.size, stored.complete = total, True
        return web.json_response({"id": stored.id, "name": stored.name, "size": total,
                                  "file": {"mimeType": stored.mimetype}}, status=201)

    async def download(self, request: web.Request) -> web.Response:
        """A file.download.info downloadUrl: pre-authenticated by its unguessable token, like SharePoint's."""
        stored = self.store.file_by_token(request.match_info["token"])
        if stored is None or not stored.complete:
            return web.Response(status=404, text="file not found")
        return web.FileResponse(stored.path, headers={"Content-Type": stored.mimetype})


class _PageConversations:
    """The connector's sends as messages on the emulator's page (the store the browser reads)."""

    def __init__(self, side: TeamsSide) -> None:
        self.side = side
        self.store = side.store

    def _where(self, cid: str, *, thread_needed: bool = True) -> tuple[str, dict[str, Any] | None]:
        located = self.side._locate(cid)
        if located is None:
            raise ConnectorError(404, "ConversationNotFound", "Conversation not found.")
        conversation, root = located
        if thread_needed and conversation != s.DM and root is None:
            raise ConnectorError(400, "BadArgument", "Post into a channel thread (19:...;messageid=<root>) or "
                                 "create one")
        return conversation, root

    def _bot_message(self, cid: str, activity_id: str) -> dict[str, Any]:
        conversation, _ = self._where(cid, thread_needed=False)
        message = self.store.find("teams", conversation, activity_id)
        if message is None or message["author"] != "bot":
            raise ConnectorError(404, "NotFound", "Activity not found.")
        return message

    def is_personal(self, conversation_id: str) -> bool:
        return self._where(conversation_id, thread_needed=False)[0] == s.DM

    def post(self, conversation_id: str, activity: dict) -> str:
        conversation, root = self._where(conversation_id)
        thread = root["id"] if root else None
        message = self.store.add(flavour="teams", conversation=conversation, author="bot",
                                 text=activity.get("text") or "", platform_id=self.store.teams_id(), thread=thread,
                                 format="markdown", cards=self.side._cards(activity))
        self.store.status("teams", conversation, thread, "")
        return message["platform_id"]

    def typing(self, conversation_id: str) -> None:
        conversation, root = self._where(conversation_id)
        self.store.status("teams", conversation, root["id"] if root else None, f"{s.BOT_NAME} is typing…")

    def stream_started(self, conversation_id: str, activity: dict, kind: str, sequence: int) -> str:
        conversation, _ = self._where(conversation_id)
        message = self.store.add(flavour="teams", conversation=conversation, author="bot",
                                 text=activity.get("text") or "", platform_id=self.store.teams_id(), thread=None,
                                 format="markdown", streaming=True, stream_sequence=sequence, stream_type=kind,
                                 cards=[])
        return message["platform_id"]

    def stream_updated(self, conversation_id: str, stream_id: str, activity: dict, kind: str, sequence: int) -> None:
        self.store.update(self._bot_message(conversation_id, stream_id), text=activity.get("text") or "",
                          stream_sequence=sequence, stream_type=kind)

    def stream_ended(self, conversation_id: str, stream_id: str, activity: dict) -> None:
        self.store.update(self._bot_message(conversation_id, stream_id), text=activity.get("text") or "",
                          streaming=False, stream_type="final", cards=self.side._cards(activity))

    def update(self, conversation_id: str, activity_id: str, activity: dict) -> None:
        self.store.update(self._bot_message(conversation_id, activity_id), text=activity.get("text") or "",
                          cards=self.side._cards(activity), edited=True)

    def delete(self, conversation_id: str, activity_id: str) -> None:
        self.store.delete(self._bot_message(conversation_id, activity_id))


def _card_texts(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node[k] for k in ("title", "subtitle", "text") if isinstance(node.get(k), str)]
        for value in node.values():
            if isinstance(value, (list, dict)):
                found += _card_texts(value)
        return found
    if isinstance(node, list):
        return [t for item in node for t in _card_texts(item)]
    return []


def _executes(card: dict) -> list[dict[str, Any]]:
    """The card's Action.Execute buttons (approvals), as the page draws them."""
    return [{"title": str(a.get("title") or "Button"), "verb": a.get("verb"), "data": a.get("data")}
            for a in card.get("actions") or [] if isinstance(a, dict) and a.get("type") == "Action.Execute"]


def _card_lines(card: dict) -> list[str]:
    lines = []
    for element in card.get("body") or []:
        if not isinstance(element, dict):
            continue
        if element.get("type") == "TextBlock":
            lines.append(str(element.get("text") or ""))
        elif element.get("type") == "FactSet":
            lines += [f"{f.get('title')}: {f.get('value')}" for f in element.get("facts") or [] if isinstance(f, dict)]
    return lines
