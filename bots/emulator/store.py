"""What the emulated workspace holds (conversations, messages, files) and the live feed to the page.

One store serves both flavours. Messages are plain dicts because they go to the page as JSON as they are;
every change is published to the page's server-sent-event subscribers.
"""
from __future__ import annotations

import asyncio
import itertools
import mimetypes
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.security import sanitize_filename

BOT_NAME = "agentdesk"
HUMAN_NAME = "Alex Rivera"
HUMAN_EMAIL = "alex.rivera@example.com"

#: (page key, display name) of the channels both flavours show, then the DM with the bot.
CHANNELS = (("general", "general"), ("hr-help", "hr-help"), ("sales", "sales"), ("marketing", "marketing"))
DM = "dm"

# Slack identities
SLACK_TEAM = "T0EMULATOR"
SLACK_APP = "A0EMULATOR"
SLACK_HUMAN = "U0EMUHUMAN"
SLACK_BOT_USER = "U0EMUBOT"
SLACK_BOT_ID = "B0EMUBOT"
SLACK_CHANNEL_IDS = {"general": "C0GENERAL", "hr-help": "C0HRHELP", "sales": "C0SALES", "marketing": "C0MARKETING",
                     DM: "D0AGENTDESK"}

# Teams identities
TEAMS_TENANT = "7c1d3f3e-5b5a-4a4e-9d0c-0e0e0e0e0e01"
TEAMS_TEAM = "19:emulator-team@thread.tacv2"
TEAMS_HUMAN = "29:1emulator-alex-rivera"
TEAMS_HUMAN_AAD = "3f2a9b1c-7d4e-4c5f-8a6b-0e0e0e0e0e02"
TEAMS_BOT = "28:agentdesk-emulator"
TEAMS_CHANNEL_IDS = {"general": "19:general@thread.tacv2", "hr-help": "19:hr-help@thread.tacv2",
                     "sales": "19:sales@thread.tacv2", "marketing": "19:marketing@thread.tacv2",
                     DM: "a:1emulator-personal-chat-with-agentdesk"}

#: Largest file the page may upload and the bot may upload back (the bot enforces its own, smaller limit).
MAX_FILE_BYTES = 100 * 1024 * 1024
INLINE_IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp"}


@dataclass
class StoredFile:
    id: str
    name: str
    path: Path
    size: int
    mimetype: str
    #: Unguessable part of the pre-authenticated Teams download URL.
    token: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    complete: bool = True

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "size": self.size, "mimetype": self.mimetype,
                "url": f"/_emulator/files/{self.id}/{self.name}", "image": self.mimetype in INLINE_IMAGE_TYPES,
                "complete": self.complete}


class Store:
    """Messages by id, platform ids to message ids, files on disk, and the page's live subscribers."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.messages: dict[str, dict[str, Any]] = {}
        self.files: dict[str, StoredFile] = {}
        self.by_platform_id: dict[tuple[str, str, str], str] = {}
        self.subscribers: set[asyncio.Queue] = set()
        self._seq = itertools.count(1)
        self._last_slack_ts = 0.0
        self._last_teams_id = 0

    # ids -------------------------------------------------------------------------------------------

    def slack_ts(self) -> str:
        """A Slack message timestamp: unique, increasing, microsecond part like Slack's."""
        now = max(time.time(), self._last_slack_ts + 0.000001)
        self._last_slack_ts = now
        return f"{now:.6f}"

    def teams_id(self) -> str:
        """A Teams activity id: epoch milliseconds, unique and increasing like Teams' own."""
        self._last_teams_id = max(int(time.time() * 1000), self._last_teams_id + 1)
        return str(self._last_teams_id)

    # messages --------------------------------------------------------------------------------------

    def add(self, *, flavour: str, conversation: str, author: str, text: str, platform_id: str,
            thread: str | None = None, **extra: Any) -> dict[str, Any]:
        message = {"id": f"m{next(self._seq)}", "flavour": flavour, "conversation": conversation, "thread": thread,
                   "author": author, "text": text, "platform_id": platform_id, "files": [], "time": time.time(),
                   **extra}
        self.messages[message["id"]] = message
        self.by_platform_id[(flavour, conversation, platform_id)] = message["id"]
        self.publish({"kind": "message", "message": message})
        return message

    def find(self, flavour: str, conversation: str, platform_id: str | None) -> dict[str, Any] | None:
        if platform_id is None:
            return None
        message_id = self.by_platform_id.get((flavour, conversation, platform_id))
        return self.messages.get(message_id) if message_id else None

    def update(self, message: dict[str, Any], **changes: Any) -> dict[str, Any]:
        message.update(changes)
        self.publish({"kind": "message", "message": message})
        return message

    def delete(self, message: dict[str, Any]) -> None:
        self.messages.pop(message["id"], None)
        self.by_platform_id.pop((message["flavour"], message["conversation"], message["platform_id"]), None)
        self.publish({"kind": "delete", "id": message["id"]})

    def notice(self, flavour: str, conversation: str, thread: str | None, text: str) -> None:
        """A line from the emulator itself (the bot refused a request, an upload failed, ...)."""
        self.add(flavour=flavour, conversation=conversation, author="emulator", text=text,
                 platform_id=f"notice-{next(self._seq)}", thread=thread)

    def status(self, flavour: str, conversation: str, thread: str | None, text: str) -> None:
        """A transient line under a thread: Slack's assistant status, Teams' typing indicator."""
        self.publish({"kind": "status", "flavour": flavour, "conversation": conversation, "thread": thread,
                      "text": text})

    # files -----------------------------------------------------------------------------------------

    def new_file(self, name: str, mimetype: str | None = None, *, prefix: str = "F") -> StoredFile:
        file_id = prefix + secrets.token_hex(6).upper()
        safe = sanitize_filename(name)
        folder = self.root / "files" / file_id
        folder.mkdir(parents=True, exist_ok=True)
        ctype = mimetype or mimetypes.guess_type(safe)[0] or "application/octet-stream"
        stored = StoredFile(file_id, safe, folder / safe, 0, ctype)
        self.files[file_id] = stored
        return stored

    def file_by_token(self, token: str) -> StoredFile | None:
        for stored in self.files.values():
            if secrets.compare_digest(stored.token, token):
                return stored
        return None

    # live feed -------------------------------------------------------------------------------------

    def publish(self, event: dict[str, Any]) -> None:
        for queue in list(self.subscribers):
            queue.put_nowait(event)

    def snapshot(self) -> list[dict[str, Any]]:
        return sorted(self.messages.values(), key=lambda m: m["time"])

    def close_subscribers(self) -> None:
        for queue in list(self.subscribers):
            queue.put_nowait(None)
