"""A local Microsoft Graph stand-in over real HTTP: the token endpoint and the calls bots/teams/graph.py makes.

- POST /{tenant}/oauth2/v2.0/token: client credentials, checked against the configured app and secret;
- GET channel/chat messages with `reference` attachments, as Graph returns them;
- GET /shares/u!{base64url}/driveItem/content for files registered under their SharePoint URL;
- GET a channel's filesFolder, PUT /drives/{d}/items/{folder}:/{name}:/content, PUT into a user's drive,
  POST createLink;
- GET /users/{id}/transitiveMemberOf/microsoft.graph.group, paged (one group a page, to exercise nextLink).
Every /v1.0 call needs the issued bearer token.
"""
from __future__ import annotations

import base64
import contextlib
import itertools
from dataclasses import dataclass, field
from urllib.parse import unquote

from aiohttp import web

from tests.support import serve

CLIENT_ID = "9d1f0c7a-graph-app-0000-000000000001"
CLIENT_SECRET = "graph-secret-do-not-leak"


@dataclass
class Upload:
    where: str  # "channel:<drive>/<folder>" or "user:<id>"
    name: str
    data: bytes
    content_type: str
    item_id: str
    web_url: str
    links: list[dict] = field(default_factory=list)


class GraphStandIn:
    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.token = "graph-token-" + "x" * 24
        self.token_requests: list[dict] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.messages: dict[str, dict] = {}
        self.drive_files: dict[str, bytes] = {}
        self.groups: dict[str, list[str]] = {}
        self.uploads: list[Upload] = []
        self._ids = itertools.count(1)
        self._stack = contextlib.AsyncExitStack()
        self.base_url = ""

    async def __aenter__(self) -> "GraphStandIn":
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        app.router.add_route("*", "/v1.0/{path:.*}", self._graph)
        self.base_url = await self._stack.enter_async_context(serve(app))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/v1.0"

    # -- test setup -------------------------------------------------------------------------------------
    def add_channel_message(self, team: str, channel: str, message_id: str, files: dict[str, bytes],
                            root_id: str | None = None) -> None:
        path = f"teams/{team}/channels/{channel}/messages/"
        path += f"{root_id}/replies/{message_id}" if root_id and root_id != message_id else message_id
        self.messages[path] = self._message(message_id, files)

    def add_chat_message(self, chat: str, message_id: str, files: dict[str, bytes]) -> None:
        self.messages[f"chats/{chat}/messages/{message_id}"] = self._message(message_id, files)

    def _message(self, message_id: str, files: dict[str, bytes]) -> dict:
        attachments = []
        for name, data in files.items():
            url = f"https://contoso.sharepoint.com/sites/people/Shared%20Documents/General/{name}"
            self.drive_files[url] = data
            attachments.append({"id": f"att-{next(self._ids)}", "contentType": "reference", "contentUrl": url,
                                "name": name, "content": None})
        return {"id": message_id, "messageType": "message", "body": {"contentType": "html", "content": "<p>x</p>"},
                "attachments": attachments}

    # -- handlers ---------------------------------------------------------------------------------------
    async def _token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.token_requests.append(form)
        if (request.match_info["tenant"] != self.tenant or form.get("grant_type") != "client_credentials"
                or form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET
                or form.get("scope") != "https://graph.microsoft.com/.default"):
            return web.json_response({"error": "invalid_client"}, status=401)
        return web.json_response({"token_type": "Bearer", "expires_in": 3599, "access_token": self.token})

    async def _graph(self, request: web.Request) -> web.StreamResponse:
        path = unquote(request.match_info["path"])
        self.requests.append((request.method, path, dict(request.headers)))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "InvalidAuthenticationToken", "Access token is empty or invalid.")
        method = request.method
        if method == "GET" and path in self.messages:
            return web.json_response(self.messages[path])
        if method == "GET" and path.startswith("shares/u!") and path.endswith("/driveItem/content"):
            encoded = path[len("shares/u!"):-len("/driveItem/content")]
            url = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            if url not in self.drive_files:
                return _error(404, "itemNotFound", "The resource could not be found.")
            return web.Response(body=self.drive_files[url], content_type="application/octet-stream")
        parts = path.split("/")
        if method == "GET" and len(parts) == 5 and parts[0] == "teams" and parts[4] == "filesFolder":
            return web.json_response({"id": f"folder-{parts[3]}", "name": "General",
                                      "parentReference": {"driveId": f"drive-{parts[1]}"},
                                      "webUrl": "https://contoso.sharepoint.com/sites/people/Shared%20Documents/General"})
        if method == "PUT" and path.startswith("drives/") and path.endswith(":/content"):
            drive, _, rest = path[len("drives/"):].partition("/items/")
            folder, _, name = rest[: -len(":/content")].partition(":/")
            return await self._store(request, f"channel:{drive}/{folder}", name, drive)
        if method == "PUT" and path.startswith("users/") and path.endswith(":/content"):
            user, _, rest = path[len("users/"):].partition("/drive/root:/")
            folder, _, name = rest[: -len(":/content")].rpartition("/")
            if folder != "Microsoft Teams Chat Files":
                return _error(400, "invalidRequest", "unexpected folder")
            return await self._store(request, f"user:{user}", name, f"drive-of-{user}")
        if method == "POST" and path.startswith("drives/") and path.endswith("/createLink"):
            item = path.split("/")[3]
            upload = next((u for u in self.uploads if u.item_id == item), None)
            if upload is None:
                return _error(404, "itemNotFound", "no such item")
            body = await request.json()
            upload.links.append(body)
            return web.json_response({"link": {"type": body.get("type"), "scope": body.get("scope"),
                                               "webUrl": f"https://contoso-my.sharepoint.com/:x:/g/{item}"}},
                                     status=201)
        if method == "GET" and len(parts) == 4 and parts[0] == "users" and parts[2] == "transitiveMemberOf":
            groups = self.groups.get(parts[1], [])
            page = int(request.query.get("$skiptoken", "0"))
            body: dict = {"value": [{"@odata.type": "#microsoft.graph.group", "id": g} for g in groups[page:page + 1]]}
            if page + 1 < len(groups):
                body["@odata.nextLink"] = (f"{self.api_url}/users/{parts[1]}/transitiveMemberOf/microsoft.graph.group"
                                           f"?$select=id&$skiptoken={page + 1}")
            return web.json_response(body)
        return _error(404, "itemNotFound", f"no stand-in for {method} /{path}")

    async def _store(self, request: web.Request, where: str, name: str, drive: str) -> web.Response:
        if request.query.get("@microsoft.graph.conflictBehavior") != "rename":
            return _error(400, "invalidRequest", "expected conflictBehavior=rename")
        item = f"item-{next(self._ids)}"
        upload = Upload(where, name, await request.read(), request.headers.get("Content-Type", ""), item,
                        f"https://contoso.sharepoint.com/sites/people/Shared%20Documents/General/{name}")
        self.uploads.append(upload)
        return web.json_response({"id": item, "name": name, "size": len(upload.data), "webUrl": upload.web_url,
                                  "parentReference": {"driveId": drive}}, status=201)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)
