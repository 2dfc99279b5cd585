"""Faults an operator meets: the Docker engine or the sandbox image gone (and back), the model endpoint
failing, the bot killed in the middle of a task. Each must end in a clear message in the thread, an
honest /readyz, and recovery without a restart when the dependency returns.

(The OTLP backend being down is covered by tests/test_tracing.py::test_receiver_down_...)
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import aiohttp
import docker
import pytest

from agents.runner import TaskRunner
from bots.server import create_app
from tests.sandbox_support import require_docker_sandbox, sandbox_settings
from tests.standins.model_server import code_reply
from tests.support import RecordingReplier, chat_request, make_settings, serve

COMPANY = textwrap.dedent(
    """
    [departments.hr]
    description = "Leave, benefits and HR policy"
    tools = []
    max_steps = 2
    step_timeout_s = 20
    """
)
UNAVAILABLE = ("I can't run code right now because the code sandbox is unavailable. The people who run this "
               "bot have been told; please try again later.")


@pytest.fixture
def company_file(tmp_path):
    path = tmp_path / "departments.toml"
    path.write_text(COMPANY)
    return path


@pytest.fixture(scope="module")
def docker_ready(tmp_path_factory):
    require_docker_sandbox(sandbox_settings(tmp_path_factory.mktemp("probe")))


async def ask(runner: TaskRunner, text: str, **kw) -> RecordingReplier:
    replier = RecordingReplier()
    await runner.handle(chat_request(text, **kw), replier)
    return replier


async def readyz(runner: TaskRunner) -> tuple[int, dict]:
    """GET /readyz of the bot's real app (create_app) served on 127.0.0.1."""
    app = create_app(runner.settings, runner, start_runner=False)
    async with serve(app) as url, aiohttp.ClientSession() as session:
        async with session.get(f"{url}/readyz") as resp:
            return resp.status, await resp.json()


# -- the sandbox's dependencies --------------------------------------------------------------------------


@pytest.mark.docker
async def test_docker_engine_unreachable_then_back(tmp_path, model_server, company_file, monkeypatch, docker_ready):
    model_server.model.script("engine check", code_reply("final_answer('sandbox answered')"))
    closed = tmp_path / "no-dockerd.sock"  # a socket path nothing listens on
    real_host = os.environ.get("DOCKER_HOST")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{closed}")
    settings = make_settings(tmp_path, model_server.base_url, sandbox="docker", config_path=company_file,
                             sandbox_pool_size=0)
    runner = TaskRunner(settings)
    await runner.start()  # must not raise: the bot starts and says what is wrong
    try:
        ready, why = await runner.ready()
        assert not ready and f"Docker engine not reachable at unix://{closed}" in why and "DOCKER_HOST" in why
        status, body = await readyz(runner)
        assert status == 503 and body["ready"] is False and "not reachable" in body["detail"]

        down = await ask(runner, "hr: engine check", thread="1.1")
        assert down.finals == [] and down.errors == [UNAVAILABLE]

        if real_host is None:  # the engine "comes back": same runner, no restart
            monkeypatch.delenv("DOCKER_HOST")
        else:
            monkeypatch.setenv("DOCKER_HOST", real_host)
        ready, why = await runner.ready()
        assert ready, why
        assert (await readyz(runner))[0] == 200
        back = await ask(runner, "hr: engine check", thread="1.2")
        assert back.errors == [] and back.answer.text == "sandbox answered"
    finally:
        await runner.close()


@pytest.mark.docker
async def test_sandbox_image_missing_then_built(tmp_path, model_server, company_file, docker_ready):
    model_server.model.script("image check", code_reply("final_answer('image is back')"))
    base = sandbox_settings(tmp_path / "probe")
    missing = f"agentdesk-fault-test:{uuid.uuid4().hex[:8]}"
    settings = make_settings(tmp_path, model_server.base_url, sandbox="docker", config_path=company_file,
                             sandbox_image=missing, sandbox_pool_size=1)
    client = docker.from_env()
    runner = TaskRunner(settings)
    await runner.start()
    try:
        ready, why = await runner.ready()
        assert not ready and why == f"sandbox image {missing} missing: run `agentdesk sandbox build`"
        status, body = await readyz(runner)
        assert status == 503 and "agentdesk sandbox build" in body["detail"]
        gone = await ask(runner, "hr: image check", thread="2.1")
        assert gone.finals == [] and gone.errors == [UNAVAILABLE]

        repo, tag = missing.split(":")
        client.images.get(base.sandbox_image).tag(repo, tag)  # the operator builds the image
        ready, why = await runner.ready()
        assert ready, why
        back = await ask(runner, "hr: image check", thread="2.2")
        assert back.errors == [] and back.answer.text == "image is back"
    finally:
        await runner.close()
        try:
            client.images.remove(missing, noprune=True)
        except docker.errors.ImageNotFound:
            pass
        client.close()


# -- the model endpoint ----------------------------------------------------------------------------------


def task_requests(model_server, text: str) -> int:
    return sum(1 for r in model_server.model.requests if text in json.dumps(r))


async def test_model_429_and_5xx_are_retried_then_answered(tmp_path, model_server, company_file):
    model_server.model.script("flaky model", code_reply("final_answer('answered after retries')"))
    runner = TaskRunner(make_settings(tmp_path, model_server.base_url, sandbox="local", config_path=company_file,
                                      model_max_retries=2))
    await runner.start()
    try:
        model_server.model.fail_next(429, count=1)
        model_server.model.fail_next(502, count=1)
        replier = await ask(runner, "hr: flaky model")
    finally:
        await runner.close()
    assert replier.errors == [] and replier.answer.text == "answered after retries"
    assert len(model_server.model.requests) == 3  # 429, 502, then the answer
    assert model_server.model.faults == []


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_model_keeps_failing_gives_a_clear_message(tmp_path, model_server, company_file, status, caplog):
    runner = TaskRunner(make_settings(tmp_path, model_server.base_url, sandbox="local", config_path=company_file,
                                      model_max_retries=2))
    await runner.start()
    try:
        model_server.model.fail_next(status, count=50)
        replier = await ask(runner, "hr: is anyone there")
    finally:
        await runner.close()
    assert replier.finals == []
    assert replier.errors == ["The AI model didn't respond (it may be overloaded or unreachable) even after "
                              "retrying. Please try again in a minute."]
    assert len(model_server.model.requests) == 3  # one try and model_max_retries=2 retries, then it stops
    assert "model call failed" in caplog.text  # the operator's log says which dependency failed


async def test_model_timeout_is_retried_then_explained(tmp_path, model_server, company_file):
    model_server.model.script("hung model", code_reply("final_answer('too late')"), delay_s=3)
    runner = TaskRunner(make_settings(tmp_path, model_server.base_url, sandbox="local", config_path=company_file,
                                      model_max_retries=1, model_timeout_s=1.0))
    await runner.start()
    started = time.monotonic()
    try:
        replier = await ask(runner, "hr: hung model")
    finally:
        await runner.close()
    assert replier.finals == [] and "didn't respond" in replier.errors[0]
    assert task_requests(model_server, "hung model") == 2  # the first try and one retry
    assert time.monotonic() - started < 30


# -- the bot killed in the middle of a task --------------------------------------------------------------


def _running_tasks(db: Path) -> list[tuple]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        try:
            return conn.execute("SELECT key, value FROM records WHERE namespace='running'").fetchall()
        except sqlite3.OperationalError:
            return []


@pytest.mark.docker
def test_killed_mid_task_the_request_is_reported_after_restart(tmp_path, model_server, company_file, docker_ready):
    import asyncio

    model_server.model.script("long running question", code_reply("final_answer('never delivered')"), delay_s=60)
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLACK_", "TEAMS_", "MODEL_", "OTEL_", "AGENTDESK_", "SANDBOX"))}
    env.update(MODEL_API_BASE=model_server.base_url, MODEL_ID="scripted", MODEL_API_KEY="sk-test-fault-key-0123456789",
               AGENTDESK_DATA_DIR=str(data), AGENTDESK_CONFIG=str(company_file), SANDBOX="docker",
               SANDBOX_POOL_SIZE="1", HF_TOKEN="")
    bot = subprocess.Popen([sys.executable, "-m", "bots", "ask", "hr: long running question", "--thread", "t-42"],
                           cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while not (_running_tasks(data / "state.sqlite3") and task_requests(model_server, "long running question")):
            assert bot.poll() is None, bot.stdout.read().decode()
            assert time.monotonic() < deadline, "the task never started"
            time.sleep(0.1)  # polling another process's state, bounded by the deadline
        bot.send_signal(signal.SIGKILL)
        bot.wait(10)
    finally:
        if bot.poll() is None:
            bot.kill()
    assert bot.returncode == -signal.SIGKILL

    client = docker.from_env()
    try:
        left = client.api.containers(all=True, filters={"label": f"agentdesk.sandbox.pid={bot.pid}"})
        assert left, "expected the killed bot's sandbox container to be left behind (nothing to sweep?)"

        settings = make_settings(tmp_path, model_server.base_url, sandbox="docker", config_path=company_file,
                                 sandbox_pool_size=1)

        async def restart():
            runner = TaskRunner(settings)
            await runner.start()
            try:
                mine = runner.take_interrupted("terminal")
                again = runner.take_interrupted("terminal")
                return mine, again, await runner.store.interrupted_tasks()
            finally:
                await runner.close()

        mine, again, still_running = asyncio.run(restart())
        assert len(mine) == 1 and again == [] and still_running == []
        record = mine[0]
        assert record.platform == "terminal" and record.thread_key == "terminal:local:terminal:t-42"
        assert record.request["text"] == "hr: long running question" and record.request["user"] == "local"
        # The restarted bot swept the dead one's sandbox.
        assert client.api.containers(all=True, filters={"label": f"agentdesk.sandbox.pid={bot.pid}"}) == []
    finally:
        client.close()
