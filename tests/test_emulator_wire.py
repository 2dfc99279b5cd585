"""The emulator's side of the wire: it must speak Slack's and Teams' formats and keep their rules.

These run without a browser: a dev app on a free port, real HTTP from an aiohttp client.
"""
from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import pytest
from aiohttp import web

from bots.emulator import store as s
from bots.emulator.app import EMULATOR, create_dev_app
from bots.emulator.dev import emulator_settings
from bots.emulator.slack import sign
from bots.server import TASKS
from tests.standins.model_server import code_reply
from tests.support import make_settings

PAGE = {"X-Agentdesk-Emulator": "1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
async def dev(tmp_path, model_server):
    port = _free_port()
    settings = emulator_settings(make_settings(tmp_path, model_server.base_url, sandbox="local", port=port))
    app = create_dev_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as client:
        yield app, settings, client
        await app[TASKS].drain(timeout=30)
    await runner.cleanup()


async def _wait_for(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met before the deadline")


def test_dev_settings_never_use_real_platform_credentials(tmp_path):
    real = make_settings(tmp_path, None, slack_bot_token="xoxb-real", slack_signing_secret="a" * 32,
                         slack_app_token="xapp-real", teams_app_id="0b1e7c7a-2f5d-4c43-9a0e-7d0c3b1a5e11",
                         teams_app_password="pw", port=4000)
    dev = emulator_settings(real)
    assert dev.slack_bot_token.startswith("xoxb-emulator-") and dev.slack_signing_secret != "a" * 32
    assert dev.slack_app_token is None and dev.teams_app_id is None and dev.teams_app_password is None
    assert dev.teams_allow_unauthenticated and dev.slack_api_url == "http://127.0.0.1:4000/_emulator/slack/api/"
    assert emulator_settings(real).slack_signing_secret != dev.slack_signing_secret


async def test_slack_mention_reaches_the_bot_signed_and_it_answers_in_the_thread(dev, model_server):
    app, settings, client = dev
    model_server.model.script("wire check 3", code_reply('final_answer("wire answer 3")'))
    response = await client.post("/_emulator/send", headers=PAGE,
                                 data={"flavour": "slack", "conversation": "general",
                                       "text": "@agentdesk hr: wire check 3 <b>&"})
    assert response.status == 200
    store = app[EMULATOR].store
    answer = await _wait_for(lambda: next((m for m in store.messages.values()
                                           if m["author"] == "bot" and "wire answer 3" in m["text"]), None))
    question = next(m for m in store.messages.values() if m["author"] == "user")
    assert question["text"] == f"<@{s.SLACK_BOT_USER}> hr: wire check 3 &lt;b&gt;&amp;"
    assert answer["thread"] == question["id"]
    assert not [m for m in store.messages.values() if m["author"] == "emulator"]


async def test_bad_signature_is_refused_and_shown_on_the_page(dev):
    app, settings, client = dev
    emulator = app[EMULATOR]
    emulator.slack.signing_secret = "0" * 32
    await emulator.slack.deliver({"type": "message", "channel": "C0GENERAL", "user": s.SLACK_HUMAN,
                                  "text": "hi", "ts": emulator.store.slack_ts()}, "general", None)
    notice = next(m for m in emulator.store.messages.values() if m["author"] == "emulator")
    assert "HTTP 401" in notice["text"]


def test_signature_matches_slacks_published_example():
    # https://api.slack.com/authentication/verifying-requests-from-slack
    body = ("token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
            "&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
            "&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
            "&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
    assert sign("8f742231b10e8888abcd99yyyzzz85a5", "1531420618", body) == \
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


async def test_slack_web_api_keeps_slacks_rules(dev):
    app, settings, client = dev
    api = "/_emulator/slack/api/"
    bearer = {"Authorization": f"Bearer {settings.slack_bot_token}"}
    assert (await (await client.post(api + "auth.test")).json())["error"] == "not_authed"
    assert (await (await client.post(api + "auth.test", headers={"Authorization": "Bearer xoxb-wrong"})).json())[
        "error"] == "invalid_auth"
    assert (await (await client.post(api + "nope.method", headers=bearer)).json())["error"] == "unknown_method"
    posted = await (await client.post(api + "chat.postMessage", headers=bearer,
                                      json={"channel": "C0GENERAL", "text": "root"})).json()
    stream = await (await client.post(api + "chat.startStream", headers=bearer,
                                      json={"channel": "C0GENERAL", "thread_ts": posted["ts"]})).json()
    assert stream == {"ok": False, "error": "missing_recipient_team_id"}
    info = await (await client.get(api + "conversations.info", headers=bearer, params={"channel": "C0HRHELP"})).json()
    assert info["channel"]["name"] == "hr-help"
    stored = app[EMULATOR].store.new_file("data.csv", "text/csv")
    stored.path.write_bytes(b"a,b\n1,2\n")
    stored.size = 8
    url = f"/_emulator/slack/files/{stored.id}/data.csv"
    login = await client.get(url)
    assert login.headers["Content-Type"].startswith("text/html"), "like Slack: no token, a login page"
    assert await (await client.get(url, headers=bearer)).read() == b"a,b\n1,2\n"


async def test_teams_connector_keeps_teams_rules(dev):
    app, settings, client = dev
    store = app[EMULATOR].store
    root = store.add(flavour="teams", conversation="general", author="user", text="root",
                     platform_id=store.teams_id())
    channel = f"/_emulator/teams/v3/conversations/19%3Ageneral%40thread.tacv2%3Bmessageid%3D{root['platform_id']}"
    typing = {"type": "typing", "text": "working", "entities": [
        {"type": "streaminfo", "streamType": "informative", "streamSequence": 1}]}
    refused = await client.post(channel + "/activities", json=typing)
    assert refused.status == 403 and (await refused.json())["error"]["code"] == "ContentStreamNotAllowed"

    personal = "/_emulator/teams/v3/conversations/" + s.TEAMS_CHANNEL_IDS[s.DM].replace(":", "%3A")
    started = await client.post(personal + "/activities", json=typing)
    assert started.status == 201
    stream_id = (await started.json())["id"]
    again = dict(typing, entities=[{"type": "streaminfo", "streamType": "informative", "streamSequence": 1,
                                    "streamId": stream_id}])
    assert (await client.post(personal + "/activities", json=again)).status == 400
    final = {"type": "message", "text": "done", "entities": [
        {"type": "streaminfo", "streamType": "final", "streamId": stream_id}]}
    too_soon = await client.post(personal + "/activities", json=final)
    assert too_soon.status == 403, "one streaming request per second per stream, the final included"
    assert (await too_soon.json())["error"]["code"] == "ContentStreamNotAllowed"
    await asyncio.sleep(1.0)
    assert (await client.post(personal + "/activities", json=final)).status == 201
    assert store.find("teams", s.DM, stream_id)["text"] == "done"
    assert (await client.post(personal + "/activities", json=again)).status == 403


async def test_api_messages_accepts_only_activities_for_the_emulators_connector(dev):
    app, settings, client = dev
    foreign = {"type": "message", "id": "1", "text": "hi", "channelId": "msteams",
               "serviceUrl": "http://169.254.169.254/", "from": {"id": "29:x"}, "recipient": {"id": "28:y"},
               "conversation": {"id": "a:1", "conversationType": "personal"}}
    response = await client.post("/api/messages", json=foreign)
    assert response.status == 401


async def test_page_posts_need_the_page_header_and_files_download_safely(dev):
    app, settings, client = dev
    forged = await client.post("/_emulator/send", data={"flavour": "slack", "conversation": "general", "text": "x"})
    assert forged.status == 403
    stored = app[EMULATOR].store.new_file("page.html", "text/html")
    stored.path.write_bytes(b"<script>alert(1)</script>")
    download = await client.get(f"/_emulator/files/{stored.id}/page.html")
    assert download.headers["Content-Type"] == "application/octet-stream"
    assert download.headers["Content-Disposition"].startswith("attachment")
    page = await client.get("/")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    config = await (await client.get("/_emulator/config")).json()
    assert [c["key"] for c in config["channels"]] == ["general", "hr-help", "sales", "marketing"]


async def test_page_explains_how_to_set_a_model_when_none_is_configured(tmp_path):
    settings = emulator_settings(make_settings(tmp_path, None, sandbox="local", hf_token=None))
    app = create_dev_app(settings)
    banners = app[EMULATOR].banners
    assert any("MODEL_API_BASE=http://localhost:11434/v1 MODEL_ID=qwen2.5-coder:7b" in c
               for b in banners for c in b.commands)
    assert any("HF_TOKEN" in c for b in banners for c in b.commands)
    assert any("without isolation" in b.title for b in banners)
