"""Where a Teams answer goes, as data: the conversation reference in a request's reply address (the
adapter's replier_for rebuilds the replier from it, in the receiving process or on a worker)."""
from __future__ import annotations

import dataclasses
import json
from typing import Awaitable, Callable

from botbuilder.schema import ConversationReference

from agents.chat import ChatRequest


def reference_of(request: ChatRequest) -> ConversationReference:
    return ConversationReference().deserialize(json.loads(request.reply_address["conversation_reference"]))


async def with_credentials(request: ChatRequest, token: Callable[[], Awaitable[str | None]]) -> ChatRequest:
    """Images pasted into a chat live on the connector and need the bot's own token (never queued)."""
    if not any(a.headers for a in request.attachments):
        return request
    bearer = await token()
    files = tuple(dataclasses.replace(a, headers={"Authorization": f"Bearer {bearer}"} if bearer else {})
                  if a.headers else a for a in request.attachments)
    return dataclasses.replace(request, attachments=files)
