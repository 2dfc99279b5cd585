"""Agent output made safe and readable as Teams message text.

Teams renders message text as Markdown plus a subset of HTML, and `<at>name</at>` only becomes a real
mention with a matching entity, but a model can still write `<a href>` links, `<img>` tags or masked
Markdown links whose label hides the target. Everything the agent produced is escaped (`&`, `<`, `>`)
and `[label](url)` becomes `label (url)`, so what a person reads is what the link is.
"""
from __future__ import annotations

import re

from agents.chat import StepUpdate

#: Teams rejects messages above ~28 KB (text plus attachments); stay well under it per message.
MESSAGE_LIMIT = 12000
#: Informative streaming updates are capped at 1 KB by Teams.
INFORMATIVE_LIMIT = 900

_LINK = re.compile(r"!?\[([^\]\n]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def neutralize(text: str) -> str:
    """Untrusted text as Teams Markdown: no HTML, no mentions, no masked links."""
    text = escape(text or "")
    while True:  # one pass can assemble a new link from the pieces of a nested one: repeat until none is left
        unmasked = _LINK.sub(lambda m: f"{m.group(1)} ({m.group(2)})" if m.group(1) else m.group(2), text)
        if unmasked == text:
            return text
        text = unmasked


def truncate(text: str, limit: int, marker: str = " … [truncated]") -> str:
    return text if len(text) <= limit else text[: limit - len(marker)] + marker


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split at paragraph or line breaks so no message exceeds `limit` characters."""
    parts: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n\n", 0, limit)
        if cut < limit // 2:
            cut = text.rfind("\n", 0, limit)
        if cut < limit // 2:
            cut = limit
        parts.append(text[:cut].rstrip())
        text = text[cut:].lstrip("\n")
    parts.append(text)
    return [p for p in parts if p.strip()] or [""]


def department_label(name: str) -> str:
    return name.upper() if len(name) <= 3 else name.capitalize()


def step_line(update: StepUpdate) -> str:
    """One line per agent step: `HR · step 2: Searching the leave policy (1.2 s)`."""
    title = neutralize(update.title or "working")
    who = " › ".join((department_label(update.department), *(neutralize(a) for a in update.agent_path)))
    line = f"{who} · step {update.step_number}: {title}"
    if update.error:
        line += f" (error: {neutralize(truncate(update.error, 200))})"
    elif update.duration_s is not None:
        line += f" ({update.duration_s:.1f} s)"
    return truncate(line, INFORMATIVE_LIMIT)


def human_size(size: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} bytes"


def welcome_text(company) -> str:
    """The short hello when the bot is added: who is here and what to type."""
    lines = [f"Hi! I'm the {escape(company.name)} assistant. Start a message with a department to ask it directly:"]
    for name, department in company.departments.items():
        example = f"{name}: tell me about {department.keywords[0]}" if department.keywords else f"{name}: what can you do?"
        lines.append(f"- **{department_label(name)}**: {escape(department.description)}. Try “{escape(example)}”")
    return "\n".join(lines) + "\n\nIn a channel, @mention me. I show each step while I work; Stop stops me."
