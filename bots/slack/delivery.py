"""What a worker adds back to a queued Slack request: the bot token for its file downloads.

(Where the answer goes travels as `ChatRequest.reply_address`; SlackReplier.from_address rebuilds the replier.)
"""
from __future__ import annotations

import dataclasses

from agents.chat import ChatRequest


async def with_credentials(request: ChatRequest, token: str) -> ChatRequest:
    """A queued request's file downloads get this process's bot token back (the queue never holds it)."""
    files = tuple(dataclasses.replace(a, headers={"Authorization": f"Bearer {token}"}) if a.headers and a.url else a
                  for a in request.attachments)
    return dataclasses.replace(request, attachments=files)
