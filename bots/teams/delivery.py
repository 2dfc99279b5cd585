"""Where a Teams answer goes, as data: the conversation reference in a request's reply address, and the
replier a worker rebuilds from it (the web replica that received the activity builds it the same way)."""
from __future__ import annotations

import dataclasses
import json
from typing import Awaitable, Callable

from botbuilder.core import TurnContext
from botbuilder.schema import Activity, ConversationReference

from agents.chat import ChatRequest
from bots.teams.files import PendingUploads
from bots.teams.outbound import ConversationSender
from bots.teams.replier import TeamsReplier


def reply_address(activity: Activity) -> dict[str, str]:
    return {"conversation_reference": json.dumps(TurnContext.get_conversation_reference(activity).serialize())}


def reference_of(request: ChatRequest) -> ConversationReference:
    return ConversationReference().deserialize(json.loads(request.reply_address["conversation_reference"]))


def replier_for(request: ChatRequest, *, sender_for: Callable[[ConversationReference], ConversationSender],
                uploads: PendingUploads) -> TeamsReplier:
    return TeamsReplier(sender_for(reference_of(request)), personal=request.is_direct, uploads=uploads,
                        owner=request.user)


async def with_credentials(request: ChatRequest, token: Callable[[], Awaitable[str | None]]) -> ChatRequest:
    """Images pasted into a chat live on the connector and need the bot's own token (never queued)."""
    if not any(a.headers for a in request.attachments):
        return request
    bearer = await token()
    files = tuple(dataclasses.replace(a, headers={"Authorization": f"Bearer {bearer}"} if bearer else {})
                  if a.headers else a for a in request.attachments)
    return dataclasses.replace(request, attachments=files)
