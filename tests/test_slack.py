"""Slack end to end: signed Events API requests over real HTTP into create_app + TaskRunner, the real agent
loop against the scripted model, and every reply observed at the Slack Web API stand-in."""
from __future__ import annotations

import json
import os
import time

import pytest

from tests.standins.model_server import code_reply
from tests.standins.slack_api import (
    BOT_ID,
    BOT_USER_ID,
    SECRET,
    TOKEN,
    SlackAPI,
    event_callback,
    mention,
    message,
    running_bot,
    sign,
)


@pytest.fixture
async def slack():
    async with SlackAPI(TOKEN) as api:
        yield api


STEP_ICONS = (":gear:", ":white_check_mark:", ":x:")


def replies(slack: SlackAPI, channel: str, thread_ts: str):
    """Bot messages in the thread that are not step updates (answers, errors, greetings)."""
    return [m for m in slack.thread(channel, thread_ts) if not m.text.startswith(STEP_ICONS)]


def final_with(slack: SlackAPI, channel: str, thread_ts: str, text: str):
    return lambda: [m for m in replies(slack, channel, thread_ts) if text in m.text]


def assert_no_secrets(slack: SlackAPI) -> None:
    for msg in slack.messages:
        for secret in (TOKEN, SECRET, "sk-test-model-key-do-not-leak"):
            assert secret not in msg.text and all(secret not in u for u in msg.updates)


async def test_mention_gets_steps_then_final_answer_in_its_thread(tmp_path, model_server, slack):
    model_server.model.script(
        "multiply the magic numbers",
        code_reply("product = 6 * 7\nprint('product is', product)", "I will multiply them."),
        code_reply('final_answer(f"The product is {product}.")'),
    )
    async with running_bot(tmp_path, model_server, slack, slack_step_updates="replies") as bot:
        event = mention("hr: multiply the magic numbers please")
        started = time.monotonic()
        status, _ = await bot.events.event(event)
        ack_s = time.monotonic() - started
        assert status == 200 and ack_s < 3.0
        await slack.wait_for(final_with(slack, "C0GENERAL", event["ts"], "The product is 42."), what="final answer")
        await bot.drain()

    posts = slack.calls_to("chat.postMessage")
    assert posts and all(c.params["thread_ts"] == event["ts"] and c.params["channel"] == "C0GENERAL" for c in posts)
    assert all(c.auth == f"Bearer {TOKEN}" for c in posts)
    texts = [m.text for m in slack.thread("C0GENERAL", event["ts"])]
    step_index = next(i for i, t in enumerate(texts) if "step 1" in t and "I will multiply them" in t)
    assert "product is 42" in texts[step_index]  # the step shows what the code printed
    final_index = next(i for i, t in enumerate(texts) if "The product is 42." in t)
    assert step_index < final_index
    assert [c.params["thread_ts"] for c in slack.calls_to("assistant.threads.setStatus")] == [event["ts"]]
    step_message = slack.thread("C0GENERAL", event["ts"])[step_index]
    assert [(c["action_id"], c["value"]) for c in step_message.controls] == [("agentdesk_stop", event["ts"])]
    answer = slack.thread("C0GENERAL", event["ts"])[-1]
    assert "The product is 42." in answer.markdown  # a markdown block, not only mrkdwn text
    assert [c["feedback"] for c in answer.controls] == ["positive", "negative"]
    assert_no_secrets(slack)


async def test_mention_streams_a_task_card_per_step_then_the_answer_and_feedback(tmp_path, model_server, slack):
    model_server.model.script(
        "stream the magic numbers",
        code_reply("product = 6 * 7\nprint('product is', product)", "I will multiply them."),
        code_reply("print('checked', product + 0)", "Double-checking the product."),
        code_reply('final_answer(f"## Result\\n\\n| a | b |\\n|---|---|\\n| 6 | 7 |\\n\\nThe product is {product}. <!here>")'),
    )
    async with running_bot(tmp_path, model_server, slack) as bot:  # stream is the default
        event = mention("hr: stream the magic numbers")
        status, _ = await bot.events.event(event)
        assert status == 200
        await slack.wait_for(lambda: [m for m in slack.thread("C0GENERAL", event["ts"])
                                      if m.controls and not m.streaming], what="stream stopped with feedback")
        await bot.drain()

    names = [c.method for c in slack.calls if c.method.startswith(("chat.", "assistant."))]
    assert set(names[:2]) == {"assistant.threads.setStatus", "chat.startStream"}  # both as soon as admitted
    assert names[-1] == "chat.stopStream" and "chat.postMessage" not in names
    [start] = slack.calls_to("chat.startStream")
    assert start.params["recipient_user_id"] == "U0ALICE" and start.params["recipient_team_id"]
    assert start.params["task_display_mode"] == "timeline"
    assert start.params["chunks"] == [{"type": "task_update", "id": "step-1", "title": "Step 1: working…",
                                       "status": "in_progress"}]
    status_call = slack.calls_to("assistant.threads.setStatus")[0]
    assert status_call.params["loading_messages"] and "HR agent" in status_call.params["status"]
    updates = [(chunk["id"], chunk["status"]) for c in slack.calls_to("chat.startStream") + slack.calls_to("chat.appendStream")
               for chunk in c.params.get("chunks") or [] if chunk["status"] != "in_progress" or chunk["id"] != "step-1"]
    finished = [u for u in updates if u[1] != "in_progress"]
    assert finished == [("step-1", "complete"), ("step-2", "complete"), ("step-3", "complete")]
    assert updates.index(("step-2", "in_progress")) < updates.index(("step-2", "complete"))

    [streamed] = slack.thread("C0GENERAL", event["ts"])
    assert [(t["id"], t["status"]) for t in streamed.tasks] == [("step-1", "complete"), ("step-2", "complete"),
                                                                ("step-3", "complete")]
    assert "I will multiply them" in streamed.tasks[0]["title"] and "product is 42" in streamed.tasks[0]["output"]
    assert "| 6 | 7 |" in streamed.text and "## Result" in streamed.text  # Markdown as written
    assert "<!here>" not in streamed.text and "The product is 42." in streamed.text
    [stop] = slack.calls_to("chat.stopStream")
    [block] = stop.params["blocks"]
    assert block["type"] == "context_actions" and block["elements"][0]["type"] == "feedback_buttons"
    assert [c["feedback"] for c in streamed.controls] == ["positive", "negative"]
    assert all(c["value"].endswith(":" + streamed.controls[0]["value"].split(":")[1]) for c in streamed.controls)
    assert_no_secrets(slack)


async def test_refused_stream_falls_back_to_replies_and_the_thread_remembers(tmp_path, model_server, slack):
    model_server.model.script("refused stream question", code_reply("print('x')", "Trying hard."),
                              code_reply('final_answer("fallback worked")'))
    model_server.model.script("second question in that thread", code_reply('final_answer("still replies")'))
    model_server.model.script("a question elsewhere", code_reply('final_answer("streamed again")'))
    async with running_bot(tmp_path, model_server, slack) as bot:
        slack.stream_refusal = "not_allowed"
        first = mention("hr: refused stream question")
        await bot.events.event(first)
        await slack.wait_for(final_with(slack, "C0GENERAL", first["ts"], "fallback worked"), what="answer")
        await bot.drain()
        assert [m for m in slack.thread("C0GENERAL", first["ts"]) if "Trying hard" in m.text]
        assert len(slack.calls_to("chat.startStream")) == 1

        slack.stream_refusal = None  # the thread remembers; a new thread tries again
        follow = message("second question in that thread", thread_ts=first["ts"])
        await bot.events.event(follow)
        await slack.wait_for(final_with(slack, "C0GENERAL", first["ts"], "still replies"), what="follow-up")
        await bot.drain()
        assert len(slack.calls_to("chat.startStream")) == 1
        other = mention("hr: a question elsewhere")
        await bot.events.event(other)
        await slack.wait_for(lambda: [m for m in slack.thread("C0GENERAL", other["ts"])
                                      if "streamed again" in m.text and not m.streaming], what="streamed answer")
        await bot.drain()
    assert len(slack.calls_to("chat.startStream")) == 2


async def test_direct_message_is_answered_in_the_dm(tmp_path, model_server, slack):
    model_server.model.script("dm question about leave", code_reply('final_answer("You have 12 days.")'))
    async with running_bot(tmp_path, model_server, slack) as bot:
        event = message("hr: dm question about leave", channel="D0ALICE", channel_type="im")
        assert (await bot.events.event(event))[0] == 200
        await slack.wait_for(final_with(slack, "D0ALICE", event["ts"], "You have 12 days."), what="DM answer")


async def test_follow_up_without_mention_keeps_department_and_memory(tmp_path, model_server, slack):
    model_server.model.script("first question xyz", code_reply("secret_number = 41\nprint(secret_number)"),
                              code_reply('final_answer("noted 41")'))
    model_server.model.script("follow-up question abc", code_reply('final_answer("follow-up done")'))
    model_server.model.script("stranger thread text", code_reply('final_answer("should not happen")'))
    async with running_bot(tmp_path, model_server, slack, slack_step_updates="replies") as bot:
        first = mention("sales: first question xyz")
        await bot.events.event(first)
        await slack.wait_for(final_with(slack, "C0GENERAL", first["ts"], "noted 41"), what="first answer")
        await bot.drain()

        # A thread the bot never joined: a mention-less message there is not for the bot.
        await bot.events.event(message("stranger thread text", thread_ts="1600000000.000001"))
        follow = message("follow-up question abc", thread_ts=first["ts"])
        await bot.events.event(follow)
        await slack.wait_for(final_with(slack, "C0GENERAL", first["ts"], "follow-up done"), what="follow-up answer")
        await bot.drain()

    conversation = "\n".join(str(m.get("content")) for m in model_server.model.requests[-1]["messages"])
    assert "first question xyz" in conversation and "secret_number = 41" in conversation
    assert "follow-up question abc" in conversation
    assert all(":gear: *sales*" in m.text for m in slack.thread("C0GENERAL", first["ts"]) if m.text.startswith(":gear:"))
    assert not any("stranger thread text" in json.dumps(r) for r in model_server.model.requests)
    assert not [m for m in slack.messages if "should not happen" in m.text]


async def test_same_event_delivered_three_times_is_answered_once(tmp_path, model_server, slack):
    model_server.model.script("retry storm question", code_reply('final_answer("answered once")'))
    async with running_bot(tmp_path, model_server, slack) as bot:
        event = mention("hr: retry storm question")
        payload = event_callback(event)
        statuses = [(await bot.events.send(payload, retry_num=n))[0] for n in (None, 1, 2)]
        assert statuses == [200, 200, 200]
        await slack.wait_for(final_with(slack, "C0GENERAL", event["ts"], "answered once"), what="answer")
        await bot.drain()
    assert len(final_with(slack, "C0GENERAL", event["ts"], "answered once")()) == 1
    assert len(slack.calls_to("assistant.threads.setStatus")) == 1
    assert sum("retry storm question" in json.dumps(r) for r in model_server.model.requests) == 1


async def test_app_mention_and_message_channels_twins_get_one_answer(tmp_path, model_server, slack):
    model_server.model.script("twin event question", code_reply('final_answer("one answer only")'))
    async with running_bot(tmp_path, model_server, slack) as bot:
        as_mention = mention("hr: twin event question")
        as_message = message(as_mention["text"], ts=as_mention["ts"])
        assert (await bot.events.event(as_message))[0] == 200
        assert (await bot.events.event(as_mention))[0] == 200
        await slack.wait_for(final_with(slack, "C0GENERAL", as_mention["ts"], "one answer only"), what="answer")
        await bot.drain()
    assert len(final_with(slack, "C0GENERAL", as_mention["ts"], "one answer only")()) == 1
    assert sum("twin event question" in json.dumps(r) for r in model_server.model.requests) == 1


async def test_bad_requests_are_refused_and_the_server_keeps_serving(tmp_path, model_server, slack):
    model_server.model.script("after the attacks", code_reply('final_answer("still here")'))
    async with running_bot(tmp_path, model_server, slack) as bot:
        body = json.dumps(event_callback(mention("hr: forged")))
        forged = sign("not-the-secret", body)
        assert (await bot.events.post_raw(body, forged))[0] == 401
        stale = sign(SECRET, body, timestamp=int(time.time()) - 360)
        assert (await bot.events.post_raw(body, stale))[0] == 401
        broken = '{"type": "event_callback", "event": {'
        status, text = await bot.events.post_raw(broken, sign(SECRET, broken))
        assert status == 400 and "malformed" in text
        huge = json.dumps({"type": "event_callback", "padding": "x" * (1024 * 1024 + 10)})
        assert (await bot.events.post_raw(huge, sign(SECRET, huge)))[0] == 413
        assert (await bot.events.post_raw(body, {"Content-Type": "application/json"}))[0] == 401

        event = mention("hr: after the attacks")
        assert (await bot.events.event(event))[0] == 200
        await slack.wait_for(final_with(slack, "C0GENERAL", event["ts"], "still here"), what="answer")
        await bot.drain()
    assert not [m for m in slack.messages if "forged" in m.text]


async def test_url_verification_challenge(tmp_path, model_server, slack):
    async with running_bot(tmp_path, model_server, slack) as bot:
        status, text = await bot.events.send({"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmd",
                                              "type": "url_verification"})
    assert status == 200 and json.loads(text) == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmd"}


async def test_rate_limits_and_5xx_still_deliver_the_final_answer(tmp_path, model_server, slack):
    model_server.model.script("busy channel question", code_reply('final_answer("delivered despite 429s")'))
    async with running_bot(tmp_path, model_server, slack, slack_step_updates="off") as bot:
        slack.fail("chat.postMessage", 429, count=5, retry_after=1)
        slack.fail("chat.postMessage", 503, count=2)
        event = mention("hr: busy channel question")
        await bot.events.event(event)
        await slack.wait_for(final_with(slack, "C0GENERAL", event["ts"], "delivered despite 429s"),
                             timeout=45, what="final answer after rate limits")
        await bot.drain()
    posts = slack.calls_to("chat.postMessage")
    assert len(posts) == 8  # 5 x 429 and 2 x 503 refused, then delivered
    gaps = [b.at - a.at for a, b in zip(posts, posts[1:5])]
    assert all(gap >= 0.95 for gap in gaps), f"Retry-After not honoured: {gaps}"


async def test_html_login_page_instead_of_a_file_is_explained_in_the_thread(tmp_path, model_server, slack):
    model_server.model.script("summarize the attached file", code_reply('final_answer("should not run")'))
    async with running_bot(tmp_path, model_server, slack) as bot:
        shared = slack.add_file("report.csv", b"a,b\n1,2\n", "text/csv", html_login=True)
        event = mention("hr: summarize the attached file", files=[shared])
        await bot.events.event(event)
        [reply] = await slack.wait_for(final_with(slack, "C0GENERAL", event["ts"], "login page"), what="file error")
        await bot.drain()
    assert ":warning:" in reply.text and "report.csv" in reply.text
    assert [c.auth for c in slack.calls_to("download")] == [f"Bearer {TOKEN}"]
    assert not [m for m in slack.messages if "should not run" in m.text]


async def test_slack_connect_file_stub_is_resolved_with_files_info(tmp_path, model_server, slack):
    model_server.model.script(
        "count rows in shared file",
        code_reply("import pandas as pd\nprint(len(pd.read_csv(INPUT_FILES[0])), 'rows')"),
        code_reply('final_answer("3 rows")'),
    )
    async with running_bot(tmp_path, model_server, slack, slack_step_updates="replies") as bot:
        stub = slack.add_file("rows.csv", b"h\n1\n2\n3\n", "text/csv", connect_stub=True)
        event = message(f"<@{BOT_USER_ID}> hr: count rows in shared file", files=[stub])
        await bot.events.event(event)
        await slack.wait_for(final_with(slack, "C0GENERAL", event["ts"], "3 rows"), what="answer from the file")
        await bot.drain()
    [step] = [m for m in slack.thread("C0GENERAL", event["ts"]) if "step 1" in m.text]
    assert "&gt; 3 rows" in step.text or "> 3 rows" in step.text
    assert [c.params["file"] for c in slack.calls_to("files.info")] == [stub["id"]]


async def test_every_subscribed_event_is_acked_and_noise_is_ignored(tmp_path, model_server, slack):
    from bots.slack.manifest import build_manifest

    bot_events = build_manifest(None, socket_mode=True)["settings"]["event_subscriptions"]["bot_events"]
    samples = {
        "app_mention": mention("hello"),
        "message.im": message("hello", channel="D0BOB", channel_type="im", subtype="message_changed"),
        "message.channels": message("chatter without the bot"),
        "message.groups": message("private chatter", channel="G0PRIV", channel_type="group"),
        "message.mpim": message("group dm chatter", channel="G0MPIM", channel_type="mpim"),
        "app_home_opened": {"type": "app_home_opened", "user": "U0ALICE", "channel": "D0ALICE", "tab": "messages",
                            "event_ts": "1.2"},
        "app_context_changed": {"type": "app_context_changed", "user": "U0ALICE", "event_ts": "1.3", "context": {}},
        "assistant_thread_started": {"type": "assistant_thread_started", "event_ts": "1.2", "assistant_thread": {
            "user_id": "U0ALICE", "channel_id": "D0ALICE", "thread_ts": "1700000001.000100", "context": {}}},
        "assistant_thread_context_changed": {"type": "assistant_thread_context_changed", "event_ts": "1.3",
                                             "assistant_thread": {"user_id": "U0ALICE", "channel_id": "D0ALICE",
                                                                  "thread_ts": "1700000001.000100", "context": {}}},
    }
    bot_events = [*dict.fromkeys([*bot_events, *build_manifest(None, socket_mode=True, assistant_view=True)[
        "settings"]["event_subscriptions"]["bot_events"]])]
    assert set(bot_events) == set(samples)
    async with running_bot(tmp_path, model_server, slack) as bot:
        for name in bot_events:
            assert (await bot.events.event(samples[name]))[0] == 200, name
        # the bot's own reply and a deleted message in a thread it knows are not requests
        await bot.events.event(message("my own reply", user=BOT_USER_ID, bot_id=BOT_ID, thread_ts="1.1"))
        await bot.events.event(message("", subtype="message_deleted", thread_ts="1.1"))
        await slack.wait_for(final_with(slack, "D0ALICE", "1700000001.000100", "department"), what="greeting")
        await bot.drain()
    model_tasks = [r for r in model_server.model.requests if "New task" in json.dumps(r)]
    assert len(model_tasks) == 1  # only the app_mention "hello"


async def test_edit_mode_updates_one_progress_message(tmp_path, model_server, slack):
    model_server.model.script("edit mode question", code_reply("print('one')", "First step."),
                              code_reply("print('two')", "Second step."), code_reply('final_answer("edited")'))
    async with running_bot(tmp_path, model_server, slack, slack_step_updates="edit") as bot:
        event = mention("hr: edit mode question")
        await bot.events.event(event)
        await slack.wait_for(final_with(slack, "C0GENERAL", event["ts"], "edited"), what="answer")
        await bot.drain()
    thread = slack.thread("C0GENERAL", event["ts"])
    progress = [m for m in thread if "First step" in m.text]
    assert len(progress) == 1 and "Second step" in progress[0].text and progress[0].updates
    assert len(thread) == 2  # the progress message and the answer


async def test_slack_disabled_answers_404_with_a_reason(tmp_path, model_server, slack):
    async with running_bot(tmp_path, model_server, slack, slack_bot_token=None, slack_signing_secret=None) as bot:
        status, text = await bot.events.event(mention("hi"))
    assert status == 404 and "Slack is not configured" in json.loads(text)["error"]


def _docker_image_ready(settings) -> bool:
    from agents.sandbox.image import image_exists

    return image_exists(settings)


@pytest.mark.docker
async def test_csv_shared_with_a_mention_comes_back_as_a_chart(tmp_path, model_server, slack):
    from tests.support import make_settings

    if not _docker_image_ready(make_settings(tmp_path, None)) and os.environ.get("CI") != "true":
        pytest.skip("sandbox image not built (agentdesk sandbox build); required under CI=true")
    chart_code = (
        "import os\nimport pandas as pd\nimport matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
        "df = pd.read_csv(INPUT_FILES[0])\nprint(df['days'].sum())\n"
        "ax = df.plot.bar(x='team', y='days')\nplt.savefig(f'{OUTPUT_DIR}/leave.png')\n"
    )
    model_server.model.script("chart the leave csv", code_reply(chart_code, "I will read the CSV and plot it."),
                              code_reply('final_answer("Chart attached: 17 days in total.")'))
    async with running_bot(tmp_path, model_server, slack, sandbox="docker") as bot:
        shared = slack.add_file("leave.csv", b"team,days\nops,5\nsales,12\n", "text/csv")
        event = mention("hr: chart the leave csv", files=[shared])
        await bot.events.event(event)
        await slack.wait_for(lambda: [m for m in slack.thread("C0GENERAL", event["ts"]) if m.files],
                             timeout=120, what="chart upload")
        await bot.drain()
    texts = "\n".join(m.text for m in slack.thread("C0GENERAL", event["ts"]))
    assert "17" in texts and "Chart attached" in texts
    [upload] = [u for u in slack.uploads.values() if u["filename"] == "leave.png"]
    assert upload["data"].startswith(b"\x89PNG") and upload["auth"] is None
    [complete] = slack.calls_to("files.completeUploadExternal")
    assert complete.params["thread_ts"] == event["ts"] and complete.params["channel_id"] == "C0GENERAL"
