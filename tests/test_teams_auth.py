"""Bot Framework JWT checks at POST /api/messages, over real HTTP.

Tokens are signed with a test RSA key whose JWKS is served, with OpenID metadata, from a server in another
thread (botbuilder fetches keys with blocking `requests`); the bot is pointed at it through the test-only
TEAMS_OPENID_METADATA_URL. botbuilder itself answers 500 for several of these forgeries; the bot must
answer 401 for every one, and never hand a forged activity to the runner.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import AsyncIterator

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.standins.teams_connector import personal_message
from tests.support import make_settings, serve

APP_ID = "1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d"
PASSWORD = "app-password-do-not-leak"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
ISSUER = "https://api.botframework.com"
SERVICE_URL = "https://smba.trafficmanager.net/amer/"
KID = "test-key-1"


class OpenIdServer:
    """OpenID metadata and a JWKS with one signing key, like login.botframework.com, on 127.0.0.1."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update(kid=KID, use="sig", endorsements=["msteams"])
        keys = {"keys": [jwk]}
        server_ref = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == "/v1/.well-known/openidconfiguration":
                    body = {"issuer": ISSUER, "jwks_uri": f"{server_ref.base_url}/v1/.well-known/keys",
                            "id_token_signing_alg_values_supported": ["RS256"]}
                elif self.path == "/v1/.well-known/keys":
                    body = keys
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def metadata_url(self) -> str:
        return f"{self.base_url}/v1/.well-known/openidconfiguration"

    def __enter__(self) -> "OpenIdServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def token(key, **overrides) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": APP_ID, "serviceurl": SERVICE_URL, "nbf": now - 10, "iat": now - 10,
              "exp": now + 600}
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": KID})


class RecordingRunner:
    """Stands in for TaskRunner: records what reached it (nothing forged may); dedupe uses a real store."""

    role = "all"
    draining = False

    def __init__(self, data_dir) -> None:
        from agents.state.sqlite import SqliteStore

        self.requests = []
        self.store = SqliteStore(data_dir)

    def register_platform(self, platform, replier_for, prepare=None) -> None:
        return None

    async def handle(self, request, replier) -> None:
        self.requests.append(request)


@pytest.fixture
def openid():
    with OpenIdServer() as server:
        yield server


@asynccontextmanager
async def serve_bot(tmp_path, monkeypatch, metadata_url: str | None,
                    **overrides) -> AsyncIterator[tuple[str, RecordingRunner]]:
    from bots.server import create_app

    if metadata_url:
        monkeypatch.setenv("TEAMS_OPENID_METADATA_URL", metadata_url)
    else:
        monkeypatch.delenv("TEAMS_OPENID_METADATA_URL", raising=False)
    values = dict(teams_app_id=APP_ID, teams_app_password=PASSWORD, teams_app_type="SingleTenant",
                  teams_app_tenant_id=TENANT, teams_allow_unauthenticated=False, slack_bot_token=None,
                  slack_signing_secret=None, slack_app_token=None)
    values.update(overrides)
    settings = make_settings(tmp_path, None, **values)
    runner = RecordingRunner(tmp_path / "state")
    app = create_app(settings, runner, start_runner=False)
    try:
        async with serve(app) as url:
            yield f"{url}/api/messages", runner
    finally:
        await runner.store.close()


async def post(url: str, authorization: str | None) -> int:
    body = personal_message(SERVICE_URL, "hr: how much leave do I have?")
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=body, headers=headers) as resp:
            return resp.status


async def test_every_forged_or_missing_token_is_401_and_never_reaches_the_runner(tmp_path, monkeypatch, openid,
                                                                                 caplog):
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    caplog.set_level(logging.DEBUG)
    forged = {
        "no Authorization header": None,
        "Bearer garbage": "Bearer garbage",
        "Basic scheme": "Basic dXNlcjpwYXNz",
        "wrong audience": "Bearer " + token(openid.key, aud="another-bot-id"),
        "signed by another key": "Bearer " + token(other_key),
        "expired": "Bearer " + token(openid.key, exp=int(time.time()) - 3600, nbf=int(time.time()) - 7200),
        "no issuer": "Bearer " + token(openid.key, iss=None),
        "wrong issuer": "Bearer " + token(openid.key, iss="https://evil.example"),
        "other serviceUrl": "Bearer " + token(openid.key, serviceurl="https://evil.example/amer/"),
    }
    async with serve_bot(tmp_path, monkeypatch, openid.metadata_url) as (url, runner):
        statuses = {name: await post(url, header) for name, header in forged.items()}
    assert statuses == {name: 401 for name in forged}
    assert runner.requests == []
    for name, header in forged.items():
        if header and len(header) > 40:
            assert header.split(" ", 1)[1] not in caplog.text, f"the {name} token was logged"
    assert PASSWORD not in caplog.text


async def test_token_signed_by_the_published_key_is_accepted(tmp_path, monkeypatch, openid):
    async with serve_bot(tmp_path, monkeypatch, openid.metadata_url) as (url, runner):
        status = await post(url, "Bearer " + token(openid.key))
        deadline = time.monotonic() + 10
        while not runner.requests and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    assert status == 201
    [request] = runner.requests
    assert request.platform == "teams" and request.text == "hr: how much leave do I have?"
    assert request.workspace == "72f988bf-86f1-41af-91ab-2d7cd011db47" and request.is_direct


async def test_without_app_id_every_request_is_refused_unless_development_mode(tmp_path, monkeypatch):
    async with serve_bot(tmp_path, monkeypatch, None, teams_app_id=None, teams_app_password=None) as (url, runner):
        assert await post(url, None) == 401
        assert await post(url, "Bearer whatever") == 401
    assert runner.requests == []


async def test_development_mode_accepts_unsigned_activities_and_warns(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING)
    async with serve_bot(tmp_path, monkeypatch, None, teams_app_id=None, teams_app_password=None,
                         teams_allow_unauthenticated=True) as (url, runner):
        assert await post(url, None) == 201
    assert "TEAMS_ALLOW_UNAUTHENTICATED" in caplog.text and "development only" in caplog.text


async def test_single_tenant_without_tenant_id_is_a_clear_startup_error(tmp_path, monkeypatch):
    from agents.settings import SettingsError

    with pytest.raises(SettingsError, match="TEAMS_APP_TENANT_ID"):
        async with serve_bot(tmp_path, monkeypatch, None, teams_app_tenant_id=None):
            pass


async def test_unreachable_signing_keys_are_503_so_the_channel_retries(tmp_path, monkeypatch, openid, caplog):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    metadata_url = f"http://127.0.0.1:{closed_port}/v1/.well-known/openidconfiguration"
    async with serve_bot(tmp_path, monkeypatch, metadata_url) as (url, runner):
        status = await post(url, "Bearer " + token(openid.key))
    assert status == 503 and runner.requests == []
    assert "could not fetch the Bot Framework signing keys" in caplog.text
