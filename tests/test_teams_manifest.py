"""The Teams app package: what Teams' "Upload a custom app" checks, checked here first.

The manifest is validated against the JSON schema of the version it declares, vendored under
manifests/teams/schema/ (from the MIT-licensed npm package @microsoft/app-manifest, which ships
Microsoft's published schemas), so bumping manifestVersion without the matching schema fails here.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import jsonschema
import pytest
from PIL import Image

from agents.departments import load_company
from agents.settings import BUNDLED_CONFIG
from bots.teams.manifest import SOURCE, write_package

APP_ID = "1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d"


def schema_for(manifest: dict) -> dict:
    version = manifest["manifestVersion"]
    schema_url = f"https://developer.microsoft.com/json-schemas/teams/v{version}/MicrosoftTeams.schema.json"
    assert manifest["$schema"] == schema_url
    path = SOURCE / "schema" / f"v{version}" / "MicrosoftTeams.schema.json"
    assert path.is_file(), f"vendor the v{version} schema into {path.parent} before declaring it"
    return json.loads(path.read_text())


@pytest.fixture
def package(tmp_path) -> Path:
    company = load_company(BUNDLED_CONFIG)
    return write_package(APP_ID, "https://bot.contoso.com/api/messages", tmp_path / "out" / "teams.zip",
                         company.departments)


def read(package: Path) -> tuple[dict, dict[str, bytes]]:
    with zipfile.ZipFile(package) as zf:
        files = {name: zf.read(name) for name in zf.namelist()}
    return json.loads(files["manifest.json"]), files


def test_zip_holds_exactly_the_three_files_at_its_root(package):
    _, files = read(package)
    assert sorted(files) == ["color.png", "manifest.json", "outline.png"]


def test_manifest_is_valid_against_the_schema_version_it_declares(package):
    manifest, _ = read(package)
    schema = schema_for(manifest)
    validator = jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_schema_check_catches_a_broken_manifest(package):
    manifest, _ = read(package)
    manifest["bots"][0]["scopes"].append("everyone")
    del manifest["developer"]["privacyUrl"]
    errors = list(jsonschema.Draft4Validator(schema_for(manifest)).iter_errors(manifest))
    assert len(errors) == 2


def test_manifest_carries_this_deployment_and_a_command_per_department(package):
    manifest, _ = read(package)
    bot = manifest["bots"][0]
    assert bot["botId"] == APP_ID and manifest["id"] == APP_ID
    assert sorted(bot["scopes"]) == ["groupChat", "personal", "team"]
    assert bot["supportsFiles"] is True
    assert manifest["validDomains"] == ["bot.contoso.com"]
    assert manifest["developer"]["privacyUrl"] == "https://bot.contoso.com/privacy"
    titles = [c["title"] for c in bot["commandLists"][0]["commands"]]
    assert titles == [f"{name}:" for name in load_company(BUNDLED_CONFIG).departments]  # the routing prefix
    assert all(c["description"] for c in bot["commandLists"][0]["commands"])


def test_icons_have_the_sizes_teams_requires_and_the_outline_is_white_on_transparent(package):
    _, files = read(package)
    color = Image.open(io.BytesIO(files["color.png"]))
    outline = Image.open(io.BytesIO(files["outline.png"])).convert("RGBA")
    assert color.format == "PNG" and color.size == (192, 192)
    assert outline.size == (32, 32)
    pixels = [outline.getpixel((x, y)) for x in range(32) for y in range(32)]
    assert any(a == 0 for *_, a in pixels), "the outline icon needs a transparent background"
    assert any(a > 0 for *_, a in pixels), "the outline icon is empty"
    assert all(a == 0 or (r, g, b) == (255, 255, 255) for r, g, b, a in pixels), "outline must be white only"


def test_bad_app_id_or_domain_is_refused_with_a_clear_message(tmp_path):
    with pytest.raises(ValueError, match="Microsoft App ID"):
        write_package("my-bot", "bot.contoso.com", tmp_path, {"hr": "HR"})
    with pytest.raises(ValueError, match="public host name"):
        write_package(APP_ID, "not a domain", tmp_path, {"hr": "HR"})


def test_a_folder_as_output_gets_a_named_zip(tmp_path):
    out = write_package(APP_ID, "bot.contoso.com", tmp_path, {"hr": "People questions"})
    assert out == tmp_path / "agentdesk-teams.zip" and out.is_file()
    manifest, _ = read(out)
    assert manifest["bots"][0]["commandLists"][0]["commands"] == [{"title": "hr:", "description": "People questions"}]
