"""The Docker sandbox against a real engine: hardening, limits, the tool bridge, outputs, cleanup.

Each test checks the property from outside (docker inspect) or by running probe code through the
executor exactly as CodeAgent would.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest
from smolagents import CodeAgent, tool
from smolagents.models import ChatMessage, MessageRole, Model
from smolagents.default_tools import FinalAnswerTool

from agents.chat import Caller
from agents.sandbox import make_provider
from agents.sandbox.docker_sandbox import DockerSandboxProvider, SandboxExecutionError, output_limit_bytes
from agents.sandbox.local_sandbox import LocalSandboxProvider
from agents.sandbox.outputs import collect_outputs, extract_output_archive, pack_output_folder
from agents.security import sanitize_filename
from agents.tools import current_caller
from tests.sandbox_support import (
    inspect, labelled_containers, labelled_volumes, require_docker_sandbox, sandbox_settings,
)

CANARY = "agentdesk-canary-7d1f0c9e"
CALLER = Caller("slack", "T-TEST", "U-ALICE", "Alice")


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


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    os.environ["AGENTDESK_TEST_CANARY_SECRET"] = CANARY
    settings = sandbox_settings(tmp_path_factory.mktemp("sbx"), sandbox_pool_size=2)
    require_docker_sandbox(settings)
    prov = DockerSandboxProvider(settings)
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


@pytest.mark.docker
def test_container_is_hardened_as_configured(sandbox, provider):
    box = sandbox()
    info = inspect(box.container_id)
    hc, cfg = info["HostConfig"], info["Config"]
    assert hc["NetworkMode"] == "none"
    assert hc["ReadonlyRootfs"] is True
    assert cfg["User"] == "65534:65534"
    assert hc["CapDrop"] == ["ALL"] and not hc["CapAdd"]
    assert "no-new-privileges" in hc["SecurityOpt"]
    assert hc["Privileged"] is False
    assert hc["PidsLimit"] == provider.settings.sandbox_pids
    assert hc["Memory"] == hc["MemorySwap"] == provider.settings.sandbox_memory_mb * 1024 * 1024
    assert hc["NanoCpus"] == int(provider.settings.sandbox_cpus * 1e9)
    assert hc["Init"] is True
    assert hc["IpcMode"] == "none"
    assert hc["LogConfig"]["Type"] == "none"
    assert "noexec" in hc["Tmpfs"]["/tmp"] and "size=64m" in hc["Tmpfs"]["/tmp"]
    assert {u["Name"] for u in hc["Ulimits"]} >= {"nofile", "fsize"}
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert set(mounts) == {"/workspace/in", "/workspace/out"}
    assert mounts["/workspace/in"]["RW"] is False and mounts["/workspace/out"]["RW"] is True
    assert mounts["/workspace/in"]["Type"] == "bind"
    # OUTPUT_DIR: an anonymous tmpfs volume with a size cap, never a host folder
    out = mounts["/workspace/out"]
    assert out["Type"] == "volume" and out["Driver"] == "local"
    client = docker.from_env()
    try:
        volume = client.api.inspect_volume(out["Name"])
    finally:
        client.close()
    assert volume["Options"]["type"] == "tmpfs"
    opts = volume["Options"]["o"].split(",")
    assert {"noexec", "nosuid", "nodev", "mode=0700", "uid=65534", "gid=65534"} <= set(opts)
    assert f"size={output_limit_bytes(provider.settings)}" in opts
    assert output_limit_bytes(provider.settings) == 200 << 20  # 10 files x 20 MB with the default settings
    assert volume["Labels"]["agentdesk.sandbox.provider"] == provider.instance_id
    assert not any("docker.sock" in (m.get("Source") or "") for m in info["Mounts"])
    assert cfg["Labels"]["agentdesk.sandbox"] == "1"
    assert cfg["Labels"]["agentdesk.sandbox.provider"] == provider.instance_id
    env_names = {e.split("=", 1)[0] for e in cfg["Env"]}
    assert env_names <= {"PATH", "HOME", "LANG", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "MPLCONFIGDIR",
                         "MPLBACKEND", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "HOSTNAME"}
    assert not any(CANARY in e for e in cfg["Env"])


@pytest.mark.docker
def test_probes_no_network_readonly_root_nonroot_no_caps(sandbox):
    box = sandbox(imports=["os", "socket"])
    code = """
import os, socket
results = {}
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(3)
try:
    s.connect(("1.1.1.1", 53))
    results["net"] = "connected"
except OSError as e:
    results["net"] = "blocked: " + str(e)
try:
    socket.getaddrinfo("pypi.org", 443)
    results["dns"] = "resolved"
except OSError as e:
    results["dns"] = "blocked"
try:
    os.open("/etc/agentdesk-probe", os.O_WRONLY | os.O_CREAT, 0o644)
    results["rootfs"] = "writable"
except OSError as e:
    results["rootfs"] = str(e)
results["uid"] = os.getuid()
results["gid"] = os.getgid()
fd = os.open("/proc/self/status", os.O_RDONLY)
status = os.read(fd, 100000).decode()
os.close(fd)
results["status"] = {line.split(":")[0]: line.split(":")[1].strip() for line in status.splitlines() if ":" in line}
results
"""
    out = box(code).output
    assert out["net"].startswith("blocked"), out["net"]
    assert out["dns"] == "blocked"
    assert "Read-only file system" in out["rootfs"]
    assert out["uid"] == 65534 and out["gid"] == 65534
    assert int(out["status"]["CapEff"], 16) == 0 and int(out["status"]["CapBnd"], 16) == 0
    assert out["status"]["NoNewPrivs"] == "1"
    assert out["status"]["Seccomp"] == "2"


@pytest.mark.docker
def test_host_environment_and_secrets_absent(sandbox):
    os.environ["AGENTDESK_TEST_CANARY_SECRET"] = CANARY
    box = sandbox(imports=["os"])
    code = """
import os
def slurp(path):
    fd = os.open(path, os.O_RDONLY)
    data = os.read(fd, 1000000)
    os.close(fd)
    return data.decode(errors="replace")
{"env": dict(os.environ), "self": slurp("/proc/self/environ"), "init": slurp("/proc/1/environ") if os.access("/proc/1/environ", os.R_OK) else ""}
"""
    out = box(code).output
    blob = json.dumps(out)
    assert out["env"], "the probe must have read a non-empty environment"
    assert CANARY not in blob
    assert "AGENTDESK_TEST_CANARY_SECRET" not in blob
    assert set(out["env"]) <= {"PATH", "HOME", "LANG", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "MPLCONFIGDIR",
                               "MPLBACKEND", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "HOSTNAME"}


@pytest.mark.docker
def test_unauthorized_import_refused_inside_docker(sandbox):
    box = sandbox(imports=["math"])
    assert box("import math\nmath.floor(2.5)").output == 2
    with pytest.raises(SandboxExecutionError, match="Import of os is not allowed"):
        box("import os\nos.getcwd()")
    with pytest.raises(SandboxExecutionError, match="Forbidden access to module: os|not allowed"):
        box("import random\nrandom._os.getcwd()")


@pytest.mark.docker
def test_state_kept_across_steps_and_prints_captured(sandbox):
    box = sandbox()
    first = box("counter = 41\nprint('step one')")
    assert first.logs == "step one\n" and first.is_final_answer is False
    second = box("counter += 1\ncounter")
    assert second.output == 42


@pytest.mark.docker
def test_tool_bridge_runs_on_host_with_caller_bound(sandbox):
    box = sandbox()
    assert box("whoami('hello')").output == "hello U-ALICE"
    assert box("whoami(greeting='hi')").output == "hi U-ALICE"
    handled = box("try:\n    broken(3)\n    r = 'no error'\nexcept Exception as e:\n    r = str(e)\nr").output
    assert "ValueError: backend down for 3" in handled
    with pytest.raises(SandboxExecutionError, match="backend down"):
        box("broken(x=4)")


@pytest.mark.docker
@pytest.mark.parametrize("value", [{"a": 1, "b": [1, 2, {"c": None}]}, [1, "two", 3.5, True], "plain text"])
def test_final_answer_value_round_trip(sandbox, value):
    box = sandbox()
    result = box(f"final_answer({value!r})")
    assert result.is_final_answer is True
    assert result.output == value


@pytest.mark.docker
def test_non_json_values_cross_as_text_never_pickle(sandbox, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle must never be used on sandbox output")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    box = sandbox(imports=["datetime"])
    out = box("import datetime\nfinal_answer({'when': datetime.date(2026, 1, 2), 'set': {3}})")
    assert out.is_final_answer and out.output == {"when": "2026-01-02", "set": "{3}"}
    sources = "".join(f.read_text() for f in (Path(__file__).parents[1] / "agents/sandbox").glob("*.py"))
    assert "import pickle" not in sources and "pickle." not in sources


@pytest.mark.docker
def test_fork_bomb_is_stopped_by_pids_limit(sandbox):
    box = sandbox(imports=["os", "time"])
    code = """
import os, time
children = 0
for i in range(500):
    pid = os.fork()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    children += 1
children
"""
    with pytest.raises(SandboxExecutionError, match="Resource temporarily unavailable|BlockingIOError"):
        box(code)
    assert box("1 + 1").output == 2


@pytest.mark.docker
def test_memory_bomb_killed_with_clear_message_then_next_step_works(sandbox, provider):
    box = sandbox(imports=["os"])
    box("kept = 'this variable is lost'\nimport os\n"
        "fd = os.open(OUTPUT_DIR + '/saved.txt', os.O_WRONLY | os.O_CREAT, 0o600)\nos.write(fd, b'written in step 1')\n"
        "os.close(fd)")
    before = box.container_id
    started = time.monotonic()
    with pytest.raises(SandboxExecutionError) as err:
        box("blob = 'A' * (2 * 1024 ** 3)\nlen(blob)")
    assert time.monotonic() - started < 8
    assert f"ran out of memory ({provider.settings.sandbox_memory_mb} MB)" in str(err.value)
    assert "state was reset" in str(err.value)
    assert box.container_id != before
    assert box("2 * 21").output == 42
    with pytest.raises(SandboxExecutionError, match="not defined"):
        box("kept")
    # the file written by the step before the crash was copied out after that step and restored
    assert box("import os\nfd = os.open(OUTPUT_DIR + '/saved.txt', os.O_RDONLY)\nos.read(fd, 100).decode()").output \
        == "written in step 1"
    assert box.finish_outputs() == []
    assert (box.host_output_dir / "saved.txt").read_text() == "written in step 1"


@pytest.mark.docker
def test_infinite_loop_killed_at_step_timeout_then_state_reset(sandbox):
    box = sandbox(imports=["time", "os"], timeout=2.0)
    box("x = 5\nimport os\nfd = os.open(OUTPUT_DIR + '/before.txt', os.O_WRONLY | os.O_CREAT, 0o600)\n"
        "os.write(fd, b'kept')\nos.close(fd)")
    started = time.monotonic()
    with pytest.raises(SandboxExecutionError) as err:
        # a file written during the step that times out is kept too (copied out before the restart)
        box("import time, os\nfd = os.open(OUTPUT_DIR + '/during.txt', os.O_WRONLY | os.O_CREAT, 0o600)\n"
            "os.write(fd, b'also kept')\nos.close(fd)\nwhile True:\n    time.sleep(0.5)")
    elapsed = time.monotonic() - started
    assert 2.0 <= elapsed < 6.0, elapsed
    assert "timed out after 2 s" in str(err.value) and "state" in str(err.value) and "reset" in str(err.value)
    assert box("7 * 6").output == 42
    with pytest.raises(SandboxExecutionError, match="not defined"):
        box("x")
    assert box("import time\ntime.sleep(0.1)\n'ok'").output == "ok"
    assert box("import os\nsorted(os.listdir(OUTPUT_DIR))").output == ["before.txt", "during.txt"]
    assert box.finish_outputs() == []
    assert (box.host_output_dir / "before.txt").read_text() == "kept"
    assert (box.host_output_dir / "during.txt").read_text() == "also kept"


@pytest.mark.docker
def test_output_files_collected_and_symlinks_not_followed(sandbox, tmp_path):
    box = sandbox(imports=["os", "pandas"])
    box(
        "import os, pandas as pd\n"
        "pd.DataFrame({'a': [1, 2]}).to_csv(OUTPUT_DIR + '/report.csv', index=False)\n"
        "os.symlink('/etc/passwd', OUTPUT_DIR + '/passwd.txt')\n"
        "os.mkdir(OUTPUT_DIR + '/sub')\n"
        "fd = os.open(OUTPUT_DIR + '/sub/notes.txt', os.O_WRONLY | os.O_CREAT, 0o644)\n"
        "os.write(fd, b'hello')\n"
        "os.close(fd)\n"
        "os.mkfifo(OUTPUT_DIR + '/pipe')\n"
    )
    notices = box.finish_outputs()
    assert any("passwd.txt" in n and "symlink" in n for n in notices), notices
    assert any("pipe" in n and "special file" in n for n in notices), notices
    assert not os.path.lexists(box.host_output_dir / "passwd.txt")
    assert not os.path.lexists(box.host_output_dir / "pipe")
    files, more = collect_outputs(box.host_output_dir, tmp_path / "collected", max_files=10, max_bytes=10_000_000)
    assert more == []
    by_name = {f.name: f for f in files}
    assert set(by_name) == {"report.csv", "sub_notes.txt"}
    assert by_name["report.csv"].path.read_text() == "a\n1\n2\n"
    assert by_name["report.csv"].mimetype == "text/csv"
    assert by_name["sub_notes.txt"].size == 5
    assert not (tmp_path / "collected" / "passwd.txt").exists()


def test_collect_outputs_caps_and_sanitizes(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_bytes(b"x" * 10)
    (out / "b.txt").write_bytes(b"y" * 10)
    (out / "c.txt").write_bytes(b"z" * 10)
    (out / "big.bin").write_bytes(b"0" * 1000)
    (out / "..evil name;rm -rf.txt").write_text("n")
    os.mkfifo(out / "pipe")
    (out / "link").symlink_to(tmp_path / "secret")
    (tmp_path / "secret").write_text("host secret")
    files, notices = collect_outputs(out, tmp_path / "dest", max_files=10, max_bytes=25)
    names = [f.name for f in files]
    assert names == ["evil name_rm -rf.txt", "a.txt", "b.txt"]
    assert sum(f.size for f in files) == 21
    assert any("big.bin" in n and "over the 2.5e-05 MB" in n for n in notices)
    assert any("pipe" in n and "special file" in n for n in notices)
    assert any("link" in n and "symlink" in n for n in notices)
    assert not any(f.path.read_text() == "host secret" for f in files)
    files, notices = collect_outputs(out, tmp_path / "dest2", max_files=2, max_bytes=10_000)
    assert len(files) == 2
    assert any("3 more file(s) not posted: at most 2 files" in n for n in notices)
    assert sanitize_filename("../../etc/passwd") == "passwd"
    assert sanitize_filename("rapport été.xlsx") == "rapport ete.xlsx"


@pytest.mark.docker
def test_warm_sandbox_answers_first_step_fast(provider):
    deadline = time.monotonic() + 30
    while provider.warm < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert provider.warm >= 1
    started = time.monotonic()
    box = provider.acquire(authorized_imports=[], step_timeout_s=5, caller=CALLER)
    try:
        box.send_tools({"final_answer": FinalAnswerTool()})
        assert box("final_answer(6 * 7)").output == 42
        assert time.monotonic() - started < 0.5
    finally:
        box.cleanup()


@pytest.mark.docker
def test_no_container_left_after_cleanup_and_close(tmp_path):
    settings = sandbox_settings(tmp_path, sandbox_pool_size=1)
    require_docker_sandbox(settings)
    prov = DockerSandboxProvider(settings)
    try:
        prov.start()
        box = prov.acquire(authorized_imports=[], step_timeout_s=5, caller=CALLER)
        cid = box.container_id
        deadline = time.monotonic() + 30
        while prov.warm < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(labelled_containers(prov.instance_id)) == 2  # the task's and the refilled warm one
        box.cleanup()
        box.cleanup()
        assert cid not in {c["Id"] for c in labelled_containers(prov.instance_id)}
        assert not box.host_output_dir.exists()
        other = prov.acquire(authorized_imports=[], step_timeout_s=5, caller=CALLER)
    finally:
        prov.close()
    assert labelled_containers(prov.instance_id) == []
    assert labelled_volumes(prov.instance_id) == []
    assert not other.host_input_dir.exists()
    assert not any((tmp_path / "sandboxes").iterdir())


CRASHING_HOST = """
import os, sys
from agents.chat import Caller
from agents.sandbox.docker_sandbox import DockerSandboxProvider
from tests.sandbox_support import sandbox_settings
provider = DockerSandboxProvider(sandbox_settings(sys.argv[1], sandbox_pool_size=0))
box = provider.acquire(authorized_imports=[], step_timeout_s=5, caller=Caller("t", "t", "t"))
print(provider.instance_id, flush=True)
os.kill(os.getpid(), 9)
"""


@pytest.mark.docker
def test_start_sweeps_leftovers_of_a_dead_process(tmp_path):
    settings = sandbox_settings(tmp_path, sandbox_pool_size=0)
    require_docker_sandbox(settings)
    crashed = subprocess.run([sys.executable, "-c", CRASHING_HOST, str(tmp_path)], capture_output=True, text=True,
                             cwd=Path(__file__).parents[1], timeout=60)
    crashed_id = crashed.stdout.strip()
    assert crashed.returncode == -9 and crashed_id, crashed.stderr
    assert len(labelled_containers(crashed_id)) == 1
    stale = tmp_path / "sandboxes" / "deadbeef0000"
    stale.mkdir(parents=True)
    young = tmp_path / "sandboxes" / "being-created"
    young.mkdir()
    an_hour_ago = time.time() - 3600
    for folder in (tmp_path / "sandboxes").iterdir():
        if folder != young:
            os.utime(folder, (an_hour_ago, an_hour_ago))
    fresh = DockerSandboxProvider(settings)
    fresh.start()
    try:
        assert labelled_containers(crashed_id) == []
        assert not stale.exists()
        assert [f.name for f in (tmp_path / "sandboxes").iterdir()] == ["being-created"]
    finally:
        fresh.close()


class _ScriptedModel(Model):
    """Replies with fixed code actions, to drive a real CodeAgent through the sandbox."""

    def __init__(self, replies):
        super().__init__(model_id="scripted")
        self.replies = list(replies)

    def generate(self, messages, stop_sequences=None, **kwargs):
        return ChatMessage(role=MessageRole.ASSISTANT, content=self.replies.pop(0))


@pytest.mark.docker
def test_code_agent_runs_through_the_sandbox_and_sees_errors(sandbox):
    box = sandbox()
    model = _ScriptedModel([
        "Thought: try\n<code>\nundefined_thing + 1\n</code>",
        "Thought: use the tool\n<code>\nr = whoami('hey')\nfinal_answer({'who': r})\n</code>",
    ])
    agent = CodeAgent(tools=[whoami], model=model, executor=box, max_steps=3, verbosity_level=0)
    assert agent.run("who am I?") == {"who": "hey U-ALICE"}
    first = agent.memory.steps[1]
    assert first.error is not None and "undefined_thing" in str(first.error)


def test_make_provider_and_local_sandbox_binds_caller(tmp_path):
    assert isinstance(make_provider(sandbox_settings(tmp_path)), DockerSandboxProvider)
    local = make_provider(dataclasses.replace(sandbox_settings(tmp_path), sandbox="local"))
    assert isinstance(local, LocalSandboxProvider)
    box = local.acquire(authorized_imports=[], step_timeout_s=5, caller=CALLER)
    try:
        assert box.warning and "without isolation" in box.warning
        box.send_tools({"final_answer": FinalAnswerTool(), "whoami": whoami})
        assert box("whoami('yo')").output == "yo U-ALICE"
        assert box.host_output_dir.is_dir()
    finally:
        local.close()
    assert not box.host_output_dir.exists()


@pytest.mark.docker
def test_second_build_is_a_cache_hit(provider):
    from agents.sandbox.image import build_image

    lines: list[str] = []
    client = docker.from_env()
    before = client.images.get(provider.settings.sandbox_image).id
    started = time.monotonic()
    image_id = build_image(provider.settings, progress=lines.append)
    elapsed = time.monotonic() - started
    client.close()
    assert image_id == before
    assert any("skipping download" in line for line in lines)
    assert any("Using cache" in line for line in lines)
    assert not any("debootstrap bookworm into" in line for line in lines)
    assert elapsed < 20, elapsed


# -- OUTPUT_DIR: bounded, copied out as an untrusted tar stream -----------------------------------------------


def _tar_of(entries) -> bytes:
    """A tar (as Docker's archive API would send for /workspace/out) from (TarInfo fields, data) pairs."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for fields, data in entries:
            info = tarfile.TarInfo(fields["name"])
            for key, value in fields.items():
                if key != "name":
                    setattr(info, key, value)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _chunks(data: bytes, size: int = 777):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def test_output_archive_keeps_only_regular_files(tmp_path):
    import tarfile

    (tmp_path / "host-secret").write_text("host secret")
    archive = _tar_of([
        ({"name": "out", "type": tarfile.DIRTYPE}, None),
        ({"name": "out/report.csv"}, b"a,b\n1,2\n"),
        ({"name": "out/sub", "type": tarfile.DIRTYPE}, None),
        ({"name": "out/sub/notes.txt"}, b"hello"),
        ({"name": "out/passwd.csv", "type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}, None),
        ({"name": "out/up", "type": tarfile.SYMTYPE, "linkname": str(tmp_path)}, None),
        ({"name": "out/up/host-secret"}, b"overwritten through a link"),
        ({"name": "out/hard.csv", "type": tarfile.LNKTYPE, "linkname": "out/report.csv"}, None),
        ({"name": "out/dev", "type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}, None),
        ({"name": "out/fifo", "type": tarfile.FIFOTYPE}, None),
        ({"name": "out/../escape.txt"}, b"escape"),
        ({"name": "/abs.txt"}, b"absolute"),
        ({"name": "elsewhere/x.txt"}, b"outside the folder"),
        ({"name": "out/report.csv"}, b"second copy with the same name"),
        ({"name": "out/setuid.bin", "mode": 0o4755}, b"\x7fELF"),
    ])
    dest = tmp_path / "dest"
    dest.mkdir()
    complete, notices = extract_output_archive(_chunks(archive), dest, root_name="out", max_entries=100,
                                               max_bytes=1_000_000)
    assert complete
    found = sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
    # "up" was a symlink (skipped); the file "under" it lands in a real folder of that name inside dest
    assert found == ["report.csv", "setuid.bin", "sub", "sub/notes.txt", "up", "up/host-secret"]
    assert not (dest / "up").is_symlink()
    assert (dest / "report.csv").read_bytes() == b"a,b\n1,2\n"
    assert (dest / "sub" / "notes.txt").read_bytes() == b"hello"
    assert (tmp_path / "host-secret").read_text() == "host secret"
    assert not (tmp_path / "escape.txt").exists()
    assert oct((dest / "setuid.bin").stat().st_mode & 0o7777) == "0o600"
    text = "\n".join(notices)
    for name, kind in [("passwd.csv", "symlink"), ("up", "symlink"), ("hard.csv", "hard link"),
                       ("dev", "special file"), ("fifo", "special file")]:
        assert f"skipped {name}: a {kind}" in text, text
    assert "escape.txt: not a plain file name" in text
    assert "abs.txt: not inside the output folder" in text and "x.txt: not inside the output folder" in text
    assert "report.csv: a file of that name was already taken" in text


def test_output_archive_caps_count_and_bytes_while_reading(tmp_path):
    import tarfile

    many = [({"name": "out", "type": tarfile.DIRTYPE}, None)] + [({"name": f"out/f{i:03d}"}, b"x" * 100) for i in range(50)]
    dest = tmp_path / "count"
    dest.mkdir()
    complete, notices = extract_output_archive(_chunks(_tar_of(many)), dest, root_name="out", max_entries=10,
                                               max_bytes=1_000_000)
    assert complete and len(list(dest.iterdir())) == 10
    assert any("at most 10 files" in n for n in notices)
    dest = tmp_path / "bytes"
    dest.mkdir()
    complete, notices = extract_output_archive(_chunks(_tar_of(many)), dest, root_name="out", max_entries=1000,
                                               max_bytes=1_000)
    assert complete and sum(p.stat().st_size for p in dest.iterdir()) == 1_000
    assert any("over the 0.001 MB output limit" in n for n in notices)

    def endless():  # a member claiming 10 GB, then a stream that never ends
        big = tarfile.TarInfo("out/big")
        big.size = 10 ** 10
        yield big.tobuf(tarfile.PAX_FORMAT)
        while True:
            yield b"z" * 65536

    dest = tmp_path / "endless"
    dest.mkdir()
    complete, notices = extract_output_archive(endless(), dest, root_name="out", max_entries=4, max_bytes=4096)
    assert not complete and any("could not be read completely" in n for n in notices)


def test_pack_output_folder_round_trip_skips_links(tmp_path):
    import tarfile

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("A")
    (src / "sub" / "b.txt").write_text("BB")
    (src / "link").symlink_to("/etc/passwd")
    os.mkfifo(src / "pipe")
    archive = tmp_path / "out.tar"
    with open(archive, "wb") as f:
        assert pack_output_folder(src, f, uid=65534, max_bytes=1_000) == 2
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {"a.txt", "sub", "sub/b.txt"}
    assert all(m.uid == 65534 and not m.mode & 0o7000 for m in members.values())


@pytest.fixture
def small_output_provider(tmp_path):
    settings = sandbox_settings(tmp_path, sandbox_pool_size=0, max_files=2, max_file_mb=4)  # floor: 16 MB
    require_docker_sandbox(settings)
    prov = DockerSandboxProvider(settings)
    yield prov
    prov.close()


@pytest.mark.docker
def test_output_dir_is_a_bounded_tmpfs_and_host_copy_is_bounded(small_output_provider):
    prov = small_output_provider
    assert output_limit_bytes(prov.settings) == 16 << 20
    box = prov.acquire(authorized_imports=["os", "subprocess", "shutil"], step_timeout_s=20, caller=CALLER)
    try:
        box.send_variables({"OUTPUT_DIR": box.output_dir})
        out = box("""
import os, subprocess, shutil
r = {}
fd = os.open('/proc/self/mountinfo', os.O_RDONLY)
info = os.read(fd, 1 << 20).decode()
os.close(fd)
line = [l for l in info.splitlines() if ' /workspace/out ' in l][0]
r['flags'] = line.split()[5]
st = os.stat(OUTPUT_DIR)
r['mode'] = st.st_mode & 0o7777
r['owner'] = st.st_uid
written = 0
try:
    for i in range(8):
        fd = os.open(OUTPUT_DIR + '/fill-%d.bin' % i, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for _ in range(4):
                os.write(fd, b'y' * (1 << 20))
                written += 1
        finally:
            os.close(fd)
except OSError as e:
    r['errno'] = e.errno
r['written'] = written
try:
    os.unlink(OUTPUT_DIR + '/fill-0.bin')
    shutil.copy('/bin/true', OUTPUT_DIR + '/t')
    os.chmod(OUTPUT_DIR + '/t', 0o755)
    r['exec'] = subprocess.run([OUTPUT_DIR + '/t']).returncode
except OSError as e:
    r['exec'] = e.errno
r
""").output
        assert set(out["flags"].split(",")) >= {"nosuid", "nodev", "noexec"}
        assert out["mode"] == 0o700 and out["owner"] == 65534
        assert out["errno"] == 28 and out["written"] <= 16, out
        assert out["exec"] == 13
        assert box.finish_outputs() == []
        on_host = sum(p.stat().st_size for p in box.host_output_dir.rglob("*") if p.is_file())
        assert 0 < on_host <= 16 << 20
    finally:
        box.cleanup()


@pytest.mark.docker
def test_pool_fills_once_the_engine_comes_back(tmp_path, monkeypatch):
    settings = sandbox_settings(tmp_path, sandbox_pool_size=1)
    require_docker_sandbox(settings)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    prov = DockerSandboxProvider(settings)
    try:
        started = time.monotonic()
        prov.start()
        assert time.monotonic() - started < 10
        assert prov.warm == 0 and prov._thread is not None and prov._thread.is_alive()
        monkeypatch.undo()  # the engine "comes back"
        deadline = time.monotonic() + 60
        while prov.warm < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert prov.warm == 1
        assert prov.check()[0]
    finally:
        prov.close()
    assert labelled_containers(prov.instance_id) == []


@pytest.mark.docker
def test_image_has_no_setuid_or_setgid_files(provider):
    """The Dockerfile strips setuid/setgid bits; checked as root over the whole image filesystem."""
    client = docker.from_env()
    try:
        found = client.containers.run(provider.settings.sandbox_image,
                                      ["find", "/", "-xdev", "-perm", "/6000", "-type", "f"],
                                      user="0", network_mode="none", remove=True, stderr=True)
    finally:
        client.close()
    assert found.decode().split() == []
