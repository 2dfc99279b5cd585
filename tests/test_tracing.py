"""Tracing end to end: the real runner and smolagents' agent loop, spans exported over real OTLP/HTTP.

The receiver (tests/standins/otlp_receiver.py) decodes the protobuf the way a backend does, so these check
what an operator would see in Phoenix or Langfuse: one trace per request, the platform span as its root,
openinference's agent/LLM/tool spans beneath it, and no secret, PII or oversized value in any attribute.
"""
from __future__ import annotations

import io
import json
import logging
import socket
import textwrap
import time

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, Status, StatusCode

from agents import metrics, telemetry
from agents.runner import TaskRunner
from agents.security import Redactor
from agents.telemetry import (
    HIDDEN,
    VALUE_LIMIT,
    ContentPolicy,
    flush_tracing,
    request_span,
    setup_logging,
    setup_tracing,
    shutdown_tracing,
    tool_span,
    trace_link,
    traces_endpoint,
)
from tests.standins.model_server import code_reply
from tests.standins.otlp_receiver import OtlpReceiver
from tests.support import RecordingReplier, chat_request, make_settings

COMPANY = textwrap.dedent(
    """
    [departments.hr]
    description = "Leave, benefits and HR policy"
    tools = ["tests.company_tools:whoami"]
    authorized_imports = ["math"]
    max_steps = 3
    step_timeout_s = 5
    """
)
SLACK_TOKEN = "xoxb-1234567890-planted-token"
PII_IN_CODE = "EMP-123456"
PII_IN_MESSAGE = "EMP-654321"
MODEL_KEY = "sk-test-model-key-do-not-leak"  # make_settings' model_api_key


@pytest.fixture
def receiver():
    with OtlpReceiver() as rx:
        yield rx


@pytest.fixture(autouse=True)
def tracing_reset(monkeypatch):
    """Each test builds its own pipeline; none leaks into the next (or into other test files)."""
    monkeypatch.setenv("AGENTDESK_PII_PATTERNS", r"EMP-\d{6}")
    yield
    shutdown_tracing()


@pytest.fixture
def company_file(tmp_path):
    path = tmp_path / "departments.toml"
    path.write_text(COMPANY)
    return path


async def run_request(settings, text: str, **request_fields) -> tuple[RecordingReplier, float]:
    """One request through the real runner under a Slack root span; (replier, seconds taken)."""
    runner = TaskRunner(settings)
    await runner.start()
    replier = RecordingReplier()
    request = chat_request(text, **request_fields)
    try:
        started = time.monotonic()
        with request_span("slack.event", request, **{"slack.event_type": "app_mention"}):
            await runner.handle(request, replier)
        elapsed = time.monotonic() - started
    finally:
        await runner.close()
    return replier, elapsed


def script_leaky_run(model_server, marker: str) -> None:
    """Two steps: a tool call and code that prints a Slack token, the model key and PII; then an answer."""
    model_server.model.script(
        marker,
        code_reply(f"me = whoami()\nprint('token {SLACK_TOKEN} key {MODEL_KEY} id {PII_IN_CODE}')",
                   "I will look up who is asking."),
        code_reply(f'final_answer("done for " + me + " {SLACK_TOKEN}")'),
    )


def exported_trace(receiver: OtlpReceiver, root_name: str = "slack.event") -> list:
    """Flush, then wait until the receiver has the request's root span (it ends last)."""
    assert flush_tracing(10)
    return receiver.wait_for(lambda spans: any(s.name == root_name for s in spans))


def ancestors(span, spans) -> list:
    by_id = {s.span_id: s for s in spans}
    chain, parent = [], span.parent_id
    while parent in by_id:
        chain.append(by_id[parent])
        parent = by_id[parent].parent_id
    return chain


def kind(span) -> str | None:
    return span.attributes.get("openinference.span.kind")


def all_strings(spans) -> list[str]:
    return [text for s in spans for text in s.strings()]


async def test_one_trace_per_request_with_agent_llm_and_tool_spans_and_no_secrets(
        tmp_path, model_server, company_file, receiver):
    settings = make_settings(tmp_path, model_server.base_url, sandbox="local", config_path=company_file,
                             otlp_endpoint=receiver.url, trace_content="redacted")
    setup_tracing(settings)
    script_leaky_run(model_server, "unique text qz17")
    replier, _ = await run_request(settings, f"hr: unique text qz17, my id is {PII_IN_MESSAGE}",
                                   user="U_ALICE", user_name="Alice Example")
    assert replier.errors == []
    assert replier.answer.trace_id

    spans = exported_trace(receiver)
    assert {s.trace_id for s in spans} == {replier.answer.trace_id}
    roots = [s for s in spans if s.parent_id is None]
    assert [r.name for r in roots] == ["slack.event"]
    root = roots[0]
    assert root.attributes["agentdesk.platform"] == "slack"
    assert root.attributes["agentdesk.department"] == "hr"
    assert root.attributes["agentdesk.user_hash"] == chat_request("x", user="U_ALICE").caller.hashed_user
    assert "enduser.id" not in root.attributes
    assert root.resource["service.name"] == "agentdesk"
    assert root.resource["service.version"]

    # Admission (route) where the request arrived; the run under the task span the worker opens, in the
    # same trace (the context travels with the queued task).
    assert [s.parent_id for s in spans if s.name == "agentdesk.route"] == [root.span_id]
    tasks = [s for s in spans if s.name == "agentdesk.task"]
    assert len(tasks) == 1 and tasks[0].parent_id == root.span_id
    for name in ("agentdesk.sandbox.acquire", "agentdesk.attachments"):
        assert [s.parent_id for s in spans if s.name == name] == [tasks[0].span_id], name
    agents = [s for s in spans if kind(s) == "AGENT"]
    assert len(agents) == 1 and agents[0].parent_id == tasks[0].span_id
    agent = agents[0]
    assert agent.attributes["llm.token_count.total"] == 300
    llms = [s for s in spans if kind(s) == "LLM"]
    assert len(llms) == 2
    for llm in llms:
        assert agent in ancestors(llm, spans)
        assert llm.attributes["llm.token_count.prompt"] == 120
        assert llm.attributes["llm.token_count.completion"] == 30
        assert llm.attributes["session.id"] == root.attributes["session.id"]
    tools = [s for s in spans if kind(s) == "TOOL" and s.attributes.get("tool.name") == "whoami"]
    assert tools and agent in ancestors(tools[0], spans)

    strings = all_strings(spans)
    assert any("unique text qz17" in text for text in strings), "redacted mode keeps the content"
    assert any("[redacted]" in text for text in strings)
    for secret in (SLACK_TOKEN, MODEL_KEY, PII_IN_CODE, PII_IN_MESSAGE, "U_ALICE", "Alice Example"):
        leaks = [text[:120] for text in strings if secret in text]
        assert not leaks, f"{secret} leaked into spans: {leaks}"
    assert max(len(text) for text in strings) <= VALUE_LIMIT
    assert SLACK_TOKEN not in replier.answer.text


async def test_full_mode_keeps_content_but_still_redacts_and_caps_the_agent_output(
        tmp_path, model_server, company_file, receiver):
    settings = make_settings(tmp_path, model_server.base_url, sandbox="local", config_path=company_file,
                             otlp_endpoint=receiver.url, trace_content="full")
    setup_tracing(settings)
    model_server.model.script(
        "print a lot please",
        code_reply(f"blob = 'abcdefghij' * 3000\nprint(blob)\nprint('{SLACK_TOKEN}')"),
        code_reply('final_answer("the blob is printed")'),
    )
    replier, _ = await run_request(settings, "hr: print a lot please", user="U_ALICE")
    assert replier.answer.text == "the blob is printed"

    spans = exported_trace(receiver)
    root = next(s for s in spans if s.parent_id is None)
    assert root.attributes["enduser.id"] == "U_ALICE"
    agent = next(s for s in spans if kind(s) == "AGENT")
    assert agent.attributes["output.value"] == "'the blob is printed'"
    strings = all_strings(spans)
    assert any("abcdefghij" * 10 in text for text in strings)
    assert max(len(text) for text in strings) <= VALUE_LIMIT
    assert any(text.endswith("[truncated]") for text in strings)
    assert not [text for text in strings if SLACK_TOKEN in text or MODEL_KEY in text]


async def test_off_mode_exports_structure_and_tokens_but_no_content(tmp_path, model_server, company_file, receiver):
    settings = make_settings(tmp_path, model_server.base_url, sandbox="local", config_path=company_file,
                             otlp_endpoint=receiver.url, trace_content="off")
    setup_tracing(settings)
    script_leaky_run(model_server, "secret plan zz42")
    replier, _ = await run_request(settings, "hr: secret plan zz42")
    assert replier.errors == []

    spans = exported_trace(receiver)
    llms = [s for s in spans if kind(s) == "LLM"]
    assert len(llms) == 2 and all(s.attributes["llm.token_count.total"] == 150 for s in llms)
    agent = next(s for s in spans if kind(s) == "AGENT")
    assert agent.attributes["output.value"] == HIDDEN
    assert not [k for s in spans for k in s.attributes if k.startswith(("llm.input_messages", "llm.output_messages"))]
    strings = all_strings(spans)
    for content in ("secret plan zz42", "whoami()", "final_answer(", "done for", "Leave, benefits"):
        assert not [text for text in strings if content in text], content


async def test_receiver_down_the_request_is_answered_without_delay(tmp_path, model_server, company_file):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    model_server.model.script("timing check", code_reply('final_answer("on time")'))

    base = make_settings(tmp_path, model_server.base_url, sandbox="local", config_path=company_file)
    setup_tracing(base)
    quiet, without_tracing = await run_request(base, "hr: timing check", thread="1.1")

    dead = make_settings(tmp_path, model_server.base_url, sandbox="local", config_path=company_file,
                         otlp_endpoint=f"http://127.0.0.1:{dead_port}")
    assert setup_tracing(dead) is not None
    answered, with_dead_receiver = await run_request(dead, "hr: timing check", thread="1.2")

    assert quiet.answer.text == answered.answer.text == "on time"
    assert answered.answer.trace_id  # traced, just not delivered
    # Export runs in the batch thread: the request must not wait for it (generous bound, no flaky timing).
    assert with_dead_receiver < without_tracing * 3 + 2.0
    started = time.monotonic()
    shutdown_tracing(timeout_s=1)  # the bot's exit is bounded too, though nothing was delivered
    assert time.monotonic() - started < 5


async def test_otlp_headers_resource_and_endpoint_come_from_the_standard_variables(monkeypatch, tmp_path, receiver):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Basic%20cGs6c2s=,x-extra=1")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=support,openinference.project.name=agentdesk")
    monkeypatch.setenv("AGENTDESK_ENVIRONMENT", "staging")
    settings = make_settings(tmp_path, None, otlp_endpoint=receiver.url, service_name="desk-test")
    setup_tracing(settings)
    with request_span("terminal.ask", chat_request("hello", platform="terminal")):
        pass
    assert flush_tracing(10)
    spans = receiver.wait_for(lambda spans: len(spans) == 1)
    assert receiver.headers[0]["authorization"] == "Basic cGs6c2s="
    assert receiver.headers[0]["x-extra"] == "1"
    resource = spans[0].resource
    assert resource["service.name"] == "desk-test"
    assert resource["deployment.environment"] == "staging"
    assert resource["team"] == "support"
    assert resource["openinference.project.name"] == "agentdesk"


def test_endpoint_rules(monkeypatch, tmp_path):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert traces_endpoint(make_settings(tmp_path, None, otlp_endpoint="http://phoenix:6006")) == \
        "http://phoenix:6006/v1/traces"
    assert traces_endpoint(make_settings(tmp_path, None, otlp_endpoint="https://cloud.langfuse.com/api/public/otel/")) \
        == "https://cloud.langfuse.com/api/public/otel/v1/traces"
    assert traces_endpoint(make_settings(tmp_path, None, otlp_endpoint="http://c:4318/v1/traces")) == \
        "http://c:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/custom")
    assert traces_endpoint(make_settings(tmp_path, None, otlp_endpoint="http://c:4318/custom")) == "http://c:4318/custom"
    assert traces_endpoint(make_settings(tmp_path, None, otlp_endpoint=None)) is None


def test_grpc_without_its_exporter_says_what_to_do(monkeypatch, tmp_path, caplog):
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    import importlib.util

    if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is not None:
        pytest.skip("the gRPC exporter is installed here")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with caplog.at_level(logging.ERROR, logger="agentdesk.telemetry"):
        assert setup_tracing(make_settings(tmp_path, None, otlp_endpoint="http://127.0.0.1:4317")) is None
    assert "agentdesk[grpc]" in caplog.text


def test_without_an_endpoint_nothing_is_installed(tmp_path):
    from openinference.instrumentation.smolagents import SmolagentsInstrumentor

    assert setup_tracing(make_settings(tmp_path, None, otlp_endpoint=None)) is None
    assert not SmolagentsInstrumentor().is_instrumented_by_opentelemetry
    with request_span("slack.event", chat_request("hi")) as span:
        assert not span.is_recording()
        assert telemetry.current_trace_id() is None


def test_setup_is_idempotent_and_never_double_wraps_smolagents(tmp_path, model_server):
    """Re-setup with other modes must leave exactly one AGENT span and one LLM span per model call."""
    from smolagents import CodeAgent

    from agents.models import build_model

    settings = make_settings(tmp_path, model_server.base_url)
    for mode in ("full", "off", "redacted", "full"):
        setup_tracing(make_settings(tmp_path, model_server.base_url, trace_content=mode), exporter=InMemorySpanExporter())
    setup_tracing(make_settings(tmp_path, None, otlp_endpoint=None))
    setup_tracing(make_settings(tmp_path, model_server.base_url, trace_content="full"), exporter=InMemorySpanExporter())
    exporter = InMemorySpanExporter()  # same mode again: a new provider, the instrumentation untouched
    provider = setup_tracing(make_settings(tmp_path, model_server.base_url, trace_content="full"), exporter=exporter)
    assert provider is not None
    model_server.model.script("idempotent check", code_reply('final_answer("once")'))
    agent = CodeAgent(tools=[], model=build_model(settings), max_steps=2)
    with telemetry.tracer.start_as_current_span("root"):
        assert agent.run("idempotent check") == "once"
    assert flush_tracing(10)
    spans = exporter.get_finished_spans()
    kinds = [s.attributes.get("openinference.span.kind") for s in spans]
    assert kinds.count("AGENT") == 1
    assert kinds.count("LLM") == 1
    assert len({s.context.trace_id for s in spans}) == 1


def test_policy_covers_events_status_sequences_and_caps(monkeypatch):
    policy = ContentPolicy("redacted", Redactor(["hunter2-secret"]))
    ctx = SpanContext(1, 2, is_remote=False)
    span = ReadableSpan(
        name="x", context=ctx,
        attributes={"input.value": "pw hunter2-secret mail a.b@example.com", "tags": ["ok", "xoxb-999999999999"],
                    "llm.token_count.total": 5, "big": "y" * 50_000},
        events=[Event("exception", {"exception.type": "ValueError",
                                    "exception.message": "bad token xoxp-123456789012"})],
        status=Status(StatusCode.ERROR, "ValueError: hunter2-secret"),
    )
    clean = policy.rewrite(span)
    assert clean.attributes["input.value"] == "pw [redacted] mail [redacted]"
    assert clean.attributes["tags"] == ("ok", "[redacted]")
    assert clean.attributes["llm.token_count.total"] == 5
    assert len(clean.attributes["big"]) == VALUE_LIMIT
    assert clean.events[0].attributes["exception.message"] == "bad token [redacted]"
    assert clean.status.description == "ValueError: [redacted]"

    hidden = ContentPolicy("off", Redactor()).rewrite(span)
    assert hidden.attributes["input.value"] == HIDDEN
    assert dict(hidden.events[0].attributes) == {"exception.type": "ValueError"}
    assert hidden.status.description == "ValueError"


def test_tool_span_nests_records_and_counts(tmp_path):
    exporter = InMemorySpanExporter()
    setup_tracing(make_settings(tmp_path, None, trace_content="redacted"), exporter=exporter)
    before = metrics.TOOL_CALLS.labels("leave_balance", "error")._value.get()
    with telemetry.tracer.start_as_current_span("Step 1"):
        with tool_span("leave_balance", {"year": 2025, "token": SLACK_TOKEN}) as span:
            telemetry.set_output(span, {"days": 12})
        with pytest.raises(KeyError):
            with tool_span("leave_balance", {"year": 1999}):
                raise KeyError("no data")
    assert flush_tracing(10)
    spans = {s.name: s for s in exporter.get_finished_spans() if s.name == "Step 1"}
    tool_spans = [s for s in exporter.get_finished_spans() if s.name == "tool leave_balance"]
    assert len(tool_spans) == 2
    assert all(s.parent.span_id == spans["Step 1"].context.span_id for s in tool_spans)
    ok, failed = tool_spans
    assert json.loads(ok.attributes["input.value"]) == {"year": 2025, "token": "[redacted]"}
    assert ok.attributes["output.value"] == '{"days": 12}'
    assert failed.status.status_code is StatusCode.ERROR
    assert metrics.TOOL_CALLS.labels("leave_balance", "error")._value.get() == before + 1


def test_trace_link():
    from agents.settings import Settings

    tid = "0af7651916cd43dd8448eb211c80319c"
    assert trace_link(tid, Settings(trace_url_template="http://localhost:6006/projects/UHJvamVjdDox/traces/{trace_id}")) \
        == f"http://localhost:6006/projects/UHJvamVjdDox/traces/{tid}"
    assert trace_link(tid, Settings(trace_url_template=None)) is None
    assert trace_link(None, Settings(trace_url_template="http://x/{trace_id}")) is None
    assert trace_link(tid, Settings(trace_url_template="http://x/no-placeholder")) is None


def test_logs_are_json_lines_with_trace_ids_and_no_secrets(tmp_path):
    settings = make_settings(tmp_path, None, slack_bot_token="xoxb-live-bot-token-0001")
    setup_tracing(settings, exporter=InMemorySpanExporter())
    stream = io.StringIO()
    handler = setup_logging(json_lines=True, stream=stream)
    try:
        log = logging.getLogger("agentdesk.test")
        with telemetry.tracer.start_as_current_span("work") as span:
            log.warning("calling Slack with %s for %s", "xoxb-live-bot-token-0001", "EMP-111111")
        log.info("outside any span")
        try:
            raise RuntimeError(f"failed with {MODEL_KEY}")
        except RuntimeError:
            log.exception("boom")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    first = lines[0]
    assert first["level"] == "warning" and first["logger"] == "agentdesk.test"
    assert first["msg"] == "calling Slack with [redacted] for [redacted]"
    assert first["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert first["span_id"] == format(span.get_span_context().span_id, "016x")
    assert "trace_id" not in lines[1]
    assert MODEL_KEY not in stream.getvalue() and "xoxb-live" not in stream.getvalue()
    assert "RuntimeError" in lines[2]["exc"]


def test_key_value_logs_for_terminals():
    stream = io.StringIO()
    handler = setup_logging(json_lines=False, stream=stream)
    try:
        with trace.get_tracer("t").start_as_current_span("s"):
            logging.getLogger("agentdesk.kv").info("hello %s", "there")
    finally:
        logging.getLogger().removeHandler(handler)
    assert " INFO agentdesk.kv hello there" in stream.getvalue()


def assert_one_rooted_trace(spans, root_name: str, platform: str) -> None:
    """One trace, `root_name` its only root, the agent and its LLM calls (with tokens) beneath it."""
    assert len({s.trace_id for s in spans}) == 1
    roots = [s for s in spans if s.parent_id is None]
    assert [r.name for r in roots] == [root_name]
    root = roots[0]
    assert root.attributes["agentdesk.platform"] == platform
    assert root.attributes["agentdesk.department"] == "hr"
    agent = next(s for s in spans if kind(s) == "AGENT")
    assert root in ancestors(agent, spans)
    llms = [s for s in spans if kind(s) == "LLM"]
    assert llms and all(agent in ancestors(s, spans) and s.attributes["llm.token_count.total"] == 150 for s in llms)
    assert [s.parent_id for s in spans if s.name == "agentdesk.route"] == [root.span_id]
    task = next(s for s in spans if s.name == "agentdesk.task")
    assert task.parent_id == root.span_id
    assert [s.parent_id for s in spans if s.name == "agentdesk.sandbox.acquire"] == [task.span_id]


async def test_slack_mention_over_http_is_one_trace_rooted_at_the_slack_event(tmp_path, model_server, receiver):
    from tests.standins.slack_api import SECRET, TOKEN, SlackAPI, mention, running_bot

    model_server.model.script("traced slack question",
                              code_reply(f"print('leaking {TOKEN} and {PII_IN_CODE}')"),
                              code_reply('final_answer("slack traced")'))
    async with SlackAPI(TOKEN) as slack:
        async with running_bot(tmp_path, model_server, slack, otlp_endpoint=receiver.url) as bot:
            setup_tracing(bot.settings)
            event = mention("hr: traced slack question")
            assert (await bot.events.event(event))[0] == 200
            await slack.wait_for(lambda: [m for m in slack.thread("C0GENERAL", event["ts"])
                                          if "slack traced" in m.text], what="final answer")
            await bot.drain()
    spans = exported_trace(receiver)
    assert_one_rooted_trace(spans, "slack.event", "slack")
    root = next(s for s in spans if s.parent_id is None)
    assert root.attributes["agentdesk.channel"] == "C0GENERAL"
    assert root.attributes["agentdesk.thread"] == event["ts"]
    strings = all_strings(spans)
    for secret in (TOKEN, SECRET, MODEL_KEY, PII_IN_CODE, "U0ALICE"):
        assert not [text for text in strings if secret in text], secret


async def test_teams_message_over_http_is_one_trace_rooted_at_the_activity(tmp_path, model_server, monkeypatch,
                                                                          receiver):
    from tests.standins.teams_connector import TeamsConnector, personal_message
    from tests.test_teams import running_bot

    model_server.model.script("traced teams question", code_reply('final_answer("teams traced")'))
    settings = make_settings(tmp_path, model_server.base_url, otlp_endpoint=receiver.url)
    setup_tracing(settings)
    async with TeamsConnector() as connector:
        async with running_bot(tmp_path, model_server, monkeypatch, otlp_endpoint=receiver.url) as bot:
            body = personal_message(connector.service_url, "hr: traced teams question")
            status, _, _ = await bot.post(body)
            assert status in (200, 201)
            conversation = body["conversation"]["id"]
            await connector.wait_for(lambda: [c for c in connector.messages(conversation) if "teams traced" in c.text],
                                     what="final answer")
            await bot.drain()
    spans = exported_trace(receiver, "teams.activity")
    assert_one_rooted_trace(spans, "teams.activity", "teams")
