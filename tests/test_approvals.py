"""Approvals through the runner: the real TaskRunner, the real Docker sandbox and the scripted model.

The agent's code calls an approval-gated tool over the sandbox bridge; the host holds the call until a
decision arrives through TaskRunner.decide_approval (what the Slack and Teams handlers call) or the
timeout. Checked as a person would: the thread was asked (tool, arguments, who), the tool ran once or not
at all, the leave record changed or not, the answer says why, the decision (who, when) reached the thread
and the audit log.
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import shutil
import textwrap
import threading
import time
from pathlib import Path

import pytest

from agents import approvals
from agents.audit import configure_audit, read_audit
from agents.chat import Caller
from agents.departments import BUNDLED_COMPANY_DIR, ConfigError, load_company
from agents.runner import TaskRunner
from agents.state.sqlite import SqliteStore
from agents.tools import bind_caller, bind_output_dir
from agents.departments import bind_data_dir
from tests.sandbox_support import require_docker_sandbox
from tests.standins.model_server import ModelServer, ScriptedModel, code_reply
from tests.support import RecordingReplier, chat_request, make_settings, next_week

COMPANY = textwrap.dedent(
    """
    [departments.hr]
    description = "People team: leave"
    tools = ["agents.tools.hr:leave_balance", "agents.tools.hr:book_leave"]
    authorized_imports = ["json"]
    max_steps = 3
    step_timeout_s = 10
    data_dir = "hr"

    [departments.hr.tool_policy."agents.tools.hr:book_leave"]
    approval = "requester"
    approval_timeout_s = 60

    [departments.quick]
    description = "People team with a short approval timeout"
    tools = ["agents.tools.hr:leave_balance", "agents.tools.hr:book_leave"]
    authorized_imports = ["json"]
    max_steps = 3
    step_timeout_s = 10
    data_dir = "hr"

    [departments.quick.tool_policy."agents.tools.hr:book_leave"]
    approval_timeout_s = 1.5

    [departments.sales]
    description = "Quotes"
    tools = ["agents.tools.sales:create_quote"]
    authorized_imports = ["json"]
    max_steps = 3
    step_timeout_s = 10
    data_dir = "sales"

    [departments.sales.tool_policy."agents.tools.sales:create_quote"]
    approval_timeout_s = 60

    [departments.ops]
    description = "Approvers decide"
    tools = ["agents.tools.hr:book_leave"]
    authorized_imports = ["json"]
    max_steps = 3
    step_timeout_s = 10
    data_dir = "hr"

    [departments.ops.tool_policy."agents.tools.hr:book_leave"]
    approval = "approvers"
    approvers = ["U_BOSS", "S_LEADS"]
    approval_timeout_s = 60
    """
)


THURSDAY, FRIDAY = next_week(3), next_week(4)
BOOK = (f"import json\nr = book_leave(start='{THURSDAY}', end='{FRIDAY}', kind='annual')\n"
        "print('BOOKED', r['booking_id'])\nfinal_answer(json.dumps(r))")
TRY_BOOK = (f"try:\n    r = book_leave(start='{THURSDAY}', end='{FRIDAY}')\n    out = 'BOOKED ' + r['booking_id']\n"
            "except Exception as e:\n    out = 'REFUSED ' + str(e)\nfinal_answer(out)")


class ApprovingReplier(RecordingReplier):
    """Records the approval prompts and their decisions as the thread would show them."""

    def __init__(self) -> None:
        super().__init__()
        self.prompts: list = []
        self.decisions: list = []

    async def approval(self, prompt):
        self.prompts.append(prompt)
        return {"message": len(self.prompts)}

    async def approval_decided(self, prompt, decision, handle):
        self.decisions.append((prompt, decision, handle))


@dataclasses.dataclass
class Desk:
    runner: TaskRunner
    model: ScriptedModel
    loop: asyncio.AbstractEventLoop
    hr_dir: Path
    settings: object
    counter: int = 0

    def call(self, coro, timeout: float = 90.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self, department: str, code: str, *, user: str = "U_ALICE"):
        """Start one request whose step 1 runs `code`; returns (replier, future)."""
        self.counter += 1
        marker = f"approval case {self.counter}"
        self.model.script(marker, code_reply(code), code_reply('final_answer("step two")'))
        replier = ApprovingReplier()
        request = chat_request(f"{department}: {marker}", user=user, thread=f"1700000001.{self.counter:06d}")
        future = asyncio.run_coroutine_threadsafe(self.runner.handle(request, replier), self.loop)
        return replier, future

    def decide(self, approval_id: str, user: str, decision: str, groups: tuple[str, ...] = ()):
        return self.call(self.runner.decide_approval(approval_id, "slack", user, groups, decision, user_name=user))

    def bookings(self) -> list[str]:
        path = self.hr_dir / "leave_bookings.csv"
        return path.read_text().splitlines()[1:] if path.exists() else []


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)  # polling a condition another thread makes true, bounded by the deadline




@pytest.fixture(scope="module")
def desk(tmp_path_factory):
    root = tmp_path_factory.mktemp("approvals")
    shutil.copytree(BUNDLED_COMPANY_DIR / "hr", root / "hr")
    shutil.copytree(BUNDLED_COMPANY_DIR / "sales", root / "sales")
    (root / "departments.toml").write_text(COMPANY)
    server = ModelServer(ScriptedModel()).__enter__()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="approval-desk-loop", daemon=True)
    thread.start()
    runner = None
    try:
        settings = make_settings(root, server.base_url, sandbox="docker", sandbox_pool_size=1,
                                 config_path=root / "departments.toml", task_timeout_s=120.0,
                                 user_rate_per_minute=1000, max_tasks_per_user=5)
        require_docker_sandbox(settings)
        configure_audit(settings)

        async def start() -> TaskRunner:
            r = TaskRunner(settings)
            await r.start()
            return r

        runner = asyncio.run_coroutine_threadsafe(start(), loop).result(180)
        yield Desk(runner, server.model, loop, root / "hr", settings)
    finally:
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.close(), loop).result(120)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        server.__exit__(None, None, None)


@pytest.fixture(autouse=True)
def _fresh_bookings(request):
    if "desk" in request.fixturenames:
        desk = request.getfixturevalue("desk")
        (desk.hr_dir / "leave_bookings.csv").unlink(missing_ok=True)
    yield


# -- through the runner and the real sandbox -----------------------------------------------------------

@pytest.mark.docker
def test_approve_runs_the_tool_once_and_its_result_reaches_the_code(desk):
    replier, future = desk.start("hr", BOOK)
    wait_until(lambda: replier.prompts, 60, "the approval request in the thread")
    prompt = replier.prompts[0]
    assert prompt.tool == "book_leave" and prompt.requester == "U_ALICE" and prompt.approval == "requester"
    assert dict(prompt.arguments) == {"start": str(THURSDAY), "end": str(FRIDAY), "kind": "annual"}
    assert desk.bookings() == [], "the tool ran before anyone approved"

    ok, message = desk.decide(prompt.approval_id, "U_ALICE", "approve")
    assert ok and "will run" in message
    future.result(90)
    answer = json.loads(replier.answer.text)
    assert answer["booked"] is True and answer["working_days"] == 2
    rows = desk.bookings()
    assert len(rows) == 1 and f"{THURSDAY},{FRIDAY},2" in rows[0]
    remaining = answer["balance"]["remaining_days"]
    assert remaining == 25 + 3 - 9 - 4 - 2  # Alice's bundled record, minus the two days just booked
    (_, decision, handle), = replier.decisions
    assert decision.status == "approved" and decision.by == "U_ALICE" and decision.at > 0 and handle == {"message": 1}

    again, message = desk.decide(prompt.approval_id, "U_ALICE", "approve")  # a double click / a replay
    assert not again and "already approved" in message
    assert len(desk.bookings()) == 1
    events = [e for e in read_audit(desk.settings) if e.get("approval_id") == prompt.approval_id]
    assert [e["event"] for e in events] == ["approval_requested", "approval_decided", "approval_finished"]
    assert events[1]["decision"] == "approved" and events[2]["outcome"] == "approved"
    assert "U_ALICE" not in json.dumps(events)


@pytest.mark.docker
def test_deny_never_runs_the_tool_and_the_code_is_told_why(desk):
    replier, future = desk.start("hr", TRY_BOOK)
    wait_until(lambda: replier.prompts, 60, "the approval request")
    ok, _ = desk.decide(replier.prompts[0].approval_id, "U_ALICE", "deny")
    assert ok
    future.result(90)
    assert replier.answer.text.startswith("REFUSED") and "declined" in replier.answer.text
    assert desk.bookings() == []
    assert replier.decisions[0][1].status == "denied"


@pytest.mark.docker
def test_someone_else_cannot_decide_and_nothing_runs(desk):
    replier, future = desk.start("hr", TRY_BOOK)
    wait_until(lambda: replier.prompts, 60, "the approval request")
    approval_id = replier.prompts[0].approval_id
    ok, message = desk.decide(approval_id, "U_MALLORY", "approve")
    assert not ok and "can't approve" in message
    time.sleep(0.6)  # longer than the waiter's poll: a refused click must not have released the call
    assert desk.bookings() == [] and not future.done()
    assert desk.decide(approval_id, "U_ALICE", "deny")[0]
    future.result(90)
    assert "REFUSED" in replier.answer.text and desk.bookings() == []


@pytest.mark.docker
def test_no_decision_in_time_is_a_refusal_and_a_late_click_changes_nothing(desk):
    replier, future = desk.start("quick", TRY_BOOK)
    future.result(90)
    assert "REFUSED" in replier.answer.text and "in time" in replier.answer.text
    assert replier.decisions[0][1].status == "timeout"
    ok, message = desk.decide(replier.prompts[0].approval_id, "U_ALICE", "approve")
    assert not ok and "timed out" in message
    assert desk.bookings() == []


@pytest.mark.docker
def test_listed_approvers_decide_by_id_or_group_not_the_requester(desk):
    replier, future = desk.start("ops", TRY_BOOK)
    wait_until(lambda: replier.prompts, 60, "the approval request")
    approval_id = replier.prompts[0].approval_id
    assert not desk.decide(approval_id, "U_ALICE", "approve")[0], "the requester is not an approver here"
    ok, _ = desk.decide(approval_id, "U_CAROL", "approve", groups=("S_LEADS",))
    assert ok
    future.result(90)
    assert replier.answer.text.startswith("BOOKED") and len(desk.bookings()) == 1


@pytest.mark.docker
def test_a_decision_written_by_another_process_releases_the_call(desk):
    """A replica with its own store connection decides; the waiting side notices by polling the record."""
    replier, future = desk.start("hr", TRY_BOOK)
    wait_until(lambda: replier.prompts, 60, "the approval request")

    async def on_another_replica():
        other = SqliteStore(desk.settings.data_dir)
        try:
            return await approvals.decide(other, {}, replier.prompts[0].approval_id, platform="slack",
                                          user="U_ALICE", decision="approve")
        finally:
            await other.close()

    ok, _ = asyncio.run(on_another_replica())
    assert ok
    future.result(30)
    assert replier.answer.text.startswith("BOOKED")


@pytest.mark.docker
def test_stopping_the_run_while_it_waits_ends_it_at_once(desk):
    replier, future = desk.start("hr", TRY_BOOK)
    wait_until(lambda: replier.prompts, 60, "the approval request")
    started = time.monotonic()
    ok, _ = desk.call(desk.runner.request_stop(chat_request("x", thread=f"1700000001.{desk.counter:06d}").thread_key,
                                               "U_ALICE"))
    assert ok
    future.result(30)
    assert time.monotonic() - started < 15
    assert any("Stopped" in e for e in replier.errors), replier.errors
    assert replier.decisions[0][1].status == "cancelled"
    assert desk.bookings() == []


@pytest.mark.docker
def test_an_approved_quote_reaches_the_thread_as_a_file_and_the_ledger(desk):
    code = ("q = create_quote(customer='Contoso Ltd', items=[{'sku': 'NW-AQ100', 'quantity': 20}], region='EU')\n"
            "final_answer(q['quote_number'] + ' total ' + str(q['total']) + ' ' + q['currency'])")
    replier, future = desk.start("sales", code)
    wait_until(lambda: replier.prompts, 60, "the approval request")
    assert dict(replier.prompts[0].arguments)["customer"] == "Contoso Ltd"
    assert desk.decide(replier.prompts[0].approval_id, "U_ALICE", "approve")[0]
    future.result(90)
    number = replier.answer.text.split()[0]
    assert number.startswith(f"Q-{dt.date.today().year}-") and replier.answer.text.endswith("EUR")
    assert [f.name for f in replier.answer.files] == [f"quote-{number}.csv"]
    assert b"Contoso Ltd" in replier.file_bytes[f"quote-{number}.csv"]
    ledger = (desk.hr_dir.parent / "sales" / "quotes.csv").read_text()
    assert f"{number}," in ledger and "Contoso Ltd" in ledger


# -- the store side: restart ----------------------------------------------------------------------------

def test_after_a_restart_a_pending_approval_is_expired_and_a_click_says_so(tmp_path):
    async def scenario():
        store = SqliteStore(tmp_path / "data")
        await store.task_started("t1", chat_request("hr: book"))
        record = {"id": "a1", "task_id": "t1", "thread_key": "k", "department": "hr", "tool": "book_leave",
                  "arguments": [["start", "2030-01-01"]], "requester": {"platform": "slack", "workspace": "T",
                                                                          "user": "U_ALICE", "name": "Alice"},
                  "approval": "requester", "approvers": [], "created_at": time.time(),
                  "expires_at": time.time() + 600, "status": "pending", "handle": {"ts": "1"}}
        await store.put_record(approvals.APPROVALS, "a1", record)
        await store.close()

        store = SqliteStore(tmp_path / "data")  # the process came back
        interrupted = {r.task_id for r in await store.interrupted_tasks()}
        assert await approvals.expire_interrupted(store, interrupted) == 1
        ok, message = await approvals.decide(store, {}, "a1", platform="slack", user="U_ALICE", decision="approve")
        assert not ok and "expired" in message
        prompt, decision = await approvals.view(store, "a1")
        assert decision.status == "expired" and prompt.tool == "book_leave"
        await store.close()

    asyncio.run(scenario())


def test_a_click_after_the_run_died_on_another_process_says_it_expired(tmp_path):
    """Its worker is gone (the task is no longer running), so nobody waits: the click changes nothing."""
    async def scenario():
        store = SqliteStore(tmp_path / "data")
        await store.task_started("t2", chat_request("hr: book"))
        await store.task_finished("t2", "interrupted")
        await store.put_record(approvals.APPROVALS, "a2", {
            "id": "a2", "task_id": "t2", "thread_key": "k", "department": "hr", "tool": "book_leave",
            "arguments": [], "requester": {"platform": "slack", "workspace": "T", "user": "U_ALICE", "name": None},
            "approval": "requester", "approvers": [], "created_at": time.time(), "expires_at": time.time() + 600,
            "status": "pending", "handle": None})
        ok, message = await approvals.decide(store, {}, "a2", platform="slack", user="U_ALICE", decision="approve")
        assert not ok and "expired" in message
        await store.close()

    asyncio.run(scenario())


# -- the departments file --------------------------------------------------------------------------------

@pytest.mark.parametrize("table, message", [
    ('approval = "boss"', 'approval must be "requester" or "approvers", got "boss"'),
    ('approval = "approvers"', "approvers is empty"),
    ('approvers = ["U1"]', 'approval = "requester" ignores it'),
    ("approval_timeout_s = -1", "approval_timeout_s must be a positive number"),
    ('aproval = "requester"', 'unknown key "aproval"'),
])
def test_policy_errors_name_the_file_the_department_and_the_key(tmp_path, table, message):
    path = tmp_path / "departments.toml"
    path.write_text(textwrap.dedent(f"""
        [departments.hr]
        description = "HR"
        tools = ["agents.tools.hr:book_leave"]

        [departments.hr.tool_policy."agents.tools.hr:book_leave"]
        {table}
    """))
    with pytest.raises(ConfigError) as err:
        load_company(path)
    text = str(err.value)
    assert f'{path}: [departments.hr.tool_policy."agents.tools.hr:book_leave"]' in text and message in text


def test_a_policy_for_a_tool_the_department_lacks_is_an_error(tmp_path):
    path = tmp_path / "departments.toml"
    path.write_text(textwrap.dedent("""
        [departments.sales]
        description = "Sales"
        tools = ["agents.tools.sales:price_quote"]

        [departments.sales.tool_policy."agents.tools.sales:create_quote"]
        approval = "requester"
    """))
    with pytest.raises(ConfigError, match=r'\[departments.sales.tool_policy."agents.tools.sales:create_quote"\] '
                                          r"names a tool that is not in this department's tools"):
        load_company(path)


def test_the_bundled_company_gates_its_write_tools():
    company = load_company(BUNDLED_COMPANY_DIR / "departments.toml")
    assert company.departments["hr"].tool_policy["agents.tools.hr:book_leave"].approval == "requester"
    assert company.departments["sales"].tool_policy["agents.tools.sales:create_quote"].approval == "requester"


# -- the write tools themselves ---------------------------------------------------------------------------

ALICE = Caller("slack", "T", "U_ALICE", "Alice")


def _hr(tmp_path: Path) -> Path:
    folder = tmp_path / "hr"
    shutil.copytree(BUNDLED_COMPANY_DIR / "hr", folder)
    return folder


def test_book_leave_refuses_overlap_and_over_balance_with_a_reason(tmp_path):
    from agents.tools.hr import book_leave, leave_balance

    with bind_data_dir(_hr(tmp_path)), bind_caller(ALICE):
        before = leave_balance()["remaining_days"]
        booked = book_leave(start=str(THURSDAY), end=str(FRIDAY), kind="annual")
        assert booked["working_days"] == 2
        assert leave_balance()["remaining_days"] == before - 2
        with pytest.raises(ValueError, match="overlaps your annual leave"):
            book_leave(start=str(FRIDAY), end=str(FRIDAY + dt.timedelta(days=3)))
        far = next_week(0) + dt.timedelta(days=70)
        with pytest.raises(ValueError, match=r"needs 20 days of annual leave but you have 13 left"):
            book_leave(start=str(far), end=str(far + dt.timedelta(days=27)))
        with pytest.raises(ValueError, match="in the past"):
            book_leave(start=str(dt.date.today() - dt.timedelta(days=7)), end=str(dt.date.today() - dt.timedelta(days=6)))
        assert leave_balance()["remaining_days"] == before - 2


def test_bundled_company_writes_go_to_the_data_dir_not_the_package(tmp_path, monkeypatch):
    from agents.tools.hr import book_leave, leave_balance

    monkeypatch.setenv("AGENTDESK_DATA_DIR", str(tmp_path / "state"))
    with bind_caller(ALICE):
        before = leave_balance()["remaining_days"]
        book_leave(start=str(THURSDAY), end=str(THURSDAY))
        assert leave_balance()["remaining_days"] == before - 1
    assert (tmp_path / "state" / "company" / "hr" / "leave_bookings.csv").is_file()
    assert not (BUNDLED_COMPANY_DIR / "hr" / "leave_bookings.csv").exists()


def test_create_quote_numbers_quotes_writes_the_file_and_the_ledger(tmp_path):
    from agents.tools.sales import create_quote

    sales = tmp_path / "sales"
    shutil.copytree(BUNDLED_COMPANY_DIR / "sales", sales)
    out = tmp_path / "out"
    with bind_data_dir(sales), bind_caller(ALICE), bind_output_dir(out):
        first = create_quote(customer="Contoso Ltd", items=[{"sku": "NW-AQ100", "quantity": 20}], region="EU")
        second = create_quote(customer="Fabrikam", items=[{"sku": "nw-oc100", "quantity": 2}], region="US")
    year = dt.date.today().year
    assert first["quote_number"] == f"Q-{year}-0001" and second["quote_number"] == f"Q-{year}-0002"
    text = (out / first["file"]).read_text()
    assert "Contoso Ltd" in text and "NW-AQ100" in text and f"{first['total']:.2f}" in text
    ledger = (sales / "quotes.csv").read_text().splitlines()
    assert len(ledger) == 3 and ledger[1].startswith(f"Q-{year}-0001,") and "Fabrikam" in ledger[2]
    assert not list(sales.glob(".quotes.csv.*.tmp")), "a temporary file was left behind"


def test_a_pending_approval_in_redis_is_decided_by_another_replica_once(tmp_path):
    """Shared store: the waiting worker and the replica that takes the click have separate connections and
    no in-process wake-up; the decision reaches the waiting call through Redis, and only once."""
    from agents.state.redis import RedisStore
    from tests.topology import RedisServer

    redis = RedisServer(tmp_path / "redis")
    redis.start()

    async def scenario():
        worker_store, web_store, other_web = RedisStore(redis.url), RedisStore(redis.url), RedisStore(redis.url)
        replier = ApprovingReplier()
        gate = approvals.ApprovalGate(store=worker_store, request=chat_request("hr: book", user="U_ALICE"),
                                      department="hr", task_id="t-redis", replier=replier,
                                      loop=asyncio.get_running_loop(), waiters={}, redact=lambda text: text)
        await worker_store.task_started("t-redis", chat_request("hr: book", user="U_ALICE"))
        waiting = asyncio.ensure_future(asyncio.to_thread(
            gate.wait_for_approval, "book_leave", {"start": "2030-01-02"}, approvals.ToolPolicy(timeout_s=30)))
        for _ in range(200):
            if replier.prompts:
                break
            await asyncio.sleep(0.05)
        approval_id = replier.prompts[0].approval_id
        refused = await approvals.decide(web_store, {}, approval_id, platform="slack", user="U_MALLORY",
                                         decision="approve")
        accepted = await approvals.decide(web_store, {}, approval_id, platform="slack", user="U_ALICE",
                                          decision="approve", user_name="Alice")
        replay = await approvals.decide(other_web, {}, approval_id, platform="slack", user="U_ALICE",
                                        decision="deny")
        decision = await asyncio.wait_for(waiting, 10)
        for store in (worker_store, web_store, other_web):
            await store.close()
        return refused, accepted, replay, decision, replier

    try:
        refused, accepted, replay, decision, replier = asyncio.run(scenario())
    finally:
        redis.stop()
    assert not refused[0] and "can't approve" in refused[1]
    assert accepted[0] and not replay[0] and "already approved by Alice" in replay[1]
    assert decision.status == "approved" and decision.by == "U_ALICE"
    assert [d.status for _, d, _ in replier.decisions] == ["approved"]
