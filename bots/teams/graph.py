"""Microsoft Graph for what the bot APIs can't do outside personal chats: files and group membership.

Teams gives a bot the files of a channel or group chat message only as `<attachment>` tags in its HTML;
the files themselves live in SharePoint (channels) or the sender's OneDrive (chats). With the bot's own
app registration (client-credentials token, application permissions; see the README) this module:
- reads the message through Graph and turns its `reference` attachments into downloads through
  `/shares/u!{base64url(url)}/driveItem/content`;
- uploads output files into the channel's files folder (its SharePoint folder) or, in a group chat, into
  the requester's OneDrive "Microsoft Teams Chat Files" folder with an organisation-wide view link,
  which is where Teams itself keeps files shared in chats;
- lists a person's transitive group memberships for `teams_groups` access rules, cached with a TTL.

The token only ever goes to GRAPH_API_URL's host; it is never logged and never reaches the sandbox.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from agents.chat import Attachment, OutputFile
from agents.security import sanitize_filename
from agents.settings import Settings

log = logging.getLogger("agentdesk.teams")

SCOPE = "https://graph.microsoft.com/.default"
CHAT_FILES_FOLDER = "Microsoft Teams Chat Files"
SIMPLE_UPLOAD_MAX = 250 * 1024 * 1024


class GraphError(Exception):
    """A Graph call that failed; the message is safe to show to the person (no token, no URL query)."""


@dataclass(frozen=True)
class MessageLocation:
    """Where a Teams message lives, in Graph's terms."""

    message_id: str
    team_id: str | None = None  # the team's Microsoft 365 group id (channelData.team.aadGroupId)
    channel_id: str | None = None
    root_id: str | None = None  # the thread's first message, for a reply in a channel
    chat_id: str | None = None

    def path(self) -> str:
        if self.chat_id:
            return f"/chats/{quote(self.chat_id, safe='')}/messages/{quote(self.message_id, safe='')}"
        base = f"/teams/{quote(self.team_id or '', safe='')}/channels/{quote(self.channel_id or '', safe='')}/messages"
        if self.root_id and self.root_id != self.message_id:
            return f"{base}/{quote(self.root_id, safe='')}/replies/{quote(self.message_id, safe='')}"
        return f"{base}/{quote(self.message_id, safe='')}"


def share_id(url: str) -> str:
    """Graph's sharing id of a SharePoint/OneDrive URL: `u!` + unpadded base64url."""
    return "u!" + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


class GraphClient:
    def __init__(self, settings: Settings) -> None:
        self.api = settings.graph_api_url.rstrip("/")
        self._token_url = (f"{settings.graph_login_url.rstrip('/')}/{quote(settings.graph_tenant_id or '', safe='')}"
                           "/oauth2/v2.0/token")
        self._client_id = settings.graph_client_id or ""
        self._secret = settings.graph_client_secret or ""
        self._groups_ttl = settings.graph_groups_ttl_s
        self._token: tuple[str, float] | None = None
        self._token_lock = asyncio.Lock()
        self._groups: dict[str, tuple[frozenset[str], float]] = {}
        self._session: aiohttp.ClientSession | None = None

    @staticmethod
    def configured(settings: Settings) -> bool:
        return bool(settings.graph_client_secret and settings.graph_client_id and settings.graph_tenant_id)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        return self._session

    # -- token ----------------------------------------------------------------------------------------

    async def token(self) -> str:
        """An app-only Graph token (client credentials), reused until a minute before it expires."""
        async with self._token_lock:
            if self._token and self._token[1] > time.monotonic():
                return self._token[0]
            form = {"grant_type": "client_credentials", "client_id": self._client_id,
                    "client_secret": self._secret, "scope": SCOPE}
            try:
                async with self._http().post(self._token_url, data=form) as resp:
                    body = await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                raise GraphError(f"Microsoft Graph sign-in is unreachable ({type(exc).__name__})") from exc
            if resp.status != 200 or not isinstance(body, dict) or "access_token" not in body:
                code = body.get("error") if isinstance(body, dict) else None
                log.error("teams: Graph sign-in refused (HTTP %s %s); check GRAPH_CLIENT_ID, GRAPH_CLIENT_SECRET "
                          "and GRAPH_TENANT_ID", resp.status, code or "")
                raise GraphError("the bot could not sign in to Microsoft Graph")
            lifetime = float(body.get("expires_in") or 3600)
            self._token = (body["access_token"], time.monotonic() + max(lifetime - 60, 30))
            return self._token[0]

    async def _call(self, method: str, path: str, *, what: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {await self.token()}", **kw.pop("headers", {})}
        url = path if path.startswith(self.api) else self.api + path
        try:
            async with self._http().request(method, url, headers=headers, **kw) as resp:
                body = await resp.json(content_type=None) if resp.content_length != 0 else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise GraphError(f"Microsoft Graph is unreachable ({type(exc).__name__})") from exc
        if resp.status >= 400:
            code = (body or {}).get("error", {}).get("code") if isinstance(body, dict) else None
            log.warning("teams: Graph %s %s -> HTTP %s %s", method, urlsplit(url).path, resp.status, code or "")
            if resp.status in (401, 403):
                raise GraphError(f"Microsoft Graph refused to {what}: the bot's app registration lacks the "
                                 "permission (see the README's Teams section)")
            raise GraphError(f"Microsoft Graph could not {what} (HTTP {resp.status})")
        return body

    # -- files in -------------------------------------------------------------------------------------

    async def message_files(self, where: MessageLocation) -> tuple[Attachment, ...]:
        """The files attached to a channel or chat message, as downloads with the Graph token."""
        message = await self._call("GET", where.path(), what="read the message with the file")
        found = []
        for att in (message or {}).get("attachments") or ():
            if att.get("contentType") != "reference" or not att.get("contentUrl"):
                continue
            found.append(Attachment(
                name=sanitize_filename(att.get("name") or "shared-file"),
                url=f"{self.api}/shares/{share_id(att['contentUrl'])}/driveItem/content",
                headers={"Authorization": f"Bearer {await self.token()}"},
            ))
        return tuple(found)

    # -- files out ------------------------------------------------------------------------------------

    async def upload_to_channel(self, team_id: str, channel_id: str, file: OutputFile) -> str:
        """Put `file` into the channel's files folder; returns the link people open."""
        folder = await self._call("GET", f"/teams/{quote(team_id, safe='')}/channels/{quote(channel_id, safe='')}"
                                  "/filesFolder", what="find the channel's files folder")
        drive = (folder.get("parentReference") or {}).get("driveId")
        if not drive or not folder.get("id"):
            raise GraphError("Microsoft Graph gave no files folder for this channel")
        item = await self._put(f"/drives/{quote(drive, safe='')}/items/{quote(folder['id'], safe='')}:/"
                               f"{quote(sanitize_filename(file.name))}:/content", file)
        return str(item.get("webUrl") or "")

    async def upload_to_chat(self, user_id: str, file: OutputFile) -> str:
        """Put `file` into the requester's Teams chat files; returns a view link for the organisation."""
        item = await self._put(f"/users/{quote(user_id, safe='')}/drive/root:/{quote(CHAT_FILES_FOLDER)}/"
                               f"{quote(sanitize_filename(file.name))}:/content", file)
        drive = (item.get("parentReference") or {}).get("driveId")
        link = await self._call("POST", f"/drives/{quote(drive or '', safe='')}/items/{quote(item['id'], safe='')}"
                                "/createLink", json={"type": "view", "scope": "organization"},
                                what="share the file with the chat")
        return str(((link or {}).get("link") or {}).get("webUrl") or item.get("webUrl") or "")

    async def _put(self, path: str, file: OutputFile) -> dict:
        if file.size > SIMPLE_UPLOAD_MAX:
            raise GraphError("the file is larger than Graph's 250 MB single upload")
        data = await asyncio.to_thread(file.path.read_bytes)
        item = await self._call("PUT", path + "?@microsoft.graph.conflictBehavior=rename", data=data,
                                headers={"Content-Type": file.mimetype or "application/octet-stream"},
                                what="upload the file")
        if not isinstance(item, dict) or not item.get("id"):
            raise GraphError("Microsoft Graph did not confirm the upload")
        return item

    # -- groups ---------------------------------------------------------------------------------------

    async def groups_of(self, user_id: str, *, fresh: bool = False) -> frozenset[str]:
        """Ids of every group `user_id` belongs to, directly or through nested groups (cached unless `fresh`)."""
        cached = self._groups.get(user_id)
        if not fresh and cached and cached[1] > time.monotonic():
            return cached[0]
        found: set[str] = set()
        url: str | None = f"/users/{quote(user_id, safe='')}/transitiveMemberOf/microsoft.graph.group?$select=id"
        while url:
            page = await self._call("GET", url, what="look up your groups")
            found.update(str(g["id"]) for g in (page or {}).get("value") or () if g.get("id"))
            url = (page or {}).get("@odata.nextLink")
        groups = frozenset(found)
        if len(self._groups) > 50_000:
            self._groups.clear()
        self._groups[user_id] = (groups, time.monotonic() + self._groups_ttl)
        return groups
