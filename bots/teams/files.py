"""Files in and out of Teams.

In: personal chats deliver `application/vnd.microsoft.teams.file.download.info` attachments whose
`downloadUrl` is pre-authenticated (no token); pasted images arrive as `image/*` with a `contentUrl` on the
connector that needs the bot's token. Channels and group chats deliver no file to a bot at all (only an
HTML rendering of the message): with Microsoft Graph configured they are read through Graph (bots/teams/
graph.py), otherwise they become an Attachment with `unavailable` set and the runner shows the reason. Names and limits are the runner's (agents.workspace), the same as for Slack.

Out (personal chat): a FileConsentCard per file; the file is copied out of the task workspace (which the
runner deletes) into the data folder and waits there, keyed by an unguessable token carried in the card's
accept context, until the user accepts (upload to OneDrive with PUT + Content-Range, then a FileInfoCard)
or declines. Offers expire after a day.
"""
from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp
from botbuilder.schema import Activity

from agents.chat import Attachment, OutputFile
from agents.security import sanitize_filename

log = logging.getLogger("agentdesk.teams")

FILE_DOWNLOAD_INFO = "application/vnd.microsoft.teams.file.download.info"
FILE_CONSENT_CARD = "application/vnd.microsoft.teams.card.file.consent"
FILE_INFO_CARD = "application/vnd.microsoft.teams.card.file.info"

CHANNEL_FILES_UNAVAILABLE = (
    "Teams doesn't give bots the files shared in channels or group chats. Send the file to me in a "
    "personal (1:1) chat with the bot and ask there."
)

#: Hosts that may receive the bot's token for an inline image, besides the activity's serviceUrl host.
_TOKEN_HOST_SUFFIXES = (".botframework.com", ".asm.skype.com", ".trafficmanager.net")

TokenProvider = Callable[[], Awaitable[str | None]]
#: The files of a channel or group chat message, read through Microsoft Graph (None: Graph not configured).
SharedFiles = Callable[[], Awaitable[tuple[Attachment, ...]]]


def _host(url: str | None) -> str:
    try:
        return (urlsplit(url or "").hostname or "").lower()
    except ValueError:
        return ""


def _may_send_token(url: str, service_url: str | None) -> bool:
    """The bot's token only goes to the connector that sent the activity (or Microsoft's media hosts)."""
    host = _host(url)
    if not host:
        return False
    return host == _host(service_url) or host.endswith(_TOKEN_HOST_SUFFIXES)


async def inbound_attachments(activity: Activity, *, personal: bool, token: TokenProvider,
                              shared: SharedFiles | None = None) -> tuple[Attachment, ...]:
    """The files of a message as Attachments the runner can fetch (or explain why it can't)."""
    found: list[Attachment] = []
    images = 0
    shared_done = False
    for att in activity.attachments or ():
        ctype = (att.content_type or "").lower()
        if ctype == FILE_DOWNLOAD_INFO:
            content = att.content if isinstance(att.content, dict) else {}
            url = content.get("downloadUrl")
            name = sanitize_filename(att.name or "file")
            if personal and url:
                found.append(Attachment(name=name, url=url, mimetype=mimetypes.guess_type(name)[0]))
            else:
                found.append(Attachment(name=name, unavailable=CHANNEL_FILES_UNAVAILABLE))
        elif ctype.startswith("image/") and att.content_url:
            images += 1
            ext = mimetypes.guess_extension(ctype) or ".png"
            name = sanitize_filename(att.name or f"image-{images}{ext}")
            headers: dict[str, str] = {}
            if _may_send_token(att.content_url, activity.service_url):
                bearer = await token()
                if bearer:
                    headers["Authorization"] = f"Bearer {bearer}"
            found.append(Attachment(name=name, url=att.content_url, headers=headers, mimetype=ctype))
        elif ctype == "reference" or (ctype == "text/html" and _mentions_file(att.content)):
            if shared is None:
                found.append(Attachment(name=sanitize_filename(att.name or "shared-file"),
                                        unavailable=CHANNEL_FILES_UNAVAILABLE))
            elif not shared_done:
                shared_done = True
                found.extend(await shared())
    return tuple(found)


def _mentions_file(html: object) -> bool:
    """Channel messages carry shared files only as `<attachment id=...>` tags in their HTML rendering."""
    return isinstance(html, str) and "<attachment " in html


# -- outbound: file consent ---------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{20,64}$")
UPLOAD_CHUNK = 320 * 1024 * 16  # OneDrive upload sessions want multiples of 320 KiB


@dataclass(frozen=True)
class PendingUpload:
    token: str
    name: str
    path: Path
    size: int
    mimetype: str
    owner: str
    created: float


class PendingUploads:
    """Output files offered with a consent card, kept on disk so an accept after a restart still works."""

    def __init__(self, root: Path, ttl_s: float = 24 * 3600) -> None:
        self.root = root
        self.ttl_s = ttl_s

    def offer(self, file: OutputFile, owner: str) -> PendingUpload:
        self.sweep()
        token = secrets.token_urlsafe(24)
        folder = self.root / token
        folder.mkdir(parents=True, mode=0o700)
        name = sanitize_filename(file.name)
        target = folder / "content"
        shutil.copyfile(file.path, target)
        pending = PendingUpload(token, name, target, target.stat().st_size, file.mimetype, owner, time.time())
        (folder / "meta.json").write_text(json.dumps(
            {"name": name, "size": pending.size, "mimetype": file.mimetype, "owner": owner,
             "created": pending.created}))
        return pending

    def get(self, token: object, owner: str) -> PendingUpload | None:
        """The offer behind a consent response, if it exists, is not expired and belongs to `owner`."""
        if not isinstance(token, str) or not _TOKEN_RE.match(token):
            return None
        folder = self.root / token
        try:
            meta = json.loads((folder / "meta.json").read_text())
        except (OSError, ValueError):
            return None
        if meta.get("owner") != owner or time.time() - float(meta.get("created", 0)) > self.ttl_s:
            return None
        return PendingUpload(token, meta["name"], folder / "content", int(meta["size"]), meta["mimetype"],
                             owner, float(meta["created"]))

    def discard(self, token: str) -> None:
        if _TOKEN_RE.match(token):
            shutil.rmtree(self.root / token, ignore_errors=True)

    def sweep(self) -> None:
        if not self.root.is_dir():
            return
        now = time.time()
        for folder in self.root.iterdir():
            try:
                if now - folder.stat().st_mtime > self.ttl_s:
                    shutil.rmtree(folder, ignore_errors=True)
            except OSError:
                continue


def consent_card(pending: PendingUpload, description: str) -> dict:
    context = {"upload": pending.token}
    return {
        "contentType": FILE_CONSENT_CARD,
        "name": pending.name,
        "content": {
            "description": description,
            "sizeInBytes": pending.size,
            "acceptContext": context,
            "declineContext": context,
        },
    }


def file_info_card(name: str, upload_info: dict) -> dict:
    return {
        "contentType": FILE_INFO_CARD,
        "name": upload_info.get("name") or name,
        "contentUrl": upload_info.get("contentUrl"),
        "content": {"uniqueId": upload_info.get("uniqueId"), "fileType": upload_info.get("fileType")},
    }


class UploadFailed(Exception):
    pass


async def upload(upload_url: str, pending: PendingUpload, session: aiohttp.ClientSession | None = None) -> None:
    """PUT the file into the OneDrive upload session Teams created, in 5 MiB ranges.

    The upload URL is pre-authenticated; the bot's token is never sent to it.
    """
    scheme = urlsplit(upload_url).scheme
    if scheme not in ("https", "http"):
        raise UploadFailed("the upload address Teams gave is not a web address")
    own = session is None
    session = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300))
    try:
        total = pending.size
        with pending.path.open("rb") as source:
            start = 0
            while True:
                chunk = await asyncio.to_thread(source.read, UPLOAD_CHUNK)
                end = start + len(chunk) - 1
                headers = {"Content-Range": f"bytes {start}-{end}/{total}" if total else "bytes */0",
                           "Content-Length": str(len(chunk))}
                async with session.put(upload_url, data=chunk, headers=headers) as resp:
                    if resp.status >= 400:
                        raise UploadFailed(f"OneDrive answered HTTP {resp.status}")
                start += len(chunk)
                if start >= total:
                    return
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UploadFailed(f"the upload failed ({type(exc).__name__})") from exc
    finally:
        if own:
            await session.close()
