"""Properties every real sandbox must have, checked against both backends: Docker and WebAssembly.

Each test runs probe code through the executor exactly as CodeAgent would and checks what a user or an
operator would see. Docker-only checks (docker inspect, tmpfs flags, image contents) stay in
test_sandbox.py; Wasm-only ones (Deno's permissions, load-time import check) are at the end.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from smolagents import tool
from smolagents.default_tools import FinalAnswerTool

from agents.chat import Caller
from agents.sandbox.executor import SandboxExecutionError
from agents.tools import current_caller
from tests.sandbox_support import backend_provider, labelled_containers, wasm_processes

CANARY = "agentdesk-canary-5be0e2c1"
CALLER = Caller("slack", "T-TEST", "U-BOB", "Bob")
BACKENDS = [pytest.param("docker", marks=pytest.mark.docker), pytest.param("wasm", marks=pytest.mark.wasm)]


@tool
def whoami(greeting: str) -> str:
    """Greets the person who asked, as known on the host.

    Args:
        greeting: word to put in front of the user id
    """
    return f"{greeting} {current_caller().user}"


@tool
def broken(x: int) -> int:
    """Always fails, like a tool whose backend is down.

    Args:
        x: anything
    """
    raise ValueError(f"backend down for {x}")


@pytest.fixture(scope="module", params=BACKENDS)
def provider(request, tmp_path_factory):
    os.environ["AGENTDESK_TEST_CANARY_SECRET"] = CANARY
    prov = backend_provider(request.param, tmp_path_factory.mktemp(f"sbx-{request.param}"), sandbox_pool_size=2)
    prov.start()
    yield prov
    prov.close()
    os.environ.pop("AGENTDESK_TEST_CANARY_SECRET", None)


@pytest.fixture
def sandbox(provider):
    boxes = []

    def make(imports=(), timeout=10.0):
        box = provider.acquire(authorized_imports=list(imports), step_timeout_s=timeout, caller=CALLER)
        box.send_tools({"final_answer": FinalAnswerTool(), "whoami": whoami, "broken": broken})
        box.send_variables({"OUTPUT_DIR": box.output_dir, "INPUT_FILES": []})
        boxes.append(box)
        return box

    yield make
    for box in boxes:
        box.cleanup()


def _write(path: str, data: str) -> str:
    """Probe code writing a file with os (open() is not among LocalPythonExecutor's allowed builtins)."""
    return (f"import os\nfd = os.open({path}, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)\n"
            f"os.write(fd, {data!r}.encode())\nos.close(fd)\n")


def test_state_kept_across_steps_and_prints_captured(sandbox):
    box = sandbox()
    first = box("counter = 41\nprint('step one')")
    assert first.logs == "step one\n" and first.is_final_answer is False
    assert box("counter += 1\ncounter").output == 42
    final = box("final_answer({'n': counter, 'list': [1, 'two', None]})")
    assert final.is_final_answer and final.output == {"n": 42, "list": [1, "two", None]}


def test_tool_bridge_runs_on_host_with_caller_bound(sandbox):
    box = sandbox()
    assert box("whoami('hello')").output == "hello U-BOB"
    assert box("whoami(greeting='hi')").output == "hi U-BOB"
    handled = box("try:\n    broken(3)\n    r = 'no error'\nexcept Exception as e:\n    r = str(e)\nr").output
    assert "ValueError: backend down for 3" in handled
    with pytest.raises(SandboxExecutionError, match="backend down"):
        box("broken(x=4)")


def test_unauthorized_import_refused(sandbox):
    box = sandbox(imports=["math"])
    assert box("import math\nmath.floor(2.5)").output == 2
    with pytest.raises(SandboxExecutionError, match="Import of os is not allowed"):
        box("import os\nos.getcwd()")
    with pytest.raises(SandboxExecutionError, match="Forbidden access to module: os|not allowed"):
        box("import random\nrandom._os.getcwd()")


def test_infinite_loop_stopped_at_step_timeout_then_next_step_works(sandbox):
    box = sandbox(imports=["os"], timeout=2.0)
    box("x = 5\n" + _write("OUTPUT_DIR + '/before.txt'", "kept"))
    started = time.monotonic()
    with pytest.raises(SandboxExecutionError) as err:
        box("n = 0\nwhile True:\n    n += 1")
    elapsed = time.monotonic() - started
    assert 2.0 <= elapsed < 30.0, elapsed  # stopped, then replaced (a fresh sandbox on a loaded machine)
    assert "timed out after 2 s" in str(err.value) and "reset" in str(err.value)
    assert box("7 * 6").output == 42
    with pytest.raises(SandboxExecutionError, match="not defined"):
        box("x")
    assert box("import os\nsorted(os.listdir(OUTPUT_DIR))").output == ["before.txt"]
    assert box.finish_outputs() == []
    assert (box.host_output_dir / "before.txt").read_text() == "kept"


def test_memory_bomb_stopped_with_clear_message_then_next_step_works(sandbox, provider):
    box = sandbox()
    started = time.monotonic()
    with pytest.raises(SandboxExecutionError) as err:
        box("blob = 'A' * (1500 * 1024 ** 2)\nlen(blob)")
    assert time.monotonic() - started < 30
    message = str(err.value)
    assert "memory" in message and f"{provider.settings.sandbox_memory_mb} MB" in message, message
    assert box("2 * 21").output == 42
    with pytest.raises(SandboxExecutionError) as err:
        box("chunks = []\nwhile True:\n    chunks.append('B' * (8 * 1024 ** 2))")
    assert "memory" in str(err.value), str(err.value)
    assert box("'still answering'").output == "still answering"


def test_output_files_collected_links_skipped(sandbox):
    box = sandbox(imports=["os"])
    box(_write("OUTPUT_DIR + '/report.csv'", "a,b\n1,2\n")
        + "os.mkdir(OUTPUT_DIR + '/sub')\n"
        + _write("OUTPUT_DIR + '/sub/notes.txt'", "hello")
        + "os.symlink('/etc/passwd', OUTPUT_DIR + '/passwd.txt')\n")
    notices = box.finish_outputs()
    assert any("passwd.txt" in n and "symlink" in n for n in notices), notices
    assert not os.path.lexists(box.host_output_dir / "passwd.txt")
    assert (box.host_output_dir / "report.csv").read_text() == "a,b\n1,2\n"
    assert (box.host_output_dir / "sub" / "notes.txt").read_text() == "hello"


@pytest.mark.parametrize("kind", BACKENDS)
def test_output_copy_is_capped_at_the_output_limit(kind, tmp_path):
    prov = backend_provider(kind, tmp_path, sandbox_pool_size=0, max_files=2, max_file_mb=4)  # floor: 16 MB
    assert prov.limits.output_bytes == 16 << 20
    box = prov.acquire(authorized_imports=["os"], step_timeout_s=30, caller=CALLER)
    try:
        box.send_variables({"OUTPUT_DIR": box.output_dir})
        written = box("""
import os
written = 0
try:
    for i in range(6):
        fd = os.open(OUTPUT_DIR + '/fill-%d.bin' % i, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for _ in range(4):
                os.write(fd, b'y' * (1 << 20))
                written += 1
        finally:
            os.close(fd)
except OSError:
    pass
written
""").output
        assert written >= 15  # Docker's tmpfs refuses past 16 MB; Wasm's in-memory folder takes all 24
        notices = box.finish_outputs()
        on_host = sum(p.stat().st_size for p in box.host_output_dir.rglob("*") if p.is_file())
        assert 0 < on_host <= 16 << 20
        if written * (1 << 20) > 16 << 20:
            assert any("output limit" in n for n in notices), notices
    finally:
        box.cleanup()
        prov.close()


def test_host_environment_absent(sandbox):
    os.environ["AGENTDESK_TEST_CANARY_SECRET"] = CANARY
    box = sandbox(imports=["os"])
    env = box("import os\ndict(os.environ)").output
    assert env, "the probe must have read a non-empty environment"
    assert CANARY not in json.dumps(env) and "AGENTDESK_TEST_CANARY_SECRET" not in env
    assert not {"MODEL_API_KEY", "SLACK_BOT_TOKEN", "HF_TOKEN"} & set(env)


def test_no_network(sandbox):
    box = sandbox(imports=["socket"])
    out = box("""
import socket
r = {}
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect(("1.1.1.1", 53))
    r["net"] = "connected"
except OSError as e:
    r["net"] = "blocked: " + str(e)
try:
    address = socket.getaddrinfo("pypi.org", 443)[0][4]
    r["dns"] = "resolved"
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect(address)
    r["dns_connect"] = "connected"
except OSError as e:
    r.setdefault("dns", "blocked")
    r["dns_connect"] = "blocked: " + str(e)
r
""").output
    assert out["net"].startswith("blocked"), out
    # Docker: no resolver. Pyodide: Emscripten answers with a made-up local address (no packet leaves the
    # process: Deno has no network permission), and connecting to it fails like any other address.
    assert out["dns"] == "blocked" or out["dns_connect"].startswith("blocked"), out


def test_no_host_filesystem(sandbox, provider, tmp_path_factory):
    secret = tmp_path_factory.mktemp("host-only") / "secret.txt"
    secret.write_text(CANARY)
    box = sandbox(imports=["os"])
    code = f"""
import os
r = {{}}
for path in [{str(secret)!r}, {str(Path(__file__).resolve())!r}, '/etc/passwd', '/etc/shadow']:
    try:
        fd = os.open(path, os.O_RDONLY)
        r[path] = os.read(fd, 4096).decode(errors="replace")
        os.close(fd)
    except OSError as e:
        r[path] = "refused: " + str(e)
r
"""
    out = box(code).output
    assert out[str(secret)].startswith("refused"), out
    assert out[str(Path(__file__).resolve())].startswith("refused"), out
    assert out["/etc/shadow"].startswith("refused"), out
    if provider.settings.sandbox == "wasm":  # Docker has the image's own /etc/passwd; Pyodide has no /etc
        assert out["/etc/passwd"].startswith("refused"), out
    else:
        assert "root:x:0:0" in out["/etc/passwd"] and out["/etc/passwd"] != Path("/etc/passwd").read_text()[:4096]


@pytest.mark.parametrize("kind", BACKENDS)
def test_no_process_left_after_the_task(kind, tmp_path):
    prov = backend_provider(kind, tmp_path, sandbox_pool_size=1)

    def left() -> list:
        if kind == "docker":
            return [c["Id"] for c in labelled_containers(prov.instance_id)]
        return wasm_processes(prov.instance_id)

    try:
        prov.start()
        box = prov.acquire(authorized_imports=[], step_timeout_s=2, caller=CALLER)
        box.send_tools({"final_answer": FinalAnswerTool()})
        with pytest.raises(SandboxExecutionError, match="timed out"):
            box("while True:\n    pass")  # the replaced process must be gone too
        assert box("1 + 1").output == 2
        deadline = time.monotonic() + 30
        while (prov.warm < 1 or len(left()) != 2) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(left()) == 2  # the task's sandbox and the refilled warm one; the timed-out one is gone
        box.cleanup()
        assert len(left()) == 1
        assert not box.host_output_dir.exists()
    finally:
        prov.close()
    assert left() == []


# -- WebAssembly only ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wasm_provider(tmp_path_factory):
    prov = backend_provider("wasm", tmp_path_factory.mktemp("wasm"), sandbox_pool_size=1)
    prov.start()
    yield prov
    prov.close()


def test_wasm_process_has_no_network_env_run_or_write_permission(wasm_provider):
    box = wasm_provider.acquire(authorized_imports=[], step_timeout_s=5, caller=CALLER)
    try:
        pid = box._instance.process.pid
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    finally:
        box.cleanup()
    flags = [a for a in args if a.startswith("--")]
    assert not [f for f in flags if f.startswith(("--allow-net", "--allow-env", "--allow-run", "--allow-write",
                                                  "--allow-ffi", "--allow-sys", "--allow-all", "-A"))], flags
    assert {"--deny-net", "--deny-env", "--deny-run", "--deny-write", "--deny-ffi", "--no-prompt"} <= set(flags)
    readable = [f for f in flags if f.startswith("--allow-read=")]
    assert len(readable) == 1
    for path in readable[0].split("=", 1)[1].split(","):
        assert "agentdesk/wasm" in path or path.endswith(("inside.py", "wasm_boot.py", "wasm_runner.mjs")), path
    memory = wasm_provider.settings.sandbox_memory_mb
    assert f"--wasm-max-mem-pages={memory * 16}" in next(f for f in flags if f.startswith("--v8-flags="))
    assert CANARY not in "".join(environ) and not any(e.startswith("MODEL_API_KEY") for e in environ)


def test_wasm_input_files_are_copied_in(wasm_provider):
    box = wasm_provider.acquire(authorized_imports=["os", "csv", "io"], step_timeout_s=5, caller=CALLER)
    try:
        (box.host_input_dir / "leave.csv").write_text("name,days\nbob,12\n")
        box.send_tools({"final_answer": FinalAnswerTool()})
        box.send_variables({"INPUT_FILES": [f"{box.input_dir}/leave.csv"], "OUTPUT_DIR": box.output_dir})
        out = box("import os, csv, io\nfd = os.open(INPUT_FILES[0], os.O_RDONLY)\n"
                  "rows = list(csv.DictReader(io.StringIO(os.read(fd, 1000).decode())))\nrows[0]['days']").output
        assert out == "12"
    finally:
        box.cleanup()


def test_wasm_sweep_kills_sandboxes_of_a_dead_process(tmp_path):
    crashing = textwrap.dedent(f"""
        import os, sys, time
        from agents.chat import Caller
        from agents.sandbox.wasm_sandbox import WasmSandboxProvider
        from tests.sandbox_support import sandbox_settings
        import dataclasses
        settings = dataclasses.replace(sandbox_settings(sys.argv[1], sandbox_pool_size=0), sandbox="wasm")
        provider = WasmSandboxProvider(settings)
        box = provider.acquire(authorized_imports=[], step_timeout_s=60, caller=Caller("t", "t", "t"))
        box._instance.channel.send({{"type": "run", "code": "while True:\\n    pass"}}, time.monotonic() + 10)
        print(provider.instance_id, flush=True)
        os.kill(os.getpid(), 9)
    """)
    backend_provider("wasm", tmp_path)  # skips when not installed
    crashed = subprocess.run([sys.executable, "-c", crashing, str(tmp_path)], capture_output=True, text=True,
                             cwd=Path(__file__).parents[1], timeout=120)
    crashed_id = crashed.stdout.strip()
    assert crashed.returncode == -9 and crashed_id, crashed.stderr
    time.sleep(0.5)
    assert len(wasm_processes(crashed_id)) == 1  # spinning: it never reads its closed stdin
    fresh = backend_provider("wasm", tmp_path, sandbox_pool_size=0)
    try:
        fresh.start()
        deadline = time.monotonic() + 10
        while wasm_processes(crashed_id) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert wasm_processes(crashed_id) == []
    finally:
        fresh.close()


def test_departments_needing_unavailable_imports_are_refused_at_load(tmp_path):
    from agents.departments import load_company
    from agents.execution import unavailable_departments
    from agents.settings import BUNDLED_CONFIG

    prov = backend_provider("wasm", tmp_path)
    company = load_company(BUNDLED_CONFIG)
    found = unavailable_departments(company, prov)
    assert found == {"marketing": ["matplotlib", "matplotlib.pyplot", "numpy", "pandas"]}
    assert prov.missing_imports(["datetime", "math", "json", "csv", "zoneinfo", "*"]) == []
    assert prov.missing_imports(["tkinter", "requests"]) == ["requests", "tkinter"]
    docker_like = dataclasses.replace(prov.settings, sandbox="local")
    from agents.sandbox import make_provider

    assert unavailable_departments(company, make_provider(docker_like)) == {}


def test_wasm_code_cannot_reach_javascript_even_with_every_import_allowed(wasm_provider):
    box = wasm_provider.acquire(authorized_imports=["*"], step_timeout_s=10, caller=CALLER)
    try:
        box.send_tools({"final_answer": FinalAnswerTool()})
        for module in ("js", "pyodide", "pyodide.ffi", "pyodide_js", "_pyodide", "micropip"):
            with pytest.raises(SandboxExecutionError, match="not available in the sandbox|No module named"):
                box(f"import {module}")
        out = box("import sys\nsorted(m for m in sys.modules if m.split('.')[0] in ('js', 'pyodide', '_pyodide'))").output
        assert out == []
        assert box("import json, datetime\njson.dumps({'d': str(datetime.date(2026, 1, 2))})").output == '{"d": "2026-01-02"}'
    finally:
        box.cleanup()
