"""Web search and page reading, run on the bot host (the sandbox has no network).

Every request goes through the company's `[egress]` policy (agents/egress.py): public addresses only
unless an operator lists a host in `allow_private`, domain allow/deny lists, checked on the address that
is connected to and on every redirect. Each result is reported as a Source for task cards and citations.

Search backends (SEARCH_PROVIDER; SEARCH_API_URL overrides the provider's endpoint, SEARCH_API_KEY is its
key and is never logged or put in a span):
- `searxng` (default when SEARCH_API_URL is set): a SearXNG instance's JSON API, `<url>?q=...&format=json`,
  which a company can self-host (enable `json` in its `search.formats`);
- `brave`: Brave Search API (`X-Subscription-Token`), https://api.search.brave.com/res/v1/web/search;
- `tavily`: Tavily (`Authorization: Bearer`), https://api.tavily.com/search.
"""
from __future__ import annotations

import json
import os
import re
from html.parser import HTMLParser

from markdownify import markdownify
from smolagents import tool

from agents import egress
from agents.chat import Source
from agents.tools import report_sources

PROVIDERS = ("searxng", "brave", "tavily")
ENDPOINTS = {
    "brave": "https://api.search.brave.com/res/v1/web/search",
    "tavily": "https://api.tavily.com/search",
}
SEARCH_TIMEOUT_S = 10.0
PAGE_TIMEOUT_S = 15.0
PAGE_MAX_BYTES = 2_000_000
PAGE_MAX_CHARS = 8000
READABLE_TYPES = ("text/html", "application/xhtml+xml", "text/plain", "text/markdown", "application/json")


class WebSearchError(RuntimeError):
    """Search could not be done; the message says why and what the operator can change."""


def search_config() -> tuple[str, str, str | None]:
    """(provider, endpoint, key) from the environment; raises WebSearchError naming what is missing."""
    url = os.environ.get("SEARCH_API_URL") or None
    key = os.environ.get("SEARCH_API_KEY") or None
    provider = (os.environ.get("SEARCH_PROVIDER") or ("searxng" if url else "")).strip().lower()
    if not provider:
        raise WebSearchError("web search is not configured on this bot: an operator sets SEARCH_PROVIDER "
                             "(searxng, brave or tavily) and SEARCH_API_URL / SEARCH_API_KEY")
    if provider not in PROVIDERS:
        raise WebSearchError(f"SEARCH_PROVIDER={provider!r} is not one of {', '.join(PROVIDERS)}")
    endpoint = url or ENDPOINTS.get(provider)
    if not endpoint:
        raise WebSearchError("SEARCH_PROVIDER=searxng needs SEARCH_API_URL, e.g. https://searx.example.com/search")
    if provider in ("brave", "tavily") and not key:
        raise WebSearchError(f"SEARCH_PROVIDER={provider} needs SEARCH_API_KEY")
    return provider, endpoint, key


def _json(response: egress.Response, provider: str) -> dict:
    if response.status >= 400:
        hint = " (check SEARCH_API_KEY)" if response.status in (401, 403) else ""
        raise WebSearchError(f"web search failed: {provider} answered HTTP {response.status}{hint}")
    try:
        data = json.loads(response.body)
    except ValueError:
        raise WebSearchError(f"web search failed: {provider} did not answer with JSON "
                             "(for SearXNG, enable the json format in its settings)") from None
    if not isinstance(data, dict):
        raise WebSearchError(f"web search failed: unexpected answer from {provider}")
    return data


def _search(provider: str, endpoint: str, key: str | None, query: str, limit: int) -> list[dict]:
    common = dict(timeout_s=SEARCH_TIMEOUT_S, max_bytes=PAGE_MAX_BYTES)
    if provider == "searxng":
        headers = {"Accept": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
        data = _json(egress.fetch(endpoint, params={"q": query, "format": "json"}, headers=headers, **common), provider)
        items, snippet = data.get("results", []), "content"
    elif provider == "brave":
        headers = {"Accept": "application/json", "X-Subscription-Token": key or ""}
        data = _json(egress.fetch(endpoint, params={"q": query, "count": str(limit)}, headers=headers, **common),
                     provider)
        items, snippet = (data.get("web") or {}).get("results", []), "description"
    else:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        data = _json(egress.fetch(endpoint, method="POST", json_body={"query": query, "max_results": limit},
                                  headers=headers, **common), provider)
        items, snippet = data.get("results", []), "content"
    results = []
    for item in items:
        if isinstance(item, dict) and item.get("url"):
            results.append({
                "title": " ".join(str(item.get("title", "")).split()),
                "url": str(item["url"]),
                "snippet": " ".join(re.sub(r"<[^>]+>", "", str(item.get(snippet) or "")).split()),
            })
    return results[:limit]


@tool
def web_search(query: str, max_results: int = 5) -> list:
    """Searches the web. Returns a list of results, each a dict with title, url and snippet. Use it for facts
    that are not in company data (competitors, news, public prices); read a result with visit_webpage(url)
    and cite the urls you used.

    Args:
        query: The search terms, e.g. "Acme sensors pricing".
        max_results: How many results to return (1-10).
    """
    if not query.strip():
        raise ValueError("web_search needs a non-empty query")
    provider, endpoint, key = search_config()
    try:
        results = _search(provider, endpoint, key, query.strip(), max(1, min(int(max_results), 10)))
    except egress.EgressRefused as exc:
        raise WebSearchError(f"web search is blocked by this bot's egress policy: {exc}") from None
    except egress.FetchFailed as exc:
        raise WebSearchError(f"web search is unreachable: {exc}") from None
    report_sources(*(Source(title=r["title"] or r["url"], url=r["url"], abstract=r["snippet"][:300]) for r in results))
    return results


class _Title(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.title = ""
        self._in = False

    def handle_starttag(self, tag: str, attrs) -> None:
        self._in = tag == "title" and not self.title

    def handle_endtag(self, tag: str) -> None:
        self._in = False

    def handle_data(self, data: str) -> None:
        if self._in:
            self.title += data


def _readable(html: str) -> str:
    html = re.sub(r"(?is)<(script|style|noscript|svg|iframe|nav|footer|form)\b.*?</\1\s*>", "", html)
    text = markdownify(html, heading_style="ATX", strip=["img"])
    return re.sub(r"\n\s*\n(\s*\n)+", "\n\n", text).strip()


@tool
def visit_webpage(url: str) -> str:
    """Reads a web page and returns its text as Markdown (the start of it, for long pages). Use it on a url
    from web_search to get the facts, then cite the url.

    Args:
        url: The full http(s) URL of the page.
    """
    try:
        page = egress.fetch(url.strip(), timeout_s=PAGE_TIMEOUT_S, max_bytes=PAGE_MAX_BYTES,
                            headers={"Accept": ", ".join(READABLE_TYPES)}, content_types=READABLE_TYPES)
    except egress.EgressRefused as exc:
        raise PermissionError(f"{url} was not fetched: {exc}") from None
    except egress.FetchFailed as exc:
        raise ConnectionError(f"{url} could not be read: {exc}") from None
    if page.status >= 400:
        raise ConnectionError(f"{url} answered HTTP {page.status}")
    raw = page.body.decode("utf-8", errors="replace")
    title = ""
    if page.content_type in ("text/html", "application/xhtml+xml"):
        parser = _Title()
        parser.feed(raw)
        title = " ".join(parser.title.split())
        text = _readable(raw)
    else:
        text = raw.strip()
    notes = []
    if len(text) > PAGE_MAX_CHARS:
        text = text[:PAGE_MAX_CHARS].rstrip()
        notes.append(f"(page cut at {PAGE_MAX_CHARS} characters)")
    elif page.truncated:
        notes.append(f"(page cut at {PAGE_MAX_BYTES // 1000} kB)")
    report_sources(Source(title=title or page.url, url=page.url, abstract=" ".join(text.split())[:300]))
    header = f"# {title}\n" if title else ""
    return f"{header}URL: {page.url}\n\n{text}" + (f"\n\n{' '.join(notes)}" if notes else "")
