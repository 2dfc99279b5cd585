"""What the bot shows in Slack, built from agent output: step texts, task cards, feedback and Stop controls.

Everything the agent produced passes through bots.slack.mrkdwn first; action ids start with `agentdesk_`
so the adapter can route presses by prefix (bots.slack.actions).
"""
from __future__ import annotations

from typing import Any

from slack_sdk.models.blocks import ContextActionsBlock, FeedbackButtonObject, FeedbackButtonsElement
from slack_sdk.models.blocks.block_elements import UrlSourceElement
from slack_sdk.models.messages.chunk import TaskUpdateChunk

from agents.chat import StepUpdate
from bots.slack.mrkdwn import neutralize, split_text

CODE_EXCERPT = 600
OBSERVATION_EXCERPT = 300
TITLE_LIMIT = 200
SOURCES_LIMIT = 10
SECTION_LIMIT = 2900  # section text is capped at 3,000 characters
STOP_ACTION = "agentdesk_stop"
FEEDBACK_ACTION = "agentdesk_feedback"
LOADING_MESSAGES = ("Reading your request…", "Running the agent's code in its sandbox…", "Checking the results…")


def excerpt(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plain(text: str) -> str:
    """Untrusted text for fields whose markup rules are unclear (task cards, status): no markup at all."""
    return neutralize(text).replace("&lt;", "‹").replace("&gt;", "›").replace("&amp;", "&")


def _label(department: str) -> str:
    return department.upper() if len(department) <= 3 else department.capitalize()


def step_heading(update: StepUpdate) -> str:
    """`Marketing › web_research · step 2: Reading the page` (sub-agent steps show their path)."""
    path = " › ".join([_label(update.department), *update.agent_path])
    return f"{path} · step {update.step_number}: {update.title}"


def render_step(update: StepUpdate) -> str:
    """One step as a compact mrkdwn block: title, the code it ran, what came back or went wrong."""
    icon = ":x:" if update.error else (":white_check_mark:" if update.is_final else ":gear:")
    path = " › ".join([f"*{neutralize(update.department)}*", *(neutralize(p) for p in update.agent_path)])
    lines = [f"{icon} {path} · step {update.step_number}: {neutralize(update.title)}"]
    if update.code:
        lines.append("```\n" + neutralize(excerpt(update.code, CODE_EXCERPT)) + "\n```")
    if update.observation:
        lines.append("> " + neutralize(excerpt(update.observation, OBSERVATION_EXCERPT)).replace("\n", "\n> "))
    if update.error:
        lines.append(":warning: " + neutralize(excerpt(update.error, OBSERVATION_EXCERPT)))
    links = [s for s in update.sources if s.url.startswith(("https://", "http://"))][:SOURCES_LIMIT]
    if links:
        lines.append("Sources: " + ", ".join(f"{neutralize(s.title or s.url)} ({neutralize(s.url)})" for s in links))
    return "\n".join(lines)


def card_id(update_or_number: StepUpdate | int, agent_path: tuple[str, ...] = ()) -> str:
    if isinstance(update_or_number, StepUpdate):
        number, agent_path = update_or_number.step_number, update_or_number.agent_path
    else:
        number = update_or_number
    return "step-" + "-".join([*agent_path, str(number)])


def finished_card(update: StepUpdate) -> dict[str, Any]:
    """A step that ended: `complete` or `error`, its code as details, its output excerpt, its sources."""
    sources = [UrlSourceElement(url=s.url, text=plain(excerpt(s.title or s.url, 150)))
               for s in update.sources if s.url.startswith(("https://", "http://"))][:SOURCES_LIMIT]
    return TaskUpdateChunk(
        id=card_id(update),
        title=plain(excerpt(step_heading(update), TITLE_LIMIT)),
        status="error" if update.error else "complete",
        details=plain(excerpt(update.code, CODE_EXCERPT)) if update.code else None,
        output=plain(excerpt(update.error or update.observation or "", OBSERVATION_EXCERPT)) or None,
        sources=sources or None,
    ).to_dict()


def open_card(department: str, step_number: int, agent_path: tuple[str, ...] = ()) -> dict[str, Any]:
    """The next step, `in_progress` until it ends."""
    path = " › ".join([*([_label(department)] if department else []), *agent_path])
    title = f"{path} · step {step_number}: working…" if path else f"Step {step_number}: working…"
    return TaskUpdateChunk(id=card_id(step_number, agent_path), title=plain(title), status="in_progress").to_dict()


def failed_card(department: str, step_number: int, reason: str) -> dict[str, Any]:
    title = f"{_label(department)} · step {step_number}" if department else f"Step {step_number}"
    return TaskUpdateChunk(id=card_id(step_number), title=plain(title),
                           status="error", output=plain(excerpt(reason, OBSERVATION_EXCERPT))).to_dict()


def feedback_block(task_id: str) -> dict[str, Any]:
    """Thumbs up/down under an answer; the value names the task so a press finds its record."""
    return ContextActionsBlock(elements=[FeedbackButtonsElement(
        action_id=FEEDBACK_ACTION,
        positive_button=FeedbackButtonObject(text="Good answer", value=f"positive:{task_id}",
                                             accessibility_label="This answer was helpful"),
        negative_button=FeedbackButtonObject(text="Bad answer", value=f"negative:{task_id}",
                                             accessibility_label="This answer was not helpful"),
    )]).to_dict()


def stop_block(thread_ts: str) -> dict[str, Any]:
    return {"type": "actions", "block_id": "agentdesk_controls", "elements": [{
        "type": "button", "action_id": STOP_ACTION, "style": "danger", "value": thread_ts,
        "text": {"type": "plain_text", "text": "Stop"},
        "confirm": {"title": {"type": "plain_text", "text": "Stop this run?"},
                    "text": {"type": "plain_text", "text": "The agent stops after its current step."},
                    "confirm": {"type": "plain_text", "text": "Stop"},
                    "deny": {"type": "plain_text", "text": "Keep going"}},
    }]}


def section_blocks(mrkdwn: str) -> list[dict[str, Any]]:
    return [{"type": "section", "text": {"type": "mrkdwn", "text": piece}} for piece in split_text(mrkdwn, SECTION_LIMIT)]


def comment_modal(task_id: str, channel: str, thread_ts: str) -> dict[str, Any]:
    """The short 'what was wrong?' form a negative press may open."""
    return {
        "type": "modal", "callback_id": "agentdesk_feedback_comment",
        "private_metadata": f"{task_id}|{channel}|{thread_ts}",
        "title": {"type": "plain_text", "text": "What went wrong?"},
        "submit": {"type": "plain_text", "text": "Send"},
        "close": {"type": "plain_text", "text": "Skip"},
        "blocks": [{"type": "input", "block_id": "comment", "optional": True,
                    "label": {"type": "plain_text", "text": "Tell the people who run this bot (optional)"},
                    "element": {"type": "plain_text_input", "action_id": "text", "multiline": True,
                                "max_length": 2000}}],
    }
