"""Marketing's web research in the `agentdesk dev` emulator against a real model, as a person would see it.

Starts the loopback SearXNG stand-in, runs `agentdesk dev` (the production app plus the emulator, the docker
sandbox unless SANDBOX says otherwise) with the bundled company (search host allowed as private), then
drives the emulator page in Debian's Chromium: mentions @agentdesk in #marketing with a research question,
opens the thread, and waits for the answer. Prints the steps shown in the thread (the sub-agent's nested
under Marketing's) and the answer, saves a screenshot, and exits non-zero if the answer lacks the expected
figure. Not part of the test suite: it needs a model (see bench/eval.py for the local one).

    MODEL_API_BASE=http://127.0.0.1:8765/v1 MODEL_ID=local MODEL_API_KEY=none MODEL_CODE_TAGS=markdown \\
        .venv/bin/python bench/emulator_research.py [--screenshot research.png]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.eval import eval_company  # noqa: E402
from tests.standins.search_server import SearchStandIn  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
QUESTION = "Research on the web: what is the launch price of the Airwise AW-3 sensor?"
EXPECT = r"\$?179\b"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 120) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"agentdesk dev exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"agentdesk dev did not answer {url} within {timeout_s:.0f} s")


async def ask(url: str, question: str, timeout_s: float, screenshot: Path) -> tuple[list[str], str]:
    from playwright.async_api import async_playwright, expect

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        await page.goto(url)
        await expect(page.locator("#connection")).to_have_text("connected to agentdesk")
        await page.get_by_role("tab", name="Slack").click()
        await page.get_by_role("button", name="# marketing").click()
        composer = page.locator("#composer textarea")
        await composer.fill(f"@agentdesk {question}")
        await composer.press("Enter")
        sent = page.locator("#messages .message.author-user", has_text=question[:40])
        await sent.locator("button.replies").click()
        thread = page.locator("#thread")
        await expect(thread).to_be_visible()
        # The answer is the bot message that is not a step card, an acknowledgement or still streaming.
        answer = thread.locator(".message.author-bot:not(.streaming) .body").filter(
            has_text=re.compile(r"\S")).last
        deadline = time.monotonic() + timeout_s
        final = ""
        while time.monotonic() < deadline:
            streaming = await thread.locator(".message.author-bot.streaming").count()
            if not streaming and await answer.count():
                final = (await answer.inner_text()).strip()
                if final:
                    break
            await asyncio.sleep(2)
        steps = [" ".join((await card.inner_text()).split()) for card in await thread.locator(".task").all()]
        await page.screenshot(path=str(screenshot), full_page=True)
        await browser.close()
        return steps, final


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument("--expect", default=EXPECT, help="regex the answer must match")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the answer")
    parser.add_argument("--screenshot", type=Path, default=Path("emulator-research.png"))
    args = parser.parse_args()
    if not os.environ.get("MODEL_API_BASE"):
        raise SystemExit("set MODEL_API_BASE (and MODEL_ID, MODEL_API_KEY) to the model to ask")

    port = _free_port()
    with SearchStandIn() as search, tempfile.TemporaryDirectory(prefix="agentdesk-emulator-") as tmp:
        env = dict(os.environ, SEARCH_PROVIDER="searxng", SEARCH_API_URL=search.search_url,
                   AGENTDESK_CONFIG=str(eval_company(Path(tmp))), PORT=str(port), HOST="127.0.0.1",
                   AGENTDESK_DATA_DIR=str(Path(tmp) / "state"))
        log = open(Path(tmp) / "dev.log", "w")
        process = subprocess.Popen([sys.executable, "-m", "bots", "dev"], cwd=ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_healthy(f"http://127.0.0.1:{port}/healthz", process)
            started = time.monotonic()
            steps, final = asyncio.run(ask(f"http://127.0.0.1:{port}/", args.question, args.timeout,
                                           args.screenshot))
            seconds = time.monotonic() - started
        finally:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
            log.close()
        if not final:
            print("no answer appeared; the end of agentdesk dev's log:")
            print("\n".join((Path(tmp) / "dev.log").read_text(errors="replace").splitlines()[-30:]))
        print("steps shown in the thread:")
        for step in steps:
            print(f"  - {step[:160]}")
        print(f"answer ({seconds:.0f} s): {final}")
        print(f"screenshot: {args.screenshot}")
        ok = bool(re.search(args.expect, final, re.I))
        print("PASS" if ok else f"FAIL: the answer does not match {args.expect!r}")
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
