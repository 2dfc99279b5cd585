"""Runtime settings from the environment and a `.env` file (the real environment wins).

Every variable agentdesk reads is declared here, so `agentdesk doctor` and the README's configuration
reference (checked by a test) come from one list.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_type_hints

from dotenv import load_dotenv

BUNDLED_CONFIG = Path(__file__).parent / "company" / "departments.toml"


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


class SettingsError(ValueError):
    """A configuration value an operator must fix; the message says which and how."""


def setting(env: str, default: Any, doc: str, *, secret: bool = False, choices: tuple[str, ...] = (),
            fallback: str | None = None) -> Any:
    """Declare one setting: its variable, default, README text and validation, all in one place.

    `fallback` names a second variable read when `env` is unset (e.g. the OTLP traces endpoint).
    """
    return field(default=default, repr=not secret, metadata={
        "env": env, "doc": doc, "choices": choices, "fallback": fallback})


def _parse(name: str, raw: str, kind: Any, choices: tuple[str, ...]) -> Any:
    if choices:
        value = raw.strip().lower()
        if value not in choices:
            raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
        return value
    if kind is bool:
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if kind is int:
        try:
            return int(raw)
        except ValueError as exc:
            raise SettingsError(f"{name} must be a whole number, got {raw!r}") from exc
    if kind is float:
        try:
            return float(raw)
        except ValueError as exc:
            raise SettingsError(f"{name} must be a number, got {raw!r}") from exc
    if kind is Path:
        return Path(raw)
    if kind == tuple[str, ...]:
        return tuple(a.strip() for a in raw.split(",") if a.strip())
    return raw


@dataclass(frozen=True)
class Settings:
    # chat platforms
    slack_bot_token: str | None = setting(
        "SLACK_BOT_TOKEN", None, "Slack bot token (xoxb-); with SLACK_SIGNING_SECRET enables Slack over HTTP",
        secret=True)
    slack_signing_secret: str | None = setting(
        "SLACK_SIGNING_SECRET", None, "Slack signing secret for verifying Events API requests", secret=True)
    slack_app_token: str | None = setting(
        "SLACK_APP_TOKEN", None, "Slack app-level token (xapp-): runs Socket Mode in the same process", secret=True)
    slack_api_url: str = setting("SLACK_API_URL", "https://slack.com/api/",
                                 "Slack Web API base URL (default https://slack.com/api/)")
    slack_step_updates: str = setting(
        "SLACK_STEP_UPDATES", "stream", "stream (default: one task card per step), replies, edit or off",
        choices=("stream", "replies", "edit", "off"))
    slack_task_display: str = setting(
        "SLACK_TASK_DISPLAY", "timeline", "timeline (default) or plan: how Slack lays out the streamed task cards",
        choices=("timeline", "plan"))
    teams_app_id: str | None = setting(
        "TEAMS_APP_ID", None, "Bot Framework app (client) id; with it every request needs a valid JWT")
    teams_app_password: str | None = setting("TEAMS_APP_PASSWORD", None, "Bot Framework client secret", secret=True)
    teams_app_type: str = setting("TEAMS_APP_TYPE", "SingleTenant",
                                  "SingleTenant (default), MultiTenant or UserAssignedMSI")
    teams_app_tenant_id: str | None = setting("TEAMS_APP_TENANT_ID", None, "Entra tenant id of the bot registration")
    teams_allow_unauthenticated: bool = setting(
        "TEAMS_ALLOW_UNAUTHENTICATED", False, "1 accepts unsigned Teams activities (local development only)")
    teams_expect_replies_wait_s: float = setting(
        "TEAMS_EXPECT_REPLIES_WAIT_S", 20.0,
        "seconds an expectReplies caller waits for the answer in the response (default 20)")
    graph_client_id: str | None = setting("GRAPH_CLIENT_ID", None, "app (client) id for Graph (default: TEAMS_APP_ID)",
                                          fallback="TEAMS_APP_ID")
    graph_client_secret: str | None = setting(
        "GRAPH_CLIENT_SECRET", None, "client secret of the bot's app registration for Microsoft Graph; turns on files "
        "in channels/group chats and teams_groups rules", secret=True)
    graph_tenant_id: str | None = setting("GRAPH_TENANT_ID", None,
                                          "Entra tenant for Graph (default: TEAMS_APP_TENANT_ID)",
                                          fallback="TEAMS_APP_TENANT_ID")
    graph_api_url: str = setting(
        "GRAPH_API_URL", "https://graph.microsoft.com/v1.0",
        "Graph endpoint (default https://graph.microsoft.com/v1.0; tests point it at a stand-in)")
    graph_login_url: str = setting(
        "GRAPH_LOGIN_URL", "https://login.microsoftonline.com",
        "token authority (default https://login.microsoftonline.com; tests override it)")
    graph_groups_ttl_s: float = setting("GRAPH_GROUPS_TTL_S", 600.0,
                                        "seconds a person's Graph group memberships are cached (default 600)")
    # server
    host: str = setting("HOST", "127.0.0.1", "listen address (default 127.0.0.1)")
    port: int = setting("PORT", 3978, "listen port (default 3978)")
    public_url: str | None = setting("AGENTDESK_PUBLIC_URL", None,
                                     "public https URL of this deployment (manifests, links)")
    # scale-out
    redis_url: str | None = setting(
        "REDIS_URL", None, "redis://, rediss:// or redis+sentinel://host:port,host:port/service: shared state and "
        "task queue for several processes; unset = embedded SQLite and an in-process queue", secret=True)
    role: str = setting("AGENTDESK_ROLE", "all", "all (default), web or worker; same as serve --role",
                        choices=("all", "web", "worker"))
    drain_s: float = setting("AGENTDESK_DRAIN_S", 60.0,
                             "seconds a SIGTERM'd process finishes its work before handing it back (default 60)")
    task_lease_s: float = setting(
        "AGENTDESK_TASK_LEASE_S", 15.0, "seconds after which a dead worker's task is reclaimed (default 15)")
    max_queue_age_s: float = setting(
        "AGENTDESK_MAX_QUEUE_AGE_S", 300.0,
        "oldest waiting task's age above which new requests get a busy message (default 300)")
    # model
    model_api_base: str | None = setting(
        "MODEL_API_BASE", None, "OpenAI-compatible chat completions base URL (e.g. http://localhost:11434/v1)")
    model_id: str | None = setting("MODEL_ID", None, "model name at that endpoint")
    model_api_key: str | None = setting("MODEL_API_KEY", None, "API key for that endpoint", secret=True)
    hf_token: str | None = setting("HF_TOKEN", None, "Hugging Face token, used when MODEL_API_BASE is unset",
                                   secret=True)
    model_timeout_s: float = setting("MODEL_TIMEOUT_S", 120.0, "seconds per model call (default 120)")
    model_max_retries: int = setting("MODEL_MAX_RETRIES", 4, "retries on 429/5xx/timeouts with backoff (default 4)")
    model_flatten_messages: str = setting(
        "MODEL_FLATTEN_MESSAGES", "auto", "auto (default: text-only messages as plain strings), 1 (always) or 0 (never)",
        choices=("auto", "1", "0"))
    model_code_tags: str | None = setting(
        "MODEL_CODE_TAGS", None, "markdown or xml: how code agents fence code (default xml <code>; markdown suits "
        "small models)", choices=("markdown", "xml"))
    model_temperature: float | None = setting(
        "MODEL_TEMPERATURE", None, "sampling temperature (default: the server's; dropped where a model refuses it)")
    model_max_tokens: int | None = setting(
        "MODEL_MAX_TOKENS", None, "longest reply (sent as max_completion_tokens where a server wants that)")
    search_api_key: str | None = setting("SEARCH_API_KEY", None, "key of the search provider (never logged)",
                                         secret=True)
    # sandbox
    sandbox: str = setting("SANDBOX", "docker",
                           "docker (default), wasm (Pyodide on Deno, no Docker needed) or local (development only)",
                           choices=("docker", "wasm", "local"))
    sandbox_image: str = setting("SANDBOX_IMAGE", "agentdesk-sandbox:latest",
                                 "sandbox image name (default agentdesk-sandbox:latest)")
    sandbox_pool_size: int = setting("SANDBOX_POOL_SIZE", 2, "warm sandboxes (containers or Wasm processes) kept ready (default 2)")
    sandbox_runtime: str | None = setting("SANDBOX_RUNTIME", None, "optional container runtime, e.g. runsc (gVisor)")
    sandbox_memory_mb: int = setting("SANDBOX_MEMORY_MB", 512, "memory limit per sandbox (default 512)")
    sandbox_cpus: float = setting("SANDBOX_CPUS", 1.0, "CPU limit per sandbox (default 1.0)")
    sandbox_pids: int = setting("SANDBOX_PIDS", 64, "process limit per sandbox (default 64)")
    # state and limits
    config_path: Path = setting("AGENTDESK_CONFIG", BUNDLED_CONFIG,
                                "departments file (TOML); default: the bundled example company")
    data_dir: Path = setting("AGENTDESK_DATA_DIR", Path(".agentdesk"), "where state lives (default ./.agentdesk)")
    task_timeout_s: float = setting("AGENTDESK_TASK_TIMEOUT_S", 300.0, "wall time per task (default 300)")
    max_concurrent_tasks: int = setting("AGENTDESK_MAX_CONCURRENT_TASKS", 4,
                                        "agent runs at once per worker process (default 4)")
    max_queued_tasks: int = setting(
        "AGENTDESK_MAX_QUEUED_TASKS", 100, "requests waiting for a worker before the bot says it is busy (default 100)")
    max_tasks_per_user: int = setting("AGENTDESK_MAX_TASKS_PER_USER", 2,
                                      "requests one person may have in flight (default 2)")
    max_text_chars: int = setting("AGENTDESK_MAX_TEXT_CHARS", 8000, "longest accepted message (default 8000)")
    max_file_mb: float = setting("AGENTDESK_MAX_FILE_MB", 20.0, "largest accepted file (default 20)")
    max_files: int = setting("AGENTDESK_MAX_FILES", 10, "most files per request (default 10)")
    user_rate_per_minute: int = setting("AGENTDESK_USER_RATE_PER_MINUTE", 10,
                                        "requests per person per minute (default 10)")
    admins: tuple[str, ...] = setting("AGENTDESK_ADMINS", (),
                                      "comma-separated platform user ids that may stop anyone's run")
    # telemetry
    otlp_endpoint: str | None = setting("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None,
                                        "OTLP traces endpoint (overrides the above)",
                                        fallback="OTEL_EXPORTER_OTLP_ENDPOINT")
    trace_content: str = setting("AGENTDESK_TRACE_CONTENT", "redacted",
                                 "full, redacted (default) or off: what content goes into spans",
                                 choices=("full", "redacted", "off"))
    trace_url_template: str | None = setting(
        "AGENTDESK_TRACE_URL_TEMPLATE", None,
        "link to a trace, e.g. http://localhost:6006/redirects/traces/{trace_id}")
    service_name: str = setting("OTEL_SERVICE_NAME", "agentdesk", "service name in traces (default agentdesk)")

    @classmethod
    def from_env(cls, dotenv: bool = True) -> "Settings":
        """Read the environment (after `.env` in the working directory, which never overrides it)."""
        if dotenv:
            load_dotenv(Path.cwd() / ".env", override=False)
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            meta = f.metadata
            raw = _env(meta["env"]) or (_env(meta["fallback"]) if meta["fallback"] else None)
            if raw is not None:
                kind = hints[f.name]
                kind = next((a for a in get_args(kind) if a is not type(None)), kind) if get_args(kind) and \
                    kind != tuple[str, ...] else kind
                values[f.name] = _parse(meta["env"], raw, kind, meta["choices"])
        return cls(**values)

    @property
    def slack_enabled(self) -> bool:
        return bool(self.slack_bot_token and (self.slack_signing_secret or self.slack_app_token))

    @property
    def model_configured(self) -> bool:
        return bool(self.model_api_base or self.hf_token)

    def secrets(self) -> list[str]:
        """Values that must never appear in a reply, a log line or a span."""
        names = [f.name for f in fields(self) if f.repr is False]
        return [v for v in (getattr(self, n) for n in names) if v]


#: Variables read outside Settings (by telemetry, security and the example tools), with their meaning.
_READ_ELSEWHERE = {
    "AGENTDESK_PII_PATTERNS": "extra regexes (separated by ;;) redacted from replies, logs and spans",
    "AGENTDESK_ENVIRONMENT": "deployment.environment resource attribute of traces (e.g. production)",
    "AGENTDESK_HR_DATA_DIR": "folder with the example HR department's data (policies, leave.csv, benefits.csv)",
    "AGENTDESK_SALES_DATA_DIR": "folder with the example Sales department's data (products.csv, pricing.toml)",
    "AGENTDESK_MARKETING_DATA_DIR": "folder with the example Marketing department's data (campaigns.csv)",
    "SEARCH_PROVIDER": "web_search backend: searxng (default when SEARCH_API_URL is set), brave or tavily",
    "SEARCH_API_URL": "search endpoint, e.g. a SearXNG instance's https://searx.example.com/search",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "OTLP endpoint; unset = no export",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf (default) or grpc",
    "OTEL_EXPORTER_OTLP_HEADERS": "auth headers for hosted backends (Langfuse, Phoenix Cloud)",
}

#: Documented environment variables (name, meaning); the README's reference table is checked against it.
ENVIRONMENT = {**{f.metadata["env"]: f.metadata["doc"] for f in fields(Settings)}, **_READ_ELSEWHERE}
