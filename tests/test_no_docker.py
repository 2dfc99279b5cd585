"""Where no Docker engine answers, `agentdesk ask` runs the example departments in the WebAssembly sandbox.

The real CLI process with DOCKER_HOST pointing at a socket nobody serves and SANDBOX unset: it says it uses
the Wasm sandbox, HR and Sales answer through it (their tools run on the host with the asker's identity),
and Marketing, whose imports the Wasm sandbox does not have, answers that it can't run here.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sandbox_support import require_wasm_sandbox
from tests.standins.model_server import code_reply

pytestmark = pytest.mark.wasm


def run_ask(tmp_path: Path, model_server, *args: str) -> subprocess.CompletedProcess:
    require_wasm_sandbox()
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "TEAMS_", "MODEL_", "OTEL_", "AGENTDESK_", "SANDBOX", "DOCKER_"))
    }
    env.update(
        MODEL_API_BASE=model_server.base_url, MODEL_ID="scripted", MODEL_API_KEY="sk-test-cli-key-0123456789",
        AGENTDESK_DATA_DIR=str(tmp_path / "data"), SANDBOX_POOL_SIZE="1", HF_TOKEN="",
        DOCKER_HOST=f"unix://{tmp_path}/no-docker-here.sock",
    )
    return subprocess.run([sys.executable, "-m", "bots", "ask", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=180)


def test_hr_and_sales_answer_in_the_wasm_sandbox(tmp_path, model_server):
    model_server.model.script(
        "how many leave days do I have",
        code_reply("import math\nb = leave_balance()\nprint(b['remaining_days'])",
                   "I will check the balance."),
        code_reply("final_answer(f\"{b['employee']}, you have {b['remaining_days']} days of annual leave left.\")"),
    )
    done = run_ask(tmp_path, model_server, "hr: how many leave days do I have left?", "--user", "local")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WebAssembly sandbox" in done.stderr and "Docker engine is not reachable" in done.stderr, done.stderr
    assert "Dana Okafor, you have 11 days of annual leave left." in done.stdout
    assert "sk-test-cli-key" not in done.stdout + done.stderr

    model_server.model.script(
        "quote for 20 air sensors",
        code_reply("q = price_quote(sku='NW-AQ100', quantity=20, region='EU')\nprint(q)"),
        code_reply("final_answer(q)"),
    )
    done = run_ask(tmp_path, model_server, "sales: quote for 20 air sensors in the EU")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "NW-AQ100" in done.stdout and "EUR" in done.stdout


def test_marketing_says_it_cannot_run_in_the_wasm_sandbox(tmp_path, model_server):
    before = len(model_server.model.requests)
    done = run_ask(tmp_path, model_server, "marketing: chart my spend")
    out = done.stdout + done.stderr
    assert "The marketing department can't run here: it needs matplotlib, matplotlib.pyplot, numpy, pandas" in out
    assert "(wasm)" in out and "Traceback" not in out
    assert model_server.model.requests[before:] == []  # refused before any model call or sandbox


def test_dev_chooses_wasm_without_docker_and_local_only_when_asked(tmp_path, monkeypatch):
    import dataclasses

    from bots.emulator.app import Emulator
    from bots.emulator.dev import choose_sandbox, emulator_settings
    from tests.support import make_settings

    require_wasm_sandbox()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker-here.sock")
    said: list[str] = []
    settings = make_settings(tmp_path, None)
    assert settings.sandbox == "docker"  # the default: Docker first
    sandbox, reason = choose_sandbox(settings, said.append)
    assert sandbox == "wasm" and "Docker engine is not reachable" in reason
    assert any(line.startswith("NOTE: ") and "WebAssembly sandbox" in line for line in said), said
    banners = Emulator(emulator_settings(settings, sandbox=sandbox), reason).banners
    assert any("WebAssembly sandbox" in b.title for b in banners)
    assert choose_sandbox(dataclasses.replace(settings, sandbox="local"), said.append)[0] == "local"
    assert choose_sandbox(dataclasses.replace(settings, sandbox="wasm"), said.append)[0] == "wasm"
