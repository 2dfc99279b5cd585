"""Files shared in Slack turned into Attachments; the runner downloads them with the bot token.

Slack Connect channels deliver file stubs (`file_access: check_file_info`) without URLs: those are
resolved with files.info. Anything that cannot be fetched becomes an Attachment with `unavailable` set,
so the user is told which file was skipped and why instead of silence.
"""
from __future__ import annotations

import logging
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from agents.chat import Attachment

log = logging.getLogger("agentdesk.slack.files")


async def attachments_from_event(event: dict[str, Any], client: AsyncWebClient, token: str) -> tuple[Attachment, ...]:
    return tuple([await _attachment(f, client, token) for f in event.get("files") or []])


async def _attachment(file: dict[str, Any], client: AsyncWebClient, token: str) -> Attachment:
    name = file.get("name") or file.get("title") or file.get("id") or "file"
    if file.get("file_access") == "check_file_info" or not (file.get("url_private_download") or file.get("url_private")):
        if file.get("mode") == "tombstone":
            return Attachment(name=name, unavailable=f"The file {name} was deleted before I could read it.")
        try:
            info = await client.files_info(file=file["id"])
            file = info.get("file") or {}
            name = file.get("name") or name
        except (SlackApiError, KeyError) as exc:
            reason = exc.response.get("error") if isinstance(exc, SlackApiError) else "no file id"
            log.warning("files.info failed for a shared file (%s); check the app has the files:read scope", reason)
            return Attachment(name=name, unavailable=f"I couldn't access the file {name} (Slack said: {reason}).")
    if file.get("mode") == "external" or file.get("is_external"):
        return Attachment(name=name, unavailable=f"{name} is a link to an external file; please upload the file itself.")
    url = file.get("url_private_download") or file.get("url_private")
    if not url:
        return Attachment(name=name, unavailable=f"Slack gave me no download link for {name}.")
    return Attachment(
        name=name,
        url=url,
        headers={"Authorization": f"Bearer {token}"},
        mimetype=file.get("mimetype"),
        size=file.get("size"),
    )
