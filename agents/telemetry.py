"""OpenTelemetry setup and the request span every platform adapter opens.

(Minimal version; setup from the standard OTEL_* variables, content policy and redaction are filled in by
the tracing work.)
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from opentelemetry import trace

from agents.chat import ChatRequest

tracer = trace.get_tracer("agentdesk")


@contextmanager
def request_span(name: str, request: ChatRequest, **attributes: str) -> Iterator[trace.Span]:
    """The root span of one chat request (Slack event, Teams activity, terminal ask)."""
    attrs = {
        "agentdesk.platform": request.platform,
        "agentdesk.workspace": request.workspace,
        "agentdesk.channel": request.channel,
        "agentdesk.thread": request.thread,
        "agentdesk.user_hash": request.caller.hashed_user,
        **attributes,
    }
    with tracer.start_as_current_span(name, attributes=attrs) as span:
        yield span


def setup_logging(verbose: bool = False) -> None:
    """Plain structured-ish logs on stderr; the tracing work adds trace and span ids."""
    import logging

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    for noisy in ("httpx", "httpx2", "openai", "urllib3", "docker"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def setup_tracing(settings) -> None:
    """Export spans over OTLP when an endpoint is configured (filled in by the tracing work)."""
