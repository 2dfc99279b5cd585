"""`agentdesk doctor`: checks configuration, tokens, the sandbox, the model and tracing, in plain words.

Every check prints one line (✓ fine, ⚠ optional piece missing or risky, ✗ must be fixed) and, when
something is wrong, how to fix it. The exit code is 0 when every required check passes, 1 otherwise, so
scripts and deploy pipelines can run it before starting the bot.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import re
import socket
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from agents.settings import Settings, SettingsError

OK, WARN, FAIL = "ok", "warn", "fail"
MARKS = {OK: "✓", WARN: "⚠", FAIL: "✗"}
GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
HTTP_TIMEOUT_S = 5.0
SANDBOX_TIMEOUT_S = 20.0


@dataclass
class Report:
    out: TextIO
    failures: int = 0
    warnings: int = 0
    lines: list[str] = field(default_factory=list)

    def add(self, status: str, name: str, detail: str, fix: str | None = None) -> None:
        if status == FAIL:
            self.failures += 1
        elif status == WARN:
            self.warnings += 1
        text = f"{MARKS[status]} {name}: {detail}"
        if fix:
            text += f"\n    fix: {fix}"
        self.lines.append(text)
        print(text, file=self.out, flush=True)


def run_doctor(settings: Settings | None = None, out: TextIO = sys.stdout) -> int:
    """Run every check; 0 when all required ones pass, 1 otherwise."""
    report = Report(out)
    if settings is None:
        try:
            settings = Settings.from_env()
        except SettingsError as exc:
            report.add(FAIL, "configuration", str(exc), "correct the variable in the environment or in .env")
            return _summary(report)
    report.add(OK, "configuration", "environment variables parse")
    check_departments(settings, report)
    check_slack(settings, report)
    check_teams(settings, report)
    check_sandbox(settings, report)
    check_model(settings, report)
    check_tracing(settings, report)
    check_data_dir(settings, report)
    return _summary(report)


def _summary(report: Report) -> int:
    if report.failures:
        word = "problem" if report.failures == 1 else "problems"
        print(f"\n{report.failures} {word} to fix before agentdesk can serve requests.", file=report.out)
        return 1
    extra = f" ({report.warnings} warning{'s' if report.warnings != 1 else ''})" if report.warnings else ""
    print(f"\nAll required checks passed{extra}.", file=report.out)
    return 0


# -- configuration -------------------------------------------------------------------------------------

def check_departments(settings: Settings, report: Report) -> None:
    from agents.departments import ConfigError, load_company

    try:
        company = load_company(settings.config_path)
    except ConfigError as exc:
        report.add(FAIL, "departments file", "\n    ".join(exc.errors),
                   "fix the departments file, or point AGENTDESK_CONFIG at the right one")
        return
    except Exception as exc:  # noqa: BLE001 - a tool module that crashes on import, for example
        report.add(FAIL, "departments file", f"{settings.config_path}: {type(exc).__name__}: {exc}",
                   "fix the departments file or the tool module it names")
        return
    names = ", ".join(sorted(company.departments))
    report.add(OK, "departments file", f"{settings.config_path}: {len(company.departments)} departments ({names})")
    if settings.sandbox == "wasm":
        from agents.execution import unavailable_departments
        from agents.sandbox import make_provider

        for name, missing in unavailable_departments(company, make_provider(settings)).items():
            report.add(WARN, f"department {name}", f"needs {', '.join(missing)}, which SANDBOX=wasm does not have "
                       "(standard library only): it answers that it can't run here",
                       "use SANDBOX=docker, or remove those modules from its authorized_imports")


def check_slack(settings: Settings, report: Report) -> None:
    bot, secret, app = settings.slack_bot_token, settings.slack_signing_secret, settings.slack_app_token
    if not (bot or secret or app):
        report.add(WARN, "Slack", "not configured (SLACK_BOT_TOKEN unset)",
                   "optional: create the app from `agentdesk manifest slack` and set SLACK_BOT_TOKEN and "
                   "SLACK_SIGNING_SECRET (or SLACK_APP_TOKEN for Socket Mode)")
        return
    problems: list[tuple[str, str]] = []
    if not bot:
        problems.append(("SLACK_BOT_TOKEN is unset",
                         "copy the Bot User OAuth Token (xoxb-...) from OAuth & Permissions"))
    elif bot.startswith("xoxp-"):
        problems.append(("SLACK_BOT_TOKEN is a user token (xoxp-), not a bot token",
                         "use the Bot User OAuth Token (xoxb-...) from OAuth & Permissions"))
    elif not bot.startswith("xoxb-"):
        problems.append(("SLACK_BOT_TOKEN does not look like a bot token (it should start with xoxb-)",
                         "copy the Bot User OAuth Token (xoxb-...) from OAuth & Permissions"))
    if secret is not None and not re.fullmatch(r"[0-9a-f]{32}", secret):
        problems.append(("SLACK_SIGNING_SECRET should be 32 hexadecimal characters",
                         "copy the Signing Secret from Basic Information → App Credentials (not the client secret "
                         "or the verification token)"))
    if app is not None and not app.startswith("xapp-"):
        problems.append(("SLACK_APP_TOKEN should be an app-level token starting with xapp-",
                         "create an app-level token with connections:write under Basic Information"))
    if bot and not (secret or app):
        problems.append(("neither SLACK_SIGNING_SECRET (Events API over HTTP) nor SLACK_APP_TOKEN (Socket Mode) is set",
                         "set one of them"))
    if not settings.slack_api_url.startswith(("https://", "http://")):
        problems.append((f"SLACK_API_URL {settings.slack_api_url!r} is not an http(s) URL",
                         "unset it (the default is https://slack.com/api/)"))
    for detail, fix in problems:
        report.add(FAIL, "Slack", detail, fix)
    if not problems:
        mode = " + ".join(m for m, on in (("Events API over HTTP", secret), ("Socket Mode", app)) if on)
        report.add(OK, "Slack", f"token shapes look right ({mode})")


def check_teams(settings: Settings, report: Report) -> None:
    app_id = settings.teams_app_id
    if not app_id:
        if settings.teams_allow_unauthenticated:
            report.add(WARN, "Teams", "TEAMS_ALLOW_UNAUTHENTICATED=1: /api/messages accepts unsigned activities "
                       "from anyone who can reach it", "local development only; set TEAMS_APP_ID in production")
        else:
            report.add(WARN, "Teams", "not configured (TEAMS_APP_ID unset; /api/messages refuses every request)",
                       "optional: register the bot (see README, Teams setup) and set TEAMS_APP_ID, "
                       "TEAMS_APP_PASSWORD and TEAMS_APP_TENANT_ID")
        return
    problems: list[tuple[str, str]] = []
    app_type = (settings.teams_app_type or "SingleTenant").lower()
    types = {"singletenant": "SingleTenant", "multitenant": "MultiTenant", "userassignedmsi": "UserAssignedMSI"}
    if not GUID_RE.match(app_id):
        problems.append((f"TEAMS_APP_ID {app_id!r} is not a GUID",
                         "use the Microsoft App ID (Application (client) ID) of the bot's Entra registration"))
    if app_type not in types:
        problems.append((f"TEAMS_APP_TYPE {settings.teams_app_type!r} is not SingleTenant, MultiTenant or "
                         "UserAssignedMSI", "set the type the Azure Bot resource was created with"))
    tenant = settings.teams_app_tenant_id
    if app_type in ("singletenant", "userassignedmsi") and not tenant:
        problems.append((f"TEAMS_APP_TYPE={types[app_type]} needs TEAMS_APP_TENANT_ID",
                         "set the Directory (tenant) ID of the bot's Entra registration"))
    elif tenant and not GUID_RE.match(tenant):
        problems.append((f"TEAMS_APP_TENANT_ID {tenant!r} is not a GUID", "use the Directory (tenant) ID"))
    if app_type in ("singletenant", "multitenant") and not settings.teams_app_password:
        problems.append(("TEAMS_APP_PASSWORD is unset", "create a client secret for the bot's Entra app"))
    for detail, fix in problems:
        report.add(FAIL, "Teams", detail, fix)
    if settings.teams_allow_unauthenticated:
        report.add(WARN, "Teams", "TEAMS_ALLOW_UNAUTHENTICATED is ignored because TEAMS_APP_ID is set",
                   "unset TEAMS_ALLOW_UNAUTHENTICATED")
    if not problems:
        report.add(OK, "Teams", f"app id and {types.get(app_type, app_type)} credentials look right")


# -- services ------------------------------------------------------------------------------------------

def check_sandbox(settings: Settings, report: Report) -> None:
    from agents.sandbox import make_provider

    if settings.sandbox == "local":  # no isolation to probe: say so without waiting on Docker
        report.add(WARN, "sandbox", "SANDBOX=local: agents' code runs in the bot's process WITHOUT isolation",
                   "development only; unset SANDBOX and run `agentdesk sandbox build` for the Docker sandbox")
        return

    def check() -> tuple[bool, str]:
        return make_provider(settings).check()

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        ok, detail = pool.submit(check).result(timeout=SANDBOX_TIMEOUT_S)
    except concurrent.futures.TimeoutError:
        ok, detail = False, f"the Docker engine did not answer within {SANDBOX_TIMEOUT_S:.0f} s"
    except Exception as exc:  # noqa: BLE001 - the provider or Docker SDK failing in any way is the finding
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    finally:
        pool.shutdown(wait=False)
    if ok:
        report.add(OK, "sandbox", detail)
        return
    if settings.sandbox == "wasm":
        report.add(FAIL, "sandbox", detail, "run scripts/install_wasm.sh (Deno from PyPI, Pyodide from npm)")
        return
    fix = ("run `agentdesk sandbox build`" if "image" in detail and "missing" in detail
           else "start the Docker engine (or set DOCKER_HOST to a reachable engine), then `agentdesk sandbox build`")
    report.add(FAIL, "sandbox", detail, fix)


def _http(method: str, url: str, headers: dict[str, str], body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:  # noqa: S310 - operator's URL
            return response.status, response.read(200_000)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(2000) if exc.fp else b""


def _unreachable(exc: BaseException, url: str) -> str:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ConnectionRefusedError):
        return f"connection refused at {url}: nothing is listening there"
    if isinstance(reason, (socket.timeout, TimeoutError)) or "timed out" in str(reason):
        return f"no answer from {url} within {HTTP_TIMEOUT_S:.0f} s"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the host of {url}"
    return f"cannot reach {url}: {reason}"


def check_model(settings: Settings, report: Report) -> None:
    from agents.models import NO_MODEL_MESSAGE

    if not settings.model_configured:
        report.add(FAIL, "model", "no model is configured",
                   NO_MODEL_MESSAGE.replace("No model is configured. ", ""))
        return
    if not settings.model_api_base:
        if not (settings.hf_token or "").startswith("hf_"):
            report.add(FAIL, "model", "HF_TOKEN does not look like a Hugging Face token (it should start with hf_)",
                       "create an access token at huggingface.co → Settings → Access Tokens")
        else:
            report.add(WARN, "model", "Hugging Face inference via HF_TOKEN (not probed: it needs internet access)",
                       "set MODEL_ID to choose the model; the default is smolagents' choice")
        return
    base = settings.model_api_base.rstrip("/")
    if not base.startswith(("http://", "https://")):
        report.add(FAIL, "model", f"MODEL_API_BASE {base!r} is not an http(s) URL",
                   "set it to the endpoint's OpenAI-compatible base, e.g. http://localhost:11434/v1")
        return
    headers = {"Accept": "application/json"}
    if settings.model_api_key:
        headers["Authorization"] = f"Bearer {settings.model_api_key}"
    try:
        status, body = _http("GET", f"{base}/models", headers)
        if status == 404:
            payload = json.dumps({"model": settings.model_id or "default", "max_tokens": 1,
                                  "messages": [{"role": "user", "content": "ping"}]}).encode()
            status, body = _http("POST", f"{base}/chat/completions",
                                 {**headers, "Content-Type": "application/json"}, payload)
    except (urllib.error.URLError, OSError) as exc:
        report.add(FAIL, "model", _unreachable(exc, base),
                   "start the model server, or correct MODEL_API_BASE (e.g. http://localhost:11434/v1 for Ollama)")
        return
    if status in (401, 403):
        report.add(FAIL, "model", f"{base} refused the API key (HTTP {status})",
                   "set MODEL_API_KEY to a valid key for this endpoint")
        return
    if status == 404:
        report.add(FAIL, "model", f"no OpenAI-compatible API at {base} (HTTP 404 for /models and /chat/completions)",
                   "MODEL_API_BASE should be the API base, usually ending in /v1")
        return
    if status >= 400:
        report.add(FAIL, "model", f"{base} answered HTTP {status}: {body[:200].decode(errors='replace')}",
                   "check the endpoint's logs, MODEL_ID and MODEL_API_KEY")
        return
    available = _model_ids(body)
    if not settings.model_id:
        report.add(WARN, "model", f"{base} answers, but MODEL_ID is unset",
                   "set MODEL_ID" + (f" (this endpoint serves: {', '.join(available[:8])})" if available else ""))
    elif available and settings.model_id not in available:
        report.add(FAIL, "model", f"{base} does not serve MODEL_ID={settings.model_id!r}",
                   f"choose one it serves: {', '.join(available[:8])}")
    else:
        report.add(OK, "model", f"{base} answers and serves {settings.model_id}")


def _model_ids(body: bytes) -> list[str]:
    try:
        data = json.loads(body)
    except ValueError:
        return []
    items = data.get("data") if isinstance(data, dict) else None
    return [str(m.get("id")) for m in items or [] if isinstance(m, dict) and m.get("id")]


def _otlp_headers() -> dict[str, str]:
    raw = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or os.environ.get("OTEL_EXPORTER_OTLP_HEADERS") or ""
    headers = {}
    for item in raw.split(","):
        key, _, value = item.partition("=")
        if key.strip() and value:
            headers[key.strip()] = urllib.request.unquote(value.strip())
    return headers


def check_tracing(settings: Settings, report: Report) -> None:
    endpoint = settings.otlp_endpoint
    if not endpoint:
        report.add(WARN, "tracing", "off (OTEL_EXPORTER_OTLP_ENDPOINT unset): runs are not traced",
                   "optional: point OTEL_EXPORTER_OTLP_ENDPOINT at Phoenix, Langfuse, Jaeger or a collector, "
                   "e.g. http://localhost:6006")
        return
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf").lower()
    if protocol == "grpc":
        parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        address = (parts.hostname or "localhost", parts.port or 4317)
        try:
            socket.create_connection(address, timeout=HTTP_TIMEOUT_S).close()
        except OSError as exc:
            report.add(FAIL, "tracing", f"cannot connect to the OTLP gRPC endpoint {address[0]}:{address[1]} ({exc})",
                       "start the collector or correct OTEL_EXPORTER_OTLP_ENDPOINT")
            return
        report.add(OK, "tracing", f"OTLP gRPC endpoint {address[0]}:{address[1]} accepts connections")
        return
    explicit = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    url = endpoint if explicit and endpoint == explicit else endpoint.rstrip("/") + "/v1/traces"
    headers = {"Content-Type": "application/x-protobuf", **_otlp_headers()}
    try:
        # An empty body is a valid, empty ExportTraceServiceRequest: the receiver accepts it and stores nothing.
        status, body = _http("POST", url, headers, b"")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        report.add(FAIL, "tracing", _unreachable(exc, url),
                   "start the tracing backend or correct OTEL_EXPORTER_OTLP_ENDPOINT (traces go nowhere meanwhile)")
        return
    if status in (401, 403):
        report.add(FAIL, "tracing", f"{url} refused the request (HTTP {status})",
                   "set OTEL_EXPORTER_OTLP_HEADERS with the backend's auth header, e.g. Authorization=Bearer%20<key>")
    elif status == 404:
        report.add(FAIL, "tracing", f"no OTLP/HTTP receiver at {url} (HTTP 404)",
                   "OTEL_EXPORTER_OTLP_ENDPOINT is the base URL (agentdesk adds /v1/traces); for gRPC set "
                   "OTEL_EXPORTER_OTLP_PROTOCOL=grpc")
    elif status >= 400 and status not in (400, 415):
        report.add(FAIL, "tracing", f"{url} answered HTTP {status}", "check the tracing backend's logs")
    else:
        report.add(OK, "tracing", f"OTLP/HTTP receiver at {url} answers (HTTP {status})")


def check_data_dir(settings: Settings, report: Report) -> None:
    path = Path(settings.data_dir).resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-", delete=True) as handle:
            handle.write(b"ok")
            handle.flush()
    except OSError as exc:
        report.add(FAIL, "data folder", f"{path} is not writable ({exc.strerror or exc})",
                   "set AGENTDESK_DATA_DIR to a writable folder, or fix its owner/permissions")
        return
    report.add(OK, "data folder", f"{path} is writable")
