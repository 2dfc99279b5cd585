"""Round-2 hardening of the Docker sandbox, attacked from inside a real container (runc, and runsc where the
engine has it registered): the step deadline holds against the agent's code writing its own frames onto the
bridge, tool time counts (except an approval wait), per-step caps, cleanup that never waits for a running
step, teardown of a sandbox flooding its stdout, and the product's seccomp profile.
"""
from __future__ import annotations

import dataclasses
import json
import platform
import threading
import time

import docker
import pytest
from smolagents import tool
from smolagents.default_tools import FinalAnswerTool

from agents.chat import Caller
from agents.sandbox import pause_step_clock
from agents.sandbox.docker_sandbox import DockerSandboxProvider, SandboxExecutionError, seccomp_profile
from tests.sandbox_support import inspect, labelled_containers, require_docker_sandbox, sandbox_settings

pytestmark = pytest.mark.docker

CALLER = Caller("slack", "T-TEST", "U-ALICE", "Alice")
RUNSC_MISSING = "gVisor (runsc) runtime not registered with this Docker engine; see SECURITY.md"
#: The runner's private copy of its stdout (inside.py dups fds 0 and 1 to 3 and 4 at start): what hostile code
#: can write frames to.
PROTOCOL_FD = 4


@tool
def whoami(greeting: str) -> str:
    """Greets the person who asked.

    Args:
        greeting: word to put in front
    """
    return f"{greeting} U-ALICE"


@tool
def slow_lookup(seconds: float) -> str:
    """A tool whose backend takes a while.

    Args:
        seconds: how long it takes
    """
    time.sleep(seconds)
    return "looked up"


@tool
def approved_action(seconds: float) -> str:
    """A tool that waits for a person to approve it.

    Args:
        seconds: how long the person takes to approve
    """
    with pause_step_clock():
        time.sleep(seconds)
    return "approved"


def _runtimes() -> dict:
    try:
        client = docker.from_env(timeout=10)
    except docker.errors.DockerException:
        return {}
    try:
        return client.info().get("Runtimes") or {}
    except Exception:  # noqa: BLE001 - no engine: require_docker_sandbox reports it
        return {}
    finally:
        client.close()


@pytest.fixture(scope="module", params=["runc", "runsc"])
def provider(request, tmp_path_factory):
    runtime = request.param
    if runtime == "runsc" and "runsc" not in _runtimes():
        pytest.skip(RUNSC_MISSING)
    settings = sandbox_settings(tmp_path_factory.mktemp(runtime), sandbox_pool_size=1,
                                sandbox_runtime=None if runtime == "runc" else runtime)
    require_docker_sandbox(settings)
    prov = DockerSandboxProvider(settings)
    prov.start()
    yield prov
    prov.close()
    assert labelled_containers(prov.instance_id) == []


@pytest.fixture
def box(provider):
    made = []

    def make(imports=("os",), timeout=5.0):
        sbx = provider.acquire(authorized_imports=list(imports), step_timeout_s=timeout, caller=CALLER)
        sbx.send_tools({"final_answer": FinalAnswerTool(), "whoami": whoami, "slow_lookup": slow_lookup,
                        "approved_action": approved_action})
        sbx.send_variables({"OUTPUT_DIR": sbx.output_dir})
        made.append(sbx)
        return sbx

    yield make
    for sbx in made:
        sbx.cleanup()


def _run_bounded(sbx, code: str, bound_s: float):
    """Run one step in a thread; (seconds taken, result or exception). A step still running after bound_s is
    killed from outside (the old code could neither stop it nor clean it up) and reported as None."""
    outcome: list = []

    def step():
        try:
            outcome.append(sbx(code))
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    started = time.monotonic()
    worker = threading.Thread(target=step, daemon=True)
    worker.start()
    worker.join(bound_s)
    elapsed = time.monotonic() - started
    if worker.is_alive():
        client = docker.from_env()
        try:
            client.api.kill(sbx.container_id)
        finally:
            client.close()
        worker.join(30)
        return elapsed, None
    return elapsed, outcome[0]


# -- the step deadline --------------------------------------------------------------------------------------

#: The attack of issue 16: tool-call frames written straight onto the bridge, while a second thread reads the
#: host's replies just slowly enough that each of the host's writes blocks for a while and then succeeds.
FRAME_FLOOD = f"""
import os, threading, time
frame = b'{{"type": "tool_call", "name": "whoami", "kwargs": {{"greeting": "x"}}}}\\n'
def drain():
    while True:
        time.sleep(0.2)
        os.read({PROTOCOL_FD - 1}, 4096)
threading.Thread(target=drain, daemon=True).start()
for i in range(1000000):
    os.write({PROTOCOL_FD}, frame)
"""


def test_frames_written_by_the_agents_code_cannot_stretch_the_step(box):
    sbx = box(imports=["os", "threading", "time"], timeout=2.0)
    sbx("kept = 1")
    # bound: the step timeout plus a replacement sandbox's start on a loaded 2-core machine
    elapsed, result = _run_bounded(sbx, FRAME_FLOOD, bound_s=25)
    assert result is not None, f"the step was still running after {elapsed:.0f} s (step timeout 2 s)"
    assert isinstance(result, SandboxExecutionError), result
    assert "before its tool call was answered" in str(result) or "timed out" in str(result), result
    assert sbx("6 * 7").output == 42  # a fresh sandbox, state reset
    with pytest.raises(SandboxExecutionError, match="not defined"):
        sbx("kept")


def test_tool_time_counts_towards_the_step_but_an_approval_wait_does_not(box):
    sbx = box(timeout=2.0)
    elapsed, result = _run_bounded(sbx, "slow_lookup(4)", bound_s=25)
    assert isinstance(result, SandboxExecutionError) and "timed out after 2 s" in str(result), result
    out = sbx("approved_action(3)")
    assert out.output == "approved"


def test_tool_calls_and_bytes_per_step_are_capped(box):
    sbx = box(timeout=30.0)
    assert (sbx.limits.step_tool_calls, sbx.limits.step_bytes) == (500, 16 << 20)  # the defaults
    sbx.limits = dataclasses.replace(sbx.limits, step_tool_calls=40, step_bytes=1 << 20)  # cheaper to reach
    with pytest.raises(SandboxExecutionError, match="more than 40 tool calls"):
        sbx("for i in range(60):\n    whoami('x')")
    with pytest.raises(SandboxExecutionError, match="more than 1 MB in one step"):
        sbx("for i in range(39):\n    whoami('x' * 30000)")
    assert sbx("len([whoami('y') for i in range(30)])").output == 30


def test_unsolicited_frames_between_steps_are_refused(box):
    sbx = box(imports=["os", "threading", "time"], timeout=5.0)
    sbx(f"import os, threading, time\n"
        f"threading.Thread(target=lambda: (time.sleep(0.5), os.write({PROTOCOL_FD}, "
        f"b'{{\"type\": \"result\", \"output\": \"forged\"}}\\n')), daemon=True).start()")
    time.sleep(1.5)
    with pytest.raises(SandboxExecutionError, match="nobody asked for"):
        sbx("'real answer'")
    assert sbx("'real answer'").output == "real answer"


def test_messages_larger_than_a_pipe_buffer_cross_both_ways(box):
    """gVisor's pipes take 64 KB per write: the runner must finish every line it starts (it used to hang)."""
    sbx = box(timeout=10.0)
    assert len(sbx("'y' * 300000").output) == 300000
    assert sbx("len(whoami('x' * 200000))").output == 200000 + len(" U-ALICE")


# -- cleanup and teardown -----------------------------------------------------------------------------------

def test_cleanup_kills_a_running_step_at_once(box, provider):
    sbx = box(imports=["time"], timeout=120.0)
    cid = sbx.container_id
    outcome: list = []
    worker = threading.Thread(target=lambda: outcome.append(_catch(sbx, "import time\ntime.sleep(600)")), daemon=True)
    worker.start()
    time.sleep(1.0)
    started = time.monotonic()
    sbx.cleanup()
    took = time.monotonic() - started
    worker.join(15)
    assert not worker.is_alive(), "the step kept running after cleanup"
    assert took < 5, f"cleanup waited {took:.1f} s for the running step"
    assert isinstance(outcome[0], SandboxExecutionError) and "stopped" in str(outcome[0]), outcome
    assert cid not in {c["Id"] for c in labelled_containers(provider.instance_id)}
    assert not sbx.host_output_dir.exists()


def _catch(sbx, code):
    try:
        return sbx(code)
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return exc


def test_teardown_of_a_sandbox_flooding_its_stdout_is_quick(box, provider):
    sbx = box(imports=["os", "threading", "time"], timeout=5.0)
    cid = sbx.container_id
    out = sbx(f"import os, threading, time\n"
              f"def flood():\n    time.sleep(0.5)\n    while True:\n        os.write({PROTOCOL_FD}, b'x' * 65536)\n"
              f"threading.Thread(target=flood, daemon=True).start()\nfinal_answer('done')")
    assert out.is_final_answer and out.output == "done"
    time.sleep(2.0)  # the flood fills every buffer between the runner and this process
    started = time.monotonic()
    sbx.cleanup()
    took = time.monotonic() - started
    assert took < 8, f"removing the sandbox took {took:.1f} s"
    assert cid not in {c["Id"] for c in labelled_containers(provider.instance_id)}


# -- the seccomp profile ------------------------------------------------------------------------------------

#: x86_64 numbers; syscall(nr, harmless arguments) is refused with EPERM by the profile, while a kernel that
#: allowed it would answer EFAULT/EBADF/EINVAL or succeed.
SYSCALLS_X86_64 = {
    "io_uring_setup": (425, "1, None"), "io_uring_enter": (426, "-1, 0, 0, 0, None, 0"),
    "io_uring_register": (427, "-1, 0, None, 0"), "memfd_create": (319, "b'x', 0"),
    "execveat": (322, "-1, b'', None, None, 0"), "userfaultfd": (323, "0"), "keyctl": (250, "0, 0, 0, 0, 0"),
    "add_key": (248, "b'user', b'k', None, 0, -2"), "request_key": (249, "b'user', b'k', None, -2"),
    "bpf": (321, "0, None, 0"), "perf_event_open": (298, "None, 0, -1, -1, 0"), "ptrace": (101, "0, 0, 0, 0"),
    "process_vm_readv": (310, "1, None, 0, None, 0, 0"),
}
SOCKETS = {  # (family, type, protocol): AF_VSOCK, AF_ALG, AF_PACKET, AF_KEY, netlink other than ROUTE, ...
    "vsock": (40, 1, 0), "alg": (38, 5, 0), "packet": (17, 3, 0), "key": (15, 3, 2), "netlink_audit": (16, 3, 9),
    "netlink_uevent": (16, 3, 15), "bluetooth": (31, 1, 0), "xdp": (44, 3, 0), "tipc": (30, 5, 0),
}
ALLOWED_SOCKETS = {"unix": (1, 1, 0), "inet": (2, 1, 0), "inet6": (10, 1, 0), "netlink_route": (16, 3, 0)}


def _probe_code() -> str:
    calls = "\n".join(f"R[{name!r}] = sc({nr}, {args})" for name, (nr, args) in SYSCALLS_X86_64.items())
    return f"""
import ctypes, socket, io, json, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sc(nr, *args):
    ctypes.set_errno(0)
    return ctypes.get_errno() if libc.syscall(nr, *args) == -1 else 0
R = {{}}
{calls}
def sock(spec):
    try:
        socket.socket(*spec).close()
        return 0
    except OSError as e:
        return e.errno
for name, spec in {json.dumps({**SOCKETS, **ALLOWED_SOCKETS})}.items():
    R['socket_' + name] = sock(tuple(spec))
a, b = socket.socketpair()
R['socketpair_unix'] = 0
R['ifaces'] = [n for _, n in socket.if_nameindex()]
R['seccomp'] = [l.split()[1] for l in io.open('/proc/self/status').read().splitlines() if l.startswith('Seccomp:')][0]
R['release'] = os.uname().release
R['clone3'] = sc(435, None, 0)
import threading
done = []
worker = threading.Thread(target=done.append, args=(1,))
worker.start()
worker.join()
R['thread_ran'] = done == [1]
R
"""


def test_seccomp_profile_refuses_what_the_sandbox_never_needs(box, provider):
    if platform.machine() != "x86_64":
        pytest.skip(f"syscall numbers in this test are x86_64's; this host is {platform.machine()}")
    sbx = box(imports=["*"], timeout=20.0)
    security = inspect(sbx.container_id)["HostConfig"]["SecurityOpt"]
    applied = [json.loads(opt.split("=", 1)[1]) for opt in security if opt.startswith("seccomp=")]
    assert applied == [seccomp_profile(provider.settings.sandbox_runtime)], "the product's profile is not applied"
    r = sbx(_probe_code()).output
    allowed = {f"socket_{name}": r[f"socket_{name}"] for name in ALLOWED_SOCKETS}
    assert allowed == {name: 0 for name in allowed} and r["socketpair_unix"] == 0, r
    assert r["ifaces"] == ["lo"]
    if provider.settings.sandbox_runtime == "runsc" and r["seccomp"] == "0":
        # runsc applies a container's seccomp profile only with --oci-seccomp (SECURITY.md); without it these
        # calls reach the Sentry, gVisor's own kernel, never the host's. AF_VSOCK does not exist there.
        assert r["release"] != platform.release()
        assert r["socket_vsock"] in (1, 97), r
        pytest.skip("runsc without --oci-seccomp: the profile is not enforced inside gVisor (see SECURITY.md)")
    refused = {name: r[name] for name in SYSCALLS_X86_64}
    assert refused == {name: 1 for name in SYSCALLS_X86_64}, f"allowed (errno != EPERM): {refused}"
    sockets = {f"socket_{name}": r[f"socket_{name}"] for name in SOCKETS}
    assert sockets == {name: 1 for name in sockets}, sockets
    # clone3 must answer ENOSYS (38), not EPERM: glibc falls back to clone only then, or no thread starts
    assert r["clone3"] == 38 and r["thread_ran"] is True, r


MEMFD_EXEC = """
import ctypes, os, io
libc = ctypes.CDLL(None, use_errno=True)
binary = io.open('/bin/echo', 'rb').read()
R = {}
fd = libc.memfd_create(b'dropped', 0)
R['memfd'] = 'fd' if fd >= 0 else ctypes.get_errno()
if fd >= 0:
    os.write(fd, binary)
    pid = os.fork()
    if pid == 0:
        argv_type = ctypes.c_char_p * 3
        argv = argv_type(b'echo', b'ran', None)
        libc.syscall(322, fd, b'', argv, None, 0x1000)
        os._exit(100 + ctypes.get_errno())
    R['execveat_exit'] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
with io.open('/tmp/dropped', 'wb') as f:
    f.write(binary)
os.chmod('/tmp/dropped', 0o755)
try:
    os.execv('/tmp/dropped', ['echo'])
except OSError as e:
    R['exec_tmp'] = e.errno
R
"""


def test_a_dropped_binary_cannot_run(box, provider):
    sbx = box(imports=["*"], timeout=20.0)
    r = sbx(MEMFD_EXEC).output
    assert r["exec_tmp"] == 13, r  # EACCES: /tmp is noexec
    if provider.settings.sandbox_runtime == "runsc" and r["memfd"] == "fd":
        # without --oci-seccomp gVisor runs it, inside the Sentry like the sandbox's own Python (SECURITY.md)
        pytest.skip("runsc without --oci-seccomp: a memfd binary runs inside gVisor (see SECURITY.md)")
    assert r["memfd"] == 1, r  # EPERM from the profile: nothing to hand to execveat
