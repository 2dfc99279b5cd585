"""Where a Slack answer goes, as data: a request's reply address, and the replier a worker rebuilds from it.

The web replica that received the event and the worker that runs the task (maybe another process) build
their SlackReplier the same way, from the ChatRequest alone plus this process's client and pacer.
"""
from __future__ import annotations

import dataclasses

from slack_sdk.web.async_client import AsyncWebClient

from agents.chat import ChatRequest
from agents.settings import Settings
from bots.slack.replier import ChannelPacer, SlackReplier


def reply_address(event: dict, team_id: str) -> dict[str, str]:
    """What streaming replies need besides channel and thread (Slack's recipient of a stream)."""
    return {"recipient_team_id": event.get("user_team") or event.get("team") or team_id,
            "recipient_user_id": event.get("user") or ""}


def replier_for(request: ChatRequest, *, client: AsyncWebClient, settings: Settings,
                pacer: ChannelPacer) -> SlackReplier:
    address = request.reply_address
    return SlackReplier(
        client, request.channel, request.thread, mode=settings.slack_step_updates, pacer=pacer,
        recipient_team_id=address.get("recipient_team_id") or request.workspace,
        recipient_user_id=address.get("recipient_user_id") or request.user, is_direct=request.is_direct,
    )


async def with_credentials(request: ChatRequest, token: str) -> ChatRequest:
    """A queued request's file downloads get this process's bot token back (the queue never holds it)."""
    files = tuple(dataclasses.replace(a, headers={"Authorization": f"Bearer {token}"}) if a.headers and a.url else a
                  for a in request.attachments)
    return dataclasses.replace(request, attachments=files)
