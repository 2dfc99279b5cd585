"""Real processes for scale-out tests and benches: a Redis server, `agentdesk serve --role web|worker|all`.

Each bot process gets its own data dir (shared state must live in Redis), the test's Slack stand-in, Teams
connector stand-in (activities carry its serviceUrl) and scripted model server. `Topology.redis` is None in
the embedded topology (one `--role all` process on SQLite and its in-process queue).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("redis-server is not installed (scripts/ensure_redis.sh installs Debian's redis-server)")
    pytest.skip("redis-server is not installed; run scripts/ensure_redis.sh (CI never skips this)")


class RedisServer:
    """One redis-server on loopback with appendonly on, stoppable and restartable on the same port and data."""

    def __init__(self, folder: Path) -> None:
        self.binary = redis_server_binary()
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--appendonly", "yes",
             "--appendfsync", "everysec", "--save", "", "--dir", str(self.folder)],
            stdout=(self.folder / "redis.log").open("ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start; see {self.folder / 'redis.log'}")

    def stop(self) -> None:
        """SIGTERM: Redis writes its AOF and exits (what an operator's restart does)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@dataclass
class Bot:
    role: str
    port: int
    env: dict
    log: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bots", "serve", "--role", self.role], cwd=REPO,
                                     env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, f"{self.role} exited:\n{self.tail()}"
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.role} on {self.port} never became ready:\n{self.tail()}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Topology:
    webs: list[Bot]
    workers: list[Bot]
    redis: RedisServer | None = None
    folder: Path = field(default=Path("."))

    @property
    def processes(self) -> list[Bot]:
        return [*self.webs, *[w for w in self.workers if w not in self.webs]]

    def web_urls(self) -> list[str]:
        return [w.url for w in self.webs]

    def stop(self) -> None:
        for bot in self.processes:
            bot.stop()
        if self.redis is not None:
            self.redis.stop()


def bot_env(folder: Path, name: str, *, port: int, model_url: str, slack_api_url: str, company: Path,
            redis_url: str | None, sandbox: str = "local", **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLACK_", "TEAMS_", "MODEL_", "OTEL_", "AGENTDESK_", "SANDBOX", "REDIS_"))}
    env.update(
        HOST="127.0.0.1", PORT=str(port), PYTHONUNBUFFERED="1", HF_TOKEN="",
        SLACK_BOT_TOKEN="xoxb-1111-2222-do-not-leak", SLACK_SIGNING_SECRET="8f742231b10e8888abcd99yyyzzz85a5",
        SLACK_API_URL=slack_api_url, SLACK_STEP_UPDATES="off", TEAMS_ALLOW_UNAUTHENTICATED="1",
        MODEL_API_BASE=model_url, MODEL_ID="scripted", MODEL_API_KEY="sk-test-scale-key-0123456789",
        MODEL_MAX_RETRIES="2", AGENTDESK_CONFIG=str(company), AGENTDESK_DATA_DIR=str(folder / name),
        SANDBOX=sandbox, SANDBOX_POOL_SIZE="0" if sandbox == "local" else "1",
        AGENTDESK_USER_RATE_PER_MINUTE="100000", AGENTDESK_MAX_TASKS_PER_USER="1000",
        AGENTDESK_MAX_QUEUED_TASKS="100000", AGENTDESK_MAX_CONCURRENT_TASKS="8", AGENTDESK_TASK_LEASE_S="10",
        AGENTDESK_DRAIN_S="20",
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(extra)
    return env


def start_topology(kind: str, folder: Path, *, model_url: str, slack_api_url: str, company: Path,
                   webs: int = 2, workers: int = 2, sandbox: str = "local", start: bool = True,
                   **extra: str) -> Topology:
    """kind "redis": Redis, `webs` web replicas and `workers` workers; "embedded": one --role all process."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "embedded":
        port = free_port()
        bot = Bot("all", port, bot_env(folder, "all", port=port, model_url=model_url, slack_api_url=slack_api_url,
                                       company=company, redis_url=None, sandbox=sandbox, **extra),
                  folder / "all.log")
        topo = Topology([bot], [bot], None, folder)
    else:
        redis = RedisServer(folder / "redis")
        redis.start()
        made = []
        for role, count in (("web", webs), ("worker", workers)):
            for i in range(count):
                port = free_port()
                made.append(Bot(role, port, bot_env(folder, f"{role}{i}", port=port, model_url=model_url,
                                                    slack_api_url=slack_api_url, company=company,
                                                    redis_url=redis.url, sandbox=sandbox, **extra),
                                folder / f"{role}{i}.log"))
        topo = Topology([b for b in made if b.role == "web"], [b for b in made if b.role == "worker"], redis, folder)
    if start:
        try:
            for bot in topo.processes:
                bot.start()
            for bot in topo.processes:
                bot.wait_ready()
        except BaseException:
            topo.stop()  # a topology that never became ready leaves no process behind
            raise
    return topo


def terminate(bot: Bot, timeout: float = 60.0) -> int:
    bot.signal(signal.SIGTERM)
    return bot.wait_exit(timeout)
