"""A task past its wall-time limit frees its slot at once, even while its step is still running.

Four people's requests stall inside a step (a long sleep, well within the department's step timeout, so
only the task timeout can stop them) and hold every task slot. Another person's trivial request must be
answered within its normal time plus the stalled tasks' wall-time limit, not when their steps end.
Real TaskRunner, real Docker sandboxes, the scripted model server.
"""
from __future__ import annotations

import asyncio
import textwrap
import time

import pytest

from agents.runner import TaskRunner
from tests.sandbox_support import labelled_containers, require_docker_sandbox, sandbox_settings
from tests.standins.model_server import code_reply
from tests.support import RecordingReplier, chat_request, make_settings

pytestmark = pytest.mark.docker

STEP_TIMEOUT_S = 90
TASK_TIMEOUT_S = 4.0
SLOTS = 4
COMPANY = textwrap.dedent(
    f"""
    [departments.hr]
    description = "Leave, benefits and HR policy"
    tools = []
    authorized_imports = ["time"]
    max_steps = 2
    step_timeout_s = {STEP_TIMEOUT_S}
    """
)


async def test_stalled_tasks_free_their_slots_at_their_time_limit(tmp_path, model_server):
    require_docker_sandbox(sandbox_settings(tmp_path / "probe"))
    (tmp_path / "departments.toml").write_text(COMPANY)
    settings = make_settings(tmp_path, model_server.base_url, sandbox="docker", sandbox_pool_size=SLOTS + 1,
                             config_path=tmp_path / "departments.toml", max_concurrent_tasks=SLOTS,
                             task_timeout_s=TASK_TIMEOUT_S)
    model = model_server.model
    model.script("stall", code_reply(f"import time\ntime.sleep({STEP_TIMEOUT_S * 2})"))
    model.script("ordinary", code_reply("final_answer('forty-two')"))
    runner = TaskRunner(settings)
    await runner.start()
    try:
        async def ask(text: str, user: str, thread: str) -> tuple[RecordingReplier, float]:
            replier = RecordingReplier()
            started = time.monotonic()
            await runner.handle(chat_request(text, user=user, thread=thread), replier)
            return replier, time.monotonic() - started

        normal, normal_s = await ask("hr: ordinary request", "U_BOB", "1.0")
        assert normal.errors == [] and normal.answer.text == "forty-two"

        stalled = [asyncio.ensure_future(ask("hr: stall please", f"U_STALL{i}", f"2.{i}")) for i in range(SLOTS)]
        await asyncio.sleep(1.0)  # every slot is taken
        bob, bob_s = await ask("hr: ordinary request", "U_BOB", "3.0")
        assert bob.errors == [] and bob.answer.text == "forty-two"
        # the stalled steps would run for minutes; their tasks must give the slots back at TASK_TIMEOUT_S
        assert bob_s < normal_s + TASK_TIMEOUT_S + 10, (
            f"answered after {bob_s:.1f} s (normally {normal_s:.1f} s, wall-time limit {TASK_TIMEOUT_S:g} s)")

        for replier, elapsed in await asyncio.gather(*stalled):
            assert replier.finals == [] and len(replier.errors) == 1, replier.errors
            assert f"longer than {TASK_TIMEOUT_S:.0f} seconds" in replier.errors[0]
            assert elapsed < TASK_TIMEOUT_S + 15, elapsed
        deadline = time.monotonic() + 30
        while len(labelled_containers(runner.sandboxes.instance_id)) > SLOTS + 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)  # polling Docker, bounded by the deadline
        assert len(labelled_containers(runner.sandboxes.instance_id)) <= SLOTS + 1
    finally:
        await runner.close()
    assert labelled_containers(runner.sandboxes.instance_id) == []
