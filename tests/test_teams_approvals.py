"""Approvals on Teams end to end: Bot Framework activities and adaptiveCard/action invokes over real HTTP
into the bot's app, the real Docker sandbox running the scripted agent's code, replies observed at the
connector stand-in."""
from __future__ import annotations

import datetime as dt
import json
import shutil
import textwrap

import pytest

from agents.departments import BUNDLED_COMPANY_DIR
from tests.sandbox_support import require_docker_sandbox, sandbox_settings
from tests.support import next_week
from tests.standins.graph import GraphStandIn
from tests.standins.model_server import code_reply
from tests.standins.teams_connector import ALICE, TeamsConnector, adaptive_cards, card_action_invoke, personal_message
from tests.test_teams import running_bot
from tests.test_teams_ai import TENANT, graph_settings

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
MALLORY = {"id": "29:1malloryXYZ", "name": "Mallory", "aadObjectId": "0bad0bad-0000-4000-8000-000000000bad"}


CODE = (f"try:\n    r = book_leave(start='{next_week(3)}', end='{next_week(3) + dt.timedelta(days=1)}')\n"
        "    out = 'Booked ' + r['booking_id'] + '; ' + str(r['balance']['remaining_days']) + ' days left'\n"
        "except Exception as e:\n    out = 'Not booked: ' + str(e)\nfinal_answer(out)")


@pytest.fixture
def company(tmp_path):
    require_docker_sandbox(sandbox_settings(tmp_path / "probe"))
    shutil.copytree(BUNDLED_COMPANY_DIR / "hr", tmp_path / "hr")
    leave = tmp_path / "hr" / "leave.csv"
    leave.write_text(leave.read_text().replace("29:alice", ALICE["aadObjectId"]))
    path = tmp_path / "approvals.toml"
    path.write_text(COMPANY)
    return path


@pytest.fixture
async def connector():
    async with TeamsConnector() as stand_in:
        yield stand_in


def _card_message(connector: TeamsConnector):
    def find():
        for call in connector.messages():
            for card in adaptive_cards(call):
                if any(a.get("type") == "Action.Execute" for a in card.get("actions") or ()):
                    return call, card
        return None
    return find


def _bookings(tmp_path) -> list[str]:
    path = tmp_path / "hr" / "leave_bookings.csv"
    return path.read_text().splitlines()[1:] if path.exists() else []


async def _ask(bot, connector, model_server, marker: str):
    model_server.model.script(marker, code_reply(CODE))
    body = personal_message(connector.service_url, f"hr: {marker}")
    status, _, _ = await bot.post(body)
    assert status == 201
    call, card = await connector.wait_for(_card_message(connector), 60, "the approval card")
    return body["conversation"], call, card


async def test_teams_card_approve_by_the_requester_only(tmp_path, model_server, monkeypatch, connector, company):
    async with running_bot(tmp_path, model_server, monkeypatch, sandbox="docker", config_path=company,
                           sandbox_pool_size=1) as bot:
        conversation, call, card = await _ask(bot, connector, model_server, "book me thursday and friday")
        text = json.dumps(card)
        assert "book_leave" in text and str(next_week(3)) in text and "Alice Jones" in text
        approve = next(a for a in card["actions"] if a["title"] == "Approve")["data"]
        card_id = call.answer["id"]

        status, reply, _ = await bot.post(card_action_invoke(connector.service_url, conversation, card_id, approve,
                                                             sender=MALLORY))
        assert status == 200 and reply["type"] == "application/vnd.microsoft.activity.message"
        assert "can't approve" in reply["value"]
        assert _bookings(tmp_path) == []

        status, reply, _ = await bot.post(card_action_invoke(connector.service_url, conversation, card_id, approve))
        assert status == 200 and reply["type"] == "application/vnd.microsoft.card.adaptive"
        assert "Approved by Alice Jones" in json.dumps(reply["value"]) and "actions" not in reply["value"]
        await connector.wait_for(lambda: [c for c in connector.messages() if "Booked" in c.text]
                                 or [c for c in connector.sent(method="POST") if "Booked" in c.text], 60, "the answer")
        status, reply, _ = await bot.post(card_action_invoke(connector.service_url, conversation, card_id, approve))
        assert status == 200 and "Approved by Alice Jones" in json.dumps(reply["value"])  # a replay changes nothing
        await bot.drain()
        assert len(_bookings(tmp_path)) == 1
        updates = [c for c in connector.sent(method="PUT") if c.activity_id == card_id]
        assert updates and all("Approved by Alice Jones" in json.dumps(adaptive_cards(c)) for c in updates)


async def test_teams_card_deny(tmp_path, model_server, monkeypatch, connector, company):
    async with running_bot(tmp_path, model_server, monkeypatch, sandbox="docker", config_path=company,
                           sandbox_pool_size=1) as bot:
        conversation, call, card = await _ask(bot, connector, model_server, "book me two days")
        deny = next(a for a in card["actions"] if a["title"] == "Deny")["data"]
        status, reply, _ = await bot.post(card_action_invoke(connector.service_url, conversation, call.answer["id"], deny))
        assert status == 200 and "Denied by Alice Jones" in json.dumps(reply["value"])
        await connector.wait_for(lambda: [c for c in connector.sent(method="POST") if "Not booked" in c.text],
                                 60, "the answer")
        answer = next(c for c in connector.sent(method="POST") if "Not booked" in c.text)
        assert "declined" in answer.text
        await bot.drain()
        assert _bookings(tmp_path) == []


LEADS = "9e1ead50-0000-4000-8000-000000001ead"


async def test_teams_an_approvers_group_member_approves_through_graph(tmp_path, model_server, monkeypatch,
                                                                     connector, company):
    """`approvers = ["<AAD group id>"]`: the presser's groups come from Graph (transitiveMemberOf) at the press,
    not from a cache; the requester outside the group is refused, a member's press books."""
    company.write_text(COMPANY.replace('approval = "requester"', f'approval = "approvers"\napprovers = ["{LEADS}"]'))
    async with GraphStandIn(TENANT) as graph:
        graph.groups[MALLORY["aadObjectId"]] = [LEADS]
        async with running_bot(tmp_path, model_server, monkeypatch, sandbox="docker", config_path=company,
                               sandbox_pool_size=1, **graph_settings(graph)) as bot:
            conversation, call, card = await _ask(bot, connector, model_server, "book for the leads")
            approve = next(a for a in card["actions"] if a["title"] == "Approve")["data"]
            status, reply, _ = await bot.post(card_action_invoke(connector.service_url, conversation,
                                                                 call.answer["id"], approve))
            assert status == 200 and "can't approve" in reply["value"] and _bookings(tmp_path) == []

            status, reply, _ = await bot.post(card_action_invoke(connector.service_url, conversation,
                                                                 call.answer["id"], approve, sender=MALLORY))
            assert status == 200 and "Approved by Mallory" in json.dumps(reply["value"])
            await connector.wait_for(lambda: [c for c in connector.sent(method="POST") if "Booked" in c.text], 60,
                                     "the answer")
            await bot.drain()
            assert len(_bookings(tmp_path)) == 1
        lookups = [p for _, p, _ in graph.requests if "transitiveMemberOf" in p]
        assert any(MALLORY["aadObjectId"] in p for p in lookups) and any(ALICE["aadObjectId"] in p for p in lookups)
