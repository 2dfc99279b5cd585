"""The emulator's routes, added to the bot's own aiohttp app (the one `agentdesk serve` runs).

`/` is the chat page, `/_emulator/...` its backend: a live feed of the workspace (server-sent events),
posting as the person (with files), answering file consent cards, downloads, and the Slack Web API and
Teams connector the bot talks to. The bot's endpoints stay exactly as in production.
"""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from agents.models import NO_MODEL_MESSAGE
from agents.runner import TaskRunner
from agents.settings import Settings
from bots.emulator import store as s
from bots.emulator.slack import SlackSide
from bots.emulator.store import Store
from bots.emulator.teams import TeamsSide
from bots.tasks import BackgroundTasks

log = logging.getLogger("agentdesk.emulator")

STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
#: Sent by the page with every POST: a cross-site form cannot set it, so other sites can't post as the person.
PAGE_HEADER = "X-Agentdesk-Emulator"


@dataclass
class Banner:
    """A notice at the top of the page (sandbox fallback, missing model)."""

    level: str  # "warning" | "error" | "info"
    title: str
    text: str
    commands: list[str] = field(default_factory=list)


MODEL_HOWTO = Banner(
    "error", "No model is configured, so the agents can't answer yet.",
    "Stop agentdesk dev (Ctrl+C) and start it again with an OpenAI-compatible endpoint, or put the same "
    "variables in a .env file in this folder. For example a local Ollama, a vLLM server, or Hugging Face:",
    [
        "ollama pull qwen2.5-coder:7b && MODEL_API_BASE=http://localhost:11434/v1 MODEL_ID=qwen2.5-coder:7b agentdesk dev",
        "MODEL_API_BASE=http://localhost:8000/v1 MODEL_ID=<the model vLLM serves> agentdesk dev",
        "HF_TOKEN=hf_... agentdesk dev",
    ],
)


def self_url(settings: Settings) -> str:
    """The URL the server reaches itself at (a wildcard listen address is reached over loopback)."""
    host = settings.host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def sandbox_banner(reason: str | None) -> Banner:
    return Banner(
        "warning", "No Docker sandbox: the agents' code runs on this machine without isolation (SANDBOX=local).",
        f"{reason or 'SANDBOX=local is set'}. To run code in the hardened sandbox, start Docker (or set "
        "DOCKER_HOST), unset SANDBOX, and restart agentdesk dev; it builds the sandbox image on first use.")


def wasm_banner(reason: str | None) -> Banner:
    return Banner(
        "info", "Code runs in the WebAssembly sandbox (Pyodide on Deno).",
        f"{reason or 'SANDBOX=wasm is set'}. It has no network and no host files, and only Python's standard "
        "library: departments that need pandas, numpy or matplotlib answer that they can't run here. Start "
        "Docker and restart agentdesk dev for the full sandbox.")


class Emulator:
    def __init__(self, settings: Settings, sandbox_reason: str | None = None) -> None:
        self.settings = settings
        self.banners: list[Banner] = []
        if settings.sandbox == "local":
            self.banners.append(sandbox_banner(sandbox_reason))
        elif settings.sandbox == "wasm":
            self.banners.append(wasm_banner(sandbox_reason))
        if not settings.model_configured:
            self.banners.append(MODEL_HOWTO)
        self.url = self_url(settings)
        self.store = Store(Path(settings.data_dir).resolve() / "emulator")
        self.slack = SlackSide(self.store, bot_token=settings.slack_bot_token or "",
                               signing_secret=settings.slack_signing_secret or "", self_url=self.url)
        self.teams = TeamsSide(self.store, self_url=self.url)
        self._tasks = BackgroundTasks()

    # lifecycle -------------------------------------------------------------------------------------

    async def start(self, app: web.Application) -> None:
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        self.slack.session = self.teams.session = session

    async def shutdown(self, app: web.Application) -> None:
        self.store.close_subscribers()

    async def cleanup(self, app: web.Application) -> None:
        await self._tasks.cancel_all()
        if self.slack.session is not None:
            await self.slack.session.close()

    # page ------------------------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        return web.FileResponse(STATIC / "index.html", headers={
            "Content-Security-Policy": CSP, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})

    async def config(self, request: web.Request) -> web.Response:
        return web.json_response({
            "bot": s.BOT_NAME, "person": s.HUMAN_NAME,
            "channels": [{"key": key, "name": name} for key, name in s.CHANNELS],
            "dm": s.DM,
            "slack_ids": {"bot": s.SLACK_BOT_USER, "person": s.SLACK_HUMAN},
            "banners": [vars(b) for b in self.banners],
            "model": {"configured": self.settings.model_configured, "how": NO_MODEL_MESSAGE},
            "sandbox": self.settings.sandbox,
        })

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: a snapshot first, then every change to the workspace."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        queue: asyncio.Queue = asyncio.Queue()
        self.store.subscribers.add(queue)
        try:
            await response.write(_sse({"kind": "snapshot", "messages": self.store.snapshot()}))
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=15)
                except asyncio.TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if event is None:
                    break
                await response.write(_sse(event))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.subscribers.discard(queue)
        return response

    async def send(self, request: web.Request) -> web.Response:
        """The person posts (multipart: flavour, conversation, thread, text, file...)."""
        if request.headers.get(PAGE_HEADER) != "1":
            raise web.HTTPForbidden(text="posts come from the emulator page only")
        fields: dict[str, str] = {}
        files: list[s.StoredFile] = []
        if request.content_type.startswith("multipart/"):
            async for part in await request.multipart():
                if part.filename:
                    files.append(await self._save_upload(part))
                elif part.name:
                    fields[part.name] = (await part.text())[:20000]
        else:
            fields = {k: str(v)[:20000] for k, v in (await request.post()).items()}
        flavour, conversation = fields.get("flavour"), fields.get("conversation")
        if flavour not in ("slack", "teams") or conversation not in {k for k, _ in s.CHANNELS} | {s.DM}:
            raise web.HTTPBadRequest(text="unknown flavour or conversation")
        text = fields.get("text", "").strip()
        if not text and not files:
            raise web.HTTPBadRequest(text="empty message")
        thread = fields.get("thread") or None
        if thread and (thread not in self.store.messages or self.store.messages[thread]["flavour"] != flavour):
            raise web.HTTPBadRequest(text="unknown thread")
        side = self.slack if flavour == "slack" else self.teams
        self._tasks.spawn(side.post_from_person(conversation, text, thread, files), name=f"emulator-{flavour}-post")
        return web.json_response({"ok": True})

    async def _save_upload(self, part) -> s.StoredFile:
        stored = self.store.new_file(part.filename, part.headers.get("Content-Type"))
        size = 0
        with stored.path.open("wb") as out:
            while chunk := await part.read_chunk(64 * 1024):
                size += len(chunk)
                if size > s.MAX_FILE_BYTES:
                    raise web.HTTPRequestEntityTooLarge(max_size=s.MAX_FILE_BYTES, actual_size=size)
                out.write(chunk)
        stored.size = size
        return stored

    async def consent(self, request: web.Request) -> web.Response:
        """Accept or Decline on a Teams FileConsentCard."""
        if request.headers.get(PAGE_HEADER) != "1":
            raise web.HTTPForbidden(text="posts come from the emulator page only")
        body = await request.json()
        message = self.store.messages.get(str(body.get("message")))
        action = body.get("action")
        if message is None or message["flavour"] != "teams" or action not in ("accept", "decline"):
            raise web.HTTPBadRequest(text="unknown card or action")
        state = await self.teams.answer_consent(message, int(body.get("index", 0)), action)
        return web.json_response({"state": state})

    async def slack_press(self, request: web.Request) -> web.Response:
        """The person presses a button on a Slack bot message (Stop, thumbs up/down)."""
        message, control = await self._slack_target(request)
        if control is None:
            raise web.HTTPBadRequest(text="unknown control")
        kind = "feedback_buttons" if control["kind"] == "feedback" else "button"
        self._tasks.spawn(self.slack.press(message, control["action_id"], control["value"], kind=kind),
                          name="emulator-slack-press")
        return web.json_response({"ok": True})

    async def slack_stop(self, request: web.Request) -> web.Response:
        """Slack's own stop control on a streaming message: the bot hears `stopped_by_user`."""
        message, _ = await self._slack_target(request)
        if not message.get("streaming"):
            raise web.HTTPBadRequest(text="that message is not streaming")
        self.slack.request_native_stop(message)
        return web.json_response({"ok": True})

    async def _slack_target(self, request: web.Request) -> tuple[dict, dict | None]:
        if request.headers.get(PAGE_HEADER) != "1":
            raise web.HTTPForbidden(text="posts come from the emulator page only")
        body = await request.json()
        message = self.store.messages.get(str(body.get("message")))
        if message is None or message["flavour"] != "slack" or message["author"] != "bot":
            raise web.HTTPBadRequest(text="unknown message")
        controls = message.get("controls") or []
        index = body.get("index")
        control = controls[index] if isinstance(index, int) and 0 <= index < len(controls) else None
        return message, control

    async def teams_action(self, request: web.Request) -> web.Response:
        """The person presses an Action.Execute button on a Teams card (approvals): an adaptiveCard/action invoke."""
        if request.headers.get(PAGE_HEADER) != "1":
            raise web.HTTPForbidden(text="posts come from the emulator page only")
        body = await request.json()
        message = self.store.messages.get(str(body.get("message")))
        if message is None or message["flavour"] != "teams" or message["author"] != "bot":
            raise web.HTTPBadRequest(text="unknown message")
        state = await self.teams.press_card_action(message, int(body.get("index", 0)), int(body.get("action", 0)))
        return web.json_response({"state": state})

    async def file(self, request: web.Request) -> web.Response:
        """A file for the person's browser: images inline, everything else as a download."""
        stored = self.store.files.get(request.match_info["file_id"])
        if stored is None or not stored.complete or stored.name != request.match_info["name"]:
            raise web.HTTPNotFound(text="file not found")
        inline = stored.mimetype in s.INLINE_IMAGE_TYPES
        disposition = "inline" if inline else f'attachment; filename="{stored.name}"'
        return web.FileResponse(stored.path, headers={
            "Content-Type": stored.mimetype if inline else "application/octet-stream",
            "Content-Disposition": disposition, "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'"})


def _sse(event: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(event, default=str)}\n\n".encode()


EMULATOR = web.AppKey("emulator", Emulator)


def mount_emulator(app: web.Application, settings: Settings, sandbox_reason: str | None = None) -> Emulator:
    """Add the page and the emulator's backend to the bot's app (which keeps /slack/events, /api/messages)."""
    emulator = Emulator(settings, sandbox_reason)
    app[EMULATOR] = emulator
    app.router.add_get("/", emulator.index)
    app.router.add_static("/_emulator/static/", STATIC, append_version=False)
    app.router.add_get("/_emulator/config", emulator.config)
    app.router.add_get("/_emulator/events", emulator.events)
    app.router.add_post("/_emulator/send", emulator.send)
    app.router.add_post("/_emulator/consent", emulator.consent)
    app.router.add_post("/_emulator/slack/press", emulator.slack_press)
    app.router.add_post("/_emulator/slack/stop", emulator.slack_stop)
    app.router.add_post("/_emulator/teams/action", emulator.teams_action)
    app.router.add_get("/_emulator/files/{file_id}/{name}", emulator.file)
    emulator.slack.mount(app)
    emulator.teams.mount(app)
    app.middlewares.append(_own_connector_only(emulator.teams.service_url))
    app.on_startup.append(emulator.start)
    app.on_shutdown.append(emulator.shutdown)
    app.on_cleanup.append(emulator.cleanup)
    return emulator


def _own_connector_only(service_url: str):
    """Teams activities are accepted only when they point the bot at this emulator's connector.

    dev runs the Teams adapter with TEAMS_ALLOW_UNAUTHENTICATED=1 (there is no real Teams in dev); without
    this check anyone who can reach the port could make the bot send requests to any URL they name as
    serviceUrl.
    """

    @web.middleware
    async def middleware(request: web.Request, handler):
        if request.method == "POST" and request.path == "/api/messages":
            try:
                activity = await request.json()
            except ValueError:
                activity = None
            if not isinstance(activity, dict) or activity.get("serviceUrl") != service_url:
                return web.json_response(
                    {"error": "agentdesk dev accepts unsigned Teams activities only from its own emulator"},
                    status=401)
        return await handler(request)

    return middleware


def create_dev_app(settings: Settings, runner: TaskRunner | None = None, *,
                   sandbox_reason: str | None = None) -> web.Application:
    """`create_app` (the production app) plus the emulator; `settings` come from `dev.emulator_settings`.

    `sandbox_reason` says on the page why code runs without the Docker sandbox (SANDBOX=local).
    """
    from bots.server import create_app

    app = create_app(settings, runner)
    mount_emulator(app, settings, sandbox_reason)
    return app
