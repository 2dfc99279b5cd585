"""Teams as Microsoft's clients expect it, end to end over real HTTP against the connector fake that enforces
Teams' rules (bots/emulator/teams_connector.py) and the Microsoft Graph stand-in: paced streams, Stop, the AI
label, citations, feedback, the sensitivity label, replies tied to the person's message, the welcome, and
files and groups through Graph in channels and group chats."""
from __future__ import annotations

import asyncio
import json
import types
import textwrap
import time

import pytest

from tests.standins.graph import CLIENT_ID, CLIENT_SECRET, GraphStandIn
from tests.standins.model_server import code_reply
from tests.standins.teams_connector import (
    ALICE,
    BOT_ID,
    BOT_NAME,
    CHANNEL_ID,
    TEAM_GROUP,
    TENANT,
    TeamsConnector,
    activity,
    channel_mention,
    group_message,
    personal_message,
)
from tests.test_teams import final_message, running_bot

HR_GROUP = "0f6b3a2e-hr-people-group-000000000001"
NESTED_GROUP = "77aa0000-nested-group-000000000002"

COMPANY = textwrap.dedent(
    """
    [company]
    name = "Northwind Labs"

    [departments.hr]
    description = "Leave, benefits and HR policy"
    keywords = ["leave", "vacation"]
    tools = ["agents.tools.hr:search_policies"]
    authorized_imports = ["math", "os", "pandas"]
    max_steps = 8
    step_timeout_s = 10
    sensitivity_label = { name = "Confidential", description = "HR data: do not forward outside Northwind" }

    [departments.finance]
    description = "Budgets and payroll"
    keywords = ["budget"]
    tools = []
    authorized_imports = ["os"]
    max_steps = 3

    [departments.finance.access]
    restricted = true
    teams_groups = ["%s"]
    """ % HR_GROUP
)


@pytest.fixture
async def connector():
    async with TeamsConnector() as stand_in:
        yield stand_in


@pytest.fixture
async def graph():
    async with GraphStandIn(TENANT) as stand_in:
        yield stand_in


def company(tmp_path):
    path = tmp_path / "company.toml"
    path.write_text(COMPANY)
    return path


def graph_settings(graph: GraphStandIn) -> dict:
    return dict(graph_client_id=CLIENT_ID, graph_client_secret=CLIENT_SECRET, graph_tenant_id=TENANT,
                graph_api_url=graph.api_url, graph_login_url=graph.base_url)


def stream_calls(connector: TeamsConnector, conversation: str):
    return [c for c in connector.calls if c.conversation_id == conversation and c.streaminfo() is not None]


async def test_personal_chat_streams_four_paced_steps_and_an_answer_with_teams_ai_entities(
        tmp_path, model_server, monkeypatch, connector):
    model_server.model.script(
        "how long is parental leave",
        code_reply("found = search_policies('parental leave')\nprint(found[:80])", "I will search the policies."),
        code_reply("weeks = 26\nprint(weeks)", "I will read the weeks."),
        code_reply("print('checked', weeks)", "I will double-check the number."),
        code_reply("print('formatting')", "I will phrase the answer."),
        code_reply('final_answer(f"Parental leave is {weeks} weeks.")'),
        delay_s=1.1,  # slower than one update a second, so every step is its own informative update
    )
    async with running_bot(tmp_path, model_server, monkeypatch, config_path=company(tmp_path)) as bot:
        body = personal_message(connector.service_url, "hr: how long is parental leave?")
        conversation = body["conversation"]["id"]
        assert (await bot.post(body))[0] == 201
        await connector.wait_for(final_message(connector, conversation, "Parental leave is 26 weeks."),
                                 what="final answer")
        await bot.drain()

    assert not connector.refused(), connector.describe()
    calls = stream_calls(connector, conversation)
    gaps = [b.at - a.at for a, b in zip(calls, calls[1:])]
    assert min(gaps) >= 1.0, f"one streaming request per second per stream, final included: {gaps}"
    informative = [c for c in calls if c.activity_type == "typing"]
    sequences = [c.streaminfo()["streamSequence"] for c in informative]
    assert sequences == sorted(set(sequences)) and sequences[0] == 1
    shown = " | ".join(c.text for c in informative)
    for number, title in enumerate(["search the policies", "read the weeks", "double-check", "phrase the answer"], 1):
        assert f"HR · step {number}: I will {title}" in shown, shown
    assert all(len(c.text) <= 1000 for c in informative)

    final = calls[-1]
    assert final.activity_type == "message" and final.streaminfo()["streamType"] == "final"
    ai = final.entity("https://schema.org/Message")
    assert ai["additionalType"] == ["AIGeneratedContent"] and ai["@type"] == "Message"
    citations = ai["citation"]
    assert citations and citations[0]["@type"] == "Claim" and citations[0]["position"] == 1
    assert citations[0]["appearance"]["name"].startswith("Parental Leave Policy")
    assert 0 < len(citations[0]["appearance"]["abstract"]) <= 160
    assert "[1]" in final.text
    assert ai["usageInfo"] == {"@type": "CreativeWork", "name": "Confidential",
                               "description": "HR data: do not forward outside Northwind"}
    assert final.body["channelData"]["feedbackLoopEnabled"] is True
    posts = connector.sent(conversation, "POST")
    assert {c.activity_id for c in posts} == {body["id"]}, "every reply goes to the person's activity"
    assert {c.body.get("replyToId") for c in posts} == {body["id"]}


@pytest.mark.parametrize("sandbox", ["local", pytest.param("docker", marks=pytest.mark.docker)])
async def test_stop_ends_the_stream_cancels_the_run_and_its_sandbox(tmp_path, model_server, monkeypatch,
                                                                    connector, sandbox):
    if sandbox == "docker":
        from tests.sandbox_support import require_docker_sandbox, sandbox_settings

        require_docker_sandbox(sandbox_settings(tmp_path / "probe"))
    model_server.model.script(
        "count slowly to six",
        *[code_reply(f"print({n})", f"I will say {n}.") for n in range(1, 7)],
        code_reply('final_answer("six")'),
        delay_s=1.1,
    )
    async with running_bot(tmp_path, model_server, monkeypatch, config_path=company(tmp_path), sandbox=sandbox,
                           sandbox_pool_size=0) as bot:
        body = personal_message(connector.service_url, "hr: count slowly to six")
        conversation = body["conversation"]["id"]
        await bot.post(body)
        shown = await connector.wait_for(lambda: [c for c in connector.sent(conversation, "POST")
                                                  if "step 2:" in c.text], timeout=60, what="step 2 streamed")
        if sandbox == "docker":
            from tests.sandbox_support import labelled_containers

            provider = bot.runner.sandboxes.instance_id
            assert labelled_containers(provider), "the run has its container"
        connector.press_stop(shown[0].streaminfo()["streamId"])
        [refusal] = await connector.wait_for(connector.refused, timeout=10, what="Teams refusing the stopped stream")
        if sandbox == "docker":
            await connector.wait_for(lambda: not labelled_containers(provider), timeout=5, what="sandbox gone")
            assert time.monotonic() - refusal.at < 1.0, "the run's sandbox is destroyed within a second of Stop"
        stopped = await connector.wait_for(final_message(connector, conversation, "Stopped as you asked after step"),
                                           timeout=20, what="stopped message")
        requests_at_stop = len(model_server.model.requests)
        await asyncio.sleep(1.5)
        await bot.drain()

    assert refusal.status == 403 and refusal.answer["error"]["code"] == "ContentStreamNotAllowed"
    assert stopped[-1].at - refusal.at < 2.0, "the person hears at once (the runner lets the worker end for 1 s)"
    assert stopped[-1].streaminfo() is None, "after Stop the message goes out as a normal message"
    after = [c for c in connector.calls if c.at > refusal.at and c.activity_type == "typing"]
    assert after == [], "no update after Stop"
    assert len(model_server.model.requests) == requests_at_stop, "no further agent step after the stop"
    assert "six" not in " ".join(c.text for c in connector.messages(conversation))


async def test_feedback_on_an_answer_is_stored_traced_and_counted(tmp_path, model_server, monkeypatch, connector):
    from agents.telemetry import flush_tracing, setup_tracing, shutdown_tracing
    from tests.standins.otlp_receiver import OtlpReceiver

    model_server.model.script("is friday a holiday", code_reply('final_answer("No, Friday is a work day.")'))
    with OtlpReceiver() as receiver:
        try:
            async with running_bot(tmp_path, model_server, monkeypatch, config_path=company(tmp_path),
                                   otlp_endpoint=receiver.url) as bot:
                setup_tracing(bot.runner.settings)
                async with bot.http.get(f"{bot.url}/metrics") as resp:
                    metrics_before = await resp.text()
                body = personal_message(connector.service_url, "hr: is friday a holiday?")
                await bot.post(body)
                [answer] = await connector.wait_for(final_message(connector, body["conversation"]["id"],
                                                                  "Friday is a work day"), what="answer")
                await bot.drain()
                answer_id = answer.answer["id"]
                press = personal_message(connector.service_url, "", type="invoke", name="message/submitAction",
                                         replyToId=answer_id,
                                         value={"actionName": "feedback", "actionValue": {
                                             "reaction": "dislike",
                                             "feedback": json.dumps({"feedbackText": "Fridays off in August"})}})
                status, payload, _ = await bot.post(press)
                forged = await bot.post(dict(press, id="x1", replyToId="act-999"))
                [task_id] = {r["task_id"] for r in (await bot.runner.store.list_records("teams_answers", "")).values()}
                votes = await bot.runner.feedback_for(task_id)
                trace_id = (await bot.runner.store.get_record("answers", task_id))["trace_id"]
                async with bot.http.get(f"{bot.url}/metrics") as resp:
                    metrics = await resp.text()
            assert flush_tracing(10)
            spans = receiver.wait_for(lambda got: any(s.name == "agentdesk.feedback" for s in got))
        finally:
            shutdown_tracing()
    assert (status, payload) == (200, {}) and forged[0] == 200
    vote = votes[ALICE["aadObjectId"]]
    assert vote["value"] == "negative" and vote["comment"] == "Fridays off in August" and vote["platform"] == "teams"
    assert len(votes) == 1, "the forged press on an unknown answer is not stored"
    [span] = [s for s in spans if s.name == "agentdesk.feedback"]
    assert span.trace_id == trace_id, "the feedback is in the answer's trace"
    assert _feedback_count(metrics) == _feedback_count(metrics_before) + 1


def _feedback_count(metrics: str) -> float:
    line = 'agentdesk_feedback_total{department="hr",platform="teams",value="negative"} '
    found = [float(row[len(line):]) for row in metrics.splitlines() if row.startswith(line)]
    return found[0] if found else 0.0


async def test_welcome_names_the_departments_when_the_bot_is_added(tmp_path, model_server, monkeypatch, connector):
    async with running_bot(tmp_path, model_server, monkeypatch, config_path=company(tmp_path)) as bot:
        added = activity(connector.service_url, "", conversation={"conversationType": "personal",
                                                                  "id": "a:1welcomeChat"},
                         type="conversationUpdate", membersAdded=[{"id": BOT_ID, "name": BOT_NAME}])
        added.pop("text")
        installed = activity(connector.service_url, "", conversation={"conversationType": "personal",
                                                                      "id": "a:1installChat"},
                             type="installationUpdate", action="add")
        someone = activity(connector.service_url, "", conversation={"conversationType": "personal",
                                                                    "id": "a:1otherChat"},
                           type="conversationUpdate", membersAdded=[{"id": "29:someoneElse"}])
        for body in (added, installed, someone):
            assert (await bot.post(body))[0] == 201
        welcomes = await connector.wait_for(lambda: connector.messages("a:1welcomeChat") and
                                            connector.messages("a:1installChat"), what="welcomes")
        await bot.drain()
    text = connector.messages("a:1welcomeChat")[0].text
    assert "Northwind Labs" in text and "**HR**" in text and "**Finance**" in text
    assert "“hr: tell me about leave”" in text
    assert welcomes and not connector.messages("a:1otherChat"), "only the bot's own arrival is welcomed"


async def test_a_quiet_stream_is_kept_alive_and_handed_over_before_teams_two_minutes(tmp_path, connector):
    """Teams' limits scaled down (keep-alive 1.5 s, hand-over 3.5 s, the fake ends streams at 4 s)."""
    from botbuilder.schema import ConversationReference

    from agents.chat import FinalAnswer, StepUpdate
    from bots.tasks import BackgroundTasks
    from bots.teams.adapter import TeamsBot
    from bots.teams.files import PendingUploads
    from bots.teams.replier import StreamLimits, TeamsReplier
    from tests.support import make_settings

    connector.connector.max_stream_s = 4.0
    settings = make_settings(tmp_path, None, teams_allow_unauthenticated=True, teams_app_id=None)
    bot = TeamsBot(settings, runner=types.SimpleNamespace(store=None), tasks=BackgroundTasks())  # replies only
    reference = ConversationReference().deserialize({
        "activityId": "1700000000123", "channelId": "msteams", "serviceUrl": connector.service_url,
        "conversation": {"id": "a:1longRun", "conversationType": "personal"},
        "bot": {"id": BOT_ID}, "user": ALICE})
    replier = TeamsReplier(bot._sender(reference), personal=True, uploads=PendingUploads(tmp_path / "up"),
                           owner="alice", limits=StreamLimits(interval_s=1.0, keepalive_s=1.5, max_s=3.5))
    await replier.status("HR agent is working on it…")
    await replier.step(StepUpdate("hr", 1, "Reading the long report"))
    await asyncio.sleep(4.5)
    await replier.step(StepUpdate("hr", 2, "Still reading"))
    await replier.final(FinalAnswer("hr", "The report is long.", steps=2, task_id="t1"))

    assert not connector.refused(), connector.describe()
    calls = connector.calls
    streamed = [c for c in calls if c.streaminfo()]
    assert any("still working" in c.text for c in streamed if c.activity_type == "typing"), "a keep-alive update"
    handover = [c for c in streamed if c.activity_type == "message"]
    assert len(handover) == 1 and "longer than a Teams stream may last" in handover[0].text
    assert handover[0].at - streamed[0].at < 4.0, "handed over before the stream's limit"
    later = [c for c in calls if c.at > handover[0].at]
    assert later and all(c.streaminfo() is None for c in later), "then a progress message and a normal answer"
    assert "The report is long." in later[-1].text and later[-1].method == "POST"
    assert any("step 2: Still reading" in c.text for c in later)


# -- Microsoft Graph: files and groups in channels and group chats --------------------------------------------

async def test_a_file_shared_in_a_channel_is_fetched_through_graph_and_read(tmp_path, model_server, monkeypatch,
                                                                          connector, graph):
    model_server.model.script(
        "total the leave in this file",
        code_reply("import pandas as pd\ndf = pd.read_csv(INPUT_FILES[0])\nprint(int(df['days'].sum()))",
                   "I will read the file."),
        code_reply('final_answer(f"The shared file lists {int(df[\'days\'].sum())} days.")'),
    )
    html = '<div><at id="0">HR Bot</at> hr: total the leave in this file</div><attachment id="a1"></attachment>'
    body = channel_mention(connector.service_url, f"<at>{BOT_NAME}</at> hr: total the leave in this file",
                           attachments=[{"contentType": "text/html", "content": html}])
    graph.add_channel_message(TEAM_GROUP, CHANNEL_ID, body["id"], {"leave.csv": b"team,days\nops,5\nsales,12\n"},
                              root_id="1700000000000")
    async with running_bot(tmp_path, model_server, monkeypatch, config_path=company(tmp_path),
                           **graph_settings(graph)) as bot:
        await bot.post(body)
        await connector.wait_for(final_message(connector, body["conversation"]["id"], "lists 17 days"),
                                 what="answer from the shared file")
        await bot.drain()
    paths = [p for _, p, _ in graph.requests]
    assert f"teams/{TEAM_GROUP}/channels/{CHANNEL_ID}/messages/1700000000000/replies/{body['id']}" in paths
    assert any(p.startswith("shares/u!") and p.endswith("/driveItem/content") for p in paths)
    assert graph.token_requests[0]["client_id"] == CLIENT_ID
    for call in connector.calls:
        assert CLIENT_SECRET not in json.dumps(call.body or {}) and graph.token not in json.dumps(call.body or {})


async def test_an_output_file_in_a_channel_is_uploaded_to_its_files_folder_and_linked(
        tmp_path, model_server, monkeypatch, connector, graph):
    model_server.model.script(
        "export the leave table",
        code_reply("import pandas as pd\npd.DataFrame({'team': ['ops'], 'days': [5]}).to_csv(OUTPUT_DIR + '/leave.csv', "
                   "index=False)\nprint('ok')",
                   "I will write the table."),
        code_reply('final_answer("Here is the table.")'),
    )
    async with running_bot(tmp_path, model_server, monkeypatch, config_path=company(tmp_path),
                           **graph_settings(graph)) as bot:
        body = channel_mention(connector.service_url, f"<at>{BOT_NAME}</at> hr: export the leave table")
        await bot.post(body)
        [answer] = await connector.wait_for(final_message(connector, body["conversation"]["id"], "Here is the table"),
                                            what="answer")
        chat = group_message(connector.service_url, f"<at>{BOT_NAME}</at> hr: export the leave table")
        await bot.post(chat)
        [in_chat] = await connector.wait_for(final_message(connector, chat["conversation"]["id"],
                                                           "Here is the table"), what="answer in the group chat")
        await bot.drain()
    channel_upload, chat_upload = graph.uploads
    assert channel_upload.where == f"channel:drive-{TEAM_GROUP}/folder-{CHANNEL_ID}"
    assert channel_upload.name == "leave.csv" and channel_upload.data == b"team,days\nops,5\n"
    assert f"[leave.csv]({channel_upload.web_url})" in answer.text
    assert chat_upload.where == f"user:{ALICE['aadObjectId']}"
    assert chat_upload.links == [{"type": "view", "scope": "organization"}]
    assert f"https://contoso-my.sharepoint.com/:x:/g/{chat_upload.item_id}" in in_chat.text


async def test_teams_groups_admit_a_transitive_member_and_refuse_others(tmp_path, model_server, monkeypatch,
                                                                        connector, graph):
    model_server.model.script("what is the budget", code_reply('final_answer("The budget is 10k.")'))
    graph.groups[ALICE["aadObjectId"]] = [NESTED_GROUP, HR_GROUP]  # two pages: the rule's group is on the second
    bob = {"id": "29:1bobXYZ", "name": "Bob", "aadObjectId": "6a1e0b55-0000-4000-8000-000000000b0b"}
    graph.groups[bob["aadObjectId"]] = [NESTED_GROUP]
    async with running_bot(tmp_path, model_server, monkeypatch, config_path=company(tmp_path),
                           **graph_settings(graph)) as bot:
        alice_asks = group_message(connector.service_url, f"<at>{BOT_NAME}</at> finance: what is the budget")
        bob_asks = group_message(connector.service_url, f"<at>{BOT_NAME}</at> finance: what is the budget")
        bob_asks["from"] = bob
        await bot.post(alice_asks)
        await connector.wait_for(final_message(connector, alice_asks["conversation"]["id"], "budget is 10k"),
                                 what="member answered")
        await bot.post(bob_asks)
        await connector.wait_for(final_message(connector, bob_asks["conversation"]["id"], "isn't available to you"),
                                 what="non-member refused")
        again = group_message(connector.service_url, f"<at>{BOT_NAME}</at> finance: what is the budget")
        await bot.post(again)
        await connector.wait_for(lambda: len(final_message(connector, again["conversation"]["id"],
                                                           "budget is 10k")()) == 2, what="second answer")
        await bot.drain()
    lookups = [p for _, p, _ in graph.requests if "transitiveMemberOf" in p and ALICE["aadObjectId"] in p]
    assert len(lookups) == 2, "two pages once; the second request is answered from the cache"
