"""Approvals in the `agentdesk dev` emulator, in a real headless Chromium: the person presses Approve on the
Slack Block Kit message and on the Teams Adaptive Card, and sees the booking and the decision."""
from __future__ import annotations

import datetime as dt

import pytest

from tests.standins.model_server import code_reply
from tests.support import make_settings, next_week
from tests.test_emulator_browser import (  # noqa: F401 - fixtures
    ANSWER_TIMEOUT_MS,
    _answer,
    _docker_image_ready,
    _open,
    _open_thread_of,
    _say,
    browser,
    start_dev,
)

pytestmark = pytest.mark.browser


def _book_code() -> str:
    thursday = next_week(3)
    return (f"r = book_leave(start='{thursday}', end='{thursday + dt.timedelta(days=1)}', kind='annual')\n"
            "left = leave_balance()['remaining_days']\n"
            "final_answer(f\"Booked {r['working_days']} days ({r['booking_id']}). You have {left} days left.\")")


async def test_slack_approve_button_books_the_leave(browser, start_dev, model_server, tmp_path):
    from playwright.async_api import expect

    model_server.model.script("book me 2 days off next Thursday and Friday", code_reply(_book_code()))
    sandbox = "docker" if _docker_image_ready(make_settings(tmp_path, None)) else "local"
    page = await _open(browser, await start_dev(sandbox))
    await page.get_by_role("tab", name="Slack").click()
    await page.get_by_role("button", name="# general").click()
    await _say(page, "#composer", "@agentdesk hr: book me 2 days off next Thursday and Friday")
    thread = await _open_thread_of(page, "book me 2 days off")

    approval = thread.locator(".message.author-bot", has_text="Approval needed")
    await expect(approval).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    await expect(approval).to_contain_text("book_leave")
    await approval.get_by_role("button", name="Approve").click()
    await expect(approval).to_contain_text("Approved by alex", timeout=ANSWER_TIMEOUT_MS)  # Slack sends the username
    await expect(approval.get_by_role("button", name="Approve")).to_have_count(0)
    await expect(_answer(thread, "Booked 2 days")).to_contain_text("You have 16 days left.", timeout=ANSWER_TIMEOUT_MS)


async def test_teams_card_approve_books_the_leave(browser, start_dev, model_server, tmp_path):
    from playwright.async_api import expect

    model_server.model.script("book me 2 days off next Thursday and Friday", code_reply(_book_code()))
    sandbox = "docker" if _docker_image_ready(make_settings(tmp_path, None)) else "local"
    page = await _open(browser, await start_dev(sandbox))
    await page.get_by_role("tab", name="Teams").click()
    await page.get_by_role("button", name="agentdesk", exact=True).click()
    await _say(page, "#composer", "hr: book me 2 days off next Thursday and Friday")

    card = page.locator(".action-card", has_text="Approval needed")
    await expect(card).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    await card.get_by_role("button", name="Approve").click()
    await expect(page.locator(".card", has_text="Approved by Alex Rivera")).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    await expect(_answer(page.locator("#messages"), "Booked 2 days")).to_contain_text(
        "You have 16 days left.", timeout=ANSWER_TIMEOUT_MS)
