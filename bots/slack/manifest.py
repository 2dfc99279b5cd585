"""The Slack app manifest with this deployment's URL filled in (`agentdesk manifest slack`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bots.manifest_sources import manifests_dir

TEMPLATE = manifests_dir() / "slack" / "manifest.yaml"
EVENTS_PATH = "/slack/events"


def build_manifest(url: str | None, socket_mode: bool, template: Path = TEMPLATE) -> dict[str, Any]:
    """The manifest as a dict. HTTP mode needs the public https URL Slack will post events to."""
    manifest = yaml.safe_load(template.read_text())
    settings = manifest["settings"]
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


def write_manifest(url: str | None, out: Path, socket_mode: bool) -> Path:
    """Write the filled-in manifest as YAML to `out` and return the path."""
    manifest = build_manifest(url, socket_mode)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True))
    return out
