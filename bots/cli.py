"""The `agentdesk` command (also `python -m bots`)."""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path

from agents.settings import Settings, SettingsError

log = logging.getLogger("agentdesk")


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


def cmd_serve(args: argparse.Namespace) -> int:
    import dataclasses

    from bots.server import create_app, serve_until_stopped

    settings = _settings()
    if args.role:
        settings = dataclasses.replace(settings, role=args.role)
    if settings.role != "all" and not settings.redis_url:
        print(f"agentdesk serve --role {settings.role} needs REDIS_URL: web replicas and workers share their "
              "state and task queue through Redis. Without it run --role all (one process).", file=sys.stderr)
        return 2
    app = create_app(settings)
    asyncio.run(serve_until_stopped(app, settings.host, settings.port))
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    from agents.chat import Attachment, ChatRequest
    from agents.runner import TaskRunner
    from agents.telemetry import request_span
    from bots.terminal import TerminalReplier

    import dataclasses

    from bots.emulator.dev import NoSandbox, choose_sandbox

    settings = _settings()
    try:  # no Docker engine: the WebAssembly sandbox, said on stderr so stdout stays the answer
        sandbox, _ = choose_sandbox(settings, lambda line: print(line, file=sys.stderr))
    except NoSandbox as exc:
        print(f"agentdesk ask: {exc}", file=sys.stderr)
        return 2
    settings = dataclasses.replace(settings, sandbox=sandbox)
    files = []
    for name in args.file or []:
        path = Path(name)
        if not path.is_file():
            print(f"no such file: {name}", file=sys.stderr)
            return 2
        files.append(Attachment(name=path.name, path=path.resolve(), size=path.stat().st_size))
    out_dir = Path(args.out or f"agentdesk-output/{time.strftime('%Y%m%d-%H%M%S')}")
    request = ChatRequest(
        platform="terminal", workspace="local", channel="terminal", thread=args.thread or f"ask-{time.time_ns()}",
        user=args.user, text=args.text, attachments=tuple(files), user_name=args.user, is_direct=True,
    )
    replier = TerminalReplier(out_dir)

    async def run() -> None:
        runner = TaskRunner(settings)
        await runner.start()
        try:
            with request_span("terminal.ask", request):
                await runner.handle(request, replier)
        finally:
            await runner.close()

    asyncio.run(run())
    if replier.saved:
        print(f"\noutput files are in {out_dir}/")
    return 0 if replier.answer and not replier.failed else 1


def cmd_sandbox(args: argparse.Namespace) -> int:
    from agents.sandbox.image import build_image

    build_image(_settings(), progress=lambda line: print(line, flush=True))
    return 0


def cmd_manifest(args: argparse.Namespace) -> int:
    settings = _settings()
    if args.platform == "slack":
        from bots.slack.manifest import write_manifest

        out = Path(args.out or "slack-manifest.yaml")
        write_manifest(args.url or settings.public_url, out, socket_mode=args.socket_mode,
                       assistant_view=args.assistant_view)
    else:
        from agents.departments import load_company
        from bots.teams.manifest import write_package

        if not (args.app_id or settings.teams_app_id):
            print("agentdesk manifest teams needs --app-id (or TEAMS_APP_ID)", file=sys.stderr)
            return 2
        domain = args.domain or (settings.public_url or "").split("://")[-1].split("/")[0]
        if not domain:
            print("agentdesk manifest teams needs --domain (the bot's public host name)", file=sys.stderr)
            return 2
        out = Path(args.out or "agentdesk-teams.zip")
        company = load_company(settings.config_path)
        write_package(args.app_id or settings.teams_app_id, domain, out, list(company.departments.values()))
    print(f"wrote {out}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from bots.doctor import run_doctor

    return run_doctor()


def cmd_dev(args: argparse.Namespace) -> int:
    from bots.emulator.dev import run_dev

    return run_dev()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentdesk", description="Company department agents in Slack and Teams.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP server (Slack, Teams, health, metrics)")
    serve.add_argument("--role", choices=["all", "web", "worker"],
                       help="all (default; AGENTDESK_ROLE): everything in one process; web: webhooks, enqueue; "
                            "worker: runs queued tasks (web and worker need REDIS_URL)")
    serve.set_defaults(func=cmd_serve)

    ask = sub.add_parser("ask", help='one request from the terminal, e.g. agentdesk ask "hr: how many leave days do I have?"')
    ask.add_argument("text")
    ask.add_argument("--file", action="append", help="share a file with the request (repeatable)")
    ask.add_argument("--out", help="folder for output files (default agentdesk-output/<time>)")
    ask.add_argument("--user", default="local", help="who is asking (default: local)")
    ask.add_argument("--thread", help="continue a terminal thread by name (keeps department and memory)")
    ask.set_defaults(func=cmd_ask)

    sandbox = sub.add_parser("sandbox", help="sandbox image")
    sandbox_sub = sandbox.add_subparsers(dest="action", required=True)
    sandbox_sub.add_parser("build", help="build the sandbox image (offline-capable)").set_defaults(func=cmd_sandbox)

    manifest = sub.add_parser("manifest", help="write the Slack manifest or the Teams app package")
    manifest.add_argument("platform", choices=["slack", "teams"])
    manifest.add_argument("--url", help="public base URL of the bot (Slack)")
    manifest.add_argument("--socket-mode", action="store_true", help="Slack: Socket Mode instead of request URLs")
    manifest.add_argument("--assistant-view", action="store_true",
                          help="Slack: keep the older assistant_view for an existing app (new apps get agent_view)")
    manifest.add_argument("--app-id", help="Teams: Bot Framework app id")
    manifest.add_argument("--domain", help="Teams: the bot's public host name")
    manifest.add_argument("--out", help="output file")
    manifest.set_defaults(func=cmd_manifest)

    sub.add_parser("doctor", help="check configuration, Docker, sandbox image, model and OTLP endpoint").set_defaults(
        func=cmd_doctor)
    sub.add_parser("dev", help="local Slack/Teams emulator in the browser plus the bot").set_defaults(func=cmd_dev)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from agents.departments import ConfigError
    from agents.telemetry import setup_logging, setup_tracing

    setup_logging(verbose=args.verbose)
    try:
        setup_tracing(Settings.from_env())
    except SettingsError:
        pass  # each command reports it: serve/ask exit 2, doctor and dev explain the variable
    try:
        return args.func(args)
    except (ConfigError, ValueError) as exc:
        print(f"agentdesk {args.command}: {exc}", file=sys.stderr)
        return 2
