"""The `agentdesk dev` emulator in a real headless Chromium: what a person sees on the page.

The dev app (the production app plus the emulator) runs in-process with the scripted model server; the
page drives the bot only through /slack/events and /api/messages, so these tests also exercise the Slack
and Teams adapters over their real wire formats. Skipped when Debian's chromium or Playwright is missing,
except under CI=true, where that is a failure.
"""
from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest
from aiohttp import web

from bots.emulator.app import create_dev_app
from bots.emulator.dev import emulator_settings
from bots.server import TASKS
from tests.standins.model_server import code_reply
from tests.support import make_settings

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ANSWER_TIMEOUT_MS = 60_000
CSV = b"month,signups\n2026-01,120\n2026-02,180\n2026-03,240\n2026-04,210\n"
CHART_CODE = """
import pandas as pd
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
df = pd.read_csv(INPUT_FILES[0])
df.plot(x="month", y="signups", kind="bar", legend=False)
plt.savefig(f"{OUTPUT_DIR}/signups-chart.png", dpi=60, bbox_inches="tight")
plt.close()
print(f"plotted {len(df)} months")
"""


def _browser_or_skip():
    reason = None
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        reason = "the playwright package is not installed (pip install -e '.[test]')"
    if reason is None and not os.path.exists(CHROMIUM):
        reason = f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests must run in CI: {reason}")
        pytest.skip(reason)
    return async_playwright


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _docker_image_ready(settings) -> bool:
    from agents.sandbox.image import image_exists

    return image_exists(settings)


@pytest.fixture
async def browser():
    async_playwright = _browser_or_skip()
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        await chromium.close()


@pytest.fixture
async def start_dev(tmp_path: Path, model_server):
    """Start the dev app on a free port; returns its URL. `sandbox` is local unless a test asks for docker."""
    runners: list[web.AppRunner] = []

    async def start(sandbox: str = "local") -> str:
        port = _free_port()
        base = make_settings(tmp_path, model_server.base_url, sandbox=sandbox, host="127.0.0.1", port=port,
                             task_timeout_s=120.0)
        app = create_dev_app(emulator_settings(base))
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return f"http://127.0.0.1:{port}/"

    yield start
    for runner in runners:
        # Let replies in flight finish while the emulator (the bots' Slack API and connector) still listens.
        await runner.app[TASKS].drain(timeout=30)
        await runner.cleanup()


async def _open(browser, url: str):
    page = await browser.new_page()
    await page.goto(url)
    from playwright.async_api import expect

    await expect(page.locator("#connection")).to_have_text("connected to agentdesk")
    return page


async def _say(page, composer: str, text: str, files: list[tuple[str, bytes]] = ()) -> None:
    form = page.locator(composer)
    if files:
        await form.locator("input[type=file]").set_input_files(
            [{"name": name, "mimeType": "text/csv", "buffer": data} for name, data in files])
    await form.locator("textarea").fill(text)
    await form.locator("textarea").press("Enter")


async def _open_thread_of(page, text: str):
    """Click the thread link under the person's message, as a person would."""
    message = page.locator("#messages .message.author-user", has_text=text)
    await message.locator("button.replies").click()
    thread = page.locator("#thread")
    from playwright.async_api import expect

    await expect(thread).to_be_visible()
    return thread


def _answer(container, text: str):
    """A bot message whose text begins with `text` (step updates only quote it inside code or a quote)."""
    return container.locator(".message.author-bot .body").filter(has_text=re.compile("^" + re.escape(text)))


async def test_slack_channel_mention_shows_task_cards_answer_and_feedback_in_thread(browser, start_dev, model_server):
    from playwright.async_api import expect

    model_server.model.script("leave check 17", code_reply('print("annual leave: 25 days")', "Looking up your leave."),
                              code_reply('final_answer("You have 25 days of annual leave left.")'), delay_s=2.0)
    page = await _open(browser, await start_dev())
    await page.get_by_role("tab", name="Slack").click()
    await page.get_by_role("button", name="# general").click()
    await expect(page.locator("#conversation-title")).to_have_text("# general")
    await expect(page.locator(".banner.warning")).to_contain_text("without isolation")

    await _say(page, "#composer", "@agentdesk hr: leave check 17")
    sent = page.locator("#messages .message.author-user", has_text="hr: leave check 17")
    await expect(sent.locator(".mention")).to_have_text("@agentdesk")
    thread = await _open_thread_of(page, "leave check 17")

    streamed = thread.locator(".message.author-bot.streaming")
    await expect(streamed.locator(".task.task-in_progress").first).to_contain_text(re.compile("step 1", re.I),
                                                                              timeout=ANSWER_TIMEOUT_MS)
    await expect(streamed.get_by_role("button", name="⏹ Stop")).to_be_visible()  # Slack's own stop control
    done = thread.locator(".message.author-bot .task.task-complete", has_text="Looking up your leave")
    await expect(done).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    await expect(done.locator(".task-output")).to_contain_text("annual leave: 25 days")
    answer = _answer(thread, "You have 25 days of annual leave left.")
    await expect(answer).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    message = thread.locator(".message.author-bot").filter(has=page.locator(".body", has_text="You have 25 days"))
    await expect(message.locator(".task")).to_have_count(2)  # one card per step, in the answer's message
    good = message.get_by_role("button", name="Good answer")
    await expect(good).to_be_visible()
    await expect(message.get_by_role("button", name="Bad answer")).to_be_visible()
    await good.click()
    await expect(good).to_have_attribute("aria-pressed", "true")
    await expect(page.locator("#messages .message.author-user", has_text="leave check 17")
                 .locator("button.replies")).to_have_text(re.compile(r"\d+ repl"))


async def test_slack_csv_upload_in_marketing_gets_a_chart_back(browser, start_dev, model_server, tmp_path):
    from playwright.async_api import expect

    probe = make_settings(tmp_path, None)
    sandbox = "docker" if _docker_image_ready(probe) else "local"
    model_server.model.script("chart check 41", code_reply(CHART_CODE),
                              code_reply('final_answer("Here is the signups chart: signups-chart.png")'))
    page = await _open(browser, await start_dev(sandbox))
    await page.get_by_role("button", name="# marketing").click()
    await _say(page, "#composer", "@agentdesk chart check 41 please", [("signups.csv", CSV)])
    sent = page.locator("#messages .message.author-user", has_text="chart check 41")
    await expect(sent.locator(".file-chip")).to_contain_text("signups.csv")
    thread = await _open_thread_of(page, "chart check 41")

    await expect(_answer(thread, "Here is the signups chart")).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    chart = thread.get_by_role("img", name="signups-chart.png")
    await expect(chart).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    await page.wait_for_function("img => img.complete && img.naturalWidth > 50", arg=await chart.element_handle())
    response = await page.request.get(await chart.evaluate("img => img.src"))
    assert response.ok and (await response.body()).startswith(b"\x89PNG")


async def test_teams_channel_mention_answers_in_the_reply_chain(browser, start_dev, model_server):
    from playwright.async_api import expect

    model_server.model.script("teams channel check 5", code_reply('print("checked")'),
                              code_reply('final_answer("Parental leave is 20 weeks.")'), delay_s=2.0)
    page = await _open(browser, await start_dev())
    await page.get_by_role("tab", name="Teams").click()
    await page.get_by_role("button", name="general", exact=True).click()
    await _say(page, "#composer", "@agentdesk hr: teams channel check 5")
    thread = await _open_thread_of(page, "teams channel check 5")

    progress = thread.locator(".message.author-bot", has_text="step 1")
    await expect(progress).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    await expect(_answer(thread, "Parental leave is 20 weeks.")).to_be_visible(timeout=ANSWER_TIMEOUT_MS)


async def test_teams_personal_chat_streams_steps_then_the_answer(browser, start_dev, model_server):
    from playwright.async_api import expect

    model_server.model.script("teams leave check 23", code_reply('print("annual leave: 25 days")'),
                              code_reply('final_answer("You have 25 days of annual leave left.")'), delay_s=2.0)
    page = await _open(browser, await start_dev())
    await page.get_by_role("tab", name="Teams").click()
    await page.get_by_role("button", name="agentdesk", exact=True).click()
    await expect(page.locator("#conversation-title")).to_have_text("agentdesk")

    await _say(page, "#composer", "hr: teams leave check 23")
    streaming = page.locator("#messages .message.author-bot.streaming", has_text="step 1")
    await expect(streaming).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    await expect(_answer(page.locator("#messages"), "You have 25 days of annual leave left.")).to_be_visible(
        timeout=ANSWER_TIMEOUT_MS)
    await expect(page.locator("#messages .message.author-bot.streaming")).to_have_count(0)


async def test_teams_personal_chat_csv_gets_a_chart_after_file_consent(browser, start_dev, model_server, tmp_path):
    from playwright.async_api import expect

    model_server.model.script("chart check 77", code_reply(CHART_CODE),
                              code_reply('final_answer("Here is the signups chart: signups-chart.png")'))
    probe = make_settings(tmp_path, None)
    page = await _open(browser, await start_dev("docker" if _docker_image_ready(probe) else "local"))
    await page.get_by_role("tab", name="Teams").click()
    await page.get_by_role("button", name="agentdesk", exact=True).click()

    await _say(page, "#composer", "marketing: chart check 77", [("signups.csv", CSV)])
    await expect(_answer(page.locator("#messages"), "Here is the signups chart")).to_be_visible(
        timeout=ANSWER_TIMEOUT_MS)
    card = page.locator(".consent-card", has_text="signups-chart.png")
    await expect(card).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    await card.get_by_role("button", name="Accept").click()
    link = page.locator("a.file-info", has_text="signups-chart.png")
    await expect(link).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    response = await page.request.get(await link.evaluate("a => a.href"))
    assert response.ok and (await response.body()).startswith(b"\x89PNG")
