"""GET /metrics in Prometheus text format (OpenMetrics when the scraper asks for it)."""
from __future__ import annotations

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from agents import metrics


async def handle(request: web.Request) -> web.Response:
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(metrics.REGISTRY)
    return web.Response(body=body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})
