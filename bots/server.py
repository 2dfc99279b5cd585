"""One aiohttp application for every endpoint of the contract, in the role this process plays.

`all` (default): Slack, Teams, health and metrics, and the worker, in one process. `web`: the webhooks
(verify, dedupe, ack, admit, enqueue) and health; never an agent run. `worker`: runs tasks from the queue and
posts to Slack and Teams itself; only /healthz, /readyz and /metrics are served.
"""
from __future__ import annotations

import asyncio
import logging
import signal

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
    ready, detail = await request.app[RUNNER].ready()
    return web.json_response({"ready": ready, "detail": detail, "role": request.app[RUNNER].role},
                             status=200 if ready else 503)


def create_app(settings: Settings, runner: TaskRunner | None = None, *, start_runner: bool = True,
               role: str | None = None) -> web.Application:
    """The bot's HTTP app: Slack at /slack/events, Teams at /api/messages (web roles), health, readiness, metrics."""
    from bots import metrics_endpoint
    from bots.slack.adapter import mount as mount_slack
    from bots.teams.adapter import mount as mount_teams

    app = web.Application(client_max_size=1024 * 1024)
    runner = runner or TaskRunner(settings, role=role)
    tasks = BackgroundTasks()
    app[RUNNER] = runner
    app[TASKS] = tasks
    app[SETTINGS] = settings
    app[INTERRUPTION_NOTIFIERS] = {}
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint.handle)
    webhooks = runner.role in ("all", "web")
    mount_slack(app, settings, runner, tasks, webhooks=webhooks)
    mount_teams(app, settings, runner, tasks, webhooks=webhooks)

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


async def serve_until_stopped(app: web.Application, host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT, then drain: /readyz answers 503 and webhooks 503 (Slack and Teams deliver
    them to another replica), held tasks get AGENTDESK_DRAIN_S to finish, the rest goes back to the queue."""
    runner_app = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner_app.setup()
    site = web.TCPSite(runner_app, host, port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"agentdesk ({app[RUNNER].role}) listening on http://{host}:{port}", flush=True)
    await stop.wait()
    settings, runner, tasks = app[SETTINGS], app[RUNNER], app[TASKS]
    log.info("shutting down: draining for up to %.0f s", settings.drain_s)
    runner.draining = True
    started = loop.time()
    await tasks.drain(timeout=settings.drain_s)  # requests acked here reach the queue (or their answer)
    await runner.drain(max(1.0, settings.drain_s - (loop.time() - started)))
    await runner_app.cleanup()
