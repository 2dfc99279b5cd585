"""One aiohttp application for every endpoint of the contract."""
from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from agents.runner import TaskRunner
from agents.settings import Settings
from bots.tasks import BackgroundTasks

log = logging.getLogger("agentdesk.server")

RUNNER = web.AppKey("runner", TaskRunner)
TASKS = web.AppKey("tasks", BackgroundTasks)
SETTINGS = web.AppKey("settings", Settings)
#: platform -> coroutine function(TaskRecord) that posts "your request was interrupted" into its thread.
INTERRUPTION_NOTIFIERS = web.AppKey("interruption_notifiers", dict)

INTERRUPTED_MESSAGE = (
    "⚠️ I was restarted while working on your request (“{excerpt}”), so it wasn't finished. "
    "Please send it again."
)


def interrupted_message(record) -> str:
    text = " ".join(str(record.request.get("text", "")).split())
    return INTERRUPTED_MESSAGE.format(excerpt=text[:80] + ("…" if len(text) > 80 else ""))


async def _notify_interrupted(app: web.Application) -> None:
    """Tell every person whose request a crash or restart cut off, once, in their thread."""
    runner = app[RUNNER]
    for platform, notify in app[INTERRUPTION_NOTIFIERS].items():
        for record in runner.take_interrupted(platform):
            try:
                await notify(record)
            except Exception as exc:
                log.error("could not tell a %s user about an interrupted request: %s", platform, exc)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    ready, detail = await asyncio.to_thread(request.app[RUNNER].ready)
    return web.json_response({"ready": ready, "detail": detail}, status=200 if ready else 503)


def create_app(settings: Settings, runner: TaskRunner | None = None, *, start_runner: bool = True) -> web.Application:
    """The bot's HTTP app: Slack at /slack/events, Teams at /api/messages, health, readiness, metrics."""
    from bots import metrics_endpoint
    from bots.slack.adapter import mount as mount_slack
    from bots.teams.adapter import mount as mount_teams

    app = web.Application(client_max_size=1024 * 1024)
    runner = runner or TaskRunner(settings)
    tasks = BackgroundTasks()
    app[RUNNER] = runner
    app[TASKS] = tasks
    app[SETTINGS] = settings
    app[INTERRUPTION_NOTIFIERS] = {}
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint.handle)
    mount_slack(app, settings, runner, tasks)
    mount_teams(app, settings, runner, tasks)

    async def on_startup(app: web.Application) -> None:
        if start_runner:
            await runner.start()
        tasks.spawn(_notify_interrupted(app), name="notify-interrupted")

    async def on_cleanup(app: web.Application) -> None:
        await tasks.drain(timeout=30)
        await tasks.cancel_all()
        if start_runner:
            await runner.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
