"""Scale-out: throughput of 1 worker vs 2 workers, and a web replica's ack latency while workers are busy.

    .venv/bin/python -m bench.scale [--tasks 32] [--model-delay 1.0] [--burst 200]

Real processes against one real Redis (tests/topology.py): `agentdesk serve --role web` and `--role worker`,
the Slack stand-in and the scripted model, whose every reply takes `--model-delay` seconds (one agent step).

1. Throughput: `--tasks` one-step mentions with one worker (AGENTDESK_MAX_CONCURRENT_TASKS=4), then the same
   with a second worker started; tasks per second from the first delivery to the last answer.
   Target: 2 workers >= 1.8x 1 worker.
2. Ack latency: a burst of `--burst` signed mentions at one web replica while both workers are busy with
   the slow tasks of the burst, against a do-nothing aiohttp endpoint (its own process, reads the body and
   answers 200) under the same burst from the same client process. Target: p99 <= 1.2x the floor's.
Not a timed test: prints the ratios and exits 1 when a target is missed.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.load import _burst, pct  # noqa: E402
from tests.standins.model_server import ModelServer, ScriptedModel, code_reply  # noqa: E402
from tests.standins.slack_api import TOKEN, SlackAPI, event_callback, mention  # noqa: E402
from tests.topology import free_port, start_topology  # noqa: E402

ANSWER = "scale bench answer"
COMPANY = textwrap.dedent(
    """
    [departments.hr]
    description = "Leave, benefits and HR policy"
    tools = []
    max_steps = 2
    """
)
FLOOR = textwrap.dedent(
    """
    import sys
    from aiohttp import web

    async def ack(request):
        await request.read()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/slack/events", ack)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
    """
)


async def throughput(slack: SlackAPI, url: str, tag: str, n: int) -> float:
    """Tasks per second for `n` one-step mentions delivered to the web replica at `url`."""
    events = [mention(f"hr: scale bench {tag} {i}", channel=f"C0{tag}{i:03d}", user=f"U0{tag}{i:03d}")
              for i in range(n)]
    payloads = [json.dumps(event_callback(e)) for e in events]
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        await loop.run_in_executor(pool, _burst, f"{url}/slack/events", payloads, [], 50)
    await slack.wait_for(lambda: all(any(ANSWER in m.text for m in slack.thread(e["channel"], e["ts"]))
                                     for e in events), timeout=600, what=f"every {tag} answer")
    return n / (time.perf_counter() - started)


async def main(args: argparse.Namespace) -> dict:
    model = ScriptedModel()
    model.script("scale bench", code_reply(f'final_answer("{ANSWER}")'), delay_s=args.model_delay)
    with tempfile.TemporaryDirectory(prefix="agentdesk-scale-") as tmp, ModelServer(model) as model_server:
        folder = Path(tmp)
        (folder / "departments.toml").write_text(COMPANY)
        async with SlackAPI(TOKEN) as slack:
            topo = start_topology("redis", folder, model_url=model_server.base_url, slack_api_url=slack.api_url,
                                  company=folder / "departments.toml", webs=1, workers=2, start=False,
                                  AGENTDESK_MAX_CONCURRENT_TASKS="4")
            floor_port = free_port()
            floor = subprocess.Popen([sys.executable, "-c", FLOOR, str(floor_port)])
            try:
                web, first, second = topo.webs[0], topo.workers[0], topo.workers[1]
                for bot in (web, first):
                    bot.start()
                for bot in (web, first):
                    await asyncio.to_thread(bot.wait_ready)
                one = await throughput(slack, web.url, "ONE", args.tasks)
                second.start()
                await asyncio.to_thread(second.wait_ready)
                two = await throughput(slack, web.url, "TWO", args.tasks)

                # Ack latency while both workers are busy with this very burst's slow tasks.
                events = [mention(f"hr: scale bench ack {i}", channel=f"C0ACK{i:03d}", user=f"U0ACK{i:03d}")
                          for i in range(args.burst)]
                payloads = [json.dumps(event_callback(e)) for e in events]
                loop = asyncio.get_running_loop()
                with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                    await loop.run_in_executor(pool, _burst, f"{web.url}/slack/events",
                                               [json.dumps(event_callback(mention("hr: scale bench warm")))], [], 1)
                    busy = await loop.run_in_executor(pool, _burst, f"{web.url}/slack/events", payloads, [],
                                                      args.burst)
                    floor_run = await loop.run_in_executor(pool, _burst, f"http://127.0.0.1:{floor_port}/slack/events",
                                                           payloads, [], args.burst)
            finally:
                floor.terminate()
                floor.wait(10)
                topo.stop()
    web_p99 = pct(busy["latencies"], 99) * 1000
    floor_p99 = pct(floor_run["latencies"], 99) * 1000
    summary = {"one_worker_tps": one, "two_workers_tps": two, "speedup": two / one,
               "ack_p99_ms": web_p99, "floor_p99_ms": floor_p99, "ack_ratio": web_p99 / floor_p99,
               "non_200": sum(1 for s in busy["statuses"] if s != 200)}
    print(f"agentdesk scale: Redis + 1 web + 1..2 workers (4 tasks at once each), model {args.model_delay:.1f} s "
          f"per step, {args.tasks} one-step tasks per run")
    print(f"  throughput:  1 worker {one:.2f} tasks/s, 2 workers {two:.2f} tasks/s -> {two / one:.2f}x "
          f"(target >= 1.8x)")
    print(f"  web ack p99: {web_p99:.1f} ms under a {args.burst}-mention burst while workers are busy, "
          f"do-nothing aiohttp endpoint {floor_p99:.1f} ms -> {web_p99 / floor_p99:.2f}x (target <= 1.2x); "
          f"p50 {pct(busy['latencies'], 50) * 1000:.1f} ms vs {pct(floor_run['latencies'], 50) * 1000:.1f} ms; "
          f"non-200 acks: {summary['non_200']}")
    met = summary["speedup"] >= 1.8 and summary["ack_ratio"] <= 1.2 and summary["non_200"] == 0
    print("  targets:     " + ("MET" if met else "MISSED"))
    summary["met"] = met
    return summary


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--model-delay", type=float, default=1.0)
    parser.add_argument("--burst", type=int, default=200)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(0 if asyncio.run(main(parse()))["met"] else 1)
