"""The README is the newcomer's contract: its commands and configuration reference must match the code."""
from __future__ import annotations

import re
from pathlib import Path

from agents.settings import ENVIRONMENT

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
#: Variables read by code that are deliberately not operator settings.
NOT_SETTINGS = {"CI", "DOCKER_HOST", "HOME", "PATH", "TEAMS_OPENID_METADATA_URL", "XDG_CACHE_HOME"}


def _reference_table() -> dict[str, str]:
    section = README.split("## Configuration reference", 1)[1]
    return dict(re.findall(r"^\| `([A-Z0-9_]+)` \| (.+?) \|$", section, re.M))


def test_every_setting_is_documented_in_the_reference():
    table = _reference_table()
    assert set(ENVIRONMENT) - set(table) == set(), "documented in agents/settings.py but missing in README"
    assert set(table) - set(ENVIRONMENT) == set(), "in README but unknown to agents/settings.py"


def test_every_variable_the_code_reads_is_documented():
    read = set()
    for path in [*ROOT.glob("agents/**/*.py"), *ROOT.glob("bots/**/*.py")]:
        text = path.read_text()
        read |= set(re.findall(r"""(?:_env|_int|_float|_bool|environ\.get|getenv)\(\s*["']([A-Z][A-Z0-9_]+)["']""", text))
        read |= set(re.findall(r"""environ\[["']([A-Z][A-Z0-9_]+)["']\]""", text))
    undocumented = {v for v in read - set(ENVIRONMENT) - NOT_SETTINGS if not v.startswith(("OTEL_", "PHOENIX_"))}
    assert undocumented == set()


def test_ci_runs_the_readme_test_command():
    command = re.search(r"```(?:sh|bash)?\n(\./scripts/test\.sh)\n```", README)
    assert command, "README must give ./scripts/test.sh as the test command"
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_readme_quick_start_command_exists():
    assert "./scripts/dev.sh" in README
    assert (ROOT / "scripts" / "dev.sh").stat().st_mode & 0o111
