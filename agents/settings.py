"""Runtime settings from the environment and a `.env` file (the real environment wins).

Every variable agentdesk reads is declared here, so `agentdesk doctor` and the README's configuration
reference (checked by a test) come from one list.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from dotenv import load_dotenv

BUNDLED_CONFIG = Path(__file__).parent / "company" / "departments.toml"


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _int(name: str, default: int) -> int:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from exc


def _float(name: str, default: float) -> float:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from exc


def _bool(name: str, default: bool = False) -> bool:
    raw = _env(name)
    if raw is None:
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


class SettingsError(ValueError):
    """A configuration value an operator must fix; the message says which and how."""


@dataclass(frozen=True)
class Settings:
    # chat platforms
    slack_bot_token: str | None = field(default=None, repr=False)
    slack_signing_secret: str | None = field(default=None, repr=False)
    slack_app_token: str | None = field(default=None, repr=False)
    slack_api_url: str = "https://slack.com/api/"
    slack_step_updates: str = "replies"  # replies | stream | edit | off
    teams_app_id: str | None = None
    teams_app_password: str | None = field(default=None, repr=False)
    teams_app_type: str = "SingleTenant"
    teams_app_tenant_id: str | None = None
    teams_allow_unauthenticated: bool = False
    # server
    host: str = "127.0.0.1"
    port: int = 3978
    public_url: str | None = None
    # model
    model_api_base: str | None = None
    model_id: str | None = None
    model_api_key: str | None = field(default=None, repr=False)
    hf_token: str | None = field(default=None, repr=False)
    model_timeout_s: float = 120.0
    model_max_retries: int = 4
    model_flatten_messages: str = "auto"  # auto | 1 | 0
    model_code_tags: str | None = None  # markdown | xml (default: smolagents' <code> tags)
    model_temperature: float | None = None
    model_max_tokens: int | None = None
    search_api_key: str | None = field(default=None, repr=False)
    # sandbox
    sandbox: str = "docker"  # docker | local
    sandbox_image: str = "agentdesk-sandbox:latest"
    sandbox_pool_size: int = 2
    sandbox_runtime: str | None = None  # e.g. runsc
    sandbox_memory_mb: int = 512
    sandbox_cpus: float = 1.0
    sandbox_pids: int = 64
    # state and limits
    config_path: Path = BUNDLED_CONFIG
    data_dir: Path = Path(".agentdesk")
    task_timeout_s: float = 300.0
    max_concurrent_tasks: int = 4
    max_queued_tasks: int = 100
    max_tasks_per_user: int = 2
    max_text_chars: int = 8000
    max_file_mb: float = 20.0
    max_files: int = 10
    user_rate_per_minute: int = 10
    # telemetry
    otlp_endpoint: str | None = None
    trace_content: str = "redacted"  # full | redacted | off
    trace_url_template: str | None = None
    service_name: str = "agentdesk"

    @classmethod
    def from_env(cls, dotenv: bool = True) -> "Settings":
        """Read the environment (after `.env` in the working directory, which never overrides it)."""
        if dotenv:
            load_dotenv(Path.cwd() / ".env", override=False)
        step_updates = (_env("SLACK_STEP_UPDATES", "replies") or "replies").lower()
        if step_updates not in {"replies", "stream", "edit", "off"}:
            raise SettingsError("SLACK_STEP_UPDATES must be one of replies, stream, edit, off")
        sandbox = (_env("SANDBOX", "docker") or "docker").lower()
        if sandbox not in {"docker", "local"}:
            raise SettingsError("SANDBOX must be 'docker' or 'local'")
        flatten = (_env("MODEL_FLATTEN_MESSAGES", "auto") or "auto").strip().lower()
        flatten = {"true": "1", "yes": "1", "on": "1", "false": "0", "no": "0", "off": "0"}.get(flatten, flatten)
        if flatten not in {"auto", "1", "0"}:
            raise SettingsError("MODEL_FLATTEN_MESSAGES must be auto, 1 or 0")
        code_tags = (_env("MODEL_CODE_TAGS") or "").strip().lower() or None
        if code_tags not in {None, "markdown", "xml"}:
            raise SettingsError("MODEL_CODE_TAGS must be markdown or xml")
        temperature = _env("MODEL_TEMPERATURE")
        trace_content = (_env("AGENTDESK_TRACE_CONTENT", "redacted") or "redacted").lower()
        if trace_content not in {"full", "redacted", "off"}:
            raise SettingsError("AGENTDESK_TRACE_CONTENT must be one of full, redacted, off")
        return cls(
            slack_bot_token=_env("SLACK_BOT_TOKEN"),
            slack_signing_secret=_env("SLACK_SIGNING_SECRET"),
            slack_app_token=_env("SLACK_APP_TOKEN"),
            slack_api_url=_env("SLACK_API_URL", "https://slack.com/api/"),
            slack_step_updates=step_updates,
            teams_app_id=_env("TEAMS_APP_ID"),
            teams_app_password=_env("TEAMS_APP_PASSWORD"),
            teams_app_type=_env("TEAMS_APP_TYPE", "SingleTenant"),
            teams_app_tenant_id=_env("TEAMS_APP_TENANT_ID"),
            teams_allow_unauthenticated=_bool("TEAMS_ALLOW_UNAUTHENTICATED"),
            host=_env("HOST", "127.0.0.1"),
            port=_int("PORT", 3978),
            public_url=_env("AGENTDESK_PUBLIC_URL"),
            model_api_base=_env("MODEL_API_BASE"),
            model_id=_env("MODEL_ID"),
            model_api_key=_env("MODEL_API_KEY"),
            hf_token=_env("HF_TOKEN"),
            model_timeout_s=_float("MODEL_TIMEOUT_S", 120.0),
            model_max_retries=_int("MODEL_MAX_RETRIES", 4),
            model_flatten_messages=flatten,
            model_code_tags=code_tags,
            model_temperature=_float("MODEL_TEMPERATURE", 0.0) if temperature else None,
            model_max_tokens=_int("MODEL_MAX_TOKENS", 0) or None,
            search_api_key=_env("SEARCH_API_KEY"),
            sandbox=sandbox,
            sandbox_image=_env("SANDBOX_IMAGE", "agentdesk-sandbox:latest"),
            sandbox_pool_size=_int("SANDBOX_POOL_SIZE", 2),
            sandbox_runtime=_env("SANDBOX_RUNTIME"),
            sandbox_memory_mb=_int("SANDBOX_MEMORY_MB", 512),
            sandbox_cpus=_float("SANDBOX_CPUS", 1.0),
            sandbox_pids=_int("SANDBOX_PIDS", 64),
            config_path=Path(_env("AGENTDESK_CONFIG", str(BUNDLED_CONFIG))),
            data_dir=Path(_env("AGENTDESK_DATA_DIR", ".agentdesk")),
            task_timeout_s=_float("AGENTDESK_TASK_TIMEOUT_S", 300.0),
            max_concurrent_tasks=_int("AGENTDESK_MAX_CONCURRENT_TASKS", 4),
            max_queued_tasks=_int("AGENTDESK_MAX_QUEUED_TASKS", 100),
            max_tasks_per_user=_int("AGENTDESK_MAX_TASKS_PER_USER", 2),
            max_text_chars=_int("AGENTDESK_MAX_TEXT_CHARS", 8000),
            max_file_mb=_float("AGENTDESK_MAX_FILE_MB", 20.0),
            max_files=_int("AGENTDESK_MAX_FILES", 10),
            user_rate_per_minute=_int("AGENTDESK_USER_RATE_PER_MINUTE", 10),
            otlp_endpoint=_env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or _env("OTEL_EXPORTER_OTLP_ENDPOINT"),
            trace_content=trace_content,
            trace_url_template=_env("AGENTDESK_TRACE_URL_TEMPLATE"),
            service_name=_env("OTEL_SERVICE_NAME", "agentdesk"),
        )

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


#: Documented environment variables (name, meaning); the README's reference table is checked against it.
ENVIRONMENT = {
    "SLACK_BOT_TOKEN": "Slack bot token (xoxb-); with SLACK_SIGNING_SECRET enables Slack over HTTP",
    "SLACK_SIGNING_SECRET": "Slack signing secret for verifying Events API requests",
    "SLACK_APP_TOKEN": "Slack app-level token (xapp-): runs Socket Mode in the same process",
    "SLACK_API_URL": "Slack Web API base URL (default https://slack.com/api/)",
    "SLACK_STEP_UPDATES": "replies (default), stream, edit or off",
    "TEAMS_APP_ID": "Bot Framework app (client) id; with it every request needs a valid JWT",
    "TEAMS_APP_PASSWORD": "Bot Framework client secret",
    "TEAMS_APP_TYPE": "SingleTenant (default), MultiTenant or UserAssignedMSI",
    "TEAMS_APP_TENANT_ID": "Entra tenant id of the bot registration",
    "TEAMS_ALLOW_UNAUTHENTICATED": "1 accepts unsigned Teams activities (local development only)",
    "HOST": "listen address (default 127.0.0.1)",
    "PORT": "listen port (default 3978)",
    "AGENTDESK_PUBLIC_URL": "public https URL of this deployment (manifests, links)",
    "MODEL_API_BASE": "OpenAI-compatible chat completions base URL (e.g. http://localhost:11434/v1)",
    "MODEL_ID": "model name at that endpoint",
    "MODEL_API_KEY": "API key for that endpoint",
    "HF_TOKEN": "Hugging Face token, used when MODEL_API_BASE is unset",
    "MODEL_TIMEOUT_S": "seconds per model call (default 120)",
    "MODEL_MAX_RETRIES": "retries on 429/5xx/timeouts with backoff (default 4)",
    "MODEL_FLATTEN_MESSAGES": "auto (default: text-only messages as plain strings), 1 (always) or 0 (never)",
    "MODEL_CODE_TAGS": "markdown or xml: how code agents fence code (default xml <code>; markdown suits small models)",
    "MODEL_TEMPERATURE": "sampling temperature (default: the server's; dropped where a model refuses it)",
    "MODEL_MAX_TOKENS": "longest reply (sent as max_completion_tokens where a server wants that)",
    "SANDBOX": "docker (default) or local (development only)",
    "SANDBOX_IMAGE": "sandbox image name (default agentdesk-sandbox:latest)",
    "SANDBOX_POOL_SIZE": "warm sandbox containers kept ready (default 2)",
    "SANDBOX_RUNTIME": "optional container runtime, e.g. runsc (gVisor)",
    "SANDBOX_MEMORY_MB": "memory limit per sandbox (default 512)",
    "SANDBOX_CPUS": "CPU limit per sandbox (default 1.0)",
    "SANDBOX_PIDS": "process limit per sandbox (default 64)",
    "AGENTDESK_CONFIG": "departments file (TOML); default: the bundled example company",
    "AGENTDESK_DATA_DIR": "where state lives (default ./.agentdesk)",
    "AGENTDESK_TASK_TIMEOUT_S": "wall time per task (default 300)",
    "AGENTDESK_MAX_CONCURRENT_TASKS": "agent runs at once (default 4)",
    "AGENTDESK_MAX_QUEUED_TASKS": "requests waiting for a slot before the bot says it is busy (default 100)",
    "AGENTDESK_MAX_TASKS_PER_USER": "requests one person may have in flight (default 2)",
    "AGENTDESK_MAX_TEXT_CHARS": "longest accepted message (default 8000)",
    "AGENTDESK_MAX_FILE_MB": "largest accepted file (default 20)",
    "AGENTDESK_MAX_FILES": "most files per request (default 10)",
    "AGENTDESK_USER_RATE_PER_MINUTE": "requests per person per minute (default 10)",
    "AGENTDESK_PII_PATTERNS": "extra regexes (separated by ;;) redacted from replies, logs and spans",
    "AGENTDESK_ENVIRONMENT": "deployment.environment resource attribute of traces (e.g. production)",
    "AGENTDESK_HR_DATA_DIR": "folder with the example HR department's data (policies, leave.csv, benefits.csv)",
    "AGENTDESK_SALES_DATA_DIR": "folder with the example Sales department's data (products.csv, pricing.toml)",
    "AGENTDESK_MARKETING_DATA_DIR": "folder with the example Marketing department's data (campaigns.csv)",
    "SEARCH_PROVIDER": "web_search backend: searxng (default when SEARCH_API_URL is set), brave or tavily",
    "SEARCH_API_URL": "search endpoint, e.g. a SearXNG instance's https://searx.example.com/search",
    "SEARCH_API_KEY": "key of the search provider (never logged)",
    "AGENTDESK_TRACE_CONTENT": "full, redacted (default) or off: what content goes into spans",
    "AGENTDESK_TRACE_URL_TEMPLATE": "link to a trace, e.g. http://localhost:6006/redirects/traces/{trace_id}",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "OTLP endpoint; unset = no export",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "OTLP traces endpoint (overrides the above)",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf (default) or grpc",
    "OTEL_EXPORTER_OTLP_HEADERS": "auth headers for hosted backends (Langfuse, Phoenix Cloud)",
    "OTEL_SERVICE_NAME": "service name in traces (default agentdesk)",
}
