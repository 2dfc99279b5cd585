"""Teams end to end: Bot Framework activities over real HTTP into create_app + TaskRunner, the real agent loop
against the scripted model, and every reply observed at the local connector stand-in (the activity's
serviceUrl). Auth is off here (TEAMS_ALLOW_UNAUTHENTICATED, no app id); test_teams_auth.py covers JWTs."""
from __future__ import annotations

import json
import textwrap
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from tests.standins.model_server import code_reply
from tests.standins.teams_connector import (
    BOT_NAME,
    CHANNEL_ID,
    TeamsConnector,
    channel_mention,
    file_consent_invoke,
    group_message,
    personal_message,
)

COMPANY = textwrap.dedent(
    """
    [departments.hr]
    description = "Leave, benefits and HR policy"
    keywords = ["leave", "vacation"]
    tools = []
    authorized_imports = ["math", "os", "pandas", "matplotlib", "matplotlib.pyplot"]
    max_steps = 4
    step_timeout_s = 10

    [departments.sales]
    description = "Products, prices and quotes"
    tools = []
    authorized_imports = ["os", "pandas"]
    max_steps = 4
    """
)

MODEL_KEY = "sk-test-model-key-do-not-leak"


@dataclass
class Bot:
    url: str
    app: web.Application
    http: aiohttp.ClientSession
    runner: object = None

    async def post(self, body: dict, **headers: str) -> tuple[int, object, float]:
        started = time.monotonic()
        async with self.http.post(f"{self.url}/api/messages", json=body, headers=headers) as resp:
            payload = await resp.json(content_type=None) if resp.content_length != 0 else None
            return resp.status, payload, time.monotonic() - started

    async def drain(self) -> None:
        from bots.server import TASKS

        await self.app[TASKS].drain(timeout=30)


@asynccontextmanager
async def running_bot(tmp_path, model_server, monkeypatch, **overrides) -> AsyncIterator[Bot]:
    """create_app + TaskRunner on 127.0.0.1:0, Teams without an app id (local development mode)."""
    from agents.runner import TaskRunner
    from bots.server import create_app
    from tests.support import make_settings, serve

    monkeypatch.delenv("TEAMS_OPENID_METADATA_URL", raising=False)
    company = tmp_path / "departments.toml"
    company.write_text(COMPANY)
    values = dict(sandbox="local", config_path=company, teams_app_id=None, teams_app_password=None,
                  teams_allow_unauthenticated=True, slack_bot_token=None, slack_signing_secret=None,
                  slack_app_token=None)
    values.update(overrides)
    settings = make_settings(tmp_path, model_server.base_url, **values)
    runner = TaskRunner(settings)
    app = create_app(settings, runner)
    async with serve(app) as url, aiohttp.ClientSession() as http:
        yield Bot(url, app, http, runner)


@pytest.fixture
async def connector():
    async with TeamsConnector() as stand_in:
        yield stand_in


def final_message(connector: TeamsConnector, conversation_id: str, text: str):
    return lambda: [c for c in connector.messages(conversation_id) if text in c.text]


def assert_no_secrets(connector: TeamsConnector) -> None:
    for call in connector.calls:
        assert MODEL_KEY not in json.dumps(call.body or {})
        assert "Authorization" not in call.headers  # no app id: the bot sends no token


async def test_personal_chat_streams_each_step_then_the_final_answer(tmp_path, model_server, monkeypatch, connector):
    model_server.model.script(
        "how many leave days are left",
        code_reply("days = 30 - 18\nprint('remaining', days)", "I will compute the remaining days."),
        code_reply("print('double-checked', days)", "I will double-check the number."),
        code_reply('final_answer(f"You have {days} leave days left.")'),
        delay_s=1.3,  # slower than the one-update-a-second pacing, so no step is coalesced into the answer
    )
    async with running_bot(tmp_path, model_server, monkeypatch) as bot:
        body = personal_message(connector.service_url, "hr: how many leave days are left?")
        status, _, elapsed = await bot.post(body)
        assert status == 201 and elapsed < 2.0
        assert not connector.messages(), "the HTTP turn must not wait for the agent"
        conversation = body["conversation"]["id"]
        await connector.wait_for(final_message(connector, conversation, "You have 12 leave days left."),
                                 what="final answer")
        await bot.drain()

    calls = connector.sent(conversation, "POST")
    typing = [c for c in calls if c.activity_type == "typing"]
    assert typing, connector.describe()
    infos = [c.streaminfo() for c in typing]
    assert infos[0] == {"type": "streaminfo", "streamType": "informative", "streamSequence": 1}
    stream_id = "stream-1"
    assert all(i["streamId"] == stream_id for i in infos[1:])
    assert [i["streamSequence"] for i in infos] == list(range(1, len(infos) + 1))
    step_texts = " | ".join(c.text for c in typing)
    assert "step 1: I will compute the remaining days" in step_texts
    assert "step 2: I will double-check the number" in step_texts

    final = calls[-1]
    assert final.activity_type == "message" and "You have 12 leave days left." in final.text
    assert final.streaminfo() == {"type": "streaminfo", "streamId": stream_id, "streamType": "final"}
    assert not connector.sent(conversation, "PUT"), "streaming needs no edits"
    assert_no_secrets(connector)


async def test_channel_mention_is_answered_in_its_thread_with_only_the_mention_removed(
        tmp_path, model_server, monkeypatch, connector):
    model_server.model.script(
        "does HR Bot know when payday is",
        code_reply("print('payday is the 25th')", "I will look up the payroll calendar."),
        code_reply('final_answer("Payday is the 25th of each month.")'),
        delay_s=0.3,
    )
    async with running_bot(tmp_path, model_server, monkeypatch) as bot:
        body = channel_mention(connector.service_url, f"<at>{BOT_NAME}</at> hr: does HR Bot know when payday is?")
        status, _, _ = await bot.post(body)
        assert status == 201
        thread = body["conversation"]["id"]
        assert thread == f"{CHANNEL_ID};messageid=1700000000000"
        await connector.wait_for(final_message(connector, thread, "Payday is the 25th of each month."),
                                 what="final answer in the thread")
        await bot.drain()

    task_texts = [m["content"] if isinstance(m["content"], str) else json.dumps(m["content"])
                  for r in model_server.model.requests for m in r["messages"] if m["role"] == "user"]
    task = next(t for t in task_texts if "when payday is" in t)
    assert "does HR Bot know when payday is" in task  # the bot's name in the sentence is kept
    assert "<at>" not in task and "HR Bot</at>" not in task

    assert {c.conversation_id for c in connector.calls} == {thread}, "every reply stays in the thread"
    assert not any(c.streaminfo() for c in connector.calls), "Teams streams only in 1:1 chats"
    progress = [c for c in connector.messages(thread) if c.text.startswith("⏳")]
    assert len(progress) == 1, "one progress message, edited in place"
    edits = connector.sent(thread, "PUT")
    assert any("step 1: I will look up the payroll calendar" in e.text for e in edits)
    assert "done in 2 steps" in edits[-1].text and "step 1: I will look up the payroll calendar" in edits[-1].text
    assert_no_secrets(connector)


async def test_group_chat_gets_one_progress_message_and_the_answer(tmp_path, model_server, monkeypatch, connector):
    model_server.model.script(
        "quote for twelve licenses",
        code_reply("total = 12 * 40\nprint(total)", "I will price the licenses."),
        code_reply('final_answer(f"Twelve licenses cost {total} EUR.")'),
    )
    async with running_bot(tmp_path, model_server, monkeypatch) as bot:
        body = group_message(connector.service_url, f"<at>{BOT_NAME}</at> sales: quote for twelve licenses")
        assert (await bot.post(body))[0] == 201
        chat = body["conversation"]["id"]
        await connector.wait_for(final_message(connector, chat, "Twelve licenses cost 480 EUR."), what="answer")
        await bot.drain()

    posts = connector.messages(chat)
    assert [p.text.startswith("⏳") for p in posts] == [True, False]
    assert "Twelve licenses cost 480 EUR." in posts[-1].text
    assert {e.activity_id for e in connector.sent(chat, "PUT")} == {"act-1"}


async def test_expect_replies_gets_the_answer_in_the_http_response(tmp_path, model_server, monkeypatch, connector):
    model_server.model.script("expect replies question", code_reply('final_answer("answered in the response")'))
    async with running_bot(tmp_path, model_server, monkeypatch) as bot:
        body = personal_message(connector.service_url, "hr: expect replies question", deliveryMode="expectReplies")
        status, payload, _ = await bot.post(body)
        await bot.drain()
    assert status == 200
    [answer] = payload["activities"]
    assert answer["type"] == "message" and "answered in the response" in answer["text"]
    assert answer["entities"][0]["additionalType"] == ["AIGeneratedContent"]
    assert not connector.messages(), "an expectReplies caller reads the response, nothing goes to the connector"


async def test_expect_replies_says_so_when_the_run_outlives_the_wait(tmp_path, model_server, monkeypatch, connector):
    model_server.model.script("slow expect replies", code_reply('final_answer("the late answer")'), delay_s=1.5)
    async with running_bot(tmp_path, model_server, monkeypatch, teams_expect_replies_wait_s=0.5) as bot:
        body = personal_message(connector.service_url, "hr: slow expect replies", deliveryMode="expectReplies")
        status, payload, elapsed = await bot.post(body)
        assert status == 200 and elapsed < 1.5
        [note] = payload["activities"]
        assert "still working" in note["text"] and "when it is ready" in note["text"]
        await connector.wait_for(final_message(connector, body["conversation"]["id"], "the late answer"),
                                 what="the answer in the conversation afterwards")
        await bot.drain()


@pytest.mark.parametrize("name, expected", [
    ("adaptiveCard/action", lambda p: p["statusCode"] == 200 and p["value"]["type"] == "AdaptiveCard"),
    ("task/fetch", lambda p: p["task"]["type"] == "message" and "doesn't offer" in p["task"]["value"]),
    ("composeExtension/query", lambda p: p["composeExtension"]["type"] == "message"),
])
async def test_unsupported_invokes_get_teams_documented_answer(tmp_path, model_server, monkeypatch, connector,
                                                               name, expected):
    async with running_bot(tmp_path, model_server, monkeypatch) as bot:
        invoke = personal_message(connector.service_url, "", type="invoke", name=name, value={})
        status, payload, _ = await bot.post(invoke)
        unknown = await bot.post(personal_message(connector.service_url, "", type="invoke", name="x/y", value={}))
    assert status == 200 and expected(payload)
    assert unknown[0] == 404 and "not supported" in unknown[1]["error"]


async def test_throttled_connector_is_retried_and_the_answer_still_arrives(tmp_path, model_server, monkeypatch,
                                                                          connector):
    model_server.model.script("throttle me please", code_reply('final_answer("made it through")'))
    connector.fail_next(429, count=2, methods=("POST",))
    connector.fail_next(502, count=1, methods=("POST",), code="BadGateway")
    async with running_bot(tmp_path, model_server, monkeypatch) as bot:
        body = group_message(connector.service_url, f"<at>{BOT_NAME}</at> hr: throttle me please")
        assert (await bot.post(body))[0] == 201
        await connector.wait_for(final_message(connector, body["conversation"]["id"], "made it through"),
                                 what="answer after 429s")
        await bot.drain()
    assert [c.status for c in connector.calls[:3]] == [429, 429, 502]
    assert len(connector.messages(body["conversation"]["id"])) == 2  # progress + answer, nothing duplicated


async def test_agent_markup_is_shown_as_text_not_rendered(tmp_path, model_server, monkeypatch, connector):
    model_server.model.script(
        "write some markup",
        code_reply('final_answer("<at>Everyone</at> see [the policy](https://evil.example/x) <img src=x>")'),
    )
    async with running_bot(tmp_path, model_server, monkeypatch) as bot:
        body = personal_message(connector.service_url, "hr: write some markup")
        await bot.post(body)
        answer = await connector.wait_for(final_message(connector, body["conversation"]["id"], "Everyone"),
                                          what="answer")
        await bot.drain()
    text = answer[-1].text
    assert "<at>" not in text and "<img" not in text
    assert "&lt;at&gt;Everyone&lt;/at&gt;" in text
    assert "the policy (https://evil.example/x)" in text


async def test_file_shared_in_a_channel_gets_a_clear_explanation(tmp_path, model_server, monkeypatch, connector):
    async with running_bot(tmp_path, model_server, monkeypatch) as bot:
        html = '<div><div><at id="0">HR Bot</at> hr: summarize this</div><attachment id="abc123"></attachment></div>'
        body = channel_mention(connector.service_url, f"<at>{BOT_NAME}</at> hr: summarize this",
                               attachments=[{"contentType": "text/html", "content": html}])
        await bot.post(body)
        reply = await connector.wait_for(final_message(connector, body["conversation"]["id"], "personal (1:1) chat"),
                                         timeout=10, what="explanation")
        await bot.drain()
    assert "files shared in channels" in reply[-1].text
    assert not any("summarize this" in json.dumps(r) for r in model_server.model.requests)


async def test_output_file_in_personal_chat_goes_through_the_consent_card(tmp_path, model_server, monkeypatch,
                                                                          connector):
    content = "team,days\nsales,12\nhr,9\n"
    model_server.model.script(
        "export the leave report",
        code_reply("import os\nimport pandas as pd\n"
                   "df = pd.DataFrame({'team': ['sales', 'hr'], 'days': [12, 9]})\n"
                   "df.to_csv(OUTPUT_DIR + '/leave report.csv', index=False)\nprint('written')",
                   "I will write the report."),
        code_reply('final_answer("Here is the leave report.")'),
    )
    async with running_bot(tmp_path, model_server, monkeypatch) as bot:
        body = personal_message(connector.service_url, "hr: export the leave report")
        conversation = body["conversation"]["id"]
        await bot.post(body)
        await connector.wait_for(final_message(connector, conversation, "Here is the leave report."), what="answer")
        cards = await connector.wait_for(lambda: [
            (c, a) for c in connector.messages(conversation) for a in (c.body.get("attachments") or [])
            if a["contentType"] == "application/vnd.microsoft.teams.card.file.consent"], what="consent card")
        await bot.drain()  # the task is over and its workspace gone: the offer must not depend on it
        card_call, card = cards[0]
        assert card["name"] == "leave report.csv"
        assert card["content"]["sizeInBytes"] == len(content)
        assert "hr agent" in card["content"]["description"]

        upload_info = {"name": "leave report.csv", "uploadUrl": connector.upload_url("session-1"),
                       "contentUrl": "https://contoso-my.sharepoint.com/personal/alice/Documents/leave%20report.csv",
                       "uniqueId": "1150D938-8870-4044-9F2C-5BBDEBA70C9D", "fileType": "csv"}
        invoke = file_consent_invoke(connector.service_url, conversation, "act-consent",
                                     card["content"]["acceptContext"], upload_info)
        status, payload, elapsed = await bot.post(invoke)
        assert (status, payload) == (200, None) and elapsed < 2.0
        info_cards = await connector.wait_for(lambda: [
            a for c in connector.messages(conversation) for a in (c.body.get("attachments") or [])
            if a["contentType"] == "application/vnd.microsoft.teams.card.file.info"], what="file info card")
        await bot.drain()

        assert bytes(connector.uploads["session-1"]).decode() == content
        assert connector.upload_ranges["session-1"] == [f"bytes 0-{len(content) - 1}/{len(content)}"]
        assert info_cards[0]["contentUrl"] == upload_info["contentUrl"]
        assert info_cards[0]["content"] == {"uniqueId": upload_info["uniqueId"], "fileType": "csv"}

        # The same card accepted again (or a forged context) gets a clear answer, not a second upload.
        again = file_consent_invoke(connector.service_url, conversation, "act-consent",
                                    card["content"]["acceptContext"], upload_info)
        assert (await bot.post(again))[0] == 200
        await connector.wait_for(final_message(connector, conversation, "no longer available"), what="expired")
        await bot.drain()
    assert connector.upload_ranges["session-1"] == [f"bytes 0-{len(content) - 1}/{len(content)}"]


async def test_small_chart_goes_inline_in_a_channel_other_files_get_a_note(tmp_path, model_server, monkeypatch,
                                                                           connector):
    model_server.model.script(
        "chart and table please",
        code_reply(
            "import os\nimport pandas as pd\nimport matplotlib\nmatplotlib.use('Agg')\n"
            "import matplotlib.pyplot as plt\n"
            "df = pd.DataFrame({'team': ['sales', 'hr'], 'days': [12, 9]})\n"
            "df.plot.bar(x='team', y='days', figsize=(2, 1.5), legend=False)\n"
            "plt.savefig(OUTPUT_DIR + '/chart.png', dpi=40)\nplt.close()\n"
            "df.to_json(OUTPUT_DIR + '/table.json')\nprint('ok')", "I will make the files."),
        code_reply('final_answer("Chart and table are ready.")'),
    )
    async with running_bot(tmp_path, model_server, monkeypatch) as bot:
        body = channel_mention(connector.service_url, f"<at>{BOT_NAME}</at> hr: chart and table please")
        thread = body["conversation"]["id"]
        await bot.post(body)
        await connector.wait_for(final_message(connector, thread, "Chart and table are ready."), what="answer")
        images = await connector.wait_for(lambda: [
            a for c in connector.messages(thread) for a in (c.body.get("attachments") or [])
            if a["contentType"] == "image/png"], what="inline chart")
        await bot.drain()
    assert images[0]["contentUrl"].startswith("data:image/png;base64,iVBORw0KGgo")
    answer = final_message(connector, thread, "Chart and table are ready.")()[-1].text
    assert "table.json" in answer and "personal (1:1) chat" in answer
    assert "chart.png" not in answer


@pytest.mark.parametrize("sandbox", ["local", pytest.param("docker", marks=pytest.mark.docker)])
async def test_file_sent_in_personal_chat_is_read_by_the_agent(tmp_path, model_server, monkeypatch, connector,
                                                               sandbox):
    if sandbox == "docker":
        from tests.sandbox_support import require_docker_sandbox, sandbox_settings

        require_docker_sandbox(sandbox_settings(tmp_path / "probe"))
    model_server.model.script(
        "add up the leave days in my file",
        code_reply("import pandas as pd\ndf = pd.read_csv(INPUT_FILES[0])\nprint('total', int(df['days'].sum()))",
                   "I will read the file."),
        code_reply('final_answer(f"The file lists {int(df[\'days\'].sum())} leave days.")'),
    )
    download_url = connector.serve_file("leave.csv", b"team,days\nsales,12\nhr,9\n", "text/csv")
    attachment = {
        "contentType": "application/vnd.microsoft.teams.file.download.info",
        "contentUrl": "https://contoso-my.sharepoint.com/personal/alice/Documents/leave.csv",
        "name": "leave.csv",
        "content": {"downloadUrl": download_url, "uniqueId": "8E5A2C74-0000-4000-8000-1234567890AB",
                    "fileType": "csv", "etag": "{8E5A2C74-0000-4000-8000-1234567890AB},1"},
    }
    async with running_bot(tmp_path, model_server, monkeypatch, sandbox=sandbox) as bot:
        body = personal_message(connector.service_url, "hr: add up the leave days in my file",
                                attachments=[attachment])
        assert (await bot.post(body))[0] == 201
        await connector.wait_for(final_message(connector, body["conversation"]["id"], "The file lists 21 leave days."),
                                 timeout=120 if sandbox == "docker" else 30, what="answer from the file")
        await bot.drain()
    assert [name for name, _ in connector.downloads] == ["leave.csv"]
    assert "Authorization" not in connector.downloads[0][1], "downloadUrl is pre-authenticated; no token goes there"


async def test_personal_chat_falls_back_to_an_edited_message_when_teams_refuses_streaming(
        tmp_path, model_server, monkeypatch, connector):
    model_server.model.script(
        "no streaming here",
        code_reply("print(7)", "I will print seven."),
        code_reply('final_answer("Seven it is.")'),
        delay_s=0.3,
    )
    connector.refuse_streaming = True
    async with running_bot(tmp_path, model_server, monkeypatch) as bot:
        body = personal_message(connector.service_url, "hr: no streaming here")
        conversation = body["conversation"]["id"]
        await bot.post(body)
        await connector.wait_for(final_message(connector, conversation, "Seven it is."), what="answer")
        await bot.drain()
    refused = [c for c in connector.calls if c.status == 403]
    assert len(refused) == 1 and refused[0].streaminfo()["streamSequence"] == 1, "one try, then no more streams"
    messages = connector.messages(conversation)
    assert messages[0].text.startswith("⏳") and "Seven it is." in messages[-1].text
    assert messages[-1].streaminfo() is None
    assert "step 1: I will print seven" in connector.sent(conversation, "PUT")[-1].text


async def test_thread_rate_limiter_spaces_out_sends():
    from bots.teams.outbound import RateLimiter

    limiter = RateLimiter(((2, 0.3),))
    started = time.monotonic()
    for _ in range(5):
        await limiter.acquire()
    assert time.monotonic() - started >= 0.55  # sends 3-4 wait for the first window, 5 for the second


async def test_bot_token_goes_only_to_the_connector_that_sent_the_activity():
    from botbuilder.schema import Activity

    from bots.teams.files import inbound_attachments

    async def token() -> str:
        return "bot-token"

    activity = Activity().deserialize({
        "type": "message", "serviceUrl": "https://smba.trafficmanager.net/amer/",
        "attachments": [
            {"contentType": "image/png",
             "contentUrl": "https://smba.trafficmanager.net/amer/v3/attachments/1/views/original"},
            {"contentType": "image/jpeg", "contentUrl": "https://evil.example/steal.jpg", "name": "x.jpg"},
        ]})
    inside, outside = await inbound_attachments(activity, personal=True, token=token)
    assert inside.headers == {"Authorization": "Bearer bot-token"} and inside.name == "image-1.png"
    assert outside.headers == {} and outside.url == "https://evil.example/steal.jpg"


async def test_a_bare_mention_gets_a_hint_instead_of_an_agent_run(tmp_path, model_server, monkeypatch, connector):
    async with running_bot(tmp_path, model_server, monkeypatch) as bot:
        body = group_message(connector.service_url, f"<at>{BOT_NAME}</at>&nbsp;")
        assert (await bot.post(body))[0] == 201
        await connector.wait_for(final_message(connector, body["conversation"]["id"], "Ask me a question"),
                                 what="hint")
        await bot.drain()
    assert model_server.model.requests == []
