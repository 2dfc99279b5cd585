"""Approvals on Slack: a Block Kit message with Approve / Deny, and the signed block_actions that answer it.

The message names the tool, its arguments (escaped: no mentions, no masked or live links; truncated), who
asked and who may decide. A click reaches POST /slack/events as a signed `block_actions` request (the
adapter checks the signature; a forged one is a 401) and is decided by the runner: the right person once.
Anyone else gets an ephemeral "you can't approve this". The message is then redrawn with the decision, who
made it and when (the waiting side redraws it too, e.g. after a timeout).
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from agents.chat import ApprovalDecision, ApprovalPrompt
from bots.slack.mrkdwn import neutralize

if TYPE_CHECKING:
    from agents.runner import TaskRunner
    from bots.slack.agent_view import UserGroups
    from bots.slack.replier import SlackReplier

log = logging.getLogger("agentdesk.slack.approvals")

ACTION_PREFIX = "agentdesk_approval:"
ACTION_PATTERN = r"^agentdesk_approval:(approve|deny)$"
_WJ = "\u2060"


def _safe(text: str, limit: int = 300) -> str:
    """Untrusted text for a Slack message: escaped (no mentions or <url|label>), bare links broken."""
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return neutralize(text).replace("://", ":" + _WJ + "//").replace("`", "'")


def _clock(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))


def _who_may(prompt: ApprovalPrompt) -> str:
    if prompt.approval == "requester":
        return "the person who asked"
    return "an approver: " + ", ".join(_safe(a, 40) for a in prompt.approvers[:10])


def _head(prompt: ApprovalPrompt) -> list[dict]:
    asker = _safe(prompt.requester_name or prompt.requester, 80)
    args = "\n".join(f"• *{_safe(name, 60)}*: `{_safe(value)}`" for name, value in prompt.arguments) or "_(no arguments)_"
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text":
            f":lock: *Approval needed* · {_safe(prompt.department.upper(), 40)} wants to run "
            f"`{_safe(prompt.tool, 80)}` for {asker}"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": args[:2900]}},
    ]


def prompt_blocks(prompt: ApprovalPrompt) -> list[dict]:
    return [
        *_head(prompt),
        {"type": "context", "elements": [{"type": "mrkdwn", "text":
            f"Needs {_who_may(prompt)} · expires {_clock(prompt.expires_at)}"}]},
        {"type": "actions", "block_id": f"agentdesk_approval_{prompt.approval_id}", "elements": [
            {"type": "button", "action_id": ACTION_PREFIX + "approve", "style": "primary", "value": prompt.approval_id,
             "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "action_id": ACTION_PREFIX + "deny", "style": "danger", "value": prompt.approval_id,
             "text": {"type": "plain_text", "text": "Deny"}},
        ]},
    ]


def outcome_text(decision: ApprovalDecision) -> str:
    who = _safe(decision.by_name or decision.by or "", 80)
    at = _clock(decision.at) if decision.at else ""
    return {
        "approved": f":white_check_mark: Approved by {who} · {at}",
        "denied": f":no_entry: Denied by {who} · {at}",
        "timeout": f":hourglass: No decision in time: not run · {at}",
        "expired": f":hourglass: Expired (the bot restarted): not run · {at}",
        "cancelled": f":x: The request ended before a decision: not run · {at}",
        "unavailable": ":x: Could not ask for approval here: not run",
    }.get(decision.status, f"{_safe(decision.status)} · {at}")


def decided_blocks(prompt: ApprovalPrompt, decision: ApprovalDecision) -> list[dict]:
    return [*_head(prompt), {"type": "context", "elements": [{"type": "mrkdwn", "text": outcome_text(decision)}]}]


def _fallback(prompt: ApprovalPrompt, decision: ApprovalDecision | None = None) -> str:
    head = f"Approval needed: {_safe(prompt.tool, 80)} for {_safe(prompt.requester_name or prompt.requester, 80)}"
    return f"{head}: {outcome_text(decision)}" if decision else head


# -- the replier's side (the thread) --------------------------------------------------------------------

async def post_prompt(replier: "SlackReplier", prompt: ApprovalPrompt) -> dict | None:
    """Post the approval message in the thread; its channel and ts are what approval_decided redraws."""
    from bots.slack.replier import FINAL_DEADLINE_S, call_with_retry

    await replier.pacer.wait(replier.channel)
    response = await call_with_retry(
        replier.client.chat_postMessage, FINAL_DEADLINE_S, channel=replier.channel, thread_ts=replier.thread_ts,
        text=_fallback(prompt), blocks=prompt_blocks(prompt), unfurl_links=False, unfurl_media=False)
    ts = response.get("ts")
    return {"channel": replier.channel, "ts": ts} if ts else None


async def show_decision(client: Any, prompt: ApprovalPrompt, decision: ApprovalDecision, handle: dict) -> None:
    from bots.slack.replier import FINAL_DEADLINE_S, call_with_retry

    await call_with_retry(client.chat_update, FINAL_DEADLINE_S, channel=handle["channel"], ts=handle["ts"],
                          text=_fallback(prompt, decision), blocks=decided_blocks(prompt, decision))


# -- the click (a signed block_actions request) -----------------------------------------------------------

def handler(runner: "TaskRunner", usergroups: "UserGroups"):
    """The SlackActions handler for Approve/Deny (SlackActions acks at once and runs it in the background)."""

    async def on_approval_action(body: dict, action: dict, client: Any) -> None:
        await on_action(runner, usergroups, body, action, client)

    return on_approval_action


async def on_action(runner: "TaskRunner", usergroups: "UserGroups", body: dict, action: dict, client: Any) -> None:
    """Approve/Deny pressed: decide (the right person, once), then tell the clicker or redraw the message."""
    approval_id = str(action.get("value") or "")
    decision = str(action.get("action_id") or "").removeprefix(ACTION_PREFIX)
    user = (body.get("user") or {}).get("id") or ""
    name = (body.get("user") or {}).get("name") or (body.get("user") or {}).get("username")
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
    message_ts = (body.get("container") or {}).get("message_ts") or (body.get("message") or {}).get("ts")
    thread_ts = (body.get("message") or {}).get("thread_ts")
    seen = await runner.approval_view(approval_id)
    team = (body.get("team") or {}).get("id") or (body.get("user") or {}).get("team_id") or ""
    groups = (await usergroups.groups_of(user, team, seen[0].approvers, fresh=True)
              if seen and seen[0].approval == "approvers" else ())
    ok, message = await runner.decide_approval(approval_id, "slack", user, groups, decision, user_name=name)
    if not ok and channel and user:
        try:
            await client.chat_postEphemeral(channel=channel, user=user, text=f":no_entry: {neutralize(message)}",
                                            **({"thread_ts": thread_ts} if thread_ts else {}))
        except Exception as exc:  # noqa: BLE001 - the click changed nothing either way
            log.warning("could not tell a Slack user why their click was refused: %s", type(exc).__name__)
    seen = await runner.approval_view(approval_id)
    if seen and seen[1] is not None and channel and message_ts:
        try:
            await show_decision(client, seen[0], seen[1], {"channel": channel, "ts": message_ts})
        except Exception as exc:  # noqa: BLE001 - the waiting side redraws it as well
            log.warning("could not redraw an approval message: %s", type(exc).__name__)
