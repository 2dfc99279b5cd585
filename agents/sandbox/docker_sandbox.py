"""The Docker backend: one hardened container per task, on the shared sandbox core.

Each container runs `inside.py`, a persistent Python process that has already imported smolagents when
it is handed out, so a warm sandbox answers its first step in milliseconds. The host talks to it over
the container's own stdin/stdout through the Docker attach socket (8-byte frame headers demultiplexed
by DockerAttachStream): no network, no published port, no exec per step. The frame channel, the tool
bridge, output collection and the pool are the shared core (channel.py, bridge.py, executor.py,
output_mirror.py, pool.py); this module holds only what is Docker's.

OUTPUT_DIR is not a host folder: it is an anonymous Docker volume backed by a size-limited tmpfs
(AGENTDESK_MAX_FILES x AGENTDESK_MAX_FILE_MB, at most half the sandbox memory; noexec,nosuid,nodev; owned by
the sandbox user, mode 0700) that lives and dies with its container, so the agent's code cannot fill the
bot host's disk. Its files are copied out through Docker's archive API as an untrusted tar stream (only
regular files and folders, names checked, count and bytes capped: outputs.py), and a replacement
container is re-seeded with put_archive. (Docker 20.10's archive API cannot see a HostConfig.Tmpfs
mount, and refuses put_archive on a read-only root outside a volume: hence a tmpfs *volume*. Its pages
count against the container's memory limit.)
"""
from __future__ import annotations

import datetime
import functools
import json
import logging
import os
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

from agents.sandbox.base import SandboxUnavailable
from agents.sandbox.channel import ByteStream, ChannelBreach, ChannelError, ChannelGone, ChannelTimeout, FrameChannel
from agents.sandbox.executor import SandboxExecutionError, SandboxInstance, SandboxLimits
from agents.sandbox.outputs import extract_output_archive, pack_output_folder
from agents.sandbox.pool import READY_TIMEOUT_S, SandboxBackend, SandboxPool, pid_alive
from agents.settings import Settings

log = logging.getLogger("agentdesk.sandbox")

LABEL = "agentdesk.sandbox"
SANDBOX_UID = 65534
INPUT_DIR = "/workspace/in"
OUTPUT_DIR = "/workspace/out"
ORPHAN_AGE_S = 600.0  # an exited sandbox of a live process older than this is swept
OUTPUT_ENTRIES = 1_024  # files and folders in OUTPUT_DIR (the tmpfs inode limit and the copy-out cap)
MIN_OUTPUT_MB = 16
GVISOR_TASKS_PER_PROCESS = 8  # runsc: cgroup pids limit per allowed guest process (Sentry threads, ptrace stubs)
ARCHIVE_CHUNK = 1 << 20
#: The product's own seccomp profile (Docker's default, tightened: see the file's comment and SECURITY.md).
SECCOMP_PROFILE = Path(__file__).with_name("seccomp.json")
_ERRORS = (DockerException, requests.RequestException, OSError)

__all__ = ["DockerBackend", "DockerContainer", "DockerSandboxProvider", "SandboxExecutionError", "output_limit_bytes"]


def _docker_host() -> str:
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


def output_limit_bytes(settings: Settings) -> int:
    """Size of the OUTPUT_DIR tmpfs: what one answer may carry (files x size per file), bounded by half the
    sandbox memory (tmpfs pages count against it: a full folder must fail with ENOSPC, not an OOM kill)."""
    wanted = int(settings.max_files * settings.max_file_mb)
    return max(MIN_OUTPUT_MB, min(wanted, settings.sandbox_memory_mb // 2)) << 20


@functools.lru_cache(maxsize=1)
def seccomp_profile(runtime: str | None = None) -> dict[str, Any]:
    """The product's profile for a container runtime. Under runsc the one `clone3` rule is an allow: gVisor
    (checked with Debian's runsc 20221219) ignores a rule's `errnoRet` and answers `EPERM`, which glibc does
    not fall back from, so no thread could start; allowed, the call reaches the Sentry (gVisor's own kernel,
    never the host's), which answers `ENOSYS` itself, and glibc falls back to `clone`, whose flags the profile
    checks."""
    profile = json.loads(SECCOMP_PROFILE.read_text())
    if runtime == "runsc":
        for rule in profile["syscalls"]:
            if rule["names"] == ["clone3"]:
                rule["action"] = "SCMP_ACT_ALLOW"
                rule.pop("errnoRet", None)
                rule["comment"] = "runsc: the Sentry answers ENOSYS itself (gVisor ignores errnoRet)"
    return profile


def _seccomp_option(runtime: str | None) -> str:
    """The profile as the Engine API takes it: the JSON text itself (the CLI reads the file the same way)."""
    return json.dumps(seccomp_profile(runtime), separators=(",", ":"))


class DockerAttachStream(ByteStream):
    """A container's stdin/stdout/stderr over the attach socket: Docker's 8-byte frame headers removed."""

    def __init__(self, raw_sock: Any):
        super().__init__()
        self._raw = raw_sock  # a SocketIO holding the HTTP response that owns the connection
        self._sock: socket.socket = getattr(raw_sock, "_sock", raw_sock)
        self._buf = bytearray()
        self._stream = 0
        self._left = 0
        self._eof = False

    def _take_stdout(self) -> bytes:
        out = bytearray()
        while self._buf:
            if self._left == 0:
                if len(self._buf) < 8:
                    break
                self._stream = self._buf[0]
                self._left = struct.unpack(">I", self._buf[4:8])[0]
                del self._buf[:8]
                continue
            n = min(self._left, len(self._buf))
            chunk = bytes(self._buf[:n])
            del self._buf[:n]
            self._left -= n
            if self._stream == 1:
                out += chunk
            else:
                self.stderr_tail.append(chunk[-2000:])
        return bytes(out)

    def read(self, timeout: float) -> bytes:
        end = time.monotonic() + timeout
        while True:
            out = self._take_stdout()
            if out or self._eof:
                return out
            left = end - time.monotonic()
            try:
                if left <= 0:
                    self._sock.setblocking(False)
                else:
                    self._sock.settimeout(left)
                chunk = self._sock.recv(262144)
            except (socket.timeout, BlockingIOError):
                raise ChannelTimeout() from None
            except OSError as exc:
                raise ChannelGone(str(exc)) from exc
            if not chunk:
                self._eof = True
            self._buf += chunk

    def write(self, data: bytes, timeout: float) -> None:
        try:
            self._sock.settimeout(max(timeout, 0.001))
            self._sock.sendall(data)
        except socket.timeout:
            raise ChannelTimeout() from None
        except OSError as exc:
            raise ChannelGone(str(exc)) from exc

    def shutdown(self) -> None:
        """A reader in another thread sees the end at once; the fd stays ours until close()."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        """Shut the connection down first (other references to the socket keep its fd open, and dockerd would
        keep streaming into it), then drop the socket and the HTTP response that owns it."""
        self.shutdown()
        for closable in (getattr(self._raw, "_response", None), self._raw, self._sock):
            try:
                if closable is not None:
                    closable.close()
            except (OSError, ValueError, AttributeError):
                pass


class DockerContainer(SandboxInstance):
    """One started sandbox container: its id, task folder and attached channel."""

    input_dir = INPUT_DIR
    output_dir = OUTPUT_DIR

    def __init__(self, client: docker.DockerClient, cid: str, sid: str, folder: Path, raw_sock: Any):
        super().__init__(cid, folder, FrameChannel(DockerAttachStream(raw_sock)))
        self.client = client
        self.sid = sid
        self.paused = False
        self._kill_lock = threading.Lock()
        self._killed = False
        self._removed = False

    @property
    def cid(self) -> str:
        return self.id

    def kill(self) -> None:
        with self._kill_lock:
            if self._killed:
                return
            self._killed = True
        self.channel.shutdown()  # a step reading the channel sees its end at once; destroy() releases it
        if self.paused:  # runsc cannot kill a paused sandbox: `rm -f` fails after 10 s and leaks its shim
            try:
                self.client.api.unpause(self.id)
            except _ERRORS:
                pass
        try:
            self.client.api.kill(self.id)
        except _ERRORS:
            pass  # not running any more, or gone: destroy() removes what is left

    def destroy(self) -> None:
        self.kill()
        with self._kill_lock:
            if self._removed:
                return
            self._removed = True
        self.channel.close()
        try:
            self.client.api.remove_container(self.id, force=True, v=True)  # v: its OUTPUT_DIR volume too
        except NotFound:
            pass
        except _ERRORS as exc:
            log.warning("could not remove sandbox container %s: %s (it is swept at next start)", self.id[:12], exc)

    def freeze(self) -> None:
        try:
            self.client.api.pause(self.id)
            self.paused = True
        except _ERRORS:
            pass

    def exit_status(self) -> tuple[int | None, bool]:
        try:
            code = self.client.api.wait(self.id, timeout=10).get("StatusCode")
            state = self.client.api.inspect_container(self.id)["State"]
            return code, bool(state.get("OOMKilled"))
        except _ERRORS:
            return None, False

    def read_outputs(self, staging: Path, *, max_entries: int, max_bytes: int) -> tuple[bool, list[str]]:
        api = self.client.api
        try:
            response = api._get(api._url("/containers/{0}/archive", self.id), params={"path": OUTPUT_DIR}, stream=True)
            try:
                api._raise_for_status(response)
                complete, notices = extract_output_archive(
                    response.iter_content(ARCHIVE_CHUNK), staging, root_name=os.path.basename(OUTPUT_DIR),
                    max_entries=max_entries, max_bytes=max_bytes)
            finally:
                response.close()
            # a stopped container's tmpfs is gone: Docker would have served the image's empty folder instead
            if complete and not api.inspect_container(self.id)["State"].get("Running"):
                return False, ["the container had stopped"]
            return complete, notices
        except _ERRORS as exc:
            log.warning("could not copy the outputs of sandbox %s: %s", self.id[:12], exc)
            return False, [str(exc)]

    def write_outputs(self, source: Path, *, max_bytes: int) -> int:
        try:
            with tempfile.TemporaryFile(dir=self.folder) as archive:
                count = pack_output_folder(source, archive, uid=SANDBOX_UID, max_bytes=max_bytes)
                archive.seek(0)
                self.client.api.put_archive(self.id, OUTPUT_DIR, archive)
            return count
        except (DockerException, tarfile.TarError) as exc:
            raise OSError(str(exc)) from exc


class DockerBackend(SandboxBackend):
    """Starts, checks and sweeps hardened sandbox containers on the Docker engine."""

    def __init__(self, settings: Settings, instance_id: str):
        self.settings = settings
        self.instance_id = instance_id
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()

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
        return True, f"Docker engine at {_docker_host()}, image {self.settings.sandbox_image} present"

    # -- containers -----------------------------------------------------------------------------------
    def container_config(self, sid: str, folder: Path) -> dict[str, Any]:
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
            security_opt=["no-new-privileges", f"seccomp={_seccomp_option(s.sandbox_runtime)}"],
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

    def start(self, sid: str, folder: Path) -> DockerContainer:
        """Create, attach and start a container, then wait until its runner is ready (blocking)."""
        client = self._docker()
        cid = None
        container: DockerContainer | None = None
        try:
            cid = client.api.create_container(**self.container_config(sid, folder))["Id"]
            raw = client.api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            container = DockerContainer(client, cid, sid, folder, raw)
            client.api.start(cid)
            ready = container.channel.receive(time.monotonic() + READY_TIMEOUT_S)
            if ready.get("type") != "ready":
                raise ChannelBreach(f"unexpected first message {str(ready.get('type'))[:40]!r}")
            return container
        except ImageNotFound as exc:
            self._abort(client, cid, container)
            raise SandboxUnavailable(self._image_missing_message()) from exc
        except APIError as exc:
            self._abort(client, cid, container)
            if exc.status_code == 404 and "image" in str(exc).lower():
                raise SandboxUnavailable(self._image_missing_message()) from exc
            raise SandboxUnavailable(f"Docker refused to start a sandbox: {exc.explanation or exc}") from exc
        except ChannelError as exc:
            self._abort(client, cid, container)
            raise SandboxUnavailable(f"a sandbox container did not become ready ({exc or type(exc).__name__})") from exc
        except _ERRORS as exc:
            self._abort(client, cid, container)
            raise SandboxUnavailable(f"{self._engine_down_message()} ({exc})") from exc

    @staticmethod
    def _abort(client: docker.DockerClient, cid: str | None, container: DockerContainer | None) -> None:
        if container is not None:
            container.destroy()
        elif cid is not None:
            try:
                client.api.remove_container(cid, force=True, v=True)
            except _ERRORS:
                pass

    # -- leftovers ------------------------------------------------------------------------------------
    def sweep(self, live_ids: set[str]) -> set[str] | None:
        """Remove labelled containers left by dead processes and their dangling OUTPUT_DIR volumes."""
        client = self._docker()
        removed = 0
        keep: set[str] = set()
        host = socket.gethostname()
        try:
            found = client.api.containers(all=True, filters={"label": f"{LABEL}=1"})
        except _ERRORS as exc:
            log.warning("could not list leftover sandboxes: %s", exc)
            return None
        for info in found:
            labels = info.get("Labels") or {}
            if info["Id"] in live_ids or not self._is_orphan(client, info, host):
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
        if removed:
            log.info("removed %d leftover sandbox containers", removed)
        return keep

    @staticmethod
    def _is_orphan(client: docker.DockerClient, info: dict, host: str) -> bool:
        """Owned by a dead process on this host, or exited long ago (other processes share the engine)."""
        labels = info.get("Labels") or {}
        pid = labels.get(f"{LABEL}.pid", "")
        if labels.get(f"{LABEL}.host") == host and pid.isdigit() and not pid_alive(int(pid)):
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
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


class DockerSandboxProvider(SandboxPool):
    """SANDBOX=docker: the shared pool over DockerBackend."""

    def __init__(self, settings: Settings):
        instance_id = uuid.uuid4().hex[:12]
        limits = SandboxLimits(memory_mb=settings.sandbox_memory_mb, output_bytes=output_limit_bytes(settings),
                               output_entries=OUTPUT_ENTRIES)
        super().__init__(settings, DockerBackend(settings, instance_id), limits, instance_id=instance_id)
