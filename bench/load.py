"""Load: a burst of signed Slack mentions into the real bot; every one must be answered exactly once.

    /tmp/venv/bin/python -m bench.load [--n 200] [--retries 20] [--sandbox local|docker] [--model-delay 0.05]

The bot is the real app (bots.server.create_app + TaskRunner + the Slack adapter) on 127.0.0.1, its Slack
Web API is the stand-in from tests/standins/slack_api.py and its model the scripted OpenAI-compatible
server; the load generator runs in its own process so its HTTP client does not share the bot's event
loop. Each mention comes from a different person in a different channel (Slack's ~1 message/s per channel
pacing would otherwise dominate); `--retries` of them are delivered a second time as Slack's own retry
(same event_id, X-Slack-Retry-Num: 1) to check deduplication under load.

Printed: ack latency p50/p99/max (and the ratio to one mention acked alone, measured first in the same
run), queue wait for a task slot p50/p99/max, time to every final answer, peak RSS of the process, and
the exactly-once count at the stand-in. Targets: 0 duplicates, 0 lost answers, ack p99 <= 50 ms.
Not a timed test: exits 1 when a target is missed. tests/test_load.py runs it and asserts exactly-once.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from aiohttp import web  # noqa: E402

from agents import metrics  # noqa: E402
from agents.runner import TaskRunner  # noqa: E402
from bots.server import TASKS, create_app  # noqa: E402
from tests.standins.model_server import ModelServer, ScriptedModel, code_reply  # noqa: E402
from tests.standins.slack_api import (  # noqa: E402
    SECRET, TOKEN, EventSender, SlackAPI, event_callback, mention, sign,
)
from tests.support import make_settings, serve  # noqa: E402

ANSWER = "load answer delivered"
COMPANY = textwrap.dedent(
    """
    [departments.hr]
    description = "Leave, benefits and HR policy"
    tools = []
    max_steps = 2
    step_timeout_s = 30
    """
)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


class QueueWaitRecorder:
    """Wraps the runner's queue-wait histogram to keep every observation (the histogram only keeps buckets)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.values: list[float] = []

    def observe(self, value: float, *args, **kwargs) -> None:
        self.values.append(value)
        self.inner.observe(value, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _burst(url: str, payloads: list[str], retries: list[str], concurrency: int) -> dict:
    """In a child process: post every signed event (then the retries), return each ack's latency and status."""

    async def run() -> dict:
        latencies: list[float] = []
        statuses: list[int] = []
        gate = asyncio.Semaphore(concurrency)
        async with EventSender(url, SECRET) as sender:

            async def one(body: str, retry: bool) -> None:
                headers = sign(SECRET, body)
                if retry:
                    headers.update({"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
                async with gate:
                    started = time.perf_counter()
                    status, _ = await sender.post_raw(body, headers)
                    latencies.append(time.perf_counter() - started)
                    statuses.append(status)

            await asyncio.gather(*(one(b, False) for b in payloads))
            await asyncio.gather(*(one(b, True) for b in retries))
        return {"latencies": latencies, "statuses": statuses}

    return asyncio.run(run())


@asynccontextmanager
async def _serve_floor() -> AsyncIterator[str]:
    """A do-nothing endpoint (reads the body, answers 200) in this process: the same client's burst against it
    is the ack latency this machine and client can show at all, measured in the same run."""

    async def ack(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/slack/events", ack)
    async with serve(app) as url:
        yield f"{url}/slack/events"


async def main(args: argparse.Namespace) -> dict:
    recorder = QueueWaitRecorder(metrics.QUEUE_WAIT)
    metrics.QUEUE_WAIT = recorder  # the runner reads metrics.QUEUE_WAIT at call time
    model = ScriptedModel()
    model.script("load question", code_reply(f'final_answer("{ANSWER}")'), delay_s=args.model_delay)
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    with tempfile.TemporaryDirectory(prefix="agentdesk-load-") as tmp, ModelServer(model) as model_server:
        tmp_path = Path(tmp)
        (tmp_path / "departments.toml").write_text(COMPANY)
        async with SlackAPI(TOKEN) as slack:
            settings = make_settings(
                tmp_path, model_server.base_url, sandbox=args.sandbox, config_path=tmp_path / "departments.toml",
                slack_bot_token=TOKEN, slack_signing_secret=SECRET, slack_app_token=None, slack_api_url=slack.api_url,
                slack_step_updates="off", user_rate_per_minute=10_000, max_tasks_per_user=10,
                max_queued_tasks=10 * args.n, max_concurrent_tasks=args.concurrent_tasks,
                sandbox_pool_size=args.concurrent_tasks if args.sandbox == "docker" else 0,
            )
            runner = TaskRunner(settings)
            app = create_app(settings, runner)
            try:
                async with serve(app) as bot_url:
                    url = f"{bot_url}/slack/events"
                    rss_start, _ = rss_mb()
                    # Baseline: one mention alone, acked and answered before the burst.
                    base_event = mention("hr: load question baseline", channel="C0BASE", user="U0BASE")
                    loop = asyncio.get_running_loop()
                    base = await loop.run_in_executor(
                        pool, _burst, url, [json.dumps(event_callback(base_event))], [], 1)
                    t0 = time.perf_counter()
                    await slack.wait_for(
                        lambda: [m for m in slack.thread("C0BASE", base_event["ts"]) if ANSWER in m.text],
                        timeout=120, what="the baseline answer")
                    base_answer_s = time.perf_counter() - t0
                    await app[TASKS].drain(timeout=60)
                    model.requests.clear()
                    recorder.values.clear()

                    events = [mention(f"hr: load question {i}", channel=f"C0LOAD{i:04d}", user=f"U0LOAD{i:04d}")
                              for i in range(args.n)]
                    payloads = [json.dumps(event_callback(e)) for e in events]
                    retries = payloads[: args.retries]  # same body, same event_id: Slack's retry
                    started = time.perf_counter()
                    burst = await loop.run_in_executor(pool, _burst, url, payloads, retries, args.client_concurrency)
                    acked_s = time.perf_counter() - started

                    def answered() -> dict[str, int]:
                        counts: dict[str, int] = {}
                        for e in events:
                            counts[e["ts"]] = sum(1 for m in slack.thread(e["channel"], e["ts"]) if ANSWER in m.text)
                        return counts

                    try:
                        await slack.wait_for(lambda: all(answered().values()), timeout=args.timeout,
                                             what="every final answer")
                    except AssertionError as exc:
                        print(f"!! {exc}")
                    all_answered_s = time.perf_counter() - started
                    await app[TASKS].drain(timeout=60)
                    counts = answered()
                    _, rss_peak = rss_mb()
                    async with _serve_floor() as floor_url:
                        floor = await loop.run_in_executor(pool, _burst, floor_url, payloads, [],
                                                           args.client_concurrency)
            finally:
                pool.shutdown()

    first = burst["latencies"][: args.n]
    acks = [s for s in burst["statuses"]]
    lost = sum(1 for c in counts.values() if c == 0)
    duplicates = sum(c - 1 for c in counts.values() if c > 1)
    agent_runs = sum(1 for r in model.requests if "load question" in json.dumps(r) and "New task" in json.dumps(r))
    waits = recorder.values
    p50, p99 = pct(first, 50) * 1000, pct(first, 99) * 1000
    base_ack = base["latencies"][0] * 1000

    print(f"agentdesk load: {args.n} signed Slack mentions (+{args.retries} Slack retries), SANDBOX={args.sandbox}, "
          f"{args.concurrent_tasks} concurrent tasks, client concurrency {args.client_concurrency}, "
          f"model delay {args.model_delay * 1000:.0f} ms, step updates off")
    print(f"  acks:          {len(acks)} responses, non-200: {sum(1 for s in acks if s != 200)}")
    print(f"  ack latency:   p50 {p50:.1f} ms  p99 {p99:.1f} ms  max {max(first) * 1000:.1f} ms  "
          f"(baseline, one mention alone: {base_ack:.1f} ms; p99/baseline = {p99 / base_ack:.1f}x)")
    floor_p99 = pct(floor["latencies"], 99) * 1000
    print(f"  ack floor:     p99 {floor_p99:.1f} ms for a do-nothing endpoint under the same burst "
          f"(agentdesk p99 / floor = {p99 / floor_p99:.2f}x)")
    print(f"  retries acked: p99 {pct(burst['latencies'][args.n:] or [0], 99) * 1000:.1f} ms")
    print(f"  queue wait:    p50 {pct(waits, 50) * 1000:.0f} ms  p99 {pct(waits, 99) * 1000:.0f} ms  "
          f"max {max(waits) * 1000:.0f} ms  ({len(waits)} tasks)" if waits else "  queue wait:    no observations")
    print(f"  answers:       all acked in {acked_s:.2f} s, all answered in {all_answered_s:.1f} s "
          f"(baseline answer alone: {base_answer_s:.2f} s)")
    print(f"  exactly once:  answered {args.n - lost}/{args.n}, lost {lost}, duplicates {duplicates}, "
          f"agent runs {agent_runs}")
    print(f"  memory:        RSS {rss_start:.0f} MB at start, peak {rss_peak:.0f} MB "
          f"(bot + Slack and model stand-ins in one process)")
    summary = {"n": args.n, "lost": lost, "duplicates": duplicates, "agent_runs": agent_runs,
               "non_200_acks": sum(1 for s in acks if s != 200), "ack_p99_ms": p99, "ack_floor_p99_ms": floor_p99}
    print("  targets:       " + ("MET" if targets_met(summary) else "MISSED")
          + " (0 duplicates, 0 lost, one agent run each, ack p99 <= 50 ms)")
    return summary


def exactly_once(summary: dict) -> bool:
    """Every mention acked 200 and answered exactly once by exactly one agent run."""
    return (summary["lost"] == 0 and summary["duplicates"] == 0 and summary["agent_runs"] == summary["n"]
            and summary["non_200_acks"] == 0)


def targets_met(summary: dict) -> bool:
    return exactly_once(summary) and summary["ack_p99_ms"] <= 50


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--retries", type=int, default=20)
    parser.add_argument("--sandbox", choices=["local", "docker"], default="local")
    parser.add_argument("--model-delay", type=float, default=0.05, help="seconds per scripted model reply")
    parser.add_argument("--concurrent-tasks", type=int, default=8)
    parser.add_argument("--client-concurrency", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for every answer")
    return parser.parse_args(argv)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(0 if targets_met(asyncio.run(main(parse()))) else 1)
