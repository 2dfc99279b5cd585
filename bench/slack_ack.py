"""Slack ack latency: N concurrent signed mentions into agentdesk (with agent tasks in flight) next to a bare
slack-bolt AsyncApp (same signing, no-op listener), both over real HTTP on 127.0.0.1, measured in one run.

    /tmp/venv/bin/python -m bench.slack_ack [--n 50] [--rounds 3] [--model-delay 0.5]

Target: agentdesk p99 <= 50 ms at 50 concurrent. Slack retries anything slower than 3 s.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import AsyncIterator

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from tests.standins.model_server import ModelServer, ScriptedModel, code_reply
from bots.server import TASKS
from tests.standins.slack_api import SECRET, TOKEN, EventSender, SlackAPI, event_callback, mention, running_bot, sign
from tests.support import serve


@asynccontextmanager
async def serve_bare_bolt(slack) -> AsyncIterator[str]:
    bolt = AsyncApp(client=AsyncWebClient(token=TOKEN, base_url=slack.api_url), signing_secret=SECRET)

    @bolt.event("app_mention")
    async def noop() -> None:
        return None

    async def events(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await bolt.async_dispatch(await to_bolt_request(request)))

    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post("/slack/events", events)
    async with serve(app) as url:
        yield f"{url}/slack/events"


def _client_burst(url: str, n: int, tag: str) -> list[float]:
    """Runs in a separate process so the load generator does not share the servers' event loop."""

    async def run() -> list[float]:
        bodies = [json.dumps(event_callback(mention(f"hr: bench task {tag} {i}", user=f"U{tag}{i:03d}")))
                  for i in range(n)]
        signed = [(b, sign(SECRET, b)) for b in bodies]
        async with EventSender(url, SECRET) as sender:

            async def one(body: str, headers: dict) -> float:
                started = time.perf_counter()
                status, _ = await sender.post_raw(body, headers)
                if status != 200:
                    raise RuntimeError(f"ack failed with HTTP {status}")
                return (time.perf_counter() - started) * 1000

            return list(await asyncio.gather(*(one(b, h) for b, h in signed)))

    return asyncio.run(run())


async def burst(pool: ProcessPoolExecutor, url: str, n: int, tag: str) -> list[float]:
    """n concurrent mentions; per-request wall time from send to HTTP response, in ms."""
    return await asyncio.get_running_loop().run_in_executor(pool, _client_burst, url, n, tag)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _standins(ready, stop, model_delay: float) -> None:
    """Model server and Slack Web API stand-in in their own process, as the real ones are remote."""
    model = ScriptedModel()
    model.script("bench task", code_reply("print('working')"), code_reply('final_answer("done")'), delay_s=model_delay)

    async def run() -> None:
        with ModelServer(model) as model_server:
            async with SlackAPI(TOKEN) as slack:
                ready.put((model_server.base_url, slack.api_url))
                while not stop.is_set():
                    await asyncio.sleep(0.1)

    asyncio.run(run())


async def main(n: int, rounds: int, model_delay: float) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Queue(), ctx.Event()
    standins = ctx.Process(target=_standins, args=(ready, stop, model_delay), daemon=True)
    standins.start()
    model_url, api_url = await asyncio.to_thread(ready.get, True, 30)
    slack = SimpleNamespace(api_url=api_url)
    model_server = SimpleNamespace(base_url=model_url)
    try:
        with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            async with (
                serve_bare_bolt(slack) as bare_url,
                running_bot(Path(tmp), model_server, slack, max_queued_tasks=n * rounds * 2,
                            max_tasks_per_user=5, user_rate_per_minute=100) as bot,
            ):
                await burst(pool, bare_url, 1, "warmbare")  # first request pays for auth.test in both
                await burst(pool, bot.events.url, 1, "warmours")
                bare_ms: list[float] = []
                ours_ms: list[float] = []
                for r in range(rounds):
                    bare_ms += await burst(pool, bare_url, n, f"b{r}")
                    ours_ms += await burst(pool, bot.events.url, n, f"o{r}")
                in_flight = len(bot.app[TASKS])
                await bot.app[TASKS].cancel_all()
    finally:
        stop.set()
        standins.join(10)
    print(f"Slack ack latency, {n} concurrent signed mentions x {rounds} rounds, bare and agentdesk alternating "
          f"(model delay {model_delay}s per step; {in_flight} agent tasks in flight at the end)")
    print(f"{'':12}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'mean ms':>10}")
    for name, values in (("bare bolt", bare_ms), ("agentdesk", ours_ms)):
        print(f"{name:12}{pct(values, .5):10.1f}{pct(values, .99):10.1f}{max(values):10.1f}"
              f"{statistics.mean(values):10.1f}")
    print(f"ratio agentdesk/bare: p50 {pct(ours_ms, .5) / pct(bare_ms, .5):.2f}x, "
          f"p99 {pct(ours_ms, .99) / pct(bare_ms, .99):.2f}x")
    print(f"target p99 <= 50 ms: {'met' if pct(ours_ms, .99) <= 50 else 'NOT met'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model-delay", type=float, default=0.5)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.rounds, args.model_delay))
