"""One aiohttp application for every endpoint of the contract."""
from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from agents.runner import TaskRunner
from agents.settings import Settings
from bots.recovery import INTERRUPTION_NOTIFIERS, notify_interrupted
from bots.tasks import BackgroundTasks

log = logging.getLogger("agentdesk.server")

RUNNER = web.AppKey("runner", TaskRunner)
TASKS = web.AppKey("tasks", BackgroundTasks)
SETTINGS = web.AppKey("settings", Settings)
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
        tasks.spawn(notify_interrupted(app[INTERRUPTION_NOTIFIERS], runner), name="notify-interrupted")

    async def on_cleanup(app: web.Application) -> None:
        await tasks.drain(timeout=30)
        await tasks.cancel_all()
        if start_runner:
            await runner.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
