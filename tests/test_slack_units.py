"""Slack pieces in isolation: mrkdwn neutralization and splitting, the replier's pacing against the Web API
stand-in over HTTP, the dedupe store across a restart, the manifest writer."""
from __future__ import annotations

import asyncio
import json
import time

import pytest
import yaml

from agents.chat import FinalAnswer, OutputFile, StepUpdate
from bots.slack.adapter import clean_text, web_client
from agents.state.sqlite import SqliteStore
from bots.slack.manifest import write_manifest
from bots.slack.mrkdwn import MESSAGE_LIMIT, split_text, to_mrkdwn
from bots.slack.replier import ChannelPacer, SlackReplier
from tests.standins.slack_api import TOKEN, SlackAPI
from tests.support import make_settings

LIVE = ["<!channel>", "<!here>", "<!everyone>", "<@U024BE7LH>", "<#C024BE7LR>", "<!subteam^SAZ94GDB8>",
        "<https://evil.example|https://intranet.example>"]


@pytest.mark.parametrize("markup", LIVE)
def test_agent_markup_never_reaches_slack_live(markup):
    for source in (f"Hey {markup} look", f"**{markup}**", f"- {markup}", f"`{markup}`", f"```\n{markup}\n```",
                   f"| {markup} |", f"# {markup}"):
        out = to_mrkdwn(source)
        assert "<" not in out and ">" not in out, (source, out)


def test_bare_broadcasts_and_encoded_entities_stay_inert():
    out = to_mrkdwn("@channel @here @everyone and &lt;!channel&gt;")
    assert "@channel" not in out and "@here" not in out and "@everyone" not in out
    assert "&amp;lt;!channel&amp;gt;" in out  # shows the literal text, never decodes to a mention


def test_markdown_links_show_their_target():
    assert to_mrkdwn("[your bank](https://evil.example/login)") == "your bank (https://evil.example/login)"
    assert to_mrkdwn("**Total:** 5 & ~~4~~ *now*") == "*Total:* 5 &amp; ~4~ _now_"


def test_long_text_is_split_under_the_limit_without_breaking_code_or_entities():
    text = to_mrkdwn("intro\n```\n" + "\n".join(f"row {i} & <tag>" for i in range(600)) + "\n```\nbye")
    pieces = split_text(text)
    assert len(pieces) > 1 and all(len(p) <= MESSAGE_LIMIT for p in pieces)
    assert all(p.count("```") % 2 == 0 for p in pieces)
    assert "".join(pieces).count("&amp;") == 600
    one_line = split_text("&amp;" * 2000)
    assert all(p.startswith("&amp;") and p.endswith("&amp;") for p in one_line)


def test_clean_text_removes_the_bot_mention_and_decodes_slack_markup():
    raw = "<@UBOT> compare <https://a.example/x?y=1&amp;z=2|a.example> &lt;draft&gt; with <@U2> in <#C1|general>"
    assert clean_text(raw, "UBOT") == "compare https://a.example/x?y=1&z=2 <draft> with @U2 in #general"


async def test_dedupe_claims_survive_a_restart_and_expire(tmp_path):
    store = SqliteStore(tmp_path)
    assert await store.claim_event("event:Ev1", 60) and not await store.claim_event("event:Ev1", 60)
    await store.close()
    reopened = SqliteStore(tmp_path)
    assert not await reopened.claim_event("event:Ev1", 60) and await reopened.claim_event("event:Ev2", 60)
    assert await reopened.claim_event("event:Ev3", 0.05)
    await asyncio.sleep(0.1)
    assert await reopened.claim_event("event:Ev3", 60)
    await reopened.close()


def test_manifest_fills_request_urls_or_socket_mode(tmp_path):
    http = yaml.safe_load(write_manifest("https://bot.example.com/", tmp_path / "m.yaml", socket_mode=False).read_text())
    assert http["settings"]["event_subscriptions"]["request_url"] == "https://bot.example.com/slack/events"
    assert http["settings"]["interactivity"]["request_url"] == "https://bot.example.com/slack/events"
    assert http["settings"]["socket_mode_enabled"] is False
    scopes = set(http["oauth_config"]["scopes"]["bot"])
    assert {"app_mentions:read", "chat:write", "im:history", "files:read", "files:write", "assistant:write"} <= scopes
    assert "agent_view" in http["features"] and "assistant_view" not in http["features"]
    assert "usergroups:read" in scopes
    events = http["settings"]["event_subscriptions"]["bot_events"]
    assert {"app_home_opened", "app_context_changed"} <= set(events) and "assistant_thread_started" not in events
    old = yaml.safe_load(write_manifest("https://bot.example.com/", tmp_path / "o.yaml", socket_mode=False,
                                        assistant_view=True).read_text())
    assert "assistant_view" in old["features"] and "agent_view" not in old["features"]
    assert "assistant_thread_started" in old["settings"]["event_subscriptions"]["bot_events"]
    assert "app_context_changed" not in old["settings"]["event_subscriptions"]["bot_events"]
    socket = yaml.safe_load(write_manifest(None, tmp_path / "s.yaml", socket_mode=True).read_text())
    assert socket["settings"]["socket_mode_enabled"] is True
    assert "request_url" not in socket["settings"]["event_subscriptions"]
    with pytest.raises(ValueError, match="public URL"):
        write_manifest(None, tmp_path / "x.yaml", socket_mode=False)


def _step(n: int, title: str = "Working") -> StepUpdate:
    return StepUpdate(department="hr", step_number=n, title=f"{title} {n}", code=f"print({n})", observation=str(n))


async def test_fast_steps_are_coalesced_to_about_one_message_per_second(tmp_path):
    async with SlackAPI(TOKEN) as slack:
        settings = make_settings(tmp_path, None, slack_bot_token=TOKEN, slack_api_url=slack.api_url)
        replier = SlackReplier(web_client(settings), "C1", "100.1", pacer=ChannelPacer(1.0))
        for n in range(1, 8):
            await replier.step(_step(n))
        chart = tmp_path / "chart.png"
        chart.write_bytes(b"\x89PNG fake")
        await replier.final(FinalAnswer(department="hr", text="Done <!channel>", notices=("1 file skipped",),
                                        files=(OutputFile("chart.png", chart, chart.stat().st_size, "image/png"),),
                                        trace_id="abc123", trace_url="http://phoenix.local/t/abc123"))
        posts = slack.calls_to("chat.postMessage")
        gaps = [b.at - a.at for a, b in zip(posts, posts[1:])]
        assert len(posts) <= 4 and all(g >= 0.9 for g in gaps), gaps
        steps_text = "\n".join(c.params["text"] for c in posts[:-1])
        assert all(f"step {n}:" in steps_text for n in range(1, 8))
        final = posts[-1].params["text"]
        assert final.startswith("Done &lt;!channel&gt;") and "1 file skipped" in final
        assert "<http://phoenix.local/t/abc123|abc123>" in final
        [complete] = slack.calls_to("files.completeUploadExternal")
        assert complete.params["thread_ts"] == "100.1" and complete.params["channel_id"] == "C1"
        assert [u["data"] for u in slack.uploads.values()] == [b"\x89PNG fake"]


async def test_edit_mode_overflows_to_a_new_message_past_4000_chars(tmp_path):
    async with SlackAPI(TOKEN) as slack:
        settings = make_settings(tmp_path, None, slack_bot_token=TOKEN, slack_api_url=slack.api_url)
        replier = SlackReplier(web_client(settings), "C1", "100.1", mode="edit", pacer=ChannelPacer(0.05))
        for n in range(1, 6):
            await replier.step(StepUpdate("hr", n, "long step", code="x" * 590, observation="y" * 290))
            await slack.wait_for(lambda n=n: f"step {n}:" in "".join(m.text for m in slack.messages), what=f"step {n}")
        await replier.error("The HR agent ran out of time.")
    assert all(len(c.params["text"]) <= 4000 for c in slack.calls_to("chat.update"))
    progress = [m for m in slack.messages if "long step" in m.text]
    assert len(progress) == 2 and progress[0].updates
    assert slack.messages[-1].text == ":warning: The HR agent ran out of time."


async def test_status_failure_is_remembered_and_not_retried(tmp_path):
    async with SlackAPI(TOKEN) as slack:
        slack.status_refusal = "invalid_thread_ts"
        settings = make_settings(tmp_path, None, slack_bot_token=TOKEN, slack_api_url=slack.api_url)
        replier = SlackReplier(web_client(settings), "C1", "100.1")
        started = time.monotonic()
        await replier.status("HR agent is working on it…")
        await replier.status("still working")
        assert len(slack.calls_to("assistant.threads.setStatus")) == 1 and time.monotonic() - started < 2


async def test_stream_splits_a_long_answer_and_cards_show_sources_and_sub_agent_paths(tmp_path):
    from agents.chat import Source

    async with SlackAPI(TOKEN) as slack:
        settings = make_settings(tmp_path, None, slack_bot_token=TOKEN, slack_api_url=slack.api_url)
        replier = SlackReplier(web_client(settings), "D1", "100.1", mode="stream", task_display="plan",
                               recipient_user_id="U1", is_direct=True)
        await replier.status("MARKETING agent is working on it…")
        await replier.step(StepUpdate("marketing", 1, "Searching the web", code="web_search('x')",
                                      observation="3 results", agent_path=("web_research",),
                                      sources=(Source("Contoso pricing", "https://contoso.example/pricing"),
                                               Source("not a link", "javascript:alert(1)"))))
        await replier.step(StepUpdate("marketing", 1, "Summarising", observation="done <!channel>"))
        long_answer = "\n".join(f"| row {i} | {'x' * 40} |" for i in range(600))  # ~28,000 characters
        await replier.final(FinalAnswer(department="marketing", text=long_answer, task_id="t1"))
        [start] = slack.calls_to("chat.startStream")
        assert start.params["task_display_mode"] == "plan" and "recipient_user_id" not in start.params  # a DM
        cards = [c for call in slack.calls_to("chat.appendStream") + [start] for c in call.params.get("chunks") or []]
        nested = next(c for c in cards if c["id"] == "step-web_research-1")
        assert nested["title"].startswith("Marketing › web_research · step 1")
        assert nested["sources"] == [{"type": "url", "url": "https://contoso.example/pricing", "text": "Contoso pricing"}]
        assert "<!channel>" not in json.dumps(cards)
        pieces = [c.params["markdown_text"] for c in slack.calls_to("chat.appendStream") if c.params.get("markdown_text")]
        assert len(pieces) >= 3 and all(len(p) <= 12000 for p in pieces)
        assert "".join(pieces).count("| row") == 600
        [streamed] = slack.messages
        assert [t["status"] for t in streamed.tasks] == ["complete", "complete", "complete"]
        assert [c["value"] for c in streamed.controls] == ["positive:t1", "negative:t1"]
