"""Web search, run on the bot host (the sandbox has no network).

Not enabled in the bundled departments file, because it needs outbound network access from the host and
sends the agent's queries to a third party. To enable it for a department, add
"agents.tools.web:web_search" to that department's `tools`, then either
- let the host reach https://html.duckduckgo.com (the default backend, parsed from its HTML results page), or
- set SEARCH_API_URL to a JSON search endpoint, e.g. a SearXNG instance's `https://searx.example.com/search`
  (queried as `?q=...&format=json`, results read from `results[].title/url/content`); SEARCH_API_KEY, when
  set, is sent as a bearer token.
"""
from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser

from smolagents import tool

DUCKDUCKGO_URL = "https://html.duckduckgo.com/html/"
TIMEOUT_S = 10.0
_USER_AGENT = "Mozilla/5.0 (compatible; agentdesk web_search)"


class WebSearchError(RuntimeError):
    """Search could not be done; the message says why and what the operator can change."""


class _DuckDuckGoParser(HTMLParser):
    """Pulls title, url and snippet out of DuckDuckGo's no-JavaScript results page."""

    def __init__(self) -> None:
        super().__init__()
        self.results: list[dict] = []
        self._field: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if tag == "a" and "result__a" in classes:
            self.results.append({"title": "", "url": _unwrap(dict(attrs).get("href") or ""), "snippet": ""})
            self._field = "title"
        elif "result__snippet" in classes and self.results:
            self._field = "snippet"

    def handle_endtag(self, tag: str) -> None:
        if tag in ("a", "td", "div"):
            self._field = None

    def handle_data(self, data: str) -> None:
        if self._field and self.results:
            self.results[-1][self._field] += data


def _unwrap(href: str) -> str:
    """DuckDuckGo links go through a redirect (`//duckduckgo.com/l/?uddg=<target>`); return the target."""
    parsed = urllib.parse.urlparse(href)
    target = urllib.parse.parse_qs(parsed.query).get("uddg")
    return target[0] if target else href


def _fetch(url: str, headers: dict[str, str]) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, **headers})
    host = urllib.parse.urlparse(url).netloc
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        blocked = " (rate limited or blocked; try later or set SEARCH_API_URL)" if exc.code in (202, 403, 429) else ""
        raise WebSearchError(f"web search failed: {host} answered HTTP {exc.code}{blocked}") from None
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WebSearchError(
            f"web search is unreachable ({host}: {reason}). The bot host needs outbound HTTPS to it, "
            "or SEARCH_API_URL must name a search service the host can reach."
        ) from None


def _search_api(endpoint: str, query: str, limit: int) -> list[dict]:
    separator = "&" if urllib.parse.urlparse(endpoint).query else "?"
    url = f"{endpoint}{separator}{urllib.parse.urlencode({'q': query, 'format': 'json'})}"
    key = os.environ.get("SEARCH_API_KEY")
    body = _fetch(url, {"Accept": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        data = json.loads(body)
    except ValueError:
        raise WebSearchError("web search failed: SEARCH_API_URL did not answer with JSON") from None
    items = data.get("results", []) if isinstance(data, dict) else data
    return [
        {
            "title": str(item.get("title", "")).strip(),
            "url": str(item.get("url") or item.get("link") or ""),
            "snippet": str(item.get("content") or item.get("snippet") or "").strip(),
        }
        for item in items[:limit]
        if isinstance(item, dict)
    ]


def _duckduckgo(query: str, limit: int) -> list[dict]:
    body = _fetch(f"{DUCKDUCKGO_URL}?{urllib.parse.urlencode({'q': query})}", {"Accept": "text/html"})
    parser = _DuckDuckGoParser()
    parser.feed(body.decode("utf-8", errors="replace"))
    results = [{k: " ".join(v.split()) for k, v in r.items()} for r in parser.results if r["url"]]
    return results[:limit]


@tool
def web_search(query: str, max_results: int = 5) -> list:
    """Searches the public web and returns results as dicts with title, url and snippet. Use it for facts
    that are not in company data (news, competitors, public prices) and cite the urls.

    Args:
        query: The search terms.
        max_results: How many results to return (1-10).
    """
    if not query.strip():
        raise ValueError("web_search needs a non-empty query")
    limit = max(1, min(int(max_results), 10))
    endpoint = os.environ.get("SEARCH_API_URL")
    return _search_api(endpoint, query, limit) if endpoint else _duckduckgo(query, limit)
