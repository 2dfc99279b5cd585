"""The Slack app manifest with this deployment's URL filled in (`agentdesk manifest slack`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bots.manifest_sources import manifests_dir

TEMPLATE = manifests_dir() / "slack" / "manifest.yaml"
EVENTS_PATH = "/slack/events"


AGENT_EVENTS = ["app_home_opened", "app_context_changed"]
ASSISTANT_EVENTS = ["assistant_thread_started", "assistant_thread_context_changed"]


def build_manifest(url: str | None, socket_mode: bool, template: Path = TEMPLATE, *,
                   assistant_view: bool = False) -> dict[str, Any]:
    """The manifest as a dict. HTTP mode needs the public https URL Slack will post events to.

    New apps can only use agent_view; `assistant_view=True` keeps the retiring assistant_view for an
    existing app (its assistant_thread_* events instead of app_home_opened/app_context_changed).
    """
    manifest = yaml.safe_load(template.read_text())
    settings = manifest["settings"]
    if assistant_view:
        features = manifest["features"]
        view = features.pop("agent_view")
        features["assistant_view"] = {"assistant_description": view["agent_description"],
                                      "suggested_prompts": view.get("suggested_prompts", [])}
        events = settings["event_subscriptions"]["bot_events"]
        settings["event_subscriptions"]["bot_events"] = [e for e in events if e not in AGENT_EVENTS] + ASSISTANT_EVENTS
    settings["socket_mode_enabled"] = socket_mode
    if url:
        if not url.startswith(("https://", "http://")):
            raise ValueError(f"the URL must start with https:// (got {url!r})")
        request_url = url.rstrip("/")
        if not request_url.endswith(EVENTS_PATH):
            request_url += EVENTS_PATH
        settings["event_subscriptions"]["request_url"] = request_url
        settings["interactivity"]["request_url"] = request_url
    elif not socket_mode:
        raise ValueError("Slack needs a public URL for HTTP mode: pass --url https://your-host, or use Socket Mode")
    return manifest


def write_manifest(url: str | None, out: Path, socket_mode: bool, *, assistant_view: bool = False) -> Path:
    """Write the filled-in manifest as YAML to `out` and return the path."""
    manifest = build_manifest(url, socket_mode, assistant_view=assistant_view)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True))
    return out
