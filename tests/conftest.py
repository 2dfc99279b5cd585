import os

import pytest

from tests.standins.model_server import ModelServer, ScriptedModel

# What configures a deployment: a developer's shell (say, MODEL_* set for bench/eval.py) must not change what
# the tests run against. SANDBOX_IMAGE and SANDBOX_RUNTIME describe the machine and stay.
DEPLOYMENT_PREFIXES = ("MODEL_", "SLACK_", "TEAMS_", "GRAPH_", "OTEL_", "AGENTDESK_", "SEARCH_")
DEPLOYMENT_NAMES = {"HF_TOKEN", "REDIS_URL", "SANDBOX", "SANDBOX_POOL_SIZE", "SANDBOX_CPUS", "SANDBOX_MEMORY_MB",
                    "SANDBOX_PIDS", "HOST", "PORT"}


def pytest_configure(config):
    for name in [n for n in os.environ if n.startswith(DEPLOYMENT_PREFIXES) or n in DEPLOYMENT_NAMES]:
        del os.environ[name]


@pytest.fixture
def model_server():
    """A scripted OpenAI-compatible model over real HTTP; tests add scripts with .model.script(...)."""
    with ModelServer(ScriptedModel()) as server:
        yield server
