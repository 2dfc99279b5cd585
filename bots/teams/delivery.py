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


async def with_credentials(request: ChatRequest, token: Callable[[], Awaitable[str | None]],
                           graph_api: str | None = None,
                           graph_token: Callable[[], Awaitable[str]] | None = None) -> ChatRequest:
    """Files that need a token get this process's own back (the queue never holds one): images pasted into a
    chat live on the connector (the bot's token), files shared in channels come through Graph (Graph's)."""
    if not any(a.headers for a in request.attachments):
        return request
    tokens: dict[str, str | None] = {}

    async def bearer_for(url: str | None) -> str | None:
        kind = "graph" if graph_api and graph_token and (url or "").startswith(graph_api) else "bot"
        if kind not in tokens:
            tokens[kind] = await (graph_token() if kind == "graph" else token())
        return tokens[kind]

    files = []
    for a in request.attachments:
        if a.headers:
            bearer = await bearer_for(a.url)
            a = dataclasses.replace(a, headers={"Authorization": f"Bearer {bearer}"} if bearer else {})
        files.append(a)
    return dataclasses.replace(request, attachments=tuple(files))
