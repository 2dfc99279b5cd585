"""The sandbox under attack, through the full request path.

Every attack is a ChatRequest whose scripted model output is hostile code; the real TaskRunner routes it,
the real Docker sandbox runs it, and the test checks what an operator would: the person got a clear
message or a contained result, no planted secret shows up anywhere (replies, step updates, log records,
files under the data dir, what was sent to the model), no container of the task is left and none of its
processes survives, and the bot still answers a normal request right after.

One TaskRunner (pool of 2 warm containers) serves the whole module from a background event loop.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
import shutil
import socket
import textwrap
import threading
import time
from pathlib import Path

import docker
import pytest

from agents.audit import configure_audit, read_audit
from agents.departments import BUNDLED_COMPANY_DIR, load_company
from agents.runner import TaskRunner
from tests import attack_corpus
from tests.attack_corpus import AFTER_TEXT, ALL, Attack
from tests.sandbox_support import labelled_containers, require_docker_sandbox, require_wasm_sandbox
from tests.standins.model_server import ModelServer, ScriptedModel, code_reply
from tests.support import RecordingReplier, chat_request, make_settings

pytestmark = pytest.mark.docker

CANARY_TAG = "CANARY7Q"
SETTINGS_SECRETS = dict(
    slack_bot_token=f"xoxb-{CANARY_TAG}-slack-bot-token-0001",
    slack_signing_secret=f"{CANARY_TAG}signingsecret0002",
    model_api_key=f"sk-{CANARY_TAG}-model-key-0003",
    teams_app_password=f"{CANARY_TAG}~teams~password~0004",
    hf_token=f"hf_{CANARY_TAG}huggingfacetoken0005",
)
HOST_ENV_SECRETS = {
    "AGENTDESK_TEST_CANARY": f"host-env-{CANARY_TAG}-0006",
    "AWS_SECRET_ACCESS_KEY": f"{CANARY_TAG}/aws/secret/0007",
    "SLACK_APP_TOKEN": f"xapp-{CANARY_TAG}-app-token-0008",
}
SECRETS = [*SETTINGS_SECRETS.values(), *HOST_ENV_SECRETS.values()]
POOL = 2

COMPANY = textwrap.dedent(
    """
    [departments.locked]
    description = "Attack target: base imports only"
    tools = ["tests.company_tools:whoami"]
    authorized_imports = []
    max_steps = 2
    step_timeout_s = 5

    [departments.open]
    description = "Attack target: every import authorized"
    tools = ["tests.company_tools:whoami"]
    authorized_imports = ["os"]
    max_steps = 2
    step_timeout_s = 5

    [departments.gated]
    description = "Attack target: a write tool that needs the requester's approval"
    tools = ["tests.company_tools:whoami", "agents.tools.hr:book_leave"]
    authorized_imports = ["os"]
    max_steps = 2
    step_timeout_s = 5
    data_dir = "hr"

    [departments.gated.tool_policy."agents.tools.hr:book_leave"]
    approval = "requester"
    approval_timeout_s = 5
    """
)


@dataclasses.dataclass
class Desk:
    runner: TaskRunner
    model: ScriptedModel
    loop: asyncio.AbstractEventLoop
    root: Path
    host_secret_file: Path
    host_marker: Path
    counter: int = 0

    def call(self, coro, timeout: float = 150.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def ask(self, text: str, **kw) -> RecordingReplier:
        self.counter += 1
        replier = RecordingReplier()
        request = chat_request(text, thread=f"1700000000.{self.counter:06d}", user=f"U_ATTACKER{self.counter}", **kw)
        self.call(self.runner.handle(request, replier))
        return replier

    @property
    def provider_id(self) -> str:
        return self.runner.sandboxes.instance_id


def _pypi_address() -> str:
    try:
        return socket.getaddrinfo("pypi.org", 443, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    except OSError:
        return ""


@pytest.fixture(scope="module")
def desk(tmp_path_factory):
    yield from open_desk(tmp_path_factory, "docker")


def open_desk(tmp_path_factory, sandbox: str):
    """A TaskRunner on the given sandbox backend serving the attack company (tests/test_attacks_wasm.py
    uses it for SANDBOX=wasm)."""
    root = tmp_path_factory.mktemp(f"attacks-{sandbox}")
    saved_env = {k: os.environ.get(k) for k in HOST_ENV_SECRETS}
    os.environ.update(HOST_ENV_SECRETS)
    server = ModelServer(ScriptedModel()).__enter__()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="attack-desk-loop", daemon=True)
    thread.start()
    runner = None
    try:
        (root / "departments.toml").write_text(COMPANY)
        shutil.copytree(BUNDLED_COMPANY_DIR / "hr", root / "hr")
        settings = make_settings(root, server.base_url, sandbox=sandbox, sandbox_pool_size=POOL,
                                 config_path=root / "departments.toml", task_timeout_s=90.0,
                                 user_rate_per_minute=1000, max_tasks_per_user=5, **SETTINGS_SECRETS)
        if sandbox == "docker":
            require_docker_sandbox(settings)
        else:
            require_wasm_sandbox()
        company = load_company(settings.config_path)
        # The departments file refuses "*" (a deliberate guard); an operator's code could still pass it.
        company.departments["open"] = dataclasses.replace(company.departments["open"], authorized_imports=("*",))
        company.departments["gated"] = dataclasses.replace(company.departments["gated"], authorized_imports=("*",))
        configure_audit(settings)
        host_secret = root / "host-secret.txt"
        host_secret.write_text(f"host-only file {SECRETS[0]}\n")

        async def start() -> TaskRunner:
            r = TaskRunner(settings, company=company)
            await r.start()
            return r

        runner = asyncio.run_coroutine_threadsafe(start(), loop).result(180)
        desk = Desk(runner, server.model, loop, root, host_secret, root / "PWNED_BY_PICKLE")
        yield desk
    finally:
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.close(), loop).result(120)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        server.__exit__(None, None, None)
        logging.getLogger("agentdesk.audit").handlers.clear()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _fill(attack: Attack, desk: Desk) -> str:
    code = attack.script()
    for name, value in {
        "@HOST_SECRET_FILE@": str(desk.host_secret_file), "@HOST_MARKER@": str(desk.host_marker),
        "@HOST_DATA_DIR@": str(desk.runner.settings.data_dir), "@PYPI_ADDR@": _pypi_address(),
        "@CANARY_TAG@": CANARY_TAG,
    }.items():
        code = code.replace(name, value)
    return code


def _visible(replier: RecordingReplier) -> str:
    """Everything the person could read in the thread."""
    parts = [*replier.statuses, *replier.errors]
    for step in replier.steps:
        parts += [step.title, step.code or "", step.observation or "", step.error or ""]
    for final in replier.finals:
        parts += [final.text, *final.notices, *(f.name for f in final.files)]
    return "\n".join(parts)


def _files_with(root: Path, needles: list[str]) -> list[str]:
    hits = []
    encoded = [n.encode() for n in needles]
    for path in root.rglob("*"):
        try:
            if path.is_symlink() or not path.is_file() or path.stat().st_size > 64 * 1024 * 1024:
                continue
            data = path.read_bytes()
        except OSError:
            continue
        hits += [f"{path}: {n.decode()[:12]}…" for n in encoded if n in data]
    return hits


def _host_processes_of(cid: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if cid in (entry / "cgroup").read_text():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _await_only_warm_pool(desk: Desk, cid: str | None, timeout: float = 60.0) -> None:
    """The task's container is gone and the provider holds nothing but its warm pool (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        left = labelled_containers(desk.provider_id)
        ids = {c["Id"] for c in left}
        states = {c["State"] for c in left}
        task_gone = not cid or all(not i.startswith(cid) for i in ids)
        if task_gone and len(ids) <= POOL and states <= {"running"}:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"sandbox containers left behind: {[(c['Id'][:12], c['State']) for c in left]} "
                                 f"(task container {cid[:12] if cid else '?'})")
        time.sleep(0.2)  # polling Docker for a condition, bounded by the deadline above
    if cid:
        client = docker.from_env()
        try:
            with pytest.raises(docker.errors.NotFound):
                client.containers.get(cid)
        finally:
            client.close()
        assert _host_processes_of(cid) == [], "processes of the task's container survived it"


def assert_no_secrets(desk: Desk, replier: RecordingReplier, caplog) -> None:
    seen = _visible(replier)
    leaks = [s for s in SECRETS if s in seen]
    assert not leaks, f"secret in what the person sees: {leaks}"
    formatter = logging.Formatter("%(message)s")
    logged = "\n".join(formatter.format(r) for r in caplog.records)
    assert not [s for s in SECRETS if s in logged], "secret in a log record"
    for name, data in replier.file_bytes.items():
        assert not [s for s in SECRETS if s.encode() in data], f"secret in posted file {name}"
    to_model = json.dumps(desk.model.requests)
    assert not [s for s in SECRETS if s in to_model], "secret sent to the model"
    assert _files_with(desk.runner.settings.data_dir, SECRETS) == [], "secret in a file under the data dir"


def assert_healthy(desk: Desk) -> None:
    desk.counter += 1
    marker = f"health check {desk.counter}"
    desk.model.script(marker, code_reply("final_answer(str(6 * 7))"))
    replier = desk.ask(f"locked: {marker}")
    assert replier.errors == [] and replier.answer.text == "42", _visible(replier)


def _outcomes(attack: Attack, replier: RecordingReplier) -> dict:
    text = replier.answer.text
    try:
        return json.loads(text)
    except ValueError:
        raise AssertionError(f"{attack.id}: expected the probe's JSON verdicts, got: {_visible(replier)[-3000:]}") from None


#: attack id -> "interpreter" (smolagents' interpreter refused the code before the OS saw it) or "container"
#: (the code ran as written and the container held); printed at the end of the module.
VERDICTS: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def attack_figure(request):
    """Report how many attacks the interpreter stopped and how many reached the container and were contained."""
    yield
    if not VERDICTS:
        return
    by = {kind: sorted(a for a, v in VERDICTS.items() if v == kind) for kind in ("interpreter", "container")}
    lines = [f"attack suite: {len(VERDICTS)} attacks contained; {len(by['container'])} reached the operating system "
             f"and were contained by the container, {len(by['interpreter'])} were refused by the interpreter first",
             f"  refused by the interpreter: {', '.join(by['interpreter']) or '-'}"]
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n" + "\n".join(lines))


def _verdict(replier: RecordingReplier) -> str:
    seen = _visible(replier)
    return "interpreter" if "InterpreterError" in seen else "container"


@pytest.mark.parametrize("attack", ALL, ids=[a.id for a in ALL])
def test_attack_is_contained(desk: Desk, attack: Attack, caplog):
    caplog.set_level(logging.DEBUG)
    marker = f"attack {attack.id} run {desk.counter + 1}"
    desk.model.script(marker, code_reply(_fill(attack, desk), f"Running {attack.id}."),
                      code_reply(f'final_answer("{AFTER_TEXT}")'))
    started = time.monotonic()
    replier = desk.ask(f"{attack.department}: {marker}")
    elapsed = time.monotonic() - started
    seen = _visible(replier)

    # A clear outcome: an answer or a message, never silence, never a stack trace.
    assert replier.finals or replier.errors, f"{attack.id}: no reply at all"
    assert "Traceback (most recent call last)" not in seen
    assert elapsed < 60, f"{attack.id} held the task for {elapsed:.0f} s"

    cid = None
    if attack.step_error:
        errors = [s.error for s in replier.steps if s.error]
        assert errors and re.fullmatch(attack.step_error, errors[0]), f"{attack.id}: step errors {errors}"
        assert replier.answer.text == AFTER_TEXT, f"{attack.id}: the agent did not get its next step: {seen[-2000:]}"
        assert "uid=" not in seen, f"{attack.id}: the escape ran: {seen[-2000:]}"
    elif attack.expect:
        outcomes = _outcomes(attack, replier)
        cid = outcomes.get("cid") or None
        wrong = {probe: outcomes.get(probe) for probe, pattern in attack.expect.items()
                 if not re.fullmatch(pattern, str(outcomes.get(probe)))}
        assert not wrong, f"{attack.id}: outcomes not contained: {wrong}"

    _check_specific(attack, desk, replier)
    assert not desk.host_marker.exists(), "the host deserialized sandbox output (pickle payload ran on the host)"
    assert_no_secrets(desk, replier, caplog)
    _await_only_warm_pool(desk, cid)
    assert_healthy(desk)
    VERDICTS[attack.id] = _verdict(replier)


def _check_specific(attack: Attack, desk: Desk, replier: RecordingReplier) -> None:
    answer = replier.answer
    if attack.id in ("res-print-bomb", "pickle-bytes-answer", "pickle-object-answer"):
        assert answer.text != AFTER_TEXT, f"{attack.id}: step 1 failed: {_visible(replier)[-3000:]}"
    if attack.id == "fs-symlink-out":
        host_text = desk.host_secret_file.read_bytes()
        for name, data in replier.file_bytes.items():
            assert b"root:x:0:0" not in data and host_text not in data, f"{name} carries a host file"
        assert {f.name for f in answer.files} == set(), [f.name for f in answer.files]
        assert any("symlink" in n for n in answer.notices), answer.notices
    if attack.id == "res-print-bomb":
        assert len(answer.text) <= 20_000
        assert "truncated" in answer.text
        assert all(len(s.observation or "") <= 1_500 for s in replier.steps)
    if attack.id == "pickle-bytes-answer":  # the raw pickle came back as inert (escaped) text, not loaded
        assert re.search(r"cos\\+nsystem", answer.text), answer.text[:500]
    if attack.id.startswith("pickle-"):  # the Payload object came back as its str(), not unpickled
        assert "object at 0x" in answer.text, answer.text[:500]
    if attack.category == "approvals":  # nothing was booked, whichever way the code tried
        assert not (desk.root / "hr" / "leave_bookings.csv").exists(), "a gated tool ran without approval"
        assert not list(desk.runner.settings.data_dir.rglob("leave_bookings.csv"))
        outcomes = [e.get("outcome") for e in read_audit(desk.runner.settings) if e.get("event") == "approval_finished"]
        assert "approved" not in outcomes


def test_the_corpus_covers_every_category():
    categories = {a.category for a in ALL}
    assert categories >= {"filesystem", "procfs", "docker-api", "secrets", "network", "resources", "output",
                          "lifecycle", "python-escape", "deserialization"}
    assert len({a.id for a in ALL}) == len(ALL)
    locked = [a for a in ALL if a.department == "locked" and a.category == "python-escape"]
    opened = [a for a in ALL if a.department == "open" and a.category == "python-escape"]
    assert len(locked) == len(opened) == len(attack_corpus.PY_ESCAPES)
