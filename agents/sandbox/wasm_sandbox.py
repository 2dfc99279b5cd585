"""SANDBOX=wasm: each sandbox is a Deno process running Pyodide (CPython compiled to WebAssembly).

Isolation comes from Deno's permissions and wasm itself: the process may read the Pyodide distribution,
the smolagents wheel, the runner's files and the memory snapshot (wasm_runtime.WasmRuntime.command), and
nothing else: no network, no environment, no subprocesses, no FFI, no writes. Python sees only Pyodide's
in-memory filesystem, so the host's files (/etc/passwd included) do not exist for it. Memory is capped by
V8 (wasm pages and JS heap), the step timeout by the host (the process is killed and replaced).

The runner is the Docker sandbox's (inside.py via wasm_boot.py), and everything above the process is the
shared core: the frame channel over the process's pipes, the executor with its tool bridge, the output
mirror and the warm pool. What differs from Docker is how files cross: there is no host folder to mount,
so INPUT_FILES are uploaded into the in-memory filesystem before the first step (WasmExecutor), and
OUTPUT_DIR comes back as a tar stream in chunks read as untrusted (outputs.extract_output_archive, the same
reader and limits as Docker's archive API). A frozen (timed-out) process cannot answer, so files written
during a step that times out are lost; those saved after earlier steps are kept and restored.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from agents.sandbox.base import SandboxUnavailable
from agents.sandbox.channel import ChannelError, FrameChannel, PipeStream
from agents.sandbox.docker_sandbox import OUTPUT_ENTRIES, output_limit_bytes
from agents.sandbox.executor import CONTROL_TIMEOUT_S, SandboxExecutor, SandboxInstance, SandboxLimits
from agents.sandbox.outputs import MAX_TAR_DEPTH, extract_output_archive
from agents.sandbox.pool import READY_TIMEOUT_S, SandboxBackend, SandboxPool, pid_alive
from agents.sandbox.wasm_runtime import RUNNER, WasmRuntime, WasmRuntimeMissing, locate, make_snapshot
from agents.settings import Settings

log = logging.getLogger("agentdesk.sandbox")

INPUT_DIR = "/workspace/in"
OUTPUT_DIR = "/workspace/out"
UPLOAD_CHUNK = 1 << 20
MEMORY_POLL_S = 0.2
#: Resident memory of a Deno process running Pyodide before any task (measured: bench/sandbox.py).
PROCESS_BASE_MB = 256
#: What V8 and Pyodide print when the wasm memory or the JS heap cannot grow any more.
OOM_MARKERS = ("out of memory", "Out of memory", "Cannot enlarge memory", "Maximum memory size exceeded",
               "Reached heap limit", "could not allocate memory", "OOM")
_SNAPSHOT_LOCK = threading.Lock()


class WasmProcess(SandboxInstance):
    """One Deno process whose runner said "ready"."""

    input_dir = INPUT_DIR
    output_dir = OUTPUT_DIR

    def __init__(self, process: subprocess.Popen, sid: str, folder: Path):
        super().__init__(sid, folder, FrameChannel(PipeStream(process.stdin, process.stdout, process.stderr)))
        self.process = process
        self._lock = threading.Lock()
        self._killed = False
        self._frozen = False
        self._uploaded: set[str] = set()
        self.killed_for_memory = False

    def watch_memory(self, limit_bytes: int) -> None:
        """Kill the process if its resident memory passes limit_bytes: a backstop for what V8's caps do not
        count (JS ArrayBuffers, Deno's own buffers). Runs in a daemon thread until the process ends."""
        def watch() -> None:
            page = os.sysconf("SC_PAGE_SIZE")
            while not self._killed and self.process.poll() is None:
                try:
                    resident = int(Path(f"/proc/{self.process.pid}/statm").read_text().split()[1]) * page
                except (OSError, ValueError, IndexError):
                    return
                if resident > limit_bytes:
                    log.warning("sandbox process %s uses %d MB: killed", self.process.pid, resident >> 20)
                    self.killed_for_memory = True
                    self.kill()
                    return
                time.sleep(MEMORY_POLL_S)

        threading.Thread(target=watch, name="sandbox-memory", daemon=True).start()

    # -- lifecycle ------------------------------------------------------------------------------------
    def kill(self) -> None:
        with self._lock:
            if self._killed:
                return
            self._killed = True
        try:
            self.process.kill()  # SIGKILL also ends a SIGSTOPped process; a step reading its stdout sees the end
        except OSError:
            pass

    def destroy(self) -> None:
        self.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.warning("sandbox process %s did not exit after SIGKILL", self.process.pid)
        self.channel.close()  # only now: a step still reading may be about to wait on these descriptors
        for stream in (self.process.stderr,):
            try:
                stream.close()
            except (OSError, AttributeError):
                pass

    def freeze(self) -> None:
        try:
            os.kill(self.process.pid, signal.SIGSTOP)
            self._frozen = True
        except OSError:
            pass

    def exit_status(self) -> tuple[int | None, bool]:
        try:
            code = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return None, False
        time.sleep(0.05)  # let the stderr drain thread take the last lines
        stderr = self.channel.stderr_text()
        return code, self.killed_for_memory or any(marker in stderr for marker in OOM_MARKERS)

    # -- files ----------------------------------------------------------------------------------------
    def _upload(self, source: Path, target: str, size: int) -> None:
        """One host file into the in-memory filesystem, in chunks (raises OSError, ChannelError)."""
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise OSError(f"{source.name} is not a regular file")
            sent = 0
            first = True
            while first or sent < size:
                data = f.read(min(UPLOAD_CHUNK, size - sent))
                reply = self.channel.request({"type": "upload", "path": target, "append": not first,
                                              "data": base64.b64encode(data).decode()}, CONTROL_TIMEOUT_S)
                if reply.get("type") != "ok":
                    raise OSError(f"the sandbox refused {target}: {reply.get('message')}")
                first = False
                sent += len(data)
                if not data:
                    break

    def upload_inputs(self) -> None:
        """Copy the task's input files (written by the runner into folder/in) that are not in yet."""
        folder = self.folder / "in"
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if entry.name in self._uploaded:
                continue
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode):
                self._upload(Path(entry.path), f"in/{entry.name}", st.st_size)
            self._uploaded.add(entry.name)

    def read_outputs(self, staging: Path, *, max_entries: int, max_bytes: int) -> tuple[bool, list[str]]:
        if self._frozen or self._killed or self.process.poll() is not None:
            return False, ["the sandbox process was stopped mid-step: its output folder cannot be read"]
        # tar framing: a 512-byte header per entry, long names in PAX headers, 10 KiB records
        budget = max_bytes + max_entries * 8192 + (1 << 20)
        deadline = time.monotonic() + CONTROL_TIMEOUT_S
        state = {"done": False, "bytes": 0}

        def chunks() -> Iterator[bytes]:
            while not state["done"]:
                message = self.channel.receive(deadline)
                kind = message.get("type")
                if kind == "done":
                    state["done"] = True
                    return
                if kind != "chunk":
                    raise OSError(f"unexpected {kind!r} in the output stream")
                try:
                    data = base64.b64decode(message.get("data") or "", validate=True)
                except (binascii.Error, ValueError) as exc:
                    raise OSError("malformed output chunk") from exc
                state["bytes"] += len(data)
                if state["bytes"] > budget:
                    raise OSError("the output stream is larger than the output limit")
                yield data

        try:
            self.channel.expect_quiet()
            self.channel.send({"type": "download"}, deadline)
            complete, notices = extract_output_archive(chunks(), staging, root_name=os.path.basename(OUTPUT_DIR),
                                                       max_entries=max_entries, max_bytes=max_bytes)
            for _ in chunks():  # the rest of the stream (tar padding; or what was over a cap) up to "done"
                pass
        except (ChannelError, OSError) as exc:
            log.warning("could not copy the outputs of sandbox %s: %s", self.id, exc)
            self.kill()  # the channel is mid-stream: the next step sees the process gone and replaces it
            return False, [str(exc)]
        return complete, notices

    def write_outputs(self, source: Path, *, max_bytes: int) -> int:
        count = 0
        total = 0
        stack: list[tuple[Path, tuple[str, ...]]] = [(Path(source), ())]
        try:
            while stack:
                folder, parts = stack.pop()
                for entry in sorted(os.scandir(folder), key=lambda e: e.name):
                    st = entry.stat(follow_symlinks=False)
                    rel = parts + (entry.name,)
                    if stat.S_ISDIR(st.st_mode) and len(rel) < MAX_TAR_DEPTH:
                        stack.append((Path(entry.path), rel))
                    elif stat.S_ISREG(st.st_mode) and total + st.st_size <= max_bytes:
                        self._upload(Path(entry.path), "/".join(("out", *rel)), st.st_size)
                        total += st.st_size
                        count += 1
        except ChannelError as exc:
            raise OSError(str(exc)) from exc
        return count


class WasmExecutor(SandboxExecutor):
    """The shared executor plus the input upload: the runner writes INPUT_FILES after acquiring the
    sandbox and before the agent sends its variables, so they are copied in then (and into replacements
    by WasmBackend.start)."""

    def send_variables(self, variables: dict[str, Any]) -> None:
        with self._step():
            self._ensure_instance()
            instance = self._instance
            assert isinstance(instance, WasmProcess)
            try:
                instance.upload_inputs()
            except (ChannelError, OSError) as exc:
                log.warning("could not copy the input files into sandbox %s: %s", instance.id, exc)
        super().send_variables(variables)


class WasmBackend(SandboxBackend):
    """Starts Deno processes; sweeps the ones a dead agentdesk process left running."""

    def __init__(self, settings: Settings, instance_id: str):
        self.settings = settings
        self.instance_id = instance_id

    def runtime(self) -> WasmRuntime:
        """The installed runtime, making the memory snapshot first if only it is missing."""
        try:
            return locate()
        except WasmRuntimeMissing:
            runtime = locate(need_snapshot=False)
        with _SNAPSHOT_LOCK:
            if not runtime.snapshot.is_file():
                make_snapshot(runtime, progress=log.info)
        return runtime

    def check(self) -> tuple[bool, str]:
        try:
            runtime = locate(need_snapshot=False)
        except WasmRuntimeMissing as exc:
            return False, f"WebAssembly sandbox not installed: {exc}"
        note = "" if runtime.snapshot.is_file() else " (its memory snapshot is made at start)"
        return True, f"WebAssembly sandbox: Deno {runtime.deno}, Pyodide {runtime.pyodide.parent.parent.name}{note}"

    def start(self, sid: str, folder: Path) -> WasmProcess:
        try:
            runtime = self.runtime()
        except (WasmRuntimeMissing, subprocess.SubprocessError, OSError) as exc:
            raise SandboxUnavailable(f"WebAssembly sandbox not available: {exc}") from exc
        command = runtime.command(self.settings.sandbox_memory_mb)
        # who owns the process, for sweep(): the last argument is the runner's config (JSON)
        config = json.loads(command[-1])
        config.update(owner=os.getpid(), provider=self.instance_id, folder=folder.name)
        command[-1] = json.dumps(config)
        try:
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, env=runtime.environment(), cwd=runtime.pyodide,
                                       start_new_session=True)
        except OSError as exc:
            raise SandboxUnavailable(f"could not start Deno ({runtime.deno}): {exc}") from exc
        instance = WasmProcess(process, f"{sid}", folder)
        try:
            ready = instance.channel.receive(time.monotonic() + READY_TIMEOUT_S)
            if ready.get("type") != "ready":
                raise SandboxUnavailable(f"unexpected first message {ready.get('type')!r}")
            instance.upload_inputs()  # a replacement on a task folder that already has inputs
            # wasm memory is capped at SANDBOX_MEMORY_MB and the JS heap at half of it; the rest is Deno itself
            instance.watch_memory((self.settings.sandbox_memory_mb * 3 // 2 + PROCESS_BASE_MB) << 20)
        except (ChannelError, OSError, SandboxUnavailable) as exc:
            instance.destroy()
            detail = instance.channel.stderr_text()[-500:]
            raise SandboxUnavailable(f"a WebAssembly sandbox did not become ready ({exc or type(exc).__name__})"
                                     + (f": {detail}" if detail else "")) from exc
        return instance

    def sweep(self, live_ids: set[str]) -> set[str] | None:
        """Kill runner processes whose owner died (the runner also exits when its stdin closes, unless it
        is stuck in a loop); returns the task folders of live owners' processes."""
        keep: set[str] = set()
        marker = str(RUNNER).encode()
        try:
            pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        except OSError:
            return None
        for pid in pids:
            try:
                args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker not in args:
                continue
            try:
                config = json.loads(args[args.index(marker) + 1])
            except (IndexError, ValueError):
                continue
            owner = config.get("owner")
            if isinstance(owner, int) and owner != os.getpid() and not pid_alive(owner):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            elif config.get("folder"):
                keep.add(str(config["folder"]))
        return keep


class WasmSandboxProvider(SandboxPool):
    """SANDBOX=wasm: the shared pool over WasmBackend."""

    executor_class = WasmExecutor

    def __init__(self, settings: Settings):
        import uuid

        instance_id = uuid.uuid4().hex[:12]
        limits = SandboxLimits(memory_mb=settings.sandbox_memory_mb, output_bytes=output_limit_bytes(settings),
                               output_entries=OUTPUT_ENTRIES)
        super().__init__(settings, WasmBackend(settings, instance_id), limits, instance_id=instance_id)

    def missing_imports(self, imports: list[str]) -> list[str]:
        """The authorized imports that cannot be imported in the sandbox (only the standard library is there)."""
        available = None
        try:
            available = locate(need_snapshot=False).available_modules()
        except WasmRuntimeMissing:
            pass
        if available is None:
            available = set(sys.stdlib_module_names)
        return sorted({name for name in imports if name != "*" and name.split(".")[0] not in available})
