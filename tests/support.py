"""Shared test helpers: settings pointed at local stand-ins, a scripted model server."""
from __future__ import annotations

import dataclasses
import datetime as dt
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

from aiohttp import web

from agents.settings import Settings


def next_week(weekday: int) -> dt.date:
    """That weekday (0 = Monday) in the coming calendar week, so Thursday always falls before Friday."""
    today = dt.date.today()
    return today + dt.timedelta(days=7 - today.weekday() + weekday)


def make_settings(tmp_path: Path, model_base_url: str | None, **overrides) -> Settings:
    """Settings for a test: state under tmp_path, the scripted model, nothing read from .env."""
    base = Settings.from_env(dotenv=False)
    values = dict(
        data_dir=tmp_path / "data",
        model_api_base=model_base_url,
        model_id="scripted",
        model_api_key="sk-test-model-key-do-not-leak",
        model_max_retries=2,
        model_timeout_s=20.0,
        sandbox_pool_size=1,
        otlp_endpoint=None,
    )
    values.update(overrides)
    return dataclasses.replace(base, **values)


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Serve `app` on a free 127.0.0.1 port and yield its base URL, e.g. "http://127.0.0.1:41234".

    The one way tests and benches serve an aiohttp app: port 0 avoids clashes, and the runner (with the
    app's on_cleanup hooks) is cleaned up on exit even when the body fails.
    """
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class RecordingReplier:
    """A ThreadReplier that records what a person would see in the thread."""

    def __init__(self) -> None:
        self.statuses: list[str] = []
        self.steps: list = []
        self.finals: list = []
        self.errors: list[str] = []
        self.file_bytes: dict[str, bytes] = {}

    async def status(self, text: str) -> None:
        self.statuses.append(text)

    async def step(self, update) -> None:
        self.steps.append(update)

    async def final(self, answer) -> None:
        # Output files are deleted when the task ends, like after a real upload: keep their bytes.
        self.finals.append(answer)
        self.file_bytes = {f.name: f.path.read_bytes() for f in answer.files}

    async def error(self, message: str) -> None:
        self.errors.append(message)

    @property
    def answer(self):
        assert self.finals, f"no final answer; errors: {self.errors}"
        return self.finals[-1]


def chat_request(text: str, *, user: str = "U_ALICE", thread: str = "1700000000.000100", **kw):
    from agents.chat import ChatRequest

    values = dict(platform="slack", workspace="T_TEST", channel="C_GENERAL", thread=thread, user=user, text=text,
                  message_id=thread, user_name="Alice")
    values.update(kw)
    return ChatRequest(**values)


async def eventually(condition, timeout: float, what: str, describe=lambda: "") -> object:
    """Poll `condition` until truthy (returning its value); fail naming `what` after `timeout` seconds."""
    import asyncio
    import inspect
    import time

    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):  # e.g. a state-store read
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            detail = describe()
            raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f"; saw:\n{detail}" if detail else ""))
        await asyncio.sleep(0.02)
