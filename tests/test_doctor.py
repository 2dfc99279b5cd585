"""`agentdesk doctor` against broken and healthy configurations, over real HTTP to local stand-ins."""
from __future__ import annotations

import io
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bots.doctor import run_doctor
from tests.support import make_settings

GUID = "0b1e7c7a-2f5d-4c43-9a0e-7d0c3b1a5e11"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Server:
    """A tiny HTTP server answering every request with one status; records the paths it saw."""

    def __init__(self, status: int, body: bytes = b"{}") -> None:
        self.paths: list[tuple[str, str, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                outer.paths.append((self.command, self.path, dict(self.headers)))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def otlp():
    server = _Server(200, b"")
    yield server
    server.close()


def _doctor(settings) -> tuple[int, str]:
    out = io.StringIO()
    return run_doctor(settings, out=out), out.getvalue()


def test_broken_configuration_names_every_problem(tmp_path):
    settings = make_settings(
        tmp_path, f"http://127.0.0.1:{_closed_port()}/v1", sandbox="local",
        slack_bot_token="xoxp-1234-user-token", slack_signing_secret="not-a-signing-secret",
        config_path=tmp_path / "missing-departments.toml",
    )
    code, text = _doctor(settings)
    assert code == 1
    assert "✗ departments file" in text and "missing-departments.toml: file not found" in text
    assert "SLACK_BOT_TOKEN is a user token (xoxp-), not a bot token" in text
    assert "SLACK_SIGNING_SECRET should be 32 hexadecimal characters" in text
    assert "✗ model: connection refused" in text and "nothing is listening there" in text
    assert "problems to fix" in text


def test_broken_teams_registration(tmp_path, model_server):
    settings = make_settings(tmp_path, model_server.base_url, sandbox="local", teams_app_id="my-bot",
                             teams_app_type="SingleTenant", teams_app_tenant_id=None, teams_app_password=None)
    code, text = _doctor(settings)
    assert code == 1
    assert "TEAMS_APP_ID 'my-bot' is not a GUID" in text
    assert "TEAMS_APP_TYPE=SingleTenant needs TEAMS_APP_TENANT_ID" in text
    assert "TEAMS_APP_PASSWORD is unset" in text


def test_model_endpoint_refusing_the_key(tmp_path):
    server = _Server(401, b'{"error": {"message": "invalid api key"}}')
    try:
        code, text = _doctor(make_settings(tmp_path, server.url + "/v1", sandbox="local"))
    finally:
        server.close()
    assert code == 1
    assert f"✗ model: {server.url}/v1 refused the API key (HTTP 401)" in text
    assert "MODEL_API_KEY" in text
    method, path, headers = server.paths[0]
    assert (method, path) == ("GET", "/v1/models")
    assert headers.get("Authorization") == "Bearer sk-test-model-key-do-not-leak"
    assert "sk-test-model-key-do-not-leak" not in text


def test_wrong_model_id_and_missing_api(tmp_path, model_server):
    code, text = _doctor(make_settings(tmp_path, model_server.base_url, sandbox="local", model_id="gpt-nope"))
    assert code == 1
    assert "does not serve MODEL_ID='gpt-nope'" in text and "scripted" in text

    server = _Server(404, b"not found")
    try:
        code, text = _doctor(make_settings(tmp_path, server.url, sandbox="local"))
    finally:
        server.close()
    assert code == 1
    assert "no OpenAI-compatible API" in text and "ending in /v1" in text


def test_unreachable_tracing_and_unwritable_data_folder(tmp_path, model_server):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    settings = make_settings(tmp_path, model_server.base_url, sandbox="local",
                             otlp_endpoint=f"http://127.0.0.1:{_closed_port()}", data_dir=blocker / "data")
    code, text = _doctor(settings)
    assert code == 1
    assert "✗ tracing: connection refused" in text and "/v1/traces" in text
    assert "✗ data folder" in text and "AGENTDESK_DATA_DIR" in text


def test_no_model_configured_says_how_to_set_one(tmp_path):
    code, text = _doctor(make_settings(tmp_path, None, sandbox="local", hf_token=None))
    assert code == 1
    assert "✗ model: no model is configured" in text and "MODEL_API_BASE" in text and "HF_TOKEN" in text


def test_settings_errors_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SANDBOX", "podman")
    out = io.StringIO()
    assert run_doctor(out=out) == 1
    assert "✗ configuration: SANDBOX must be one of docker, wasm, local, got 'podman'" in out.getvalue()


def test_healthy_configuration_passes(tmp_path, model_server, otlp):
    settings = make_settings(
        tmp_path, model_server.base_url, sandbox="local", otlp_endpoint=otlp.url,
        slack_bot_token="xoxb-1111-2222-abcdefabcdef", slack_signing_secret="0123456789abcdef0123456789abcdef",
        teams_app_id=GUID, teams_app_password="secret-value", teams_app_tenant_id=GUID,
    )
    code, text = _doctor(settings)
    assert code == 0, text
    assert f"✓ model: {model_server.base_url} answers and serves scripted" in text
    assert "✓ Slack: token shapes look right (Events API over HTTP)" in text
    assert "✓ Teams" in text and "✓ departments file" in text and "✓ data folder" in text
    assert f"✓ tracing: OTLP/HTTP receiver at {otlp.url}/v1/traces answers" in text
    assert ("POST", "/v1/traces") == otlp.paths[0][:2]
    assert otlp.paths[0][2].get("Content-Type") == "application/x-protobuf"
    assert "⚠ sandbox: SANDBOX=local" in text
    assert "All required checks passed" in text
    for secret in settings.secrets():
        assert secret not in text


@pytest.mark.docker
def test_healthy_with_the_docker_sandbox(tmp_path, model_server):
    from agents.sandbox.image import image_exists

    settings = make_settings(tmp_path, model_server.base_url, sandbox="docker")
    if not image_exists(settings):
        if os.environ.get("CI") == "true":
            pytest.fail("the sandbox image must exist in CI (scripts/test.sh builds it)")
        pytest.skip("no Docker engine with the sandbox image here (agentdesk sandbox build)")
    code, text = _doctor(settings)
    assert code == 0, text
    assert "✓ sandbox: Docker engine" in text and settings.sandbox_image in text


def test_docker_engine_unreachable(tmp_path, model_server, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{_closed_port()}")
    code, text = _doctor(make_settings(tmp_path, model_server.base_url, sandbox="docker"))
    assert code == 1
    assert "✗ sandbox: Docker engine not reachable" in text and "fix:" in text
