"""Scale-out with real processes: `agentdesk serve --role web` twice and `--role worker` twice against one
real Redis, and the embedded default (one `--role all` process on SQLite), both driven like production:
signed Slack events (redelivered by a Slack stand-in on any non-200, to the other replica), Bot Framework
activities, the scripted model. What is asserted is what people would see in their threads.
"""
from __future__ import annotations

import asyncio
import json
import signal
import textwrap
import time

import aiohttp
import docker
import pytest
import pytest_asyncio

from tests.sandbox_support import require_docker_sandbox, sandbox_settings
from tests.standins.model_server import ModelServer, ScriptedModel, code_reply
from tests.standins.slack_api import SECRET, TEAM_ID, TOKEN, SlackAPI, event_callback, mention, message, sign
from tests.standins.teams_connector import TeamsConnector, activity
from tests.topology import Topology, start_topology, terminate

COMPANY = textwrap.dedent(
    """
    [departments.hr]
    description = "Leave, benefits and HR policy"
    tools = []
    max_steps = 3
    step_timeout_s = 30

    [departments.sales]
    description = "Products, prices and quotes"
    tools = []
    max_steps = 3
    max_concurrent = 4
    """
)
ANSWER = "scale answer delivered"


class SlackEvents:
    """Slack's Events API side: delivers each event to a replica and, on anything but a 200 (or no answer at
    all), delivers it again with X-Slack-Retry-Num to the next replica, as Slack retries for minutes."""

    def __init__(self, urls: list[str], retry_every_s: float = 1.0, give_up_s: float = 120.0) -> None:
        self.urls = urls
        self.retry_every_s = retry_every_s
        self.give_up_s = give_up_s
        self.statuses: list[int] = []
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "SlackEvents":
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.session is not None
        await self.session.close()

    async def deliver(self, payload: dict, replica: int, *, retry_num: int = 0) -> int:
        body = json.dumps(payload)
        deadline = time.monotonic() + self.give_up_s
        attempt = retry_num
        while True:
            headers = sign(SECRET, body)
            if attempt:
                headers.update({"X-Slack-Retry-Num": str(attempt), "X-Slack-Retry-Reason": "http_error"})
            url = self.urls[(replica + attempt) % len(self.urls)] + "/slack/events"
            try:
                async with self.session.post(url, data=body, headers=headers) as resp:
                    status = resp.status
            except (aiohttp.ClientError, asyncio.TimeoutError):
                status = 0  # refused or reset: a replica restarting
            self.statuses.append(status)
            if status == 200:
                return status
            assert time.monotonic() < deadline, f"Slack gave up on an event after {self.give_up_s}s"
            attempt += 1
            await asyncio.sleep(self.retry_every_s)


def answered(slack: SlackAPI, events: list[dict], needle: str = ANSWER) -> dict[str, int]:
    return {e["ts"]: sum(1 for m in slack.thread(e["channel"], e["ts"]) if needle in m.text) for e in events}


def agent_runs(model: ScriptedModel, needle: str) -> dict[str, int]:
    """Agent runs per request text: model calls whose latest task is `needle ...` at its first step."""
    runs: dict[str, int] = {}
    for request in list(model.requests):
        messages = request.get("messages", [])
        users = [m for m in messages if m.get("role") == "user" and "New task" in str(m.get("content"))]
        if not users or any(m.get("role") == "assistant" for m in messages[messages.index(users[-1]):]):
            continue
        text = str(users[-1].get("content"))
        if needle in text:
            key = text.split(needle, 1)[1].split("\\n", 1)[0].split()[0]
            runs[key] = runs.get(key, 0) + 1
    return runs


@pytest.fixture(scope="module")
def model():
    model = ScriptedModel()
    model.script("scale question", code_reply(f'final_answer("{ANSWER}")'), delay_s=0.02)
    with ModelServer(model) as server:
        yield server


pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def slack():
    async with SlackAPI(TOKEN) as api:
        yield api


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def teams():
    async with TeamsConnector() as connector:
        yield connector


@pytest.fixture(scope="module", params=["redis", "embedded"])
def topology(request, tmp_path_factory, model, slack):
    folder = tmp_path_factory.mktemp(f"topology-{request.param}")
    company = folder / "departments.toml"
    company.write_text(COMPANY)
    topo = start_topology(request.param, folder, model_url=model.base_url, slack_api_url=slack.api_url,
                          company=company)
    yield topo
    topo.stop()


def kind_of(topology: Topology) -> str:
    """A tag that keeps each topology's threads and model scripts apart (the stand-ins serve both)."""
    return "R" if topology.redis is not None else "E"


async def burst(events_api: SlackEvents, events: list[dict], duplicates: int = 0) -> None:
    """Every event round-robin over the replicas; the first `duplicates` also as Slack's retry (same event_id)
    and as the message.channels twin of a mention (same channel and ts), each to the other replica."""
    payloads = [event_callback(e) for e in events]
    jobs = [events_api.deliver(p, i) for i, p in enumerate(payloads)]
    jobs += [events_api.deliver(p, i + 1, retry_num=1) for i, p in enumerate(payloads[:duplicates])]
    jobs += [events_api.deliver(event_callback(message(e["text"], channel=e["channel"], ts=e["ts"],
                                                       user=e["user"])), i + 1)
             for i, e in enumerate(events[:duplicates])]
    await asyncio.gather(*jobs)


async def test_a_burst_over_both_replicas_is_answered_once_each_and_threads_follow_up_anywhere(
        topology: Topology, slack, model):
    k = kind_of(topology)
    events = [mention(f"hr: scale question b{k}{i:03d}", channel=f"C0BURST{k}{i:03d}", user=f"U0B{i:03d}")
              for i in range(200)]
    async with SlackEvents(topology.web_urls()) as events_api:
        t0 = time.monotonic()
        await burst(events_api, events, duplicates=20)
        acked = time.monotonic() - t0
        await slack.wait_for(lambda: all(answered(slack, events).values()), timeout=150,
                             what="an answer in every thread")
        print(f"burst: acked in {acked:.1f} s, answered in {time.monotonic() - t0:.1f} s")
        await asyncio.sleep(1.0)  # a duplicate would arrive right after the first answer
        counts = answered(slack, events)
        runs = agent_runs(model.model, "scale question ")
        assert [ts for ts, n in counts.items() if n != 1] == [], "threads without exactly one answer"
        mine = {key: n for key, n in runs.items() if key.startswith(f"b{k}")}
        assert len(mine) == 200 and set(mine.values()) == {1}, "not exactly one agent run per mention"

        # A follow-up in a thread, delivered to the other replica: same department, same memory.
        model.model.script(f"note the code word {k}", code_reply("code_word = 'tangerine'\nprint(code_word)"),
                           code_reply('final_answer("noted")'))
        model.model.script(f"which code word {k}", code_reply('final_answer("followed up")'))
        first = mention(f"sales: note the code word {k} please", channel="C0FOLLOW", user="U0FOLLOW")
        await events_api.deliver(event_callback(first), 0)
        await slack.wait_for(lambda: [m for m in slack.thread("C0FOLLOW", first["ts"]) if "noted" in m.text],
                             timeout=60, what="the first answer")
        follow = message(f"which code word {k} was it?", channel="C0FOLLOW", user="U0FOLLOW", thread_ts=first["ts"])
        await events_api.deliver(event_callback(follow), 1)
        await slack.wait_for(lambda: [m for m in slack.thread("C0FOLLOW", first["ts"]) if "followed up" in m.text],
                             timeout=60, what="the follow-up answer")
    last = next(r for r in reversed(model.model.requests) if f"which code word {k}" in json.dumps(r))
    conversation = json.dumps(last)
    assert "SALES agent" in conversation and "tangerine" in conversation


async def test_every_process_restarted_in_turn_during_a_burst_loses_and_doubles_nothing(
        topology: Topology, slack, model):
    k = kind_of(topology)
    events = [mention(f"hr: scale question r{k}{i:03d}", channel=f"C0ROLL{k}{i:03d}", user=f"U0R{i:03d}")
              for i in range(60)]
    async with SlackEvents(topology.web_urls()) as events_api:
        sending = asyncio.ensure_future(_paced(events_api, events, per_s=25))
        for bot in topology.processes:
            await asyncio.sleep(0.8)
            code = await asyncio.to_thread(terminate, bot)
            assert code == 0, f"{bot.role} did not exit cleanly:\n{bot.tail()}"
            bot.start()
            await asyncio.to_thread(bot.wait_ready)
        await sending
        await slack.wait_for(lambda: all(answered(slack, events).values()), timeout=120,
                             what="an answer in every thread")
        await asyncio.sleep(1.0)
    counts = answered(slack, events)
    assert [ts for ts, n in counts.items() if n != 1] == []
    assert 503 in events_api.statuses or 0 in events_api.statuses, "no delivery met a draining replica"


async def _paced(events_api: SlackEvents, events: list[dict], per_s: float) -> None:
    jobs = []
    for i, e in enumerate(events):
        jobs.append(asyncio.ensure_future(events_api.deliver(event_callback(e), i)))
        await asyncio.sleep(1 / per_s)
    await asyncio.gather(*jobs)


async def test_redis_down_for_20_s_during_a_burst_loses_nothing(topology: Topology, slack, model):
    if topology.redis is None:
        pytest.skip("the embedded topology has no Redis to stop (its state is the process's own SQLite)")
    events = [mention(f"hr: scale question o{i:03d}", channel=f"C0OUT{i:03d}", user=f"U0O{i:03d}")
              for i in range(60)]
    async with SlackEvents(topology.web_urls(), retry_every_s=2.0, give_up_s=90) as events_api:
        sending = asyncio.ensure_future(_paced(events_api, events, per_s=8))
        await asyncio.sleep(3)
        await asyncio.to_thread(topology.redis.stop)
        down = time.monotonic()
        readiness = await _readyz(topology.webs[0].url)
        await asyncio.sleep(20 - (time.monotonic() - down))
        await asyncio.to_thread(topology.redis.start)
        await sending
        await slack.wait_for(lambda: all(answered(slack, events).values()), timeout=120,
                             what="an answer in every thread once Redis is back")
        await asyncio.sleep(1.0)
    counts = answered(slack, events)
    assert [ts for ts, n in counts.items() if n != 1] == []
    assert 503 in events_api.statuses, "the webs never told Slack to deliver again while Redis was down"
    assert readiness[0] == 503 and "Redis" in readiness[1]["detail"]


async def _readyz(url: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        for _ in range(50):
            async with session.get(f"{url}/readyz") as resp:
                body = await resp.json()
                if resp.status == 503:
                    return resp.status, body
            await asyncio.sleep(0.1)
        return resp.status, body


async def test_teams_activities_through_both_replicas_are_answered_once_in_their_conversation(
        topology: Topology, teams, model):
    k = kind_of(topology)
    conversations = [f"a:1personalChat{k}{i:02d}" for i in range(12)]
    async with aiohttp.ClientSession() as session:
        for i, conversation in enumerate(conversations):
            body = activity(teams.service_url, f"hr: scale question t{k}{i:02d}",
                            conversation={"conversationType": "personal", "id": conversation})
            url = topology.web_urls()[i % len(topology.webs)] + "/api/messages"
            for _ in range(2):  # Teams redelivers an activity it thinks timed out: same id, other replica
                async with session.post(url, json=body) as resp:
                    assert resp.status in (200, 201)
                url = topology.web_urls()[(i + 1) % len(topology.webs)] + "/api/messages"

    def finals(conversation: str) -> list:
        return [c for c in teams.messages(conversation) if ANSWER in c.text]

    await teams.wait_for(lambda: all(finals(c) for c in conversations), timeout=60, what="every Teams answer",)
    await asyncio.sleep(1.0)
    assert {c: len(finals(c)) for c in conversations} == {c: 1 for c in conversations}


@pytest.mark.docker
@pytest.mark.parametrize("kind", ["redis", "embedded"])
async def test_a_worker_killed_mid_task_is_reported_answered_at_most_once_and_its_container_removed(
        kind, tmp_path, model, slack):
    require_docker_sandbox(sandbox_settings(tmp_path / "probe"))
    company = tmp_path / "departments.toml"
    company.write_text(COMPANY)
    model.model.script(f"slow crash question {kind}", code_reply(f'final_answer("{ANSWER} after crash")'), delay_s=4)
    topo = start_topology(kind, tmp_path / "topo", model_url=model.base_url, slack_api_url=slack.api_url,
                          company=company, webs=1, workers=2, sandbox="docker", start=False)
    first, second = topo.workers[0], topo.workers[-1]
    if kind == "redis":
        topo.webs[0].start()
    first.start()
    client = docker.from_env()
    try:
        for bot in {id(b): b for b in (topo.webs[0], first)}.values():
            await asyncio.to_thread(bot.wait_ready)
        event = mention(f"hr: slow crash question {kind}", channel="C0CRASH", user="U0CRASH")
        async with SlackEvents(topo.web_urls()) as events_api:
            await events_api.deliver(event_callback(event), 0)
        await slack.wait_for(lambda: any(f"slow crash question {kind}" in json.dumps(r) for r in model.model.requests),
                             timeout=60, what="the task reaching the model")
        killed = first.proc.pid
        first.signal(signal.SIGKILL)
        first.wait_exit(10)
        assert client.api.containers(filters={"label": f"agentdesk.sandbox.pid={killed}"}), \
            "expected the killed worker's sandbox to be left behind"
        if kind == "embedded":  # one process: its restart is the "other worker"
            second.proc = None
        second.start()
        await asyncio.to_thread(second.wait_ready)

        def told() -> list:
            return [m for m in slack.thread("C0CRASH", event["ts"]) if "⚠️" in m.text]

        await slack.wait_for(told, timeout=60, what="the thread being told about the crash")
        if kind == "redis":  # retried from the start (no step had finished): one answer
            await slack.wait_for(lambda: answered(slack, [event], f"{ANSWER} after crash")[event["ts"]],
                                 timeout=60, what="the retried answer")
        await asyncio.sleep(2)
        assert answered(slack, [event], f"{ANSWER} after crash")[event["ts"]] == (1 if kind == "redis" else 0)
        assert len(told()) == 1
        await slack.wait_for(
            lambda: not client.api.containers(all=True, filters={"label": f"agentdesk.sandbox.pid={killed}"}),
            timeout=30, what="the killed worker's container to be removed")
    finally:
        client.close()
        topo.stop()


async def test_stop_and_feedback_reach_the_worker_from_any_replica(topology: Topology, slack, model, tmp_path):
    """The adapters' seams (request_stop, record_feedback) on a web-role runner, the run on a worker."""
    if topology.redis is None:
        pytest.skip("one process: tests/test_runner.py covers stop and feedback in-process")
    import dataclasses

    from agents.runner import TaskRunner
    from tests.support import make_settings

    model.model.script("stop me across processes", code_reply("print('one')", "Step one."),
                       code_reply("print('two')", "Step two."), code_reply('final_answer("not reached")'),
                       delay_s=1.5)
    model.model.script("rate me across processes", code_reply(f'final_answer("{ANSWER} rated")'))
    settings = dataclasses.replace(make_settings(tmp_path, model.base_url, redis_url=topology.redis.url),
                                   slack_step_updates="off")
    web = TaskRunner(settings, role="web")
    stop_event = mention("hr: stop me across processes", channel="C0STOP", user="U0STOPPER")
    rate_event = mention("hr: rate me across processes", channel="C0RATE", user="U0RATER")
    try:
        async with SlackEvents(topology.web_urls()) as events_api:
            await events_api.deliver(event_callback(stop_event), 0)
            await events_api.deliver(event_callback(rate_event), 1)
            thread_key = f"slack:{TEAM_ID}:C0STOP:{stop_event['ts']}"
            await slack.wait_for(lambda: any("stop me across" in json.dumps(r) for r in model.model.requests),
                                 timeout=30, what="the run starting on a worker")

            async def running() -> bool:
                return await web.store.run_in(thread_key) is not None

            for _ in range(100):
                if await running():
                    break
                await asyncio.sleep(0.1)
            assert (await web.request_stop(thread_key, "U0SOMEONE"))[0] is False
            assert (await web.request_stop(thread_key, "U0STOPPER"))[0] is True
            stopped = await slack.wait_for(
                lambda: [m for m in slack.thread("C0STOP", stop_event["ts"]) if "Stopped as you asked" in m.text],
                timeout=20, what="the worker stopping the run")
            rated = await slack.wait_for(
                lambda: [m for m in slack.thread("C0RATE", rate_event["ts"]) if f"{ANSWER} rated" in m.text],
                timeout=30, what="the answer to rate")
        answers = await web.store.list_records("answers")
        task_id = next(k for k, v in answers.items() if v["thread_key"].endswith(rate_event["ts"]))
        assert await web.record_feedback(task_id, platform="slack", user="U0RATER", value="positive")
        assert (await web.feedback_for(task_id))["U0RATER"]["value"] == "positive"
    finally:
        await web.store.close()
    assert len(stopped) == 1 and rated
    assert not [m for m in slack.thread("C0STOP", stop_event["ts"]) if "not reached" in m.text]
