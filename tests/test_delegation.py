"""Managed sub-agents, tool-calling departments and strict model servers, end to end through the runner.

The scripted model drives smolagents' real agent loops over HTTP; the sub-agent's web tools fetch from the
loopback SearXNG stand-in (allowed by the test company's [egress] allow_private).
"""
from __future__ import annotations

import dataclasses
import json
import textwrap

import pytest

from agents.models import MAX_COMPLETION_TOKENS, NO_STOP, NO_TEMPERATURE
from agents.runner import TaskRunner
from agents.telemetry import flush_tracing, setup_tracing, shutdown_tracing
from tests.standins.model_server import ModelServer, ScriptedModel, code_reply, tool_reply
from tests.standins.otlp_receiver import OtlpReceiver
from tests.sandbox_support import require_docker_sandbox
from tests.standins.search_server import SearchStandIn
from tests.support import RecordingReplier, chat_request, make_settings

COMPANY = textwrap.dedent(
    """
    [departments.marketing]
    description = "Campaigns and competitors"
    tools = ["agents.tools.marketing:campaign_summary"]
    managed_agents = ["web_research"]
    max_steps = 3
    step_timeout_s = 20

    [departments.hr]
    description = "HR policies"
    agent = "tool_calling"
    tools = ["agents.tools.hr:search_policies", "agents.tools.hr:leave_balance"]
    max_steps = 3

    [agents.web_research]
    kind = "tool_calling"
    description = "Searches the web and reads pages; returns findings with their sources"
    tools = ["agents.tools.web:web_search", "agents.tools.web:visit_webpage"]
    max_steps = 4

    [egress]
    allow_private = ["127.0.0.1"]
    """
)


@pytest.fixture
def search(monkeypatch):
    with SearchStandIn() as server:
        monkeypatch.setenv("SEARCH_PROVIDER", "searxng")
        monkeypatch.setenv("SEARCH_API_URL", server.search_url)
        yield server


async def ask(settings, text: str, **kw) -> RecordingReplier:
    runner = TaskRunner(settings)
    await runner.start()
    replier = RecordingReplier()
    try:
        await runner.handle(chat_request(text, **kw), replier)
    finally:
        await runner.close()
    return replier


def script_research(model_server, search) -> str:
    page = f"{search.base_url}/pages/airwise-aw3-launch"
    model_server.model.script(
        "competitor check qx41",
        code_reply('report = web_research(task="Find the launch price of the Airwise AW-3 sensor")\nprint(report)',
                   "I will ask web_research about the competitor."),
        code_reply('final_answer("Airwise sells the AW-3 at $179 per unit. " + report[-60:])'),
    )
    model_server.model.script(
        "launch price of the Airwise AW-3",
        tool_reply("web_search", query="Airwise AW-3 price"),
        tool_reply("visit_webpage", url=page),
        tool_reply("final_answer", answer=f"The AW-3 costs $179 per unit (source: {page})"),
    )
    return page


@pytest.mark.parametrize("sandbox", ["local", pytest.param("docker", marks=pytest.mark.docker)])
async def test_marketing_delegates_research_and_shows_nested_steps_and_sources(tmp_path, model_server, search, sandbox):
    """The sandboxed code calls web_research through the tool bridge; the sub-agent and its tools run on the host."""
    (tmp_path / "departments.toml").write_text(COMPANY)
    settings = make_settings(tmp_path, model_server.base_url, sandbox=sandbox, config_path=tmp_path / "departments.toml")
    if sandbox == "docker":
        require_docker_sandbox(settings)
    receiver = OtlpReceiver().__enter__()
    settings = dataclasses.replace(settings, otlp_endpoint=receiver.url)
    setup_tracing(settings)
    try:
        page = script_research(model_server, search)
        replier = await ask(settings, "marketing: competitor check qx41: what does the Airwise AW-3 cost?")
        assert flush_tracing(10)
        spans = receiver.wait_for(lambda spans: any(s.name == "web_research.run" for s in spans))
    finally:
        shutdown_tracing()
        receiver.__exit__()

    assert replier.errors == []
    assert replier.answer.text.startswith("Airwise sells the AW-3 at $179 per unit.")
    where = [(s.where, s.step_number, s.title) for s in replier.steps]
    assert where == [
        ("marketing › web_research", 1, "searching “Airwise AW-3 price”"),
        ("marketing › web_research", 2, f"visiting {page}"),
        ("marketing › web_research", 3, "Final answer"),
        ("marketing", 1, "I will ask web_research about the competitor"),
        ("marketing", 2, "Final answer"),
    ]
    assert "$179 per unit" in replier.steps[1].observation  # the page, fetched on the host
    assert any(q.get("q") == "Airwise AW-3 price" for q in search.queries)
    assert page in {s.url for s in replier.steps[1].sources}
    assert page in {s.url for s in replier.answer.sources}
    assert len({s.url for s in replier.answer.sources}) == len(replier.answer.sources)
    # The sub-agent's run span sits under the marketing agent's step, in the request's trace.
    by_id = {s.span_id: s for s in spans}
    sub_run = next(s for s in spans if s.name == "web_research.run")
    chain, parent = [], sub_run.parent_id
    while parent in by_id:
        chain.append(by_id[parent].name)
        parent = by_id[parent].parent_id
    assert "Step 1" in chain and "marketing_agent.run" in chain, chain
    assert any(s.name == "Step 2" and s.parent_id == sub_run.span_id for s in spans)


@pytest.mark.docker
async def test_a_sub_agent_slower_than_the_callers_step_timeout_still_reports(tmp_path, model_server, search):
    """Real models take 20-30 s per sub-agent step: the caller's step deadline must not cut the sub-agent off."""
    (tmp_path / "departments.toml").write_text(COMPANY.replace("step_timeout_s = 20", "step_timeout_s = 3"))
    settings = make_settings(tmp_path, model_server.base_url, sandbox="docker", config_path=tmp_path / "departments.toml")
    require_docker_sandbox(settings)
    page = f"{search.base_url}/pages/airwise-aw3-launch"
    model_server.model.script(
        "slow research qx46",
        code_reply('report = web_research(task="Find the launch price of the Airwise AW-3 qx47")\nprint(report)'),
        code_reply('final_answer("Research says: " + report)'),
    )
    model_server.model.script(
        "Airwise AW-3 qx47",
        tool_reply("web_search", query="Airwise AW-3 price"),
        tool_reply("visit_webpage", url=page),
        tool_reply("final_answer", answer=f"The AW-3 costs $179 per unit (source: {page})"),
        delay_s=1.5,
    )
    replier = await ask(settings, "marketing: slow research qx46: what does the AW-3 cost?")
    assert replier.errors == []
    assert replier.answer.text == f"Research says: The AW-3 costs $179 per unit (source: {page})"


def llama_text_call(name: str, **arguments) -> str:
    """A tool call as llama-cpp-python's server returns it without native tool calls, as Qwen2.5-Coder-1.5B wrote
    it: the `<tools>` list its chat template showed it, echoed, then the call in an `<action>` block, then the rest
    of the run it imagined (a made-up final answer)."""
    schemas = "\n".join(json.dumps({"type": "function", "function": {"name": tool, "parameters": {}}})
                        for tool in ("web_search", "visit_webpage", "final_answer"))
    call = json.dumps({"name": name, "arguments": arguments}, indent=2)
    imagined = json.dumps({"name": "final_answer", "arguments": {"answer": "INVENTED: it costs $199"}})
    return f"<tools>\n{schemas}\n</tools>\n\n<action>\n{call}\n</action>\n{imagined}\nFinal answer: INVENTED"


async def test_a_sub_agent_whose_server_returns_tool_calls_as_text_still_researches(tmp_path, model_server, search):
    (tmp_path / "departments.toml").write_text(COMPANY)
    page = f"{search.base_url}/pages/airwise-aw3-launch"
    model_server.model.script(
        "text calls qx48",
        code_reply('report = web_research(task="Find the launch price of the Airwise AW-3 qx49")\nprint(report)'),
        code_reply('final_answer("Research says: " + report)'),
    )
    model_server.model.script(
        "Airwise AW-3 qx49",
        llama_text_call("web_search", query="Airwise AW-3 price"),
        llama_text_call("visit_webpage", url=page),
        llama_text_call("final_answer", answer=f"The AW-3 costs $179 per unit (source: {page})"),
    )
    settings = make_settings(tmp_path, model_server.base_url, sandbox="local", config_path=tmp_path / "departments.toml")
    replier = await ask(settings, "marketing: text calls qx48: what does the AW-3 cost?")
    assert replier.errors == []
    assert [(s.where, s.title, s.error) for s in replier.steps[:3]] == [
        ("marketing › web_research", "searching “Airwise AW-3 price”", None),
        ("marketing › web_research", f"visiting {page}", None),
        ("marketing › web_research", "Final answer", None),
    ]
    assert "$179 per unit" in replier.steps[1].observation
    assert replier.answer.text == f"Research says: The AW-3 costs $179 per unit (source: {page})"
    # what the model imagined after the call it made never reaches its next prompt (it would copy the answer)
    sub_agent = [r for r in model_server.model.requests if "by calling tools" in json.dumps(r["messages"][0])]
    later = sub_agent[1:]
    assert len(later) == 2 and not any("INVENTED" in json.dumps(r) for r in later)


async def test_code_that_imports_requests_is_pointed_at_the_web_sub_agent(tmp_path, model_server, search):
    """Small models write `import requests` for a web question; the note names the sub-agent they do have."""
    (tmp_path / "departments.toml").write_text(COMPANY)
    model_server.model.script(
        "online qx50",
        code_reply('import requests\nprint(requests.get("https://sensora.example").text'),  # a syntax error too
        code_reply('import requests\nprint(requests.get("https://sensora.example").text)'),
        code_reply('final_answer(web_research(task="How much did Sensora raise in its Series C? qx51"))'),
    )
    model_server.model.script("Series C? qx51", tool_reply("final_answer", answer="Sensora raised $40 million."))
    settings = make_settings(tmp_path, model_server.base_url, sandbox="local", config_path=tmp_path / "departments.toml")
    replier = await ask(settings, "marketing: online qx50: how much did Sensora raise?")
    assert replier.errors == [] and replier.answer.text == "Sensora raised $40 million."
    # Code that fails to parse never reaches the import check; it gets the note all the same.
    assert "SyntaxError" in replier.steps[0].error and "no internet access" in replier.steps[0].error
    assert "Import of requests is not allowed" in replier.steps[1].error
    assert "no internet access" in replier.steps[1].error  # the person sees why, too
    retry = next(r for r in model_server.model.requests if "online qx50" in json.dumps(r) and len(r["messages"]) > 2)
    assert 'write report = web_research(task="the whole question")' in str(retry["messages"][-1]["content"])


async def test_a_code_sub_agent_runs_in_its_own_sandbox_as_the_caller(tmp_path, model_server):
    (tmp_path / "departments.toml").write_text(COMPANY.replace('managed_agents = ["web_research"]',
                                                               'managed_agents = ["web_research", "analyst"]') + textwrap.dedent(
        """
        [agents.analyst]
        kind = "code"
        description = "Runs Python to analyse numbers"
        tools = ["tests.company_tools:whoami"]
        max_steps = 2
        """))
    model_server.model.script(
        "delegate code qx44",
        code_reply('print(analyst(task="Say who asked and where you run qx45"))'),
        code_reply('final_answer("done")'),
    )
    model_server.model.script("where you run qx45", code_reply('final_answer("asked by " + whoami())'))
    settings = make_settings(tmp_path, model_server.base_url, sandbox="local", config_path=tmp_path / "departments.toml")
    runner = TaskRunner(settings)
    acquired = []
    original = runner.sandboxes.acquire

    def acquire(**kwargs):
        acquired.append(original(**kwargs))
        return acquired[-1]

    runner.sandboxes.acquire = acquire
    await runner.start()
    replier = RecordingReplier()
    try:
        await runner.handle(chat_request("marketing: delegate code qx44", user="U_CARLA"), replier)
    finally:
        await runner.close()
    assert replier.errors == []
    sub, parent = replier.steps[0], replier.steps[1]
    assert sub.where == "marketing › analyst" and sub.code == 'final_answer("asked by " + whoami())'
    assert parent.where == "marketing" and "asked by U_CARLA" in parent.observation
    assert len({id(s) for s in acquired}) == 2  # the sub-agent's code ran in a sandbox of its own


async def test_a_tool_calling_department_runs_no_code(tmp_path, model_server):
    (tmp_path / "departments.toml").write_text(COMPANY)
    model_server.model.script(
        "parental leave qx42",
        tool_reply("search_policies", query="parental leave weeks"),
        tool_reply("final_answer", answer="The Parental Leave policy gives 26 weeks."),
    )
    settings = make_settings(tmp_path, model_server.base_url, sandbox="local", config_path=tmp_path / "departments.toml")
    replier = await ask(settings, "hr: parental leave qx42 - how long?")
    assert replier.errors == []
    assert replier.answer.text == "The Parental Leave policy gives 26 weeks."
    assert replier.steps[0].title == "calling search_policies" and replier.steps[0].code is None
    assert "Parental Leave" in replier.steps[0].observation
    assert any("Parental Leave" in s.title for s in replier.answer.sources)
    request = model_server.model.requests[0]
    assert {t["function"]["name"] for t in request["tools"]} == {"search_policies", "leave_balance", "final_answer"}


@pytest.mark.parametrize("flatten", ["auto", "1"])
async def test_a_strict_server_that_rejects_part_lists_is_answered_after_flattening(tmp_path, flatten):
    (tmp_path / "departments.toml").write_text(COMPANY)
    refused = frozenset({"temperature", "max_tokens", "stop"})
    with ModelServer(ScriptedModel(strict=True, refuse_params=refused)) as server:
        server.model.script("strict server qx43", code_reply('final_answer(campaign_summary("channel")[0]["channel"])'))
        settings = make_settings(tmp_path, server.base_url, sandbox="local", config_path=tmp_path / "departments.toml",
                                 model_flatten_messages=flatten, model_temperature=0.2, model_max_retries=0,
                                 model_max_tokens=300,
                                 model_id=f"strict-{flatten}")
        replier = await ask(settings, "marketing: strict server qx43, top channel?")
        again = await ask(settings, "marketing: strict server qx43, again?", thread="1700000000.000200")
        answered = [r for r in server.model.requests if r not in server.model.refused]
    assert replier.errors == [] and again.errors == []
    assert replier.answer.text == again.answer.text != ""
    assert all(isinstance(m["content"], str) for r in answered for m in r["messages"])
    assert all(refused.isdisjoint(r) and r["max_completion_tokens"] == 300 for r in answered)
    # Text-only conversations never go out as part lists (auto flattens them losslessly, like =1), and each
    # refused parameter costs one refusal per endpoint, then none.
    assert not any(isinstance(m["content"], list) for r in server.model.refused for m in r["messages"])
    assert [min(refused & set(r)) for r in server.model.refused] == ["max_tokens", "stop", "temperature"]
    assert {NO_TEMPERATURE, MAX_COMPLETION_TOKENS, NO_STOP} <= _learned(server.base_url, f"strict-{flatten}")


def _learned(base_url: str, model_id: str) -> set[str]:
    from agents import models

    return models._LEARNED[(base_url, model_id)]
