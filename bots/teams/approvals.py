"""Approvals on Teams: an Adaptive Card with Approve / Deny (Action.Execute) and the invoke that answers it.

A press arrives at /api/messages as an authenticated `adaptiveCard/action` invoke (the adapter verifies
the Bot Framework token first). The runner decides (the requester or a listed approver, once); the invoke
is answered with the card redrawn with the decision, who and when, and the message is updated for
everyone. Anyone else is answered with a message ("you can't approve this") and the card stays as it was.
"""
from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from botbuilder.core import TurnContext
from botbuilder.schema import Activity, ActivityTypes, Attachment

from agents.chat import ApprovalDecision, ApprovalPrompt
from bots.teams.invokes import unsupported_invoke
from bots.teams.outbound import ConversationSender, SendFailed

if TYPE_CHECKING:
    from bots.teams.adapter import TeamsBot

log = logging.getLogger("agentdesk.teams.approvals")

INVOKE_NAME = "adaptiveCard/action"
VERB = "agentdesk_approval"
ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
MESSAGE_RESPONSE = "application/vnd.microsoft.activity.message"
_LINK = re.compile(r"!?\[([^\]\n]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_WJ = "\u2060"


def _safe(text: str, limit: int = 300) -> str:
    """Untrusted text for a card: no markdown links, no tags (<at> mentions), bare links broken."""
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    text = _LINK.sub(lambda m: f"{m.group(1)} ({m.group(2)})" if m.group(1) else m.group(2), text)
    return text.replace("<", "‹").replace(">", "›").replace("://", ":" + _WJ + "//")


def _clock(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))


def _head(prompt: ApprovalPrompt) -> list[dict]:
    asker = _safe(prompt.requester_name or prompt.requester, 80)
    return [
        {"type": "TextBlock", "text": "🔒 Approval needed", "weight": "Bolder", "size": "Medium"},
        {"type": "TextBlock", "wrap": True,
         "text": f"{_safe(prompt.department.upper(), 40)} wants to run {_safe(prompt.tool, 80)} for {asker}"},
        {"type": "FactSet", "facts": [{"title": _safe(name, 60), "value": _safe(value)}
                                      for name, value in prompt.arguments]},
    ]


def _card(body: list[dict], actions: list[dict] | None = None) -> dict:
    card: dict[str, Any] = {"type": "AdaptiveCard", "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                            "version": "1.4", "body": body}
    if actions:
        card["actions"] = actions
    return card


def prompt_card(prompt: ApprovalPrompt) -> dict:
    who = ("the person who asked" if prompt.approval == "requester"
           else "an approver: " + ", ".join(_safe(a, 40) for a in prompt.approvers[:10]))
    return _card(
        [*_head(prompt), {"type": "TextBlock", "isSubtle": True, "wrap": True,
                          "text": f"Needs {who} · expires {_clock(prompt.expires_at)}"}],
        [{"type": "Action.Execute", "title": "Approve", "verb": VERB, "style": "positive",
          "data": {"approval_id": prompt.approval_id, "decision": "approve"}},
         {"type": "Action.Execute", "title": "Deny", "verb": VERB, "style": "destructive",
          "data": {"approval_id": prompt.approval_id, "decision": "deny"}}],
    )


def outcome_text(decision: ApprovalDecision) -> str:
    who = _safe(decision.by_name or decision.by or "", 80)
    at = _clock(decision.at) if decision.at else ""
    return {
        "approved": f"✅ Approved by {who} · {at}",
        "denied": f"⛔ Denied by {who} · {at}",
        "timeout": f"⌛ No decision in time: not run · {at}",
        "expired": f"⌛ Expired (the bot restarted): not run · {at}",
        "cancelled": f"❌ The request ended before a decision: not run · {at}",
        "unavailable": "❌ Could not ask for approval here: not run",
    }.get(decision.status, f"{_safe(decision.status)} · {at}")


def decided_card(prompt: ApprovalPrompt, decision: ApprovalDecision) -> dict:
    return _card([*_head(prompt), {"type": "TextBlock", "wrap": True, "weight": "Bolder",
                                   "text": outcome_text(decision)}])


def card_activity(card: dict) -> Activity:
    return Activity(type=ActivityTypes.message, attachments=[Attachment(content_type=ADAPTIVE_CARD, content=card)])


# -- the replier's side ----------------------------------------------------------------------------------

async def post_prompt(sender: ConversationSender, prompt: ApprovalPrompt) -> dict | None:
    activity_id = await sender.send(card_activity(prompt_card(prompt)))
    return {"activity_id": activity_id} if activity_id else None


async def show_decision(sender: ConversationSender, prompt: ApprovalPrompt, decision: ApprovalDecision,
                        handle: dict) -> None:
    await sender.update(handle["activity_id"], card_activity(decided_card(prompt, decision)))


# -- the press (an authenticated adaptiveCard/action invoke) ----------------------------------------------

def _invoke_response(kind: str, value: Any) -> web.Response:
    return web.json_response({"statusCode": 200, "type": kind, "value": value}, status=200)


async def on_invoke(bot: "TeamsBot", activity: Activity) -> web.Response:
    value = activity.value if isinstance(activity.value, dict) else {}
    action = value.get("action") if isinstance(value.get("action"), dict) else {}
    data = action.get("data") if isinstance(action.get("data"), dict) else {}
    if action.get("verb") != VERB or activity.from_property is None:  # not an approval button
        return unsupported_invoke(activity)
    user = activity.from_property.aad_object_id or activity.from_property.id
    approval_id = str(data.get("approval_id") or "")
    seen = await bot.runner.approval_view(approval_id)
    groups = (await bot.groups_of(activity.from_property.aad_object_id or "", seen[0].approvers, fresh=True)
              if seen and seen[0].approval == "approvers" else ())
    ok, message = await bot.runner.decide_approval(approval_id, "teams", user, groups, str(data.get("decision") or ""),
                                                   user_name=activity.from_property.name)
    seen = await bot.runner.approval_view(approval_id)
    if seen is None or seen[1] is None:  # refused and still pending (or unknown): the card stays as it is
        return _invoke_response(MESSAGE_RESPONSE, message)
    card = decided_card(*seen)
    if activity.reply_to_id and activity.conversation is not None:
        sender = bot._sender(TurnContext.get_conversation_reference(activity))
        try:
            await sender.update(activity.reply_to_id, card_activity(card))
        except SendFailed as exc:  # the clicker sees the card below; others see it at the next refresh
            log.warning("teams: could not update the approval card for everyone: %s", exc)
    if not ok:
        log.info("teams: an approval press changed nothing: %s", message)
    return _invoke_response(ADAPTIVE_CARD, card)
