"""Property tests: whatever a model writes (NULs, control characters, half-formed markup), the Slack and Teams
renderers return text and never a live mention, broadcast or disguised link."""
from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings, strategies as st

from bots.slack.mrkdwn import split_text, to_markdown, to_mrkdwn
from bots.teams.text import neutralize as teams_neutralize

#: Pieces that make up Slack/Teams markup, mixed with arbitrary text (control characters included).
ATOMS = ["<", ">", "&", "|", "!", "@", "#", "^", "[", "]", "(", ")", "`", "```", "*", "_", "~", "\n", "\x00",
         "\x01", "\x1b", "\r", "\t", "0", "1", "9", "<!channel>", "<!here>", "<!everyone>", "<@U024BE7LH>",
         "<#C024BE7LR>", "<!subteam^SAZ94GDB8>", "<https://evil.example|https://intranet.example>",
         "[https://intranet.example](https://evil.example)", "[[a](https://b)](https://c)", "https://", "evil.example", "&lt;", "&gt;", "&amp;",
         "&#60;", "@channel", "@here", "subteam", "<at>", "</at>", "<a href='x'>", "| a | b |", "# ", "- ",
         "\x00" + "0" + "\x00", "\x001\x00"]
TEXT = st.lists(st.one_of(st.sampled_from(ATOMS), st.text(max_size=8)), max_size=40).map("".join)

LIVE_SLACK_TOKEN = re.compile(r"<(?:[!@#]|[A-Za-z][A-Za-z0-9+.-]*:)")
ENTITY = re.compile(r"&(?:#?[A-Za-z0-9]+);")
BROADCAST = re.compile(r"@(channel|here|everyone)\b", re.I)
MD_LINK = re.compile(r"\[([^\]\n]*)\]\(([^)\s]*)\)")
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _outside_code(markdown: str) -> str:
    """The parts of Markdown a renderer treats as text (fenced blocks and inline code removed)."""
    kept, fence = [], False
    for line in markdown.split("\n"):
        if re.match(r"^\s{0,3}(```|~~~)", line):
            fence = not fence
            continue
        if not fence:
            kept.append("".join(piece for i, piece in enumerate(line.split("`")) if i % 2 == 0))
    return "\n".join(kept)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXT)
def test_slack_mrkdwn_never_raises_and_nothing_is_live(text):
    out = to_mrkdwn(text)
    assert "<" not in out and ">" not in out
    assert not BROADCAST.search(out) and not CONTROL.search(out)
    for piece in split_text(out):
        assert "<" not in piece and ">" not in piece


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXT)
def test_slack_markdown_never_raises_and_nothing_is_live(text):
    out = to_markdown(text)
    assert not LIVE_SLACK_TOKEN.search(out), out
    assert not ENTITY.search(out) and not BROADCAST.search(out) and not CONTROL.search(out)
    for label, url in MD_LINK.findall(_outside_code(out)):
        assert label == url, (label, url)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXT)
def test_teams_text_never_raises_and_nothing_is_live(text):
    out = teams_neutralize(text)
    assert "<" not in out and ">" not in out  # no <at>, no <a href>, no HTML at all
    for label, url in MD_LINK.findall(out):
        assert label == url, (label, url)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet="abcdefghij0123456789", min_size=1, max_size=6), min_size=1, max_size=8),
       st.sampled_from(["\x00", "\x01", "\x1f"]))
def test_words_survive_control_characters_around_them(words, control):
    text = control.join(f"**{w}**" if i % 2 else w for i, w in enumerate(words))
    for render in (to_mrkdwn, to_markdown):
        out = render(text)
        assert all(w in out for w in words), (text, out)


def test_nested_links_cannot_reassemble_into_a_disguised_one():
    nested = "[[https://intranet.example](https://x)](https://evil.example)"
    for out in (teams_neutralize(nested), to_markdown(nested)):
        assert all(label == url for label, url in MD_LINK.findall(out)), out
        assert "https://evil.example" in out


def test_the_reported_placeholder_collision_keeps_the_answer():
    answer = "total\x000\x00 is **42** and `x` <!here>"
    out = to_mrkdwn(answer)
    assert "*42*" in out and "total" in out and "&lt;!here&gt;" in out
