"""Approvals on Slack end to end: signed events and block_actions over real HTTP into the bot's app, the
real Docker sandbox running the scripted agent's code, every Web API call observed at the Slack stand-in."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sys
import textwrap
import time
from urllib.parse import urlencode

import aiohttp
import pytest

from agents.departments import BUNDLED_COMPANY_DIR
from agents.telemetry import flush_tracing, setup_tracing, shutdown_tracing
from tests.sandbox_support import require_docker_sandbox
from tests.support import next_week
from tests.standins.otlp_receiver import OtlpReceiver
from tests.standins.model_server import code_reply
from tests.standins.slack_api import (
    SECRET,
    TOKEN,
    EventSender,
    TEAM_ID,
    SlackAPI,
    block_actions,
    block_text,
    buttons,
    mention,
    running_bot,
    sign,
)

pytestmark = pytest.mark.docker

COMPANY = textwrap.dedent(
    """
    [departments.hr]
    description = "People team: leave"
    tools = ["agents.tools.hr:leave_balance", "agents.tools.hr:book_leave"]
    authorized_imports = ["json"]
    max_steps = 3
    step_timeout_s = 10
    data_dir = "hr"

    [departments.hr.tool_policy."agents.tools.hr:book_leave"]
    approval = "requester"
    approval_timeout_s = 60
    """
)


THURSDAY, FRIDAY = next_week(3), next_week(4)
CODE = (f"try:\n    r = book_leave(start='{THURSDAY}', end='{FRIDAY}', kind='annual')\n"
        "    out = 'Booked ' + r['booking_id'] + '; ' + str(r['balance']['remaining_days']) + ' days left'\n"
        "except Exception as e:\n    out = 'Not booked: ' + str(e)\nfinal_answer(out)")
# An argument a model might fill from the message: it must not ping anyone or hide a link in the approval.
HOSTILE_KIND = "annual <!channel> <https://evil.example|click> @here"


@pytest.fixture
def company(tmp_path):
    shutil.copytree(BUNDLED_COMPANY_DIR / "hr", tmp_path / "hr")
    path = tmp_path / "approvals.toml"
    path.write_text(COMPANY)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bookings(tmp_path) -> list[str]:
    path = tmp_path / "hr" / "leave_bookings.csv"
    return path.read_text().splitlines()[1:] if path.exists() else []


async def _approval_message(slack: SlackAPI):
    return await slack.wait_for(lambda: next((m for m in slack.messages if buttons(m)), None), 60,
                                "an approval message with buttons")


async def test_only_the_requester_approves_once_and_the_message_shows_who(tmp_path, model_server, company):
    async with SlackAPI(TOKEN) as slack:
        async with running_bot(tmp_path, model_server, slack, sandbox="docker", config_path=company,
                               sandbox_pool_size=1) as bot:
            require_docker_sandbox(bot.settings)
            model_server.model.script("book me thursday", code_reply(CODE))
            status, _ = await bot.events.event(mention("hr: book me thursday and friday", user="U_ALICE"))
            assert status == 200
            prompt = await _approval_message(slack)
            shown = block_text(prompt)
            assert "book_leave" in shown and str(THURSDAY) in shown and "the person who asked" in shown
            assert set(buttons(prompt)) == {"agentdesk_approval:approve", "agentdesk_approval:deny"}

            # A forged press (wrong signing secret) is refused before anything reads it.
            forged = block_actions(prompt, "agentdesk_approval:approve", user="U_ALICE")
            status, _ = await bot.events.interaction(forged, secret="not-the-signing-secret")
            assert status == 401

            # Someone else presses Approve: told privately, nothing runs.
            status, _ = await bot.events.interaction(block_actions(prompt, "agentdesk_approval:approve", user="U_MALLORY"))
            assert status == 200
            refusal = await slack.wait_for(lambda: slack.ephemeral, 10, "an ephemeral refusal")
            assert refusal[0]["user"] == "U_MALLORY" and "can't approve" in refusal[0]["text"]
            await asyncio.sleep(0.6)  # beyond the waiter's poll: the refused press released nothing
            assert _bookings(tmp_path) == [] and buttons(prompt), "a refused press changed the approval"

            # The requester double-clicks; then the same signed request is replayed.
            press = block_actions(prompt, "agentdesk_approval:approve", user="U_ALICE", name="alice")
            body = urlencode({"payload": json.dumps(press)})
            headers = {**sign(bot.events.secret, body), "Content-Type": "application/x-www-form-urlencoded"}
            results = await asyncio.gather(bot.events.post_raw(body, headers), bot.events.post_raw(body, headers))
            assert [r[0] for r in results] == [200, 200]
            answer = await slack.wait_for(
                lambda: next((m for m in slack.messages if m.text.startswith("Booked")), None), 60, "the answer")
            assert (await bot.events.post_raw(body, headers))[0] == 200
            await bot.drain()
            assert len(_bookings(tmp_path)) == 1, "the tool ran more than once"
            assert answer.text.endswith("13 days left")
            assert not buttons(prompt) and "Approved by alice" in block_text(prompt)
            assert any("already approved" in e["text"] for e in slack.ephemeral if e["user"] == "U_ALICE")
            assert "<!channel>" not in json.dumps(prompt.raw.get("blocks"))


async def test_an_approvers_group_member_approves_and_the_requester_cannot(tmp_path, model_server, company):
    """`approvers = ["S..."]`: membership is asked of Slack (usergroups.users.list, the clicker's team) at the
    press, not from a cache, so the requester outside the group is refused and a member's press books."""
    company.write_text(COMPANY.replace('approval = "requester"', 'approval = "approvers"\napprovers = ["S0LEADS"]'))
    async with SlackAPI(TOKEN) as slack:
        slack.usergroups["S0LEADS"] = ["U_CAROL"]
        async with running_bot(tmp_path, model_server, slack, sandbox="docker", config_path=company,
                               sandbox_pool_size=1) as bot:
            require_docker_sandbox(bot.settings)
            model_server.model.script("book for the leads", code_reply(CODE))
            await bot.events.event(mention("hr: book for the leads to approve", user="U_ALICE"))
            prompt = await _approval_message(slack)
            await bot.events.interaction(block_actions(prompt, "agentdesk_approval:approve", user="U_ALICE"))
            refusal = await slack.wait_for(lambda: slack.ephemeral, 10, "an ephemeral refusal")
            assert refusal[0]["user"] == "U_ALICE" and "can't approve" in refusal[0]["text"]
            assert _bookings(tmp_path) == [] and buttons(prompt)

            await bot.events.interaction(block_actions(prompt, "agentdesk_approval:approve", user="U_CAROL",
                                                       name="carol"))
            answer = await slack.wait_for(
                lambda: next((m for m in slack.messages if m.text.startswith(("Booked", "Not booked"))), None), 60,
                "the answer")
            await bot.drain()
            assert answer.text.startswith("Booked") and len(_bookings(tmp_path)) == 1
            assert "Approved by carol" in block_text(prompt)
            lookups = slack.calls_to("usergroups.users.list")
            assert len(lookups) == 2, "each press asks Slack afresh"
            assert all(c.params.get("usergroup") == "S0LEADS" and c.params.get("team_id") == TEAM_ID for c in lookups)


@pytest.fixture
def receiver():
    with OtlpReceiver() as rx:
        yield rx
    shutdown_tracing()


async def test_deny_keeps_the_record_and_the_answer_says_why(tmp_path, model_server, company, receiver):
    async with SlackAPI(TOKEN) as slack:
        async with running_bot(tmp_path, model_server, slack, sandbox="docker", config_path=company,
                               sandbox_pool_size=1, otlp_endpoint=receiver.url) as bot:
            require_docker_sandbox(bot.settings)
            setup_tracing(bot.settings)
            model_server.model.script("book a day", code_reply(CODE.replace("kind='annual'", f"kind={HOSTILE_KIND!r}")))
            await bot.events.event(mention("hr: book a day off", user="U_ALICE"))
            prompt = await _approval_message(slack)
            raw = json.dumps(prompt.raw.get("blocks"))
            assert "<!channel>" not in raw and "<https://" not in raw and "&lt;!channel&gt;" in raw
            await bot.events.interaction(block_actions(prompt, "agentdesk_approval:deny", user="U_ALICE", name="alice"))
            answer = await slack.wait_for(
                lambda: next((m for m in slack.messages if m.text.startswith("Not booked")), None), 60, "the answer")
            assert "declined" in answer.text
            await bot.drain()
            assert _bookings(tmp_path) == []
            assert "Denied by alice" in block_text(prompt) and not buttons(prompt)

    # The wait and the decision are in the request's trace, without the people's ids.
    assert flush_tracing(10)
    spans = receiver.wait_for(lambda found: any(s.name == "agentdesk.approval.decision" for s in found)
                              and any(s.name == "slack.event" for s in found))
    waited = next(s for s in spans if s.name == "agentdesk.approval")
    decided = next(s for s in spans if s.name == "agentdesk.approval.decision")
    root = next(s for s in spans if s.name == "slack.event")
    assert waited.trace_id == decided.trace_id == root.trace_id
    assert waited.attributes["agentdesk.approval.outcome"] == "denied"
    assert decided.attributes["agentdesk.approval.decision"] == "denied"
    assert decided.parent_id == waited.span_id
    assert not [t for s in spans for t in s.strings() if "U_ALICE" in t]


async def test_a_restart_while_waiting_expires_the_approval_and_says_so(tmp_path, model_server, company):
    """The bot process is killed (SIGKILL) while a call waits for approval; after the restart the person is
    told the request was interrupted, and a press on the old buttons says it expired and runs nothing."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLACK_", "TEAMS_", "MODEL_", "OTEL_", "AGENTDESK_", "SANDBOX"))}
    async with SlackAPI(TOKEN) as slack:
        env.update(SLACK_BOT_TOKEN=TOKEN, SLACK_SIGNING_SECRET=SECRET, SLACK_API_URL=slack.api_url,
                   MODEL_API_BASE=model_server.base_url, MODEL_ID="scripted", MODEL_API_KEY="sk-test-restart-0123",
                   AGENTDESK_DATA_DIR=str(tmp_path / "data"), AGENTDESK_CONFIG=str(company), SANDBOX="docker",
                   SANDBOX_POOL_SIZE="1", HOST="127.0.0.1", PORT=str(port), HF_TOKEN="")
        model_server.model.script("book before the restart", code_reply(CODE))
        first = await asyncio.create_subprocess_exec(sys.executable, "-m", "bots", "serve", cwd=tmp_path, env=env,
                                                     stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        try:
            url = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as http:
                async def up():
                    try:
                        async with http.get(f"{url}/healthz") as resp:
                            return resp.status == 200
                    except aiohttp.ClientError:
                        return False

                deadline = time.monotonic() + 120
                while not await up():
                    assert first.returncode is None, (await first.stderr.read()).decode()[-2000:]
                    assert time.monotonic() < deadline, "the first bot process never came up"
                    await asyncio.sleep(0.2)
            async with EventSender(f"{url}/slack/events", SECRET) as events:
                await events.event(mention("hr: book before the restart", user="U_ALICE"))
            prompt = await _approval_message(slack)
        finally:
            if first.returncode is None:
                first.send_signal(signal.SIGKILL)
            await first.wait()

        async with running_bot(tmp_path, model_server, slack, sandbox="docker", config_path=company,
                               sandbox_pool_size=1) as bot:
            await slack.wait_for(lambda: [m for m in slack.thread(prompt.channel, prompt.thread_ts)
                                          if "restarted while working on your request" in m.text], 60,
                                 "the interrupted notice")
            await bot.events.interaction(block_actions(prompt, "agentdesk_approval:approve", user="U_ALICE"))
            told = await slack.wait_for(lambda: [e for e in slack.ephemeral if e["user"] == "U_ALICE"], 20,
                                        "the ephemeral answer")
            assert "expired" in told[0]["text"]
            await slack.wait_for(lambda: "Expired" in block_text(prompt), 20, "the redrawn approval")
            await bot.drain()
            assert not buttons(prompt) and _bookings(tmp_path) == []
