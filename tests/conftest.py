import pytest

from tests.standins.model_server import ModelServer, ScriptedModel


@pytest.fixture
def model_server():
    """A scripted OpenAI-compatible model over real HTTP; tests add scripts with .model.script(...)."""
    with ModelServer(ScriptedModel()) as server:
        yield server
