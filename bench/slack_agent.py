"""Slack agent experience latency: how soon a person sees work start, and how soon a finished step's task
card updates, with a zero-latency scripted model, over real HTTP against the Slack fake.

    .venv/bin/python -m bench.slack_agent [--requests 20] [--steps 3]

Measured in one run, stream mode (task cards) next to replies mode (the 2024 baseline):
- first sign: signed mention sent -> the first assistant.threads.setStatus / chat.startStream at the fake;
- step update: a step's end (smolagents' step timing) -> the Web API call carrying that step.
Targets: first sign <= 300 ms, task update <= 100 ms. Ack latency under load is bench/slack_ack.py.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from agents.runner import TaskRunner
from tests.standins.model_server import ModelServer, ScriptedModel, code_reply
from tests.standins.slack_api import TOKEN, SlackAPI, mention, running_bot

FIRST_SIGN = {"assistant.threads.setStatus", "chat.startStream"}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def measure(mode: str, requests: int, steps: int, model_url: str) -> tuple[list[float], list[float]]:
    """(first-sign ms per request, step-update ms per step) for one SLACK_STEP_UPDATES mode."""
    step_ends: dict[tuple[str, int], float] = {}
    original = TaskRunner._step_update

    def recording(self, department, step):  # when smolagents says the step ended (epoch seconds)
        update = original(self, department, step)
        if step.timing and step.timing.end_time:
            step_ends[(self._bench_thread, step.step_number)] = step.timing.end_time
        return update

    TaskRunner._step_update = recording
    first_ms: list[float] = []
    update_ms: list[float] = []
    try:
        async with SlackAPI(TOKEN) as slack:
            with tempfile.TemporaryDirectory() as tmp:
                model = type("M", (), {"base_url": model_url})
                async with running_bot(Path(tmp), model, slack, slack_step_updates=mode,
                                       user_rate_per_minute=10_000) as bot:
                    for i in range(requests):
                        event = mention(f"hr: bench agent {mode} {i}", user=f"U0BENCH{i:03d}")
                        bot.runner._bench_thread = event["ts"]
                        seen = len(slack.calls)
                        sent = time.time()
                        await bot.events.event(event)
                        await slack.wait_for(lambda: [m for m in slack.thread("C0GENERAL", event["ts"])
                                                      if "bench done" in m.text and not m.streaming],
                                             timeout=30, what="answer")
                        await bot.drain()
                        calls = slack.calls[seen:]
                        first = next(c for c in calls if c.method in FIRST_SIGN)
                        first_ms.append((first.wall - sent) * 1000)
                        for n in range(1, steps + 1):
                            end = step_ends.get((event["ts"], n))
                            carrier = next((c for c in calls if _carries(c, n, mode)), None)
                            if end is not None and carrier is not None:
                                update_ms.append((carrier.wall - end) * 1000)
    finally:
        TaskRunner._step_update = original
    return first_ms, update_ms


def _carries(call, step: int, mode: str) -> bool:
    if mode == "stream":
        return call.method in ("chat.startStream", "chat.appendStream") and any(
            c.get("id") == f"step-{step}" and c.get("status") in ("complete", "error")
            for c in call.params.get("chunks") or [])
    return call.method == "chat.postMessage" and f"step {step}:" in str(call.params.get("text") or "")


async def main(requests: int, steps: int) -> None:
    model = ScriptedModel()
    model.script("bench agent", *[code_reply(f"print('step {n}')", f"Step {n}.") for n in range(1, steps)],
                 code_reply('final_answer("bench done")'))
    with ModelServer(model) as server:
        results = {mode: await measure(mode, requests, steps, server.base_url) for mode in ("replies", "stream")}
    print(f"Slack agent experience, {requests} sequential mentions x {steps} steps, zero-latency scripted model")
    print(f"{'':28}{'p50 ms':>10}{'p90 ms':>10}{'max ms':>10}{'mean ms':>10}")
    for mode, (first, updates) in results.items():
        for label, values in ((f"{mode}: first sign", first), (f"{mode}: step -> update", updates)):
            print(f"{label:28}{pct(values, .5):10.1f}{pct(values, .9):10.1f}{max(values):10.1f}"
                  f"{statistics.mean(values):10.1f}")
    (first_s, upd_s), (first_r, upd_r) = results["stream"], results["replies"]
    print(f"ratio stream/replies: first sign p90 {pct(first_s, .9) / pct(first_r, .9):.2f}x, "
          f"step update p90 {pct(upd_s, .9) / pct(upd_r, .9):.2f}x")
    print(f"target first sign <= 300 ms (p90 {pct(first_s, .9):.0f} ms): "
          f"{'met' if pct(first_s, .9) <= 300 else 'NOT met'}")
    print(f"target task update <= 100 ms (p90 {pct(upd_s, .9):.0f} ms): {'met' if pct(upd_s, .9) <= 100 else 'NOT met'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.steps))
