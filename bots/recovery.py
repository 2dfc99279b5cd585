"""Telling people their request was cut off by a crash or restart (durable task records in SQLite)."""
from __future__ import annotations

import logging
from typing import Awaitable, Callable

from aiohttp import web

log = logging.getLogger("agentdesk.recovery")

#: platform -> coroutine function(TaskRecord) that posts the interruption message into the request's thread.
INTERRUPTION_NOTIFIERS = web.AppKey("interruption_notifiers", dict)

INTERRUPTED_MESSAGE = (
    "⚠️ I was restarted while working on your request (“{excerpt}”), so it wasn't finished. "
    "Please send it again."
)


def interrupted_message(record) -> str:
    text = " ".join(str(record.request.get("text", "")).split())
    return INTERRUPTED_MESSAGE.format(excerpt=text[:80] + ("…" if len(text) > 80 else ""))


async def notify_interrupted(notifiers: dict[str, Callable[[object], Awaitable[None]]], runner) -> None:
    """Tell every person whose request a crash or restart cut off, once, in their thread."""
    for platform, notify in notifiers.items():
        for record in runner.take_interrupted(platform):
            try:
                await notify(record)
            except Exception as exc:
                log.error("could not tell a %s user about an interrupted request: %s", platform, exc)
