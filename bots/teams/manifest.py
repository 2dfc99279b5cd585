"""The Teams app package: manifests/teams/manifest.json filled in for one deployment, zipped with its icons.

Teams wants manifest.json, color.png and outline.png at the root of the zip (no folder), the bot's
Entra app id as `botId`, and the bot's public host in `validDomains`. Each department becomes a bot
command titled `hr:`, `marketing:`, ...: picking one puts that title into the compose box, so the
message starts with the `name:` prefix the router sends straight to that department.
"""
from __future__ import annotations

import json
import logging
import re
import zipfile
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import urlsplit

from bots.manifest_sources import manifests_dir

log = logging.getLogger("agentdesk.teams")

SOURCE = manifests_dir() / "teams"
PACKAGE_FILES = ("manifest.json", "color.png", "outline.png")
MAX_COMMANDS = 12  # per command list, manifest v1.24 and later

_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9*]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+(:\d{1,5})?$")


def _host(domain: str) -> str:
    """`bot.example.com` from `bot.example.com`, `https://bot.example.com/api/messages` or similar."""
    domain = domain.strip()
    if "://" in domain:
        domain = urlsplit(domain).netloc
    domain = domain.strip("/").lower()
    if not _DOMAIN.match(domain):
        raise ValueError(f"--domain must be the bot's public host name like bot.example.com, got {domain!r}")
    return domain


def _departments(departments: Mapping[str, Any] | Iterable[Any]) -> list[tuple[str, str]]:
    """(name, description) pairs from a Company.departments mapping, Department objects or pairs."""
    items: Iterable[Any] = departments.items() if isinstance(departments, Mapping) else departments
    pairs: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, tuple):
            name, value = item
            description = value if isinstance(value, str) else getattr(value, "description", "")
        else:
            name, description = item.name, item.description
        pairs.append((str(name), str(description or "")))
    return pairs


def build_manifest(app_id: str, domain: str, departments: Mapping[str, Any] | Iterable[Any], *,
                   source: Path = SOURCE, version: str | None = None, name: str | None = None) -> dict:
    if not _GUID.match(app_id or ""):
        raise ValueError("--app-id must be the bot's Microsoft App ID, a GUID like "
                         f"1b2c3d4e-0000-4000-8000-123456789abc (Azure Bot > Configuration), got {app_id!r}")
    host = _host(domain)
    manifest = json.loads((source / "manifest.json").read_text(encoding="utf-8"))
    manifest["id"] = app_id.lower()
    if version:
        manifest["version"] = version
    if name:
        manifest["name"]["short"] = name[:30]
        manifest["developer"]["name"] = name[:32]
    base = f"https://{host}"
    manifest["developer"].update(websiteUrl=f"{base}/", privacyUrl=f"{base}/privacy", termsOfUseUrl=f"{base}/terms")
    manifest["validDomains"] = [host]
    bot = manifest["bots"][0]
    bot["botId"] = app_id.lower()
    commands = [{"title": f"{dept}:"[:128], "description": (desc or f"Ask the {dept} agent")[:128]}
                for dept, desc in _departments(departments)]
    if len(commands) > MAX_COMMANDS:
        log.warning("Teams shows at most %d bot commands; leaving out %s", MAX_COMMANDS,
                    ", ".join(c["title"] for c in commands[MAX_COMMANDS:]))
        commands = commands[:MAX_COMMANDS]
    bot["commandLists"][0]["commands"] = commands
    if not commands:
        del bot["commandLists"]
    return manifest


def write_package(app_id: str, domain: str, out: Path, departments: Mapping[str, Any] | Iterable[Any], *,
                  source: Path = SOURCE, version: str | None = None, name: str | None = None) -> Path:
    """Write the Teams app zip to `out` (a .zip path, or a folder to put `agentdesk-teams.zip` in)."""
    for file in PACKAGE_FILES:
        if not (source / file).is_file():
            raise FileNotFoundError(f"{source / file} is missing; the Teams package sources live in manifests/teams")
    manifest = build_manifest(app_id, domain, departments, source=source, version=version, name=name)
    out = Path(out)
    if out.suffix.lower() != ".zip":
        out = out / "agentdesk-teams.zip"
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        zf.write(source / "color.png", "color.png")
        zf.write(source / "outline.png", "outline.png")
    return out
