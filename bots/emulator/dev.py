"""`agentdesk dev`: the bot plus the local Slack/Teams emulator, on embedded defaults.

No Slack or Teams credentials are needed: dev makes a random signing secret and bot token, points the
bot's Slack Web API at the emulator, and accepts unsigned Teams activities from the emulator's own
connector only. Real platform credentials in the environment are ignored here (dev never talks to Slack
or Teams). Code runs in the Docker sandbox when an engine answers (the image is built on first use), else
in the WebAssembly sandbox (Pyodide on Deno, installed on first use), with a note saying so; the local
interpreter (no isolation) only when SANDBOX=local asks for it.
"""
from __future__ import annotations

import dataclasses
import os
import secrets
import sys
from typing import Callable, TextIO

from agents.settings import Settings, SettingsError
from bots.emulator.app import self_url


def emulator_settings(settings: Settings, *, sandbox: str | None = None) -> Settings:
    """Settings for dev: emulator-only Slack and Teams identities, the chosen sandbox."""
    return dataclasses.replace(
        settings,
        slack_bot_token="xoxb-emulator-" + secrets.token_hex(12),
        slack_signing_secret=secrets.token_hex(16),
        slack_app_token=None,
        slack_api_url=f"{self_url(settings)}/_emulator/slack/api/",
        teams_app_id=None,
        teams_app_password=None,
        teams_app_type="MultiTenant",
        teams_app_tenant_id=None,
        teams_allow_unauthenticated=True,
        sandbox=sandbox or settings.sandbox,
    )


class NoSandbox(RuntimeError):
    """Neither Docker nor the WebAssembly sandbox can run code here; the message says what to do."""


def choose_sandbox(settings: Settings, say: Callable[[str], None]) -> tuple[str, str | None]:
    """Docker when an engine answers (building the image on first use), else WebAssembly; local only when
    SANDBOX=local. Returns (sandbox, why not Docker); raises NoSandbox when nothing isolating can run."""
    if settings.sandbox == "local":
        return "local", "You set SANDBOX=local"
    if settings.sandbox == "wasm":
        _ensure_wasm(say, "You set SANDBOX=wasm")
        return "wasm", "You set SANDBOX=wasm"
    reason = _engine_problem()
    if reason is None:
        from agents.sandbox.image import build_image, image_exists

        if image_exists(settings):
            say(f"sandbox: Docker, image {settings.sandbox_image}")
            return "docker", None
        say(f"sandbox image {settings.sandbox_image} not found: building it now (first run only, a few minutes)")
        try:
            build_image(settings, progress=lambda line: say(f"  {line}"))
            say(f"sandbox image {settings.sandbox_image} built")
            return "docker", None
        except Exception as exc:  # noqa: BLE001 - any build failure falls back to Wasm, with a note
            reason = f"Building the sandbox image failed: {exc}"
    _ensure_wasm(say, reason)
    say(f"NOTE: {reason}; running agents' code in the WebAssembly sandbox (SANDBOX=wasm: Pyodide on Deno, "
        "no network, no host files, standard library only)")
    return "wasm", reason


def _ensure_wasm(say: Callable[[str], None], why: str) -> None:
    from agents.sandbox.wasm_runtime import install

    try:
        install(progress=lambda line: say(f"  {line}"))
    except Exception as exc:  # noqa: BLE001 - npm, pip or Deno failures all end in the same advice
        raise NoSandbox(f"{why}, and the WebAssembly sandbox could not be installed ({exc}). Start Docker (or set "
                        "DOCKER_HOST), or run scripts/dev.sh, which installs Deno and Pyodide; SANDBOX=local runs "
                        "code without any isolation (development only)") from exc


def _engine_problem() -> str | None:
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            client.ping()
        finally:
            client.close()
        return None
    except Exception as exc:  # noqa: BLE001 - docker raises several kinds; all mean "not reachable"
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        return f"The Docker engine is not reachable at {host} ({type(exc).__name__})"


def run_dev(settings: Settings | None = None, out: TextIO = sys.stdout) -> int:
    """Start the bot and the emulator page on HOST:PORT; returns an exit code."""
    from aiohttp import web

    from bots.emulator.app import create_dev_app

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    try:
        settings = settings or Settings.from_env()
    except SettingsError as exc:
        say(f"configuration error: {exc}")
        return 2
    try:
        sandbox, reason = choose_sandbox(settings, say)
    except NoSandbox as exc:
        say(f"agentdesk dev could not start: {exc}")
        return 2
    dev = emulator_settings(settings, sandbox=sandbox)
    if not dev.model_configured:
        say("WARNING: no model configured; the page shows how to set one "
            "(e.g. MODEL_API_BASE=http://localhost:11434/v1 MODEL_ID=qwen2.5-coder:7b, or HF_TOKEN)")
    if dev.host not in ("127.0.0.1", "localhost", "::1"):
        say(f"WARNING: HOST={dev.host}: anyone who can reach this port can use the emulator as you")
    try:
        app = create_dev_app(dev, sandbox_reason=reason)
    except Exception as exc:  # noqa: BLE001 - e.g. a broken departments file: say it, don't trace
        say(f"agentdesk dev could not start: {exc}")
        return 2
    ready = f"agentdesk dev: open {self_url(dev)}/ in your browser (Ctrl+C stops)"
    try:
        web.run_app(app, host=dev.host, port=dev.port, print=lambda _started: say(ready))
    except OSError as exc:
        say(f"agentdesk dev could not listen on {dev.host}:{dev.port} ({exc.strerror or exc}); "
            "set PORT to a free port, e.g. PORT=3979 agentdesk dev")
        return 2
    return 0
