"""Microsoft's own Teams client emulator, the Microsoft 365 Agents Playground (npm
`@microsoft/m365agentsplayground`, pinned in tests/playground/package.json, installed by scripts/test.sh),
driven in Debian's chromium against the real bot: what a Teams user sees.

The Playground serves its UI and a mock connector on loopback and needs no network (its only outside
requests are Segoe UI web fonts, which fail and fall back). It sends no JWT without --client-id, so the bot
runs with TEAMS_ALLOW_UNAUTHENTICATED. It has no file sharing (its "+" opens message extensions), so files
in channels are covered against the Graph stand-in in test_teams_ai.py.
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import textwrap
from pathlib import Path

import aiohttp
import pytest

from tests.standins.model_server import code_reply
from tests.support import make_settings, serve

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
PLAYGROUND = Path(__file__).parent / "playground" / "node_modules" / "@microsoft" / "m365agentsplayground" / "cli.js"
TIMEOUT_MS = 30_000
COMPANY = textwrap.dedent(
    """
    [company]
    name = "Northwind Labs"

    [departments.hr]
    description = "Leave, benefits and HR policy"
    keywords = ["leave"]
    tools = ["agents.tools.hr:search_policies"]
    authorized_imports = ["math"]
    max_steps = 5
    sensitivity_label = { name = "Confidential" }
    """
)


def _requirements_or_skip():
    reason = None
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        reason = "the playwright package is not installed (pip install -e '.[test]')"
    if reason is None and not os.path.exists(CHROMIUM):
        reason = f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    if reason is None and shutil.which("node") is None:
        reason = "node is not installed (the Agents Playground is a Node.js program)"
    if reason is None and not PLAYGROUND.exists():
        reason = "the Agents Playground is not installed (npm ci --prefix tests/playground)"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the Playground test must run in CI: {reason}")
        pytest.skip(reason)
    return async_playwright


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
async def playground(tmp_path, model_server):
    """The bot on a free port, the Playground pointed at it, and a chromium page on the Playground."""
    async_playwright = _requirements_or_skip()
    from agents.runner import TaskRunner
    from bots.server import create_app

    company = tmp_path / "company.toml"
    company.write_text(COMPANY)
    settings = make_settings(tmp_path, model_server.base_url, sandbox="local", config_path=company,
                             teams_app_id=None, teams_allow_unauthenticated=True, slack_bot_token=None,
                             slack_signing_secret=None, slack_app_token=None)
    runner = TaskRunner(settings)
    app = create_app(settings, runner)
    async with serve(app) as bot_url:
        port = _free_port()
        log = (tmp_path / "playground.log").open("w")
        process = subprocess.Popen(
            ["node", str(PLAYGROUND), "-e", f"{bot_url}/api/messages", "-c", "msteams", "-p", str(port), "--dt"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "BROWSER": "none"}, cwd=tmp_path)
        try:
            url = f"http://127.0.0.1:{port}/"
            for _ in range(200):
                try:
                    async with aiohttp.ClientSession() as http, http.get(url) as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert process.poll() is None, (tmp_path / "playground.log").read_text()
                await asyncio.sleep(0.2)
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                page = await browser.new_page(viewport={"width": 1300, "height": 900})
                await page.goto(url)
                yield page, runner
                await browser.close()
        finally:
            process.terminate()
            process.wait(10)
            log.close()


async def _send(page, text: str, mention: str | None = None) -> None:
    box = page.locator("[data-lexical-editor=true]").last
    await box.click()
    if mention:
        await page.keyboard.type("@" + mention[:4])
        await page.get_by_role("menuitem", name=mention).click()
        await page.keyboard.type(" ")
    await page.keyboard.type(text)
    await page.keyboard.press("Enter")


def tmp_shots() -> Path:
    """Where screenshots go for a person to look at (PLAYGROUND_SHOTS, default the temp folder)."""
    return Path(os.environ.get("PLAYGROUND_SHOTS", "/tmp"))


def _bubble(page, text: str):
    """A message as rendered in the conversation (not the chat list preview or the log panel)."""
    return page.get_by_role("paragraph").filter(has_text=text)


async def test_playground_shows_streamed_steps_ai_label_citations_feedback_and_answers_in_a_channel(
        playground, model_server):
    from playwright.async_api import expect

    model_server.model.script(
        "how long is parental leave",
        code_reply("found = search_policies('parental leave')\nprint(found[:80])", "I will search the policies."),
        code_reply("weeks = 26\nprint(weeks)", "I will read the weeks."),
        code_reply('final_answer(f"Parental leave is {weeks} weeks.")'),
        delay_s=1.2,
    )
    model_server.model.script(
        "parental leave in the channel",
        code_reply("weeks = 26\nprint(weeks)", "I will read the weeks."),
        code_reply('final_answer(f"In short: parental leave is {weeks} weeks.")'),
        delay_s=0.5,
    )
    page, runner = playground
    await expect(_bubble(page, "I'm the Northwind Labs assistant").first).to_be_visible(timeout=TIMEOUT_MS)
    await _send(page, "hr: how long is parental leave?")
    await expect(_bubble(page, "HR · step 1: I will search the policies")).to_be_visible(timeout=TIMEOUT_MS)
    await expect(_bubble(page, "HR · step 2: I will read the weeks")).to_be_visible(timeout=TIMEOUT_MS)
    answer = _bubble(page, "Parental leave is 26 weeks.")
    await expect(answer).to_be_visible(timeout=TIMEOUT_MS)
    await expect(_bubble(page, "HR · step 2")).to_have_count(0)  # the stream's final message replaced it
    await expect(page.get_by_text("AI generated", exact=True)).to_be_visible()
    await expect(page.get_by_role("button", name="Confidential")).to_be_visible()  # the sensitivity label
    await page.screenshot(path=str(tmp_shots() / "playground-personal.png"))
    await page.get_by_role("button", name="1", exact=True).hover()  # the citation card: abstract and title
    await expect(page.get_by_text("Parents may share up to 50 weeks")).to_be_visible(timeout=TIMEOUT_MS)
    await expect(page.get_by_text("Parental Leave Policy — Shared parental leave")).to_be_visible()
    await page.keyboard.press("Escape")
    await page.get_by_role("button", name="Dislike").click()
    await page.get_by_role("dialog").get_by_role("textbox").fill("Say which country this is for")
    await page.get_by_role("button", name="Submit").click()
    for _ in range(50):
        votes = await runner.store.list_records("feedback", "")
        if votes:
            break
        await asyncio.sleep(0.2)
    [vote] = votes.values()
    assert vote["value"] == "negative" and vote["comment"] == "Say which country this is for", vote
    dialog = page.get_by_role("dialog")
    await expect(dialog.get_by_role("button", name="Close")).to_be_visible(timeout=TIMEOUT_MS)
    assert "Unable to reach app" not in await dialog.inner_text(), "the Playground accepted the invoke answer"
    await page.screenshot(path=str(tmp_shots() / "playground-feedback.png"))
    await dialog.get_by_role("button", name="Close").click()

    await page.get_by_text("General", exact=True).first.click()
    await expect(_bubble(page, "I'm the Northwind Labs assistant").first).to_be_visible(timeout=TIMEOUT_MS)
    await _send(page, "hr: parental leave in the channel?", mention="Test Bot")
    await expect(_bubble(page, "In short: parental leave is 26 weeks.")).to_be_visible(timeout=TIMEOUT_MS)
    await expect(_bubble(page, "HR · done in 2 steps")).to_be_visible(timeout=TIMEOUT_MS)  # the edited progress
    await page.screenshot(path=str(tmp_shots() / "playground-channel.png"))
