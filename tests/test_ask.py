"""`agentdesk ask` end to end: the real CLI process, the scripted model over HTTP, the Docker sandbox.

One question per example department; the agent's code runs in the hardened container, its tools run on the
host through the bridge with the asker's identity, a shared file goes in and a chart comes out.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sandbox_support import require_docker_sandbox, sandbox_settings
from tests.standins.model_server import code_reply

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def docker_ready(tmp_path_factory):
    require_docker_sandbox(sandbox_settings(tmp_path_factory.mktemp("probe")))


def run_ask(tmp_path: Path, model_server, *args: str) -> subprocess.CompletedProcess:
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "TEAMS_", "MODEL_", "OTEL_", "AGENTDESK_", "SANDBOX"))
    }
    env.update(
        MODEL_API_BASE=model_server.base_url, MODEL_ID="scripted", MODEL_API_KEY="sk-test-cli-key-0123456789",
        AGENTDESK_DATA_DIR=str(tmp_path / "data"), SANDBOX="docker", SANDBOX_POOL_SIZE="1", HF_TOKEN="",
    )
    return subprocess.run(
        [sys.executable, "-m", "bots", "ask", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=180,
    )


def test_hr_leave_balance_is_the_askers_own(tmp_path, model_server, docker_ready):
    model_server.model.script(
        "how many leave days do I have",
        code_reply("b = leave_balance()\nprint(b['remaining_days'])", "I will check the balance."),
        code_reply("final_answer(f\"{b['employee']}, you have {b['remaining_days']} days of annual leave left.\")"),
    )
    done = run_ask(tmp_path, model_server, "hr: how many leave days do I have left?", "--user", "local")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Step 1: I will check the balance" in done.stdout
    assert "Dana Okafor, you have 11 days of annual leave left." in done.stdout
    assert "sk-test-cli-key" not in done.stdout + done.stderr


def test_sales_quote_by_region(tmp_path, model_server, docker_ready):
    model_server.model.script(
        "quote for 20 air sensors",
        code_reply("q = price_quote(sku='NW-AQ100', quantity=20, region='EU')\nprint(q)"),
        code_reply("final_answer(q)"),
    )
    done = run_ask(tmp_path, model_server, "sales: quote for 20 air sensors in the EU")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SALES answer" in done.stdout
    assert "NW-AQ100" in done.stdout and "EUR" in done.stdout


def test_marketing_reads_a_csv_and_returns_a_chart(tmp_path, model_server, docker_ready):
    csv = tmp_path / "spend.csv"
    csv.write_text("month,spend\n2026-01,1200\n2026-02,1800\n2026-03,900\n")
    model_server.model.script(
        "chart my spend",
        code_reply(
            "import pandas as pd\nimport matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
            "df = pd.read_csv(INPUT_FILES[0])\ndf.plot(x='month', y='spend', kind='bar')\n"
            "plt.savefig(OUTPUT_DIR + '/spend-by-month.png')\nplt.close()\nprint(int(df.spend.sum()))",
            "I will chart the spend from the file.",
        ),
        code_reply("final_answer(f'Total spend was {int(df.spend.sum())}; the chart is attached.')"),
    )
    out = tmp_path / "results"
    done = run_ask(tmp_path, model_server, "marketing: chart my spend", "--file", str(csv), "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Total spend was 3900; the chart is attached." in done.stdout
    chart = out / "spend-by-month.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert chart.stat().st_size > 2000


def test_ask_reports_a_missing_model_clearly(tmp_path, model_server):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_", "HF_", "SANDBOX"))}
    env.update(AGENTDESK_DATA_DIR=str(tmp_path / "data"), SANDBOX="local")
    done = subprocess.run([sys.executable, "-m", "bots", "ask", "hr: hello"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "no AI model is configured" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
