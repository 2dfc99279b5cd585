"""Presses on the bot's own controls (block_actions whose action_id starts with `agentdesk_`).

Routing is by action_id prefix, so another control (approvals, say) registers its own handler with
`SlackActions.register` without touching this module. Every press is acked at once; the work runs after.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Awaitable, Callable

from slack_sdk.web.async_client import AsyncWebClient

from bots.slack import blocks as b
from bots.slack.replier import _error_name, call_with_retry
from bots.tasks import BackgroundTasks

if TYPE_CHECKING:
    from agents.runner import TaskRunner

log = logging.getLogger("agentdesk.slack.actions")

ACTION_PREFIX = "agentdesk_"
COMMENT_CALLBACK = "agentdesk_feedback_comment"
Handler = Callable[[dict, dict, AsyncWebClient], Awaitable[None]]


class SlackActions:
    def __init__(self, runner: "TaskRunner", tasks: BackgroundTasks) -> None:
        self.runner = runner
        self.tasks = tasks
        self._handlers: dict[str, Handler] = {}
        self.register(b.STOP_ACTION, self.stop)
        self.register(b.FEEDBACK_ACTION, self.feedback)

    def register(self, prefix: str, handler: Handler) -> None:
        """`handler(body, action, client)` runs for actions whose action_id starts with `prefix`."""
        self._handlers[prefix] = handler

    def _handler_for(self, action_id: str) -> Handler | None:
        for prefix in sorted(self._handlers, key=len, reverse=True):
            if action_id.startswith(prefix):
                return self._handlers[prefix]
        return None

    async def dispatch(self, ack, body: dict, action: dict, client: AsyncWebClient) -> None:
        await ack()
        handler = self._handler_for(str(action.get("action_id") or ""))
        if handler is None:
            log.info("no handler for Slack action %s", action.get("action_id"))
            return
        self.tasks.spawn(handler(body, action, client), name=f"slack-action:{action.get('action_id')}",
                         deferred=True)

    # the controls ----------------------------------------------------------------------------------

    async def stop(self, body: dict, action: dict, client: AsyncWebClient) -> None:
        """The Stop button under a progress message: only the requester or an admin may stop the run."""
        team, channel, user = _where(body)
        thread_ts = str(action.get("value") or "")
        accepted, message = await self.runner.request_stop(f"slack:{team}:{channel}:{thread_ts}", user)
        if not accepted:
            await _tell(client, channel, user, thread_ts, message)

    async def feedback(self, body: dict, action: dict, client: AsyncWebClient) -> None:
        """A thumbs up/down press: kept per person (the last press wins); a thumbs down asks why."""
        team, channel, user = _where(body)
        value, _, task_id = str(action.get("value") or "").partition(":")
        thread_ts = str(((body.get("container") or {}).get("thread_ts"))
                        or (body.get("message") or {}).get("thread_ts") or "")
        kept = await self.runner.record_feedback(task_id, platform="slack", user=user, value=value)
        if not kept:
            await _tell(client, channel, user, thread_ts, "I couldn't keep that feedback: this answer is too old "
                        "or no longer known.")
            return
        if value == "negative" and body.get("trigger_id"):
            try:
                await client.views_open(trigger_id=body["trigger_id"], view=b.comment_modal(task_id, channel, thread_ts))
            except Exception as exc:  # noqa: BLE001 - the press is kept; the comment is optional
                log.info("feedback comment form not opened: %s", _error_name(exc))

    async def comment_submitted(self, ack, body: dict, view: dict) -> None:
        """The 'what went wrong?' form: the comment joins that person's negative feedback."""
        await ack()
        task_id = str(view.get("private_metadata") or "").split("|")[0]
        user = str((body.get("user") or {}).get("id") or "")
        state = ((view.get("state") or {}).get("values") or {}).get("comment") or {}
        comment = str((state.get("text") or {}).get("value") or "").strip()
        if task_id and user and comment:
            self.tasks.spawn(self.runner.record_feedback(task_id, platform="slack", user=user, value="negative",
                                                         comment=comment), name="slack-feedback-comment")


def _where(body: dict) -> tuple[str, str, str]:
    team = str((body.get("team") or {}).get("id") or body.get("team_id") or "")
    channel = str((body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id") or "")
    user = str((body.get("user") or {}).get("id") or "")
    return team, channel, user


async def _tell(client: AsyncWebClient, channel: str, user: str, thread_ts: str, text: str) -> None:
    """A note only the presser sees."""
    try:
        await call_with_retry(client.chat_postEphemeral, 30.0, channel=channel, user=user, text=text,
                              thread_ts=thread_ts or None)
    except Exception as exc:  # noqa: BLE001 - nothing else to tell them with
        log.info("ephemeral note not delivered: %s", _error_name(exc))
