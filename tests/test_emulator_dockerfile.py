"""The bot service image (top-level Dockerfile, .dockerignore), checked by structure.

It cannot be built here (no registry for python:3.11-slim), so this pins what matters: multi-stage,
non-root at run time, a healthcheck on /healthz, the `agentdesk serve` entry point, and no secret baked
in or sent in the build context.
"""
from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|API_KEY|HF_TOKEN|CREDENTIAL", re.I)


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, args in _instructions():
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, args))
    return stages


def test_multi_stage_with_a_slim_python_runtime():
    stages = _stages()
    assert len(stages) >= 2
    assert re.search(r"\bAS builder\b", stages[0][0][1], re.I)
    args = dict(a.split("=", 1) for k, a in _instructions() if k == "ARG" and "=" in a)
    runtime_base = stages[-1][0][1].split()[0]
    assert args.get(runtime_base.strip("${}"), runtime_base) == "python:3.11-slim"
    copies = [a for k, a in stages[-1] if k == "COPY"]
    assert any(a.startswith("--from=builder") for a in copies), "the runtime takes only what the builder made"
    assert not any(k == "COPY" and not a.startswith("--from=") for k, a in stages[-1]), \
        "no source tree in the runtime image"


def test_runs_as_a_non_root_user():
    users = [a for k, a in _stages()[-1] if k == "USER"]
    assert users, "the runtime stage must set USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


def test_healthcheck_serve_and_listen_address():
    runtime = _stages()[-1]
    health = [a for k, a in runtime if k == "HEALTHCHECK"]
    assert health and "/healthz" in health[-1]
    assert json.loads(next(a for k, a in runtime if k == "ENTRYPOINT")) == ["agentdesk"]
    assert json.loads(next(a for k, a in runtime if k == "CMD")) == ["serve"]
    env = " ".join(a for k, a in runtime if k == "ENV")
    assert "HOST=0.0.0.0" in env and "PORT=3978" in env


def test_no_secrets_in_build_args_or_environment():
    for keyword, args in _instructions():
        if keyword in ("ARG", "ENV"):
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split()[0]]
            for name in names:
                assert not SECRET_NAME.search(name), f"{keyword} {name} would bake a secret into the image"


def test_build_context_excludes_secrets_and_local_state():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for entry in (".env", ".env.*", ".git", ".venv", ".agentdesk", "tests"):
        assert entry in ignored


def test_the_emulator_page_ships_in_the_package():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "emulator/static/*" in data["tool"]["setuptools"]["package-data"]["bots"]
    for name in ("index.html", "app.js", "style.css"):
        assert (ROOT / "bots" / "emulator" / "static" / name).is_file()
