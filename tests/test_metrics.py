"""GET /metrics over real HTTP from the bot's app, after real requests moved the counters.

The registry is process-wide, so every check compares a sample before and after the request.
"""
from __future__ import annotations

import textwrap

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from agents.chat import ChatRequest
from agents.runner import TaskRunner
from agents.telemetry import request_span
from tests.standins.model_server import code_reply
from tests.support import RecordingReplier, make_settings, serve

COMPANY = textwrap.dedent(
    """
    [departments.hr]
    description = "Leave, benefits and HR policy"
    tools = ["tests.company_tools:whoami"]
    max_steps = 3
    step_timeout_s = 5
    """
)


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


async def scrape(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/metrics") as resp:
            return resp.status, resp.headers["Content-Type"], await resp.text()


async def test_metrics_move_after_a_terminal_request(tmp_path, model_server):
    from bots.server import create_app

    company = tmp_path / "departments.toml"
    company.write_text(COMPANY)
    settings = make_settings(tmp_path, model_server.base_url, sandbox="local", config_path=company,
                             slack_bot_token=None, slack_signing_secret=None, slack_app_token=None,
                             teams_app_id=None, teams_allow_unauthenticated=False)
    runner = TaskRunner(settings)
    app = create_app(settings, runner)
    model_server.model.script("metrics check", code_reply("me = whoami()"), code_reply('final_answer("counted")'))
    async with serve(app) as url:
        status, content_type, before = await scrape(url)
        assert status == 200 and content_type.startswith("text/plain")

        request = ChatRequest(platform="terminal", workspace="local", channel="terminal", thread="metrics-1",
                              user="ops", text="hr: metrics check", is_direct=True)
        replier = RecordingReplier()
        with request_span("terminal.ask", request):
            await runner.handle(request, replier)
        assert replier.answer.text == "counted"

        _, _, after = await scrape(url)

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("agentdesk_requests_total", platform="terminal", department="hr", outcome="ok") == 1
    assert moved("agentdesk_task_duration_seconds_count", department="hr") == 1
    assert moved("agentdesk_queue_wait_seconds_count") == 1
    assert moved("agentdesk_task_steps_sum", department="hr") == 2
    assert moved("agentdesk_tokens_total", department="hr", kind="input") == 240
    assert moved("agentdesk_tokens_total", department="hr", kind="output") == 60
    assert moved("agentdesk_sandbox_start_seconds_count", source="local") == 1
    assert sample(after, "agentdesk_tasks_in_flight") == 0
    assert sample(after, "agentdesk_build_info") == 1
    assert sample(after, "process_resident_memory_bytes") > 0


async def test_metrics_speak_openmetrics_when_asked(tmp_path):
    from bots import metrics_endpoint

    app = web.Application()
    app.router.add_get("/metrics", metrics_endpoint.handle)
    accept = {"Accept": "application/openmetrics-text; version=1.0.0"}
    async with serve(app) as url, aiohttp.ClientSession() as http:
        async with http.get(f"{url}/metrics", headers=accept) as resp:
            body = await resp.text()
            assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")
    assert "agentdesk_requests" in body
