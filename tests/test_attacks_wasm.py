"""The attack corpus against SANDBOX=wasm, through the full request path (the same desk as test_attacks.py).

Every attack gets the checks that do not depend on the backend: a clear outcome in the thread (never
silence or a traceback), no planted secret anywhere (replies, logs, files, what the model saw), the pickle
payloads never run on the host, no sandbox process of the task left, and the bot answers right after.

On top of that, each attack's own outcome is checked against what containment means in Pyodide
(WASM_EXPECT / WASM_STEP_ERROR): the mechanism differs from Docker's (there is no kernel to ask: files,
sockets, processes and signals are emulated inside wasm, or absent), so the Docker regexes do not apply.
Attacks whose Docker expectation tests a container mechanism with no Wasm counterpart are listed in
NOT_APPLICABLE with the reason; they still get every backend-independent check above.
Emscripten's errno numbers are its own: ENOENT 44, EACCES 2, EPERM 63, ENOSYS 52, EHOSTUNREACH 23.
"""
from __future__ import annotations

import re
import time

import pytest

from tests.attack_corpus import AFTER_TEXT, ALL, MISSING, Attack
from tests.sandbox_support import wasm_processes
from tests.test_attacks import (
    POOL, Desk, _check_specific, _fill, _outcomes, _visible, assert_healthy, assert_no_secrets, open_desk,
)

pytestmark = pytest.mark.wasm

W_MISSING = r"FileNotFoundError 44"
W_DENIED = r"(PermissionError (2|63)|OSError (2|63|52|58))"
W_NO_NET = r"(OSError (23|52|138|26)|gaierror.*|URLError|TimeoutError|ConnectionRefusedError.*|AttributeError|OK None)"
W_NO_PROC = r"(FileNotFoundError 44|OSError (52|58|63)|AttributeError|PermissionError 63)"

#: Probe outcomes that mean "contained" in Pyodide (a fully matching regex per probe).
WASM_EXPECT: dict[str, dict[str, str]] = {
    "fs-read-host": {
        "shadow": W_MISSING, "host_file": W_MISSING, "host_file_via_proc1_root": W_MISSING,
        "host_file_via_self_root": W_MISSING, "host_state_db": W_MISSING, "host_dockerd_config": W_MISSING,
        "proc1_cmdline": W_MISSING,
    },
    "fs-symlink-out": {"link_passwd": "OK None", "link_host_file": "OK None", "link_root": "OK None"},
    "docker-socket": {"var_run": W_NO_NET, "run": W_NO_NET, "containerd": W_NO_NET, "tcp_2375": W_NO_NET,
                      "docker_host_env": "OK None"},
    "secrets-env": {"environ_hits": "OK 0", "secretish_names": r"OK \[\]", "files_with_canary": r"OK \[\]"},
    "net-egress-registries": {"tcp_pypi_by_name": W_NO_NET, "http_debian": W_NO_NET,
                              "tcp_pypi_by_address": W_NO_NET},
    "res-fork-bomb": {"fork": r"(OSError 52|AttributeError|BlockingIOError.*)"},
    "res-thread-bomb": {"threads": r"RuntimeError"},
}
#: Step errors that mean "contained" for attacks that take their step down.
WASM_STEP_ERROR: dict[str, str] = {
    # Pyodide has no threads: the flooding thread cannot start (and a flood from the step itself would be
    # cut by the step's byte cap or timeout, as with Docker)
    "bridge-frame-flood": r"(?s).*(can't start new thread|before its tool call was answered|timed out after 5 s).*",
    "res-memory-bomb": r"(?s).*(MemoryError|OverflowError|memory).*",
    "res-cpu-spin-in-c": r"(?s).*timed out after 5 s.*restarted.*",
    "res-redos": r"(?s).*timed out after 5 s.*restarted.*",
    "res-sleep": r"(?s).*timed out after 5 s.*restarted.*",
}
# The gated tool runs on the host whatever the backend: the same refusals hold in Wasm.
WASM_EXPECT.update({a.id: {probe: W_MISSING if pattern == MISSING else pattern for probe, pattern in a.expect.items()}
                    for a in ALL if a.category == "approvals"})
#: Docker expectations with no Wasm counterpart, and why (the backend-independent checks still run).
NOT_APPLICABLE: dict[str, str] = {
    "fs-write-system": "uid 65534 and a read-only root are container mechanisms; Pyodide's filesystem is an "
                       "in-memory copy private to the process, so writes there touch nothing of the host",
    "fs-mounts": "mounts, /proc/self/mountinfo and the mount syscall do not exist in wasm",
    "fs-exec-dropped-binary": "there are no programs to execute: Pyodide has no fork/exec",
    "proc-kernel-knobs": "/proc/sys, /sys and cgroups do not exist in Pyodide's filesystem",
    "proc-privileges": "capabilities, seccomp, setuid and namespaces are kernel features wasm cannot reach",
    "res-disk-tmp": "tmpfs sizes and inode and fd ulimits are Docker's; in Wasm /tmp is wasm memory, bounded "
                    "by SANDBOX_MEMORY_MB",
    "res-disk-output-dir": "OUTPUT_DIR is in-memory (bounded by SANDBOX_MEMORY_MB); the host caps what it copies "
                           "out at the same output limit (tests/test_sandbox_backends.py)",
    "life-orphan": "Pyodide cannot fork, so there is nothing to orphan",
    "sys-kernel-surface": "raw syscalls (io_uring, bpf, keyctl, ...) do not exist in wasm: there is no kernel "
                          "below the interpreter, only Emscripten's emulation inside the process",
    "teardown-stdout-flood": "the flood needs a thread, and Pyodide has none; the check that teardown is not "
                             "held by a flooding sandbox is the no-process-left check every attack gets",
    "life-segfault": "a null read in wasm reads linear memory instead of faulting: no crash to observe",
    "net-egress-registries/dns": "Emscripten answers getaddrinfo with a made-up local address without any "
                                 "lookup (Deno has no network permission); the connections that follow fail",
    "secrets-env/proc": "there is no /proc/<pid>/environ; os.environ is Pyodide's own short list",
}


@pytest.fixture(scope="module")
def desk(tmp_path_factory):
    yield from open_desk(tmp_path_factory, "wasm")


def _await_only_warm_pool(desk: Desk, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(wasm_processes(desk.provider_id)) > POOL:
        if time.monotonic() > deadline:
            raise AssertionError(f"sandbox processes left behind: {wasm_processes(desk.provider_id)}")
        time.sleep(0.2)  # polling /proc for a condition, bounded by the deadline above


@pytest.mark.parametrize("attack", ALL, ids=[a.id for a in ALL])
def test_attack_is_contained_in_wasm(desk: Desk, attack: Attack, caplog):
    caplog.set_level("DEBUG")
    marker = f"attack {attack.id} run {desk.counter + 1}"
    desk.model.script(marker, code_reply_for(attack, desk), code_reply_after())
    started = time.monotonic()
    replier = desk.ask(f"{attack.department}: {marker}")
    elapsed = time.monotonic() - started
    seen = _visible(replier)

    assert replier.finals or replier.errors, f"{attack.id}: no reply at all"
    assert "Traceback (most recent call last)" not in seen
    assert elapsed < 60, f"{attack.id} held the task for {elapsed:.0f} s"
    errors = [s.error for s in replier.steps if s.error]

    if attack.department == "locked" and attack.step_error and attack.category == "python-escape":
        assert errors and re.fullmatch(attack.step_error, errors[0]), f"{attack.id}: step errors {errors}"
    if attack.id in WASM_STEP_ERROR:
        assert errors and re.fullmatch(WASM_STEP_ERROR[attack.id], errors[0]), f"{attack.id}: step errors {errors}"
    if attack.step_error or attack.id in WASM_STEP_ERROR or errors:
        assert replier.answer.text == AFTER_TEXT, f"{attack.id}: the agent did not get its next step: {seen[-2000:]}"
    if attack.id in WASM_EXPECT:
        outcomes = _outcomes(attack, replier)
        wrong = {probe: outcomes.get(probe) for probe, pattern in WASM_EXPECT[attack.id].items()
                 if not re.fullmatch(pattern, str(outcomes.get(probe)))}
        assert not wrong, f"{attack.id}: outcomes not contained: {wrong}"
    if attack.category == "python-escape" and attack.department == "open" and not errors:
        outcomes = _outcomes(attack, replier)  # the escape "worked": it reaches a wasm process with nothing in it
        assert "uid=" not in str(outcomes.get("id")), outcomes

    if attack.id in ("fs-symlink-out", "pickle-bytes-answer", "pickle-object-answer"):
        _check_specific(attack, desk, replier)
    assert not desk.host_marker.exists(), "the host deserialized sandbox output (pickle payload ran on the host)"
    assert_no_secrets(desk, replier, caplog)
    _await_only_warm_pool(desk)
    assert_healthy(desk)


def code_reply_for(attack: Attack, desk: Desk) -> dict:
    from tests.standins.model_server import code_reply

    # The prelude's container id comes from /proc/self/mountinfo, which Pyodide does not have. Emscripten's
    # emulated connect() with a timeout waits it out before failing (Docker fails at once: no route), so the
    # three 3 s connection attempts of the egress probe would add up past the 5 s step timeout: 1 s each.
    code = _fill(attack, desk).replace('R["cid"] = _cid()', 'R["cid"] = ""').replace("timeout=3)", "timeout=1)")
    return code_reply(code, f"Running {attack.id}.")


def code_reply_after() -> dict:
    from tests.standins.model_server import code_reply

    return code_reply(f'final_answer("{AFTER_TEXT}")')


def test_every_attack_is_checked_or_says_why_not():
    """The report: each corpus entry's own outcome is checked in Wasm, or NOT_APPLICABLE says why not."""
    for attack in ALL:
        checked = (attack.id in WASM_EXPECT or attack.id in WASM_STEP_ERROR or attack.category == "python-escape"
                   or attack.id in ("fs-symlink-out", "res-print-bomb", "pickle-object-answer",
                                    "pickle-bytes-answer"))
        assert checked or attack.id in NOT_APPLICABLE, f"{attack.id}: neither checked nor explained"
