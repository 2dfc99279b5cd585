"""A SearXNG-compatible search stand-in with its own web pages, over loopback HTTP.

`GET /search?q=...&format=json` answers like SearXNG's JSON API (`results[].title/url/content`), ranking a
small fixed corpus of competitor pages by word overlap; every result URL points back at this server
(`/pages/<slug>`), so `visit_webpage` can read them. `/redirect?to=<url>` answers 302 to any URL (for the
egress tests). For the emulator or bench/eval.py:

    python -m tests.standins.search_server --port 8899 &
    SEARCH_PROVIDER=searxng SEARCH_API_URL=http://127.0.0.1:8899/search  # and allow_private = ["127.0.0.1"]
"""
from __future__ import annotations

import argparse
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

#: slug -> (title, snippet, page body). Fictional competitors of Northwind Labs (air-quality sensors).
PAGES: dict[str, tuple[str, str, str]] = {
    "airwise-aw3-launch": (
        "Airwise launches AW-3 indoor air quality sensor",
        "Airwise announced the AW-3, a CO2 and particulate sensor for offices, priced at $179 per unit.",
        "<h1>Airwise launches AW-3</h1><p>Airwise today announced the <b>AW-3</b>, an indoor air quality sensor "
        "that measures CO2, PM2.5 and humidity. The AW-3 is priced at <b>$179 per unit</b>, with volume discounts "
        "from 50 units. Battery life is rated at 5 years. Shipping starts in March.</p>"
        "<p>Airwise is headquartered in Rotterdam and sells through distributors in 14 countries.</p>",
    ),
    "sensora-funding": (
        "Sensora raises $40 million Series C for building analytics",
        "Sensora, maker of the Sensora Hub gateway, raised a $40 million Series C led by Harbor Ventures.",
        "<h1>Sensora raises $40M</h1><p>Sensora, the building analytics company behind the <b>Sensora Hub</b> "
        "gateway, has raised a <b>$40 million Series C</b> led by Harbor Ventures. The company employs 220 people "
        "and plans to open an office in Singapore.</p><script>track()</script>",
    ),
    "climacore-pricing": (
        "ClimaCore pricing: Cloud dashboard plans",
        "ClimaCore Cloud costs $12 per sensor per month on the Team plan; Enterprise is quoted.",
        "<h1>ClimaCore pricing</h1><table><tr><th>Plan</th><th>Price</th></tr>"
        "<tr><td>Team</td><td>$12 per sensor per month</td></tr><tr><td>Enterprise</td><td>Contact sales</td></tr>"
        "</table><p>Annual billing saves 15%.</p>",
    ),
    "iaq-market-report": (
        "Indoor air quality monitor market report 2026",
        "The indoor air quality monitor market is expected to grow 9% a year; Airwise, Sensora and ClimaCore lead.",
        "<h1>IAQ market report</h1><p>The indoor air quality monitor market is forecast to grow <b>9% per year</b> "
        "to 2030. Leading vendors: Airwise, Sensora and ClimaCore.</p>",
    ),
}


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) > 2}


class SearchStandIn:
    """Serves on 127.0.0.1 in a thread; `search_url` is what SEARCH_API_URL should be."""

    def __init__(self, port: int = 0) -> None:
        self.queries: list[dict] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                parsed = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
                if parsed.path == "/search":
                    stand_in.queries.append({**query, "authorization": self.headers.get("Authorization")})
                    if query.get("format") != "json":
                        return self._send(403, "text/html", b"<h1>403 Forbidden</h1>")
                    results = self._rank(query.get("q", ""))
                    body = {"query": query.get("q", ""), "number_of_results": len(results), "results": results}
                    return self._send(200, "application/json", json.dumps(body).encode())
                if parsed.path == "/res/v1/web/search":  # Brave's API shape
                    stand_in.queries.append({**query, "token": self.headers.get("X-Subscription-Token")})
                    results = [{"title": r["title"], "url": r["url"], "description": r["content"]}
                               for r in self._rank(query.get("q", ""))]
                    return self._send(200, "application/json", json.dumps({"web": {"results": results}}).encode())
                if parsed.path.startswith("/pages/") and parsed.path[7:] in PAGES:
                    title, _, html = PAGES[parsed.path[7:]]
                    page = f"<html><head><title>{title}</title><style>p{{}}</style></head><body>{html}</body></html>"
                    return self._send(200, "text/html; charset=utf-8", page.encode())
                if parsed.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", query.get("to", "/"))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                if parsed.path == "/binary":
                    return self._send(200, "application/octet-stream", b"\x00" * 64)
                if parsed.path == "/huge":
                    return self._send(200, "text/plain", b"x" * 3_000_000)
                return self._send(404, "text/plain", b"not found")

            def do_POST(self) -> None:  # noqa: N802 - Tavily's API shape
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                stand_in.queries.append({**body, "authorization": self.headers.get("Authorization")})
                if urlparse(self.path).path != "/tavily":
                    return self._send(404, "text/plain", b"not found")
                results = self._rank(body.get("query", ""))
                return self._send(200, "application/json", json.dumps({"results": results}).encode())

            def _rank(self, text: str) -> list[dict]:
                wanted = _words(text)
                scored = sorted(((len(wanted & _words(t + " " + s)), slug) for slug, (t, s, _) in PAGES.items()),
                                key=lambda p: -p[0])
                base = f"http://{self.headers.get('Host')}"
                return [{"title": PAGES[slug][0], "url": f"{base}/pages/{slug}", "content": PAGES[slug][1]}
                        for score, slug in scored if score > 0]

            def _send(self, status: int, kind: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def search_url(self) -> str:
        return f"{self.base_url}/search"

    def __enter__(self) -> "SearchStandIn":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8899)
    args = parser.parse_args()
    with SearchStandIn(args.port) as server:
        print(f"SearXNG stand-in: SEARCH_PROVIDER=searxng SEARCH_API_URL={server.search_url}", flush=True)
        server._thread.join()


if __name__ == "__main__":
    main()
