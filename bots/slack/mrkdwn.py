"""Markdown (what models write) to Slack mrkdwn, with the agent's output treated as untrusted.

Slack turns `<!channel>`, `<!here>`, `<@U123>`, `<#C123>`, `<!subteam^S1>` and `<url|label>` into live
mentions and masked links. Escaping `&`, `<` and `>` (Slack's only control characters) makes every one
of them plain text; bare `@channel`/`@here`/`@everyone` get a zero-width joiner so no client or
`link_names` setting can turn them into a notification. Markdown links become `label (url)` so a label can
never hide where a link goes.

Two renderers: `to_mrkdwn` for mrkdwn text (classic messages, step replies) and `to_markdown` for the
places Slack renders standard Markdown (the `markdown` block, a stream's `markdown_text`), where tables,
headings and code survive as written. Control characters (NUL included) never reach either: they are
what the mrkdwn converter's placeholders are made of, and Slack has no use for them.
"""
from __future__ import annotations

import re

#: Slack truncates chat.postMessage text at 40,000 chars and refuses chat.update above 4,000; messages
#: above ~4,000 chars are also hard to read, so every piece we send stays under this.
MESSAGE_LIMIT = 3900

_ZWJ = "\u2060"  # word joiner: invisible, breaks "@here" as a token
_BROADCAST = re.compile(r"@(channel|here|everyone)\b", re.IGNORECASE)
_FENCE = re.compile(r"^\s*```")
_LINK = re.compile(r"!?\[([^\]\n]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_AUTOLINK = re.compile(r"<((?:https?|mailto):[^>\s]+)>")
_BOLD = re.compile(r"(\*\*)(?=\S)(.+?)(?<=\S)\*\*|(?<!\w)(__)(?=\S)(.+?)(?<=\S)__(?!\w)")
_ITALIC_STAR = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+")
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_PLACEHOLDER = "\x00{}\x00"  # input never holds NUL (see _clean), so a placeholder cannot be forged
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
#: `<` that would open a Slack token (<!here>, <@U1>, <#C1>, <!subteam^S1>, <https://x|label>).
_TOKEN_OPEN = re.compile(r"<(?=[!@#]|[A-Za-z][A-Za-z0-9+.-]*:)")
_ENTITY = re.compile(r"&(?=#?[A-Za-z0-9]+;)")
_FENCE_LINE = re.compile(r"^\s{0,3}(```|~~~)")


def _clean(text: str) -> str:
    """Model output without control characters (tabs and newlines kept; CR/LF normalised)."""
    return _CONTROL.sub("\ufffd", text.replace("\r\n", "\n").replace("\r", "\n"))


def escape(text: str) -> str:
    """Slack's escaping for message text: only &, < and > are control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def neutralize(text: str) -> str:
    """Plain untrusted text made safe for a Slack message: no mentions, no masked links, no broadcasts."""
    return _neutral(_clean(text))


def _neutral(text: str) -> str:
    """neutralize() for text already cleaned (placeholders inside it survive)."""
    return _BROADCAST.sub(lambda m: "@" + _ZWJ + m.group(1), escape(text))


def _inline(line: str) -> str:
    """Convert one non-code line; inline code spans are kept verbatim (but escaped)."""
    kept: list[str] = []

    def keep(value: str) -> str:
        kept.append(value)
        return _PLACEHOLDER.format(len(kept) - 1)

    line = _INLINE_CODE.sub(lambda m: keep(_neutral(m.group(0))), line)
    line = _LINK.sub(lambda m: keep(_link_text(m.group(1), m.group(2))), line)
    line = _AUTOLINK.sub(lambda m: keep(_neutral(m.group(1))), line)
    heading = _HEADING.match(line)
    if heading:
        line = f"**{heading.group(1)}**" if heading.group(1) else ""
    line = _BULLET.sub(lambda m: m.group(1) + "• ", line)
    line = _STRIKE.sub(lambda m: keep("~") + m.group(1) + keep("~"), line)
    line = _BOLD.sub(lambda m: keep("*") + (m.group(2) or m.group(4)) + keep("*"), line)
    line = _ITALIC_STAR.sub(lambda m: keep("_") + m.group(1) + keep("_"), line)
    line = _neutral(line)
    return re.sub("\x00(\\d+)\x00", lambda m: kept[int(m.group(1))], line)


def _link_text(label: str, url: str) -> str:
    label = label.strip()
    if not label or label == url:
        return neutralize(url)
    return f"{neutralize(label)} ({neutralize(url)})"


def to_mrkdwn(markdown: str) -> str:
    """Markdown to safe Slack mrkdwn. Code blocks stay code blocks; tables become code blocks."""
    out: list[str] = []
    in_code = False
    in_table = False
    for line in _clean(markdown).split("\n"):
        if _FENCE.match(line):
            if in_table:
                out.append("```")
                in_table = False
            out.append("```")  # Slack shows a language tag literally, so drop it
            in_code = not in_code
            continue
        if in_code:
            out.append(_neutral(line))
            continue
        is_table_row = line.strip().startswith("|") and line.strip().endswith("|") and len(line.strip()) > 1
        if is_table_row and not in_table:
            out.append("```")
            in_table = True
        elif not is_table_row and in_table:
            out.append("```")
            in_table = False
        out.append(_neutral(line) if in_table else _inline(line))
    if in_code or in_table:
        out.append("```")
    return "\n".join(out).strip("\n")


def _markdown_inert(text: str) -> str:
    """Standard-Markdown text with every Slack token, entity and broadcast broken by an invisible joiner."""
    text = _TOKEN_OPEN.sub("<" + _ZWJ, text)
    text = _ENTITY.sub("&" + _ZWJ, text)
    return _BROADCAST.sub(lambda m: "@" + _ZWJ + m.group(1), text)


def _unmask_links(text: str) -> str:
    """`[label](url)` -> `label (url)` until none is left (one pass can assemble a new link from pieces)."""
    while True:
        changed = _LINK.sub(lambda m: _plain_link(m.group(1), m.group(2)), text)
        if changed == text:
            return text
        text = changed


def _plain_link(label: str, url: str) -> str:
    label = label.strip()
    return url if not label or label == url else f"{label} ({url})"


def to_markdown(markdown: str) -> str:
    """Model Markdown for Slack's markdown block / stream text: formatting kept, nothing live.

    Headings, tables, lists and code stay as the model wrote them; mentions, broadcasts and Slack link
    tokens are made inert with a word joiner (invisible, so code reads the same) and no link label can
    hide its target.
    """
    out: list[str] = []
    fence: str | None = None
    for line in _clean(markdown).split("\n"):
        opener = _FENCE_LINE.match(line)
        if opener and (fence is None or opener.group(1) == fence):
            fence = opener.group(1) if fence is None else None
            out.append(_markdown_inert(line))
            continue
        if fence is not None:
            out.append(_markdown_inert(line))
            continue
        spans = line.split("`")  # odd pieces are inline code: links there are text, not links
        out.append("`".join(_markdown_inert(piece if i % 2 else _unmask_links(piece)) for i, piece in enumerate(spans)))
    return "\n".join(out).strip("\n")


def split_text(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split mrkdwn into messages under `limit`, at line breaks where possible.

    A code block cut in two is closed and reopened, and a cut never lands inside an `&amp;`-style entity.
    """
    if len(text) <= limit:
        return [text] if text else []
    pieces: list[str] = []
    current = ""
    in_code = False
    for line in text.split("\n"):
        for chunk in _hard_wrap(line, limit - 8):
            candidate = chunk if not current else current + "\n" + chunk
            if len(candidate) + (4 if in_code else 0) > limit and current:
                pieces.append(current + ("\n```" if in_code else ""))
                current = ("```\n" if in_code else "") + chunk
            else:
                current = candidate
        if line.strip().startswith("```"):
            in_code = not in_code
    if current.strip():
        pieces.append(current)
    return pieces


def _hard_wrap(line: str, width: int) -> list[str]:
    """A single over-long line cut at spaces, else anywhere outside an entity."""
    parts: list[str] = []
    while len(line) > width:
        cut = line.rfind(" ", width // 2, width)
        if cut <= 0:
            cut = width
            amp = line.rfind("&", max(0, cut - 6), cut)
            if amp != -1 and ";" not in line[amp:cut]:
                cut = amp
        parts.append(line[:cut])
        line = line[cut:].lstrip(" ") if line[cut:cut + 1] == " " else line[cut:]
    parts.append(line)
    return parts
