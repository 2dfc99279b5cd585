"""The task runner end to end with the scripted model over HTTP and smolagents' real agent loop.

These use SANDBOX=local for speed; the same path through the Docker sandbox is covered in test_ask.py.
"""
from __future__ import annotations

import asyncio
import json
import textwrap

import pytest

from agents.runner import TaskRunner
from tests.standins.model_server import CLASSIFIER_MARKER, code_reply
from tests.support import RecordingReplier, chat_request, make_settings

COMPANY = textwrap.dedent(
    """
    [departments.hr]
    description = "Leave, benefits and HR policy"
    keywords = ["leave", "vacation", "benefits", "payroll"]
    tools = ["tests.company_tools:whoami"]
    authorized_imports = ["math"]
    max_steps = 3
    step_timeout_s = 5

    [departments.sales]
    description = "Products, prices and quotes"
    keywords = ["price", "quote", "discount"]
    tools = []
    slack_channels = ["sales-floor"]
    max_steps = 3
    max_concurrent = 1
    """
)


@pytest.fixture
def company_file(tmp_path):
    path = tmp_path / "departments.toml"
    path.write_text(COMPANY)
    return path


def make_runner(tmp_path, model_server, company_file, **overrides):
    settings = make_settings(tmp_path, model_server.base_url, sandbox="local", config_path=company_file, **overrides)
    return TaskRunner(settings)


async def ask(runner, text, **kw) -> RecordingReplier:
    replier = RecordingReplier()
    await runner.handle(chat_request(text, **kw), replier)
    return replier


async def ask_once(tmp_path, model_server, company_file, text, **kw) -> RecordingReplier:
    """One request on a runner started for it and closed after."""
    runner = make_runner(tmp_path, model_server, company_file)
    await runner.start()
    try:
        return await ask(runner, text, **kw)
    finally:
        await runner.close()


def prompts_about(model_server, marker: str) -> list[str]:
    """The messages of each model request in one conversation, as the model read them."""
    return [json.dumps(r["messages"]) for r in model_server.model.requests if marker in json.dumps(r.get("messages"))]


def classifier_calls(model_server) -> int:
    return sum(
        1 for r in model_server.model.requests
        if any(CLASSIFIER_MARKER in str(m.get("content")) for m in r.get("messages", []))
    )


async def test_prefix_routes_without_a_model_call_and_streams_steps(tmp_path, model_server, company_file):
    model_server.model.script(
        "who am i really",
        code_reply("me = whoami()\nprint('caller is', me)", "I will look up who is asking."),
        code_reply('final_answer(f"You are {me}.")'),
    )
    replier = await ask_once(tmp_path, model_server, company_file, "HR: who am i really?", user="U_BOB")
    assert replier.errors == []
    assert replier.answer.text == "You are U_BOB."
    assert replier.answer.department == "hr"
    assert [s.step_number for s in replier.steps] == [1, 2]
    assert replier.steps[0].title == "I will look up who is asking"
    assert "caller is U_BOB" in replier.steps[0].observation
    assert replier.steps[0].input_tokens == 120
    assert classifier_calls(model_server) == 0
    assert "SANDBOX=local" in replier.answer.notices[0]


async def test_channel_map_and_classifier_with_keyword_fallback(tmp_path, model_server, company_file):
    model_server.model.script("price of the widget", code_reply('final_answer("sales here")'))
    model_server.model.classify_answer = "sales"
    runner = make_runner(tmp_path, model_server, company_file)
    await runner.start()
    try:
        by_channel = await ask(runner, "price of the widget please", channel_name="sales-floor", thread="1.1")
        assert by_channel.answer.department == "sales"
        assert classifier_calls(model_server) == 0
        by_model = await ask(runner, "price of the widget for me", thread="1.2")
        assert by_model.answer.department == "sales"
        assert classifier_calls(model_server) == 1
        # The model endpoint failing for the classifier falls back to keywords (3 attempts = 1 + 2 retries).
        model_server.model.fail_next(500, count=3)
        by_keywords = await ask(runner, "what is the price of the widget? any discount?", thread="1.3")
        assert by_keywords.answer.department == "sales"
        model_server.model.fail_next(500, count=3)
        unclear = await ask(runner, "hello there", thread="1.4")
        assert unclear.finals == [] and "`hr: …`" in unclear.errors[0]
    finally:
        await runner.close()


async def test_thread_keeps_department_and_memory_across_a_restart(tmp_path, model_server, company_file):
    model_server.model.script("first question xyz", code_reply("secret_number = 41\nprint(secret_number)"),
                              code_reply('final_answer("noted 41")'))
    model_server.model.script("follow-up question abc", code_reply('final_answer("follow-up done")'))
    runner = make_runner(tmp_path, model_server, company_file)
    await runner.start()
    first = await ask(runner, "sales: first question xyz", thread="9.1")
    await runner.close()
    assert first.answer.department == "sales"

    restarted = make_runner(tmp_path, model_server, company_file)
    await restarted.start()
    try:
        assert await restarted.knows_thread(chat_request("x", thread="9.1").thread_key)
        follow = await ask(restarted, "follow-up question abc", thread="9.1")
        other = await ask(restarted, "hr: follow-up question abc", thread="9.1")
    finally:
        await restarted.close()
    assert follow.answer.department == "sales" and follow.answer.text == "follow-up done"
    last = model_server.model.requests[-1]["messages"]
    conversation = "\n".join(str(m.get("content")) for m in last)
    assert "first question xyz" in conversation and "secret_number = 41" in conversation
    assert "This thread is with the SALES agent" in other.errors[0]


async def test_limits_each_give_a_clear_message(tmp_path, model_server, company_file):
    model_server.model.script("slow one", code_reply('final_answer("slow done")'), delay_s=1.5)
    runner = make_runner(tmp_path, model_server, company_file, max_tasks_per_user=1, max_text_chars=50,
                         user_rate_per_minute=2)
    await runner.start()
    try:
        long = await ask(runner, "hr: " + "x" * 100)
        assert "limit is 50" in long.errors[0]
        empty = await ask(runner, "   ")
        assert "Ask me something" in empty.errors[0]
        first, second = RecordingReplier(), RecordingReplier()
        await asyncio.gather(
            runner.handle(chat_request("hr: slow one", thread="2.1"), first),
            runner.handle(chat_request("hr: slow one again", thread="2.2"), second),
        )
        assert first.answer.text == "slow done"
        assert "already have 1 request" in second.errors[0]
        rate = await ask(runner, "hr: slow one", thread="2.3")
        assert "in the last minute" in rate.errors[0]
    finally:
        await runner.close()


async def test_task_wall_time_and_model_failures(tmp_path, model_server, company_file):
    model_server.model.script("endless", code_reply("import time\n"), delay_s=0)
    runner = make_runner(tmp_path, model_server, company_file, task_timeout_s=3)
    await runner.start()
    try:
        model_server.model.script("very slow model", code_reply('final_answer("late")'), delay_s=6)
        slow = await ask(runner, "hr: very slow model", thread="3.1")
        assert slow.finals == [] and "longer than 3 seconds" in slow.errors[0]
        model_server.model.fail_next(503, count=10)
        down = await ask(runner, "hr: anything at all", thread="3.2")
        assert down.finals == [] and "didn't respond" in down.errors[0]
        assert "sk-test-model-key" not in down.errors[0]
    finally:
        await runner.close()


async def test_max_steps_reports_each_step_once(tmp_path, model_server, company_file):
    model_server.model.script("never finishes", code_reply("print('still going')"))
    replier = await ask_once(tmp_path, model_server, company_file, "hr: never finishes")
    assert [s.step_number for s in replier.steps] == [1, 2, 3]
    assert any("limit of 3 steps" in n for n in replier.answer.notices)


async def test_no_model_configured(tmp_path, company_file):
    from agents.runner import TaskRunner
    from tests.support import make_settings

    settings = make_settings(tmp_path, None, sandbox="local", config_path=company_file, hf_token=None)
    runner = TaskRunner(settings)
    await runner.start()
    try:
        replier = await ask(runner, "hr: hello")
        assert not (await runner.ready())[0]
    finally:
        await runner.close()
    assert "no AI model is configured" in replier.errors[0]


async def test_a_prefix_switches_department_in_a_direct_chat(tmp_path, model_server, company_file):
    model_server.model.script("hr question one", code_reply("hr_note = 7\nfinal_answer('hr done')"))
    model_server.model.script("sales question two", code_reply("final_answer('sales done')"))
    model_server.model.script("plain follow-up three", code_reply("final_answer('still sales')"))
    runner = make_runner(tmp_path, model_server, company_file)
    await runner.start()
    try:
        dm = dict(thread="personal-chat", is_direct=True, platform="teams")
        first = await ask(runner, "hr: hr question one", **dm)
        second = await ask(runner, "sales: sales question two", **dm)
        third = await ask(runner, "plain follow-up three", **dm)
    finally:
        await runner.close()
    assert (first.answer.department, second.answer.department, third.answer.department) == ("hr", "sales", "sales")
    sales_context = "\n".join(str(m.get("content")) for m in model_server.model.requests[-1]["messages"])
    assert "sales question two" in sales_context and "hr_note" not in sales_context


async def _wait_for(predicate, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_the_requester_stops_a_run_between_steps_and_no_further_step_runs(tmp_path, model_server, company_file):
    model_server.model.script(
        "count slowly",
        code_reply("print('one')", "Step one."),
        code_reply("print('two')", "Step two."),
        code_reply('final_answer("done")'),
        delay_s=0.6,
    )
    runner = make_runner(tmp_path, model_server, company_file)
    await runner.start()
    try:
        replier = RecordingReplier()
        request = chat_request("hr: count slowly", user="U_BOB")
        run = asyncio.create_task(runner.handle(request, replier))
        await _wait_for(lambda: len(replier.steps) >= 1)
        refused = await runner.request_stop(request.thread_key, "U_MALLORY")
        assert refused[0] is False and "Only the person who asked" in refused[1]
        accepted, _ = await runner.request_stop(request.thread_key, "U_BOB")
        assert accepted
        t0 = asyncio.get_running_loop().time()
        await run
        assert asyncio.get_running_loop().time() - t0 < 2.0
        assert (await runner.request_stop(request.thread_key, "U_BOB"))[0] is False
    finally:
        await runner.close()
    assert replier.finals == []
    assert [s.step_number for s in replier.steps] == [1]
    assert replier.errors == ["Stopped as you asked after step 1."]


async def test_an_admin_may_stop_anyones_run(tmp_path, model_server, company_file):
    model_server.model.script("loop a while", code_reply("print('x')"), code_reply("print('y')"),
                              code_reply('final_answer("z")'), delay_s=0.6)
    runner = make_runner(tmp_path, model_server, company_file, admins=("U_ADMIN",))
    await runner.start()
    try:
        replier = RecordingReplier()
        request = chat_request("hr: loop a while", user="U_BOB")
        run = asyncio.create_task(runner.handle(request, replier))
        await _wait_for(lambda: len(replier.steps) >= 1)
        assert (await runner.request_stop(request.thread_key, "U_ADMIN"))[0]
        await run
    finally:
        await runner.close()
    assert replier.errors == ["Stopped by an administrator after step 1."]


async def test_feedback_is_kept_per_person_last_press_wins(tmp_path, model_server, company_file):
    model_server.model.script("rate me", code_reply('final_answer("an answer")'))
    runner = make_runner(tmp_path, model_server, company_file)
    await runner.start()
    try:
        replier = await ask(runner, "hr: rate me", user="U_BOB")
        task_id = replier.answer.task_id
        assert task_id
        assert await runner.record_feedback(task_id, platform="slack", user="U_BOB", value="negative")
        assert await runner.record_feedback(task_id, platform="slack", user="U_BOB", value="positive")
        assert await runner.record_feedback(task_id, platform="slack", user="U_EVE", value="negative",
                                            comment="too short")
        assert not await runner.record_feedback("forged-task", platform="slack", user="U_BOB", value="positive")
        assert not await runner.record_feedback(task_id, platform="slack", user="U_BOB", value="meh")
        kept = await runner.feedback_for(task_id)
    finally:
        await runner.close()
    assert {u: r["value"] for u, r in kept.items()} == {"U_BOB": "positive", "U_EVE": "negative"}
    assert kept["U_EVE"]["comment"] == "too short" and kept["U_EVE"]["department"] == "hr"


async def test_a_departments_max_concurrent_runs_its_requests_one_at_a_time(tmp_path, model_server, company_file):
    model_server.model.script("one at a time", code_reply('final_answer("in turn")'), delay_s=0.8)
    runner = make_runner(tmp_path, model_server, company_file, max_concurrent_tasks=4)
    await runner.start()
    try:
        first, second = RecordingReplier(), RecordingReplier()
        t0 = asyncio.get_running_loop().time()
        await asyncio.gather(
            runner.handle(chat_request("sales: one at a time", thread="7.1"), first),
            runner.handle(chat_request("sales: one at a time too", thread="7.2", user="U_BOB"), second),
        )
        elapsed = asyncio.get_running_loop().time() - t0
    finally:
        await runner.close()
    assert first.answer.text == second.answer.text == "in turn"
    assert elapsed >= 1.6, f"both sales runs overlapped ({elapsed:.2f} s) although max_concurrent = 1"


async def test_a_repeated_step_is_answered_with_a_nudge_the_model_sees_and_the_thread_does_not(
        tmp_path, model_server, company_file):
    """Greedy small models re-run the code they just ran; the next prompt tells them so, the thread stays clean."""
    same = code_reply("print('caller is', whoami())", "I will look up who is asking.")
    model_server.model.script("who keeps asking", same, same, code_reply('final_answer("Done looking.")'))
    replier = await ask_once(tmp_path, model_server, company_file, "HR: who keeps asking?", user="U_BOB")
    assert replier.answer.text == "Done looking."
    prompts = prompts_about(model_server, "who keeps asking")
    assert "exactly the code of your previous step" not in prompts[1]
    assert "exactly the code of your previous step" in prompts[2]
    assert all("previous step" not in (s.observation or "") for s in replier.steps)
    assert "caller is U_BOB" in replier.steps[1].observation


async def test_indexing_a_text_result_and_a_reply_without_code_get_notes_that_say_what_to_do(
        tmp_path, model_server, company_file):
    """Small models index a tool's text like another tool's dict, or answer in prose with no code, and retry the
    same thing to the step limit; the error they read next says what to do instead."""
    model_server.model.script(
        "what does whoami say",
        code_reply("who = whoami()\nfinal_answer(who['user'])", "I will index the result."),
        "The answer is U_SOMEONE.",
        code_reply("final_answer(whoami())"))
    replier = await ask_once(tmp_path, model_server, company_file, "HR: what does whoami say?", user="U_BOB")
    assert replier.answer.text == "U_BOB"
    prompts = prompts_about(model_server, "what does whoami say")
    assert "That result is text (a str), not a dict" not in prompts[0]
    assert "That result is text (a str), not a dict" in prompts[1]
    assert "Your reply had no code" in prompts[2]
    assert "not a dict" in replier.steps[0].error and "Your reply had no code" in replier.steps[1].error


async def test_an_alias_used_without_its_import_gets_the_import_to_add(tmp_path, model_server, company_file):
    """The 1.5B model drew charts with `plt` it never imported, eight times over."""
    model_server.model.script("alias without import", code_reply("print(pd.DataFrame({'a': [1]}).shape)"),
                              code_reply('final_answer("imported")'))
    replier = await ask_once(tmp_path, model_server, company_file, "HR: alias without import")
    assert replier.answer.text == "imported"
    retry = prompts_about(model_server, "alias without import")[1]
    assert "Start your code with `import pandas as pd`" in retry
    assert "The variable `pd` is not defined" in replier.steps[0].error
