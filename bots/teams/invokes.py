"""Teams invoke activities, dispatched by name.

Teams waits for an invoke's HTTP response and shows an error for a 5xx, so every invoke gets an answer:
a handler registered here, or the reply Teams documents for "nothing to show" for that kind of invoke
(an Adaptive Card for `adaptiveCard/action`, a message for task modules and message extensions), or a
clean 404 for any other name. Other modules (approvals' `adaptiveCard/action`) add handlers with
`Invokes.register`.
"""
from __future__ import annotations

import logging
from typing import Awaitable, Callable

from aiohttp import web
from botbuilder.schema import Activity

log = logging.getLogger("agentdesk.teams")

Handler = Callable[[Activity], Awaitable[web.Response]]

UNSUPPORTED_TEXT = ("This bot doesn't offer that here. Ask your question in a chat with the bot instead, "
                    "e.g. “hr: how many leave days do I have?”.")


class Invokes:
    def __init__(self, handlers: dict[str, Handler] | None = None) -> None:
        self.handlers: dict[str, Handler] = dict(handlers or {})

    def register(self, name: str, handler: Handler) -> None:
        self.handlers[name] = handler

    async def dispatch(self, activity: Activity) -> web.Response:
        handler = self.handlers.get(activity.name or "")
        if handler is None:
            return unsupported_invoke(activity)
        return await handler(activity)


def unsupported_invoke(activity: Activity) -> web.Response:
    """Teams' documented "nothing here" answer for invokes the bot does not handle."""
    name = activity.name or ""
    log.info("teams: unsupported invoke %r", name)
    if name == "adaptiveCard/action":
        card = {"type": "AdaptiveCard", "version": "1.4",
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "body": [{"type": "TextBlock", "text": UNSUPPORTED_TEXT, "wrap": True}]}
        return web.json_response({"statusCode": 200, "type": "application/vnd.microsoft.card.adaptive",
                                  "value": card})
    if name.startswith("task/"):
        return web.json_response({"task": {"type": "message", "value": UNSUPPORTED_TEXT}})
    if name.startswith("composeExtension/"):
        return web.json_response({"composeExtension": {"type": "message", "text": UNSUPPORTED_TEXT}})
    return web.json_response({"error": f"invoke {name!r} is not supported by this bot"}, status=404)
