"""A request cut off by a crash is reported in its own thread after the restart, exactly once."""
from __future__ import annotations

import pytest

from agents.state.sqlite import SqliteStore
from tests.standins.slack_api import TOKEN, SlackAPI, running_bot
from tests.support import chat_request


@pytest.fixture
async def slack():
    async with SlackAPI(TOKEN) as api:
        yield api


async def test_slack_request_interrupted_by_a_crash_is_reported_after_restart(tmp_path, model_server, slack):
    # What a killed process leaves behind: a task record still marked running.
    store = SqliteStore(tmp_path / "data")
    await store.task_started("task-1", chat_request("hr: summarise the parental leave policy", channel="C0GENERAL",
                                                    thread="1700000000.000200"))
    await store.close()

    async with running_bot(tmp_path, model_server, slack) as bot:
        notices = await slack.wait_for(
            lambda: [m for m in slack.thread("C0GENERAL", "1700000000.000200") if "restarted" in m.text],
            what="interruption notice")
        await bot.drain()
    assert len(notices) == 1
    assert "summarise the parental leave policy" in notices[0].text
    assert "send it again" in notices[0].text

    async with running_bot(tmp_path, model_server, slack) as bot:
        await bot.drain()
    assert len([m for m in slack.thread("C0GENERAL", "1700000000.000200") if "restarted" in m.text]) == 1
