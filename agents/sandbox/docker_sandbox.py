"""Docker sandbox: one hardened container per task, a warm pool, and a JSON-lines channel.

Each container runs `inside.py`, a persistent Python process that has already imported smolagents when
it is handed out, so a warm sandbox answers its first step in milliseconds. The host talks to it over
the container's own stdin/stdout through the Docker attach socket (8-byte frame headers demultiplexed
here): no network, no published port, no exec per step. Tools run on the host, in the calling thread,
with the caller bound; only JSON crosses the boundary.

Timeouts and crashes are handled from the host: the container is killed and replaced by a fresh one
mounting the same task folders, and the model is told that Python state was reset.

OUTPUT_DIR is not a host folder: it is an anonymous Docker volume backed by a size-limited tmpfs
(AGENTDESK_MAX_FILES x AGENTDESK_MAX_FILE_MB, at most half the sandbox memory; noexec,nosuid,nodev; owned by
the sandbox user, mode 0700) that lives and dies with its container, so the agent's code cannot fill the
bot host's disk. Its files are copied to `host_output_dir` through Docker's archive API as an untrusted tar
stream (only regular files and folders, names checked, count and bytes capped: outputs.py):
  - after a step that changed the folder (the runner reports a fingerprint; the final step is left to
    finish_outputs), so files survive an out-of-memory kill or crash of a later step;
  - before a container is replaced after a timeout or a protocol breach (frozen with `docker pause` first);
  - by finish_outputs(), which the task runner calls before collecting outputs.
A replacement container is re-seeded from `host_output_dir` with put_archive before it is handed back.
(Docker 20.10's archive API cannot see a HostConfig.Tmpfs mount, and refuses put_archive on a read-only
root outside a volume: hence a tmpfs *volume*. Its pages count against the container's memory limit.)
"""
from __future__ import annotations

import collections
import datetime
import json
import logging
import os
import shutil
import socket
import struct
import tarfile
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import DriverConfig, LogConfig, Mount, Ulimit
from smolagents.local_python_executor import CodeOutput
from smolagents.monitoring import AgentLogger, LogLevel
from smolagents.utils import AgentExecutionError

from agents.chat import Caller
from agents.sandbox.base import Sandbox, SandboxProvider, SandboxUnavailable
from agents.sandbox.outputs import extract_output_archive, pack_output_folder
from agents.settings import Settings
from agents.telemetry import execution_span, set_output, tool_span
from agents.tools import bind_caller

log = logging.getLogger("agentdesk.sandbox")

LABEL = "agentdesk.sandbox"
SANDBOX_UID = 65534
INPUT_DIR = "/workspace/in"
OUTPUT_DIR = "/workspace/out"
MAX_MODEL_OUTPUT = 20_000  # characters of logs/errors handed to the model per step
MAX_LINE_BYTES = 4_000_000  # a protocol line larger than this is treated as a runaway sandbox
READY_TIMEOUT_S = 60.0
CONTROL_TIMEOUT_S = 30.0
ORPHAN_AGE_S = 600.0  # an exited sandbox of a live process older than this is swept
TOOL_ERROR_CHARS = 2_000
OUTPUT_ENTRIES = 1_024  # files and folders in OUTPUT_DIR (the tmpfs inode limit and the copy-out cap)
MIN_OUTPUT_MB = 16
GVISOR_TASKS_PER_PROCESS = 8  # runsc: cgroup pids limit per allowed guest process (Sentry threads, ptrace stubs)
ARCHIVE_CHUNK = 1 << 20
_QUIET = AgentLogger(level=LogLevel.OFF)
_ERRORS = (DockerException, requests.RequestException, OSError)


class SandboxExecutionError(AgentExecutionError):
    """A step failed in the sandbox; CodeAgent turns the message into an observation for the model."""

    def __init__(self, message: str):
        super().__init__(message, _QUIET)


class _Gone(Exception):
    """The container's process ended (EOF on its stdout)."""


class _Timeout(Exception):
    """No answer before the deadline."""


class _Runaway(Exception):
    """The container broke the protocol (oversized or malformed line)."""


def _cap(text: str, limit: int = MAX_MODEL_OUTPUT) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - limit} characters cut ...]\n{text[-half:]}"


def _docker_host() -> str:
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


def output_limit_bytes(settings: Settings) -> int:
    """Size of the OUTPUT_DIR tmpfs: what one answer may carry (files x size per file), bounded by half the
    sandbox memory (tmpfs pages count against it: a full folder must fail with ENOSPC, not an OOM kill)."""
    wanted = int(settings.max_files * settings.max_file_mb)
    return max(MIN_OUTPUT_MB, min(wanted, settings.sandbox_memory_mb // 2)) << 20


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Container:
    """One started sandbox container, its task folders and its attached stdio channel."""

    def __init__(self, client: docker.DockerClient, cid: str, sid: str, folder: Path, raw_sock: Any):
        self.client = client
        self.cid = cid
        self.sid = sid
        self.folder = folder
        self._raw = raw_sock  # keeps the HTTP response (and the connection) alive
        self._sock: socket.socket = getattr(raw_sock, "_sock", raw_sock)
        self._frames = b""
        self._lines = b""
        self.stderr_tail: collections.deque[bytes] = collections.deque(maxlen=32)
        self.killed_by_host = False
        self.paused = False

    def send(self, message: dict) -> None:
        self._sock.sendall(json.dumps(message, ensure_ascii=True).encode() + b"\n")

    def receive(self, deadline: float) -> dict:
        """The next JSON line from the runner's stdout; stderr frames are kept as a diagnostic tail."""
        while b"\n" not in self._lines:
            if len(self._lines) > MAX_LINE_BYTES:
                raise _Runaway(f"the sandbox sent more than {MAX_LINE_BYTES // 1_000_000} MB in one message")
            while len(self._frames) < 8 or len(self._frames) < 8 + struct.unpack(">I", self._frames[4:8])[0]:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _Timeout()
                self._sock.settimeout(remaining)
                try:
                    chunk = self._sock.recv(262144)
                except socket.timeout:
                    raise _Timeout() from None
                except OSError as exc:
                    raise _Gone(str(exc)) from exc
                if not chunk:
                    raise _Gone("end of stream")
                self._frames += chunk
            stream = self._frames[0]
            size = struct.unpack(">I", self._frames[4:8])[0]
            payload, self._frames = self._frames[8 : 8 + size], self._frames[8 + size :]
            if stream == 1:
                self._lines += payload
            else:
                self.stderr_tail.append(payload[-2000:])
        line, self._lines = self._lines.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError as exc:
            raise _Runaway("the sandbox sent a malformed message") from exc

    def request(self, message: dict, timeout: float = CONTROL_TIMEOUT_S) -> dict:
        self.send(message)
        return self.receive(time.monotonic() + timeout)

    def exit_status(self) -> tuple[int | None, bool]:
        """(exit code, OOM-killed) after the process ended; (None, False) if Docker cannot say."""
        try:
            code = self.client.api.wait(self.cid, timeout=10).get("StatusCode")
            state = self.client.api.inspect_container(self.cid)["State"]
            return code, bool(state.get("OOMKilled"))
        except _ERRORS:
            return None, False

    def stderr_text(self) -> str:
        return b"".join(self.stderr_tail).decode("utf-8", "replace")[-4000:]

    def destroy(self, remove_folder: bool) -> None:
        """Kill and remove the container (and its folders); never raises."""
        self.killed_by_host = True
        try:
            self._sock.close()
        except OSError:
            pass
        if self.paused:  # runsc cannot kill a paused sandbox: `rm -f` fails after 10 s and leaks its shim
            try:
                self.client.api.unpause(self.cid)
            except _ERRORS:
                pass
        try:
            self.client.api.remove_container(self.cid, force=True, v=True)  # v: its OUTPUT_DIR volume too
        except NotFound:
            pass
        except _ERRORS as exc:
            log.warning("could not remove sandbox container %s: %s (it is swept at next start)", self.cid[:12], exc)
        if remove_folder:
            shutil.rmtree(self.folder, ignore_errors=True)


class DockerSandbox(Sandbox):
    """One task's executor backed by a container; replaced transparently after a timeout or a crash."""

    input_dir = INPUT_DIR
    output_dir = OUTPUT_DIR

    def __init__(self, provider: "DockerSandboxProvider", container: _Container, *,
                 authorized_imports: list[str], step_timeout_s: float, caller: Caller):
        self._provider = provider
        self._container: _Container | None = container
        self._imports = list(authorized_imports)
        self.step_timeout_s = float(step_timeout_s)
        self._caller = caller
        self._folder = container.folder
        self.host_input_dir = container.folder / "in"
        self.host_output_dir = container.folder / "out"
        self._tools: dict[str, Any] = {}
        self._tools_message: dict | None = None
        self._variables: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._closed = False
        #: Fingerprint of OUTPUT_DIR at the last copy to host_output_dir ("" = empty, None = unknown).
        self._saved_state: str | None = ""
        self._output_notices: list[str] = []
        #: Mirrors LocalPythonExecutor.state["_print_outputs"], which CodeAgent reads when a step fails.
        self.state: dict[str, Any] = {"_print_outputs": ""}

    @property
    def container_id(self) -> str | None:
        return self._container.cid if self._container else None

    def _init(self, container: _Container) -> None:
        reply = container.request({"type": "init", "authorized_imports": self._imports})
        if reply.get("type") != "ok":
            raise SandboxUnavailable(f"the sandbox refused its configuration: {reply.get('message')}")

    def _control(self, message: dict) -> None:
        with self._lock:
            self._ensure_container()
            assert self._container is not None
            try:
                reply = self._container.request(message)
            except (_Gone, _Timeout, _Runaway, OSError) as exc:
                self._replace()
                raise SandboxExecutionError(f"the sandbox stopped while being configured ({exc}); it was restarted")
            if reply.get("type") != "ok":
                raise SandboxExecutionError(str(reply.get("message")))

    def send_tools(self, tools: dict[str, Any]) -> None:
        """Tell the runner which tools to stub; the real tools stay here and run on the host."""
        self._tools = {name: tool for name, tool in tools.items() if name != "final_answer"}
        self._tools_message = {
            "type": "tools",
            "tools": [{"name": name, "inputs": list(getattr(tool, "inputs", {}) or {})}
                      for name, tool in self._tools.items()],
            "final_answer": "final_answer" in tools,
        }
        self._control(self._tools_message)

    def send_variables(self, variables: dict[str, Any]) -> None:
        """Send the JSON-able variables (others are skipped with a log line: no pickle crosses)."""
        clean = {}
        for name, value in variables.items():
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                log.warning("variable %r (%s) is not JSON-able and is not sent to the sandbox", name, type(value).__name__)
                continue
            clean[name] = value
        self._variables.update(clean)
        if clean:
            self._control({"type": "variables", "variables": clean})

    def __call__(self, code_action: str) -> CodeOutput:
        with self._lock:
            if self._closed:
                raise SandboxExecutionError("this sandbox was already cleaned up")
            self._ensure_container()
            assert self._container is not None
            self.state["_print_outputs"] = ""
            try:
                with execution_span(code_action) as span:
                    reply = self._run(self._container, code_action)
                    set_output(span, reply.get("logs", ""))
            except _Timeout:
                self._replace(save_outputs=True)
                raise SandboxExecutionError(
                    f"The step timed out after {self.step_timeout_s:g} s and was stopped. The sandbox was restarted: "
                    "Python state (variables, imports, functions) was reset; files in OUTPUT_DIR are kept. "
                    "Write faster code or split the work into smaller steps."
                ) from None
            except _Gone:
                message = self._death_message(self._container)
                self._replace(save_outputs=False)
                raise SandboxExecutionError(message) from None
            except _Runaway as exc:
                self._replace(save_outputs=True)
                raise SandboxExecutionError(
                    f"The step was stopped because {exc}. The sandbox was restarted and Python state was reset; "
                    "print less or write large results to a file in OUTPUT_DIR."
                ) from None
            state = reply.get("out")
            changed = isinstance(state, str) and state != self._saved_state and not reply.get("is_final_answer")
            if changed and self._copy_outputs(self._container):  # so the files survive a crash of a later step
                self._saved_state = state
        logs = _cap(reply.get("logs") or "")
        self.state["_print_outputs"] = logs
        if reply.get("type") == "error":
            raise SandboxExecutionError(_cap(str(reply.get("message"))))
        if reply.get("type") != "result":
            raise SandboxExecutionError(f"unexpected answer from the sandbox: {reply.get('type')!r}")
        return CodeOutput(output=reply.get("output"), logs=logs, is_final_answer=bool(reply.get("is_final_answer")))

    def _run(self, container: _Container, code: str) -> dict:
        """Send the code, serve tool calls on the host, return the final message. Tool time is not counted."""
        container.send({"type": "run", "code": code})
        deadline = time.monotonic() + self.step_timeout_s
        while True:
            message = container.receive(deadline)
            if message.get("type") != "tool_call":
                return message
            started = time.monotonic()
            container.send(self._call_tool(str(message.get("name")), message.get("kwargs") or {}))
            deadline += time.monotonic() - started

    def _call_tool(self, name: str, kwargs: Any) -> dict:
        tool = self._tools.get(name)
        if tool is None:
            return {"type": "tool_result", "ok": False, "error": f"no tool named {name!r}"}
        if not isinstance(kwargs, dict):
            return {"type": "tool_result", "ok": False, "error": "tool arguments must be keyword arguments"}
        try:
            with tool_span(name, kwargs) as span, bind_caller(self._caller):
                value = tool(**kwargs)
                set_output(span, value)
        except Exception as exc:  # noqa: BLE001 - the model sees tool failures as exceptions in its code
            log.info("tool %s failed: %s", name, type(exc).__name__)
            return {"type": "tool_result", "ok": False, "error": _cap(f"{type(exc).__name__}: {exc}", TOOL_ERROR_CHARS)}
        try:
            encoded = json.loads(json.dumps(value, default=str))
        except (TypeError, ValueError):
            encoded = str(value)
        return {"type": "tool_result", "ok": True, "value": encoded}

    def _death_message(self, container: _Container) -> str:
        code, oom = container.exit_status()
        stderr = container.stderr_text()
        if stderr:
            log.warning("sandbox %s ended (exit %s); stderr tail: %s", container.cid[:12], code, stderr[-1000:])
        if oom or code == 137:
            return (f"The sandbox ran out of memory ({self._provider.settings.sandbox_memory_mb} MB) and was "
                    "restarted: Python state was reset; files in OUTPUT_DIR are kept as they were at the end of "
                    "the previous step. Use less memory (process data in chunks, read only the columns you need; "
                    "files in OUTPUT_DIR count towards the memory too).")
        return (f"The sandbox process ended unexpectedly (exit code {code}) and was restarted: Python state "
                "was reset; files in OUTPUT_DIR are kept as they were at the end of the previous step.")

    # -- outputs --------------------------------------------------------------------------------------
    def _copy_outputs(self, container: _Container) -> bool:
        """Replace host_output_dir with the container's OUTPUT_DIR (read as an untrusted tar stream).

        False (and host_output_dir unchanged) when the folder could not be read completely, or when the
        container was not running by the end of the copy: its tmpfs is gone then, and Docker would have
        served the empty folder of the image instead.
        """
        limit = output_limit_bytes(self._provider.settings)
        staging = self._folder / f".out-{uuid.uuid4().hex[:8]}"
        staging.mkdir(mode=0o700)
        api = container.client.api
        try:
            response = api._get(api._url("/containers/{0}/archive", container.cid),
                                params={"path": OUTPUT_DIR}, stream=True)
            try:
                api._raise_for_status(response)
                complete, notices = extract_output_archive(
                    response.iter_content(ARCHIVE_CHUNK), staging, root_name=os.path.basename(OUTPUT_DIR),
                    max_entries=OUTPUT_ENTRIES, max_bytes=limit)
            finally:
                response.close()
            running = bool(api.inspect_container(container.cid)["State"].get("Running"))
        except _ERRORS as exc:
            log.warning("could not copy the outputs of sandbox %s: %s", container.cid[:12], exc)
            shutil.rmtree(staging, ignore_errors=True)
            return False
        if not complete or not running:
            log.warning("outputs of sandbox %s not copied (%s)", container.cid[:12],
                        "; ".join(notices) if not complete else "the container had stopped")
            shutil.rmtree(staging, ignore_errors=True)
            return False
        old = self._folder / f".out-old-{uuid.uuid4().hex[:8]}"
        if self.host_output_dir.exists():
            os.rename(self.host_output_dir, old)
        os.rename(staging, self.host_output_dir)
        shutil.rmtree(old, ignore_errors=True)
        self._output_notices = notices
        return True

    def _reseed_outputs(self, container: _Container) -> None:
        """Put the files saved in host_output_dir back into a replacement container's OUTPUT_DIR."""
        try:
            if not any(self.host_output_dir.iterdir()):
                return
        except OSError:
            return
        try:
            with tempfile.TemporaryFile(dir=self._folder) as archive:
                count = pack_output_folder(self.host_output_dir, archive, uid=SANDBOX_UID,
                                           max_bytes=output_limit_bytes(self._provider.settings))
                archive.seek(0)
                container.client.api.put_archive(container.cid, OUTPUT_DIR, archive)
            log.info("restored %d output files into restarted sandbox %s", count, container.cid[:12])
        except (*_ERRORS, tarfile.TarError) as exc:
            log.warning("could not restore the output files into sandbox %s: %s", container.cid[:12], exc)

    def finish_outputs(self) -> list[str]:
        """Copy OUTPUT_DIR to host_output_dir now (the agent has stopped); notices for the person."""
        with self._lock:
            if self._closed:
                return []
            if self._container is None:
                return [*self._output_notices,
                        "the sandbox had stopped: output files are those saved at the end of its last good step"]
            if not self._copy_outputs(self._container):
                return [*self._output_notices,
                        "some output files may be missing or out of date: the output folder could not be copied"]
            self._saved_state = None
            return list(self._output_notices)

    def _replace(self, save_outputs: bool) -> None:
        """Kill the current container and start a fresh one on the same folders, re-sending tools/variables.

        save_outputs: the container is still alive (timeout, protocol breach): freeze it and copy its
        OUTPUT_DIR out first. After a crash its tmpfs is already gone and the last copy is kept.
        """
        old, self._container = self._container, None
        if old is not None:
            if save_outputs:
                try:
                    old.client.api.pause(old.cid)
                    old.paused = True
                except _ERRORS:
                    pass
                self._copy_outputs(old)
            self._saved_state = None
            self._provider._forget(old)
            self._provider._destroy_later(old)  # off the critical path: the model waits for the new one
        try:
            self._ensure_container()
        except SandboxUnavailable as exc:
            log.error("could not restart a sandbox: %s", exc)

    def _ensure_container(self) -> None:
        if self._container is not None:
            return
        if self._closed:
            raise SandboxExecutionError("this sandbox was already cleaned up")
        container = self._provider._new_container(self._folder)
        try:
            self._reseed_outputs(container)
            self._init(container)
            if self._tools_message:
                if container.request(self._tools_message).get("type") != "ok":
                    raise SandboxUnavailable("the restarted sandbox refused the tools")
            if self._variables:
                container.request({"type": "variables", "variables": self._variables})
        except (_Gone, _Timeout, _Runaway, OSError, SandboxUnavailable) as exc:
            self._provider._forget(container)
            container.destroy(remove_folder=False)
            raise SandboxExecutionError(f"the sandbox could not be restarted: {exc}") from None
        self._container = container

    def cleanup(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            container, self._container = self._container, None
        if container is not None:
            self._provider._forget(container)
            container.destroy(remove_folder=False)
        shutil.rmtree(self._folder, ignore_errors=True)


class DockerSandboxProvider(SandboxProvider):
    """Hands out hardened containers from a warm pool refilled in the background; thread-safe."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.instance_id = uuid.uuid4().hex[:12]
        self.root = (Path(settings.data_dir) / "sandboxes").resolve()
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()
        self._pool: collections.deque[_Container] = collections.deque()
        self._live: dict[str, _Container] = {}
        self._wake = threading.Event()
        self._filled = threading.Event()
        self._closed = False
        self._swept = False
        self._reapers: list[threading.Thread] = []
        self._thread: threading.Thread | None = None

    # -- engine ---------------------------------------------------------------------------------------
    def _docker(self) -> docker.DockerClient:
        with self._lock:
            if self._client is None:
                try:
                    client = docker.from_env(timeout=60)
                    client.ping()
                except _ERRORS as exc:
                    raise SandboxUnavailable(self._engine_down_message()) from exc
                self._client = client
            return self._client

    def _engine_down_message(self) -> str:
        return (f"Docker engine not reachable at {_docker_host()}: start dockerd (scripts/ensure_docker.sh) "
                "or set DOCKER_HOST")

    def _image_missing_message(self) -> str:
        return f"sandbox image {self.settings.sandbox_image} missing: run `agentdesk sandbox build`"

    def check(self) -> tuple[bool, str]:
        try:
            client = self._docker()
            client.ping()
        except (SandboxUnavailable, *_ERRORS):
            with self._lock:
                self._client = None
            return False, self._engine_down_message()
        try:
            client.images.get(self.settings.sandbox_image)
        except ImageNotFound:
            return False, self._image_missing_message()
        except _ERRORS as exc:
            return False, f"Docker engine at {_docker_host()} failed to answer: {exc}"
        runtime = self.settings.sandbox_runtime
        if runtime:
            try:
                runtimes = client.info().get("Runtimes") or {}
            except _ERRORS as exc:
                return False, f"Docker engine at {_docker_host()} failed to answer: {exc}"
            if runtime not in runtimes:
                return False, (f"container runtime {runtime!r} (SANDBOX_RUNTIME) is not registered with dockerd; "
                               f"registered: {', '.join(sorted(runtimes))}")
        with self._lock:
            warm = len(self._pool)
        return True, (f"Docker engine at {_docker_host()}, image {self.settings.sandbox_image} present, "
                      f"{warm}/{self.settings.sandbox_pool_size} warm sandboxes")

    # -- containers -----------------------------------------------------------------------------------
    def _container_config(self, sid: str, folder: Path) -> dict[str, Any]:
        s = self.settings
        gvisor = s.sandbox_runtime == "runsc"
        # gVisor: the agent's processes and threads are capped by RLIMIT_NPROC, which the Sentry enforces per
        # sandbox (not per host uid). The cgroup pids limit also counts the Sentry's own threads and, on the
        # ptrace platform, about 6 host tasks per guest process (measured: 62 forked children = 380 tasks), so
        # it is only a backstop here; at 256 the Sentry itself dies (exit 2) before nproc refuses a fork.
        pids = max(s.sandbox_pids * GVISOR_TASKS_PER_PROCESS, 256) if gvisor else s.sandbox_pids
        memory = f"{s.sandbox_memory_mb}m"
        client = self._docker()
        host_config = client.api.create_host_config(
            network_mode="none",
            read_only=True,
            tmpfs={"/tmp": "rw,noexec,nosuid,nodev,size=64m,nr_inodes=4096"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            pids_limit=pids,
            mem_limit=memory,
            memswap_limit=memory,
            nano_cpus=int(s.sandbox_cpus * 1e9),
            ulimits=[Ulimit(name="nofile", soft=256, hard=256), Ulimit(name="fsize", soft=64 << 20, hard=64 << 20)]
            + ([Ulimit(name="nproc", soft=s.sandbox_pids, hard=s.sandbox_pids)] if gvisor else []),
            init=True,
            ipc_mode="none",
            log_config=LogConfig(type="none"),
            mounts=[
                Mount(INPUT_DIR, str(folder / "in"), type="bind", read_only=True),
                # An anonymous tmpfs volume: bounded, never on the host's disk, removed with the container.
                Mount(OUTPUT_DIR, None, type="volume", no_copy=True, labels=self._labels(sid),
                      driver_config=DriverConfig("local", {
                          "type": "tmpfs", "device": "tmpfs",
                          "o": (f"size={output_limit_bytes(s)},nr_inodes={OUTPUT_ENTRIES},uid={SANDBOX_UID},"
                                f"gid={SANDBOX_UID},mode=0700,noexec,nosuid,nodev"),
                      })),
            ],
            runtime=s.sandbox_runtime or None,
        )
        return dict(
            image=s.sandbox_image,
            user=f"{SANDBOX_UID}:{SANDBOX_UID}",
            hostname="sandbox",
            stdin_open=True,
            detach=False,  # with stdin_open this sets StdinOnce: if this process dies, the runner sees EOF and exits
            environment={
                "PATH": "/opt/venv/bin:/usr/local/bin:/usr/bin:/bin",
                "HOME": "/tmp",
                "LANG": "C.UTF-8",
                "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONUNBUFFERED": "1",
                "MPLCONFIGDIR": "/tmp/matplotlib",
            },
            labels=self._labels(sid),
            name=f"agentdesk-sbx-{sid}",
            host_config=host_config,
        )

    def _labels(self, sid: str) -> dict[str, str]:
        return {
            LABEL: "1",
            f"{LABEL}.id": sid,
            f"{LABEL}.provider": self.instance_id,
            f"{LABEL}.host": socket.gethostname(),
            f"{LABEL}.pid": str(os.getpid()),
        }

    def _make_folder(self, sid: str) -> Path:
        folder = self.root / sid
        (folder / "in").mkdir(parents=True, mode=0o755)
        (folder / "out").mkdir(mode=0o700)  # host-side copy of OUTPUT_DIR; never mounted into a container
        os.chmod(folder, 0o755)
        os.chmod(folder / "in", 0o755)
        return folder

    def _new_container(self, folder: Path | None = None) -> _Container:
        """Create, attach and start a container, then wait until its runner is ready (blocking)."""
        if self._closed:
            raise SandboxUnavailable("the sandbox provider is shut down")
        client = self._docker()
        sid = uuid.uuid4().hex[:12] if folder is None else f"{folder.name}-{uuid.uuid4().hex[:4]}"
        if folder is None:
            folder = self._make_folder(sid)
        cid = None
        try:
            cid = client.api.create_container(**self._container_config(sid, folder))["Id"]
            raw = client.api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            container = _Container(client, cid, sid, folder, raw)
            with self._lock:
                self._live[cid] = container
            client.api.start(cid)
            ready = container.receive(time.monotonic() + READY_TIMEOUT_S)
            if ready.get("type") != "ready":
                raise _Runaway(f"unexpected first message {ready.get('type')!r}")
            return container
        except ImageNotFound as exc:
            self._abort(client, cid, folder)
            raise SandboxUnavailable(self._image_missing_message()) from exc
        except APIError as exc:
            self._abort(client, cid, folder)
            if exc.status_code == 404 and "image" in str(exc).lower():
                raise SandboxUnavailable(self._image_missing_message()) from exc
            raise SandboxUnavailable(f"Docker refused to start a sandbox: {exc.explanation or exc}") from exc
        except (_Gone, _Timeout, _Runaway) as exc:
            self._abort(client, cid, folder)
            raise SandboxUnavailable(f"a sandbox container did not become ready ({exc or type(exc).__name__})") from exc
        except _ERRORS as exc:
            self._abort(client, cid, folder)
            raise SandboxUnavailable(f"{self._engine_down_message()} ({exc})") from exc

    def _abort(self, client: docker.DockerClient, cid: str | None, folder: Path) -> None:
        if cid is not None:
            with self._lock:
                self._live.pop(cid, None)
            try:
                client.api.remove_container(cid, force=True, v=True)
            except _ERRORS:
                pass
        if folder.parent == self.root and not any(c.folder == folder for c in self._live_snapshot()):
            shutil.rmtree(folder, ignore_errors=True)

    def _live_snapshot(self) -> list[_Container]:
        with self._lock:
            return list(self._live.values())

    def _forget(self, container: _Container) -> None:
        with self._lock:
            self._live.pop(container.cid, None)

    def _destroy_later(self, container: _Container) -> None:
        """Remove a replaced container in the background (close() waits for these)."""
        container.killed_by_host = True
        thread = threading.Thread(target=container.destroy, kwargs={"remove_folder": False},
                                  name="sandbox-reaper", daemon=True)
        with self._lock:
            self._reapers = [t for t in self._reapers if t.is_alive()] + [thread]
        thread.start()

    # -- pool -----------------------------------------------------------------------------------------
    def acquire(self, *, authorized_imports: list[str], step_timeout_s: float, caller: Caller) -> Sandbox:
        if self._closed:
            raise SandboxUnavailable("the sandbox provider is shut down")
        while True:
            with self._lock:
                container = self._pool.popleft() if self._pool else None
            self._wake.set()
            if container is None:
                container = self._new_container()
            sandbox = DockerSandbox(self, container, authorized_imports=authorized_imports,
                                    step_timeout_s=step_timeout_s, caller=caller)
            try:
                sandbox._init(container)
                return sandbox
            except (_Gone, _Timeout, _Runaway, OSError) as exc:
                log.warning("discarding a dead warm sandbox %s: %s", container.cid[:12], exc)
                self._forget(container)
                container.destroy(remove_folder=True)
            except SandboxUnavailable:
                self._forget(container)
                container.destroy(remove_folder=True)
                raise

    def start(self) -> None:
        """Sweep leftovers and warm the pool. If the engine is not ready yet the refill thread still starts:
        it retries with backoff, fills the pool (and sweeps) once the engine answers."""
        ready, why = self.check()
        if ready:
            self.sweep()
            self._swept = True
        else:
            log.error("sandbox not ready: %s (the warm pool is filled once it is)", why)
        if self._thread is None and self.settings.sandbox_pool_size > 0:
            self._thread = threading.Thread(target=self._refill_loop, name="sandbox-pool", daemon=True)
            self._thread.start()
            self._wake.set()
            if ready:
                self._filled.wait(timeout=READY_TIMEOUT_S * 2)

    def _refill_loop(self) -> None:
        backoff = 0.0
        while not self._closed:
            self._wake.wait(timeout=backoff or 5.0)
            self._wake.clear()
            while not self._closed:
                with self._lock:
                    missing = self.settings.sandbox_pool_size - len(self._pool)
                if missing <= 0:
                    self._filled.set()
                    backoff = 0.0
                    break
                try:
                    container = self._new_container()
                except SandboxUnavailable as exc:
                    if not backoff:
                        log.error("cannot warm the sandbox pool: %s", exc)
                    backoff = min(max(backoff * 2, 2.0), 60.0)
                    self._filled.set()
                    break
                with self._lock:
                    if self._closed:
                        closed = True
                    else:
                        closed = False
                        self._pool.append(container)
                if closed:
                    self._forget(container)
                    container.destroy(remove_folder=True)
                elif not self._swept:  # the engine was down at start: sweep now that it answers
                    self._swept = True
                    try:
                        self.sweep()
                    except SandboxUnavailable:
                        self._swept = False

    def sweep(self) -> int:
        """Remove labelled containers left by dead processes and sandbox folders nobody uses."""
        client = self._docker()
        removed = 0
        keep: set[str] = set()
        host = socket.gethostname()
        try:
            found = client.api.containers(all=True, filters={"label": f"{LABEL}=1"})
        except _ERRORS as exc:
            log.warning("could not list leftover sandboxes: %s", exc)
            return 0
        mine = {c.cid for c in self._live_snapshot()}
        for info in found:
            labels = info.get("Labels") or {}
            if info["Id"] in mine or not self._is_orphan(client, info, host):
                keep.add(labels.get(f"{LABEL}.id", "").split("-")[0])
                continue
            try:
                client.api.remove_container(info["Id"], force=True, v=True)
                removed += 1
            except NotFound:
                pass
            except _ERRORS as exc:
                log.warning("could not remove leftover sandbox %s: %s", info["Id"][:12], exc)
        try:  # OUTPUT_DIR volumes of containers removed without their volumes (a crash mid-removal)
            dangling = client.api.volumes(filters={"label": f"{LABEL}=1", "dangling": "true"}).get("Volumes") or []
        except _ERRORS as exc:
            log.warning("could not list leftover sandbox volumes: %s", exc)
            dangling = []
        for volume in dangling:
            try:
                client.api.remove_volume(volume["Name"])
            except _ERRORS:
                pass  # in use again (another process just mounted it) or already gone
        keep |= {c.folder.name for c in self._live_snapshot()}
        if self.root.is_dir():
            now = time.time()
            for folder in self.root.iterdir():
                # a folder younger than a minute may belong to a container another process is creating
                if folder.name not in keep and now - folder.stat().st_mtime > 60:
                    shutil.rmtree(folder, ignore_errors=True)
        if removed:
            log.info("removed %d leftover sandbox containers", removed)
        return removed

    @staticmethod
    def _is_orphan(client: docker.DockerClient, info: dict, host: str) -> bool:
        """Owned by a dead process on this host, or exited long ago (other processes share the engine)."""
        labels = info.get("Labels") or {}
        pid = labels.get(f"{LABEL}.pid", "")
        if labels.get(f"{LABEL}.host") == host and pid.isdigit() and not _pid_alive(int(pid)):
            return True
        if info.get("State") not in ("exited", "dead"):
            return False
        try:
            finished = client.api.inspect_container(info["Id"])["State"].get("FinishedAt", "")
            ended = datetime.datetime.fromisoformat(finished[:26].rstrip("Z") + "+00:00")
        except (_ERRORS, ValueError, KeyError):
            return False
        return (datetime.datetime.now(datetime.timezone.utc) - ended).total_seconds() > ORPHAN_AGE_S

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=READY_TIMEOUT_S + 5)
            self._thread = None
        with self._lock:
            victims = list(self._live.values())
            reapers = list(self._reapers)
            self._pool.clear()
            self._live.clear()
        for container in victims:
            container.destroy(remove_folder=True)
        for thread in reapers:
            thread.join(timeout=CONTROL_TIMEOUT_S)
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    @property
    def warm(self) -> int:
        with self._lock:
            return len(self._pool)
