"""Tracing, logs and their hygiene: one OpenTelemetry trace per chat request, exported over OTLP.

Shape of the pipeline (set up by `setup_tracing(settings)`):

    agentdesk spans + openinference's smolagents spans
        -> _Switch (the process-wide provider; delegates to the active SDK provider, or a no-op)
        -> TracerProvider -> BatchSpanProcessor (export happens off the request path)
        -> PolicyExporter (content policy, secret/PII redaction and size caps, applied to every attribute)
        -> OTLP exporter (http/protobuf, or grpc when installed)

The policy lives in the exporter because spans are immutable once ended and openinference sets most of
its attributes itself: rewriting copies of the finished spans just before export is the one place that
sees every attribute from every instrumentation, and it runs in the batch thread, not in a request.
Without an endpoint nothing is installed: spans are no-ops and smolagents is not instrumented.
"""
from __future__ import annotations

import atexit
import datetime
import hashlib
import importlib.util
import json
import logging
import os
import re
import sys
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from importlib import metadata
from typing import Any, Iterator, Mapping, Sequence

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Status

from agents import metrics
from agents.chat import ChatRequest
from agents.security import Redactor, cap

log = logging.getLogger("agentdesk.telemetry")

#: Longest attribute value that leaves the process (after redaction).
VALUE_LIMIT = 4096
#: Longest value the SDK keeps in memory before export: only a guard against runaway values. It must be far
#: larger than VALUE_LIMIT: redaction runs on the whole value before the cap (a secret cut in half by the
#: SDK's truncation would no longer match), and the streamed AGENT output must keep its final answer, which
#: comes last (see _agent_output).
MEMORY_LIMIT = 8 * 1024 * 1024
MAX_SEQUENCE_ITEMS = 64
CONTENT_MODES = ("full", "redacted", "off")
HIDDEN = "[hidden: AGENTDESK_TRACE_CONTENT=off]"
REDACTED = "[redacted]"

# Attributes that carry prompts, code, tool arguments or outputs (OpenInference and agentdesk names).
_CONTENT_KEYS = {
    "input.value", "output.value", "smolagents.task", "smolagents.additional_args",
    "agentdesk.code", "agentdesk.output",
}
_CONTENT_PREFIXES = ("llm.input_messages", "llm.output_messages", "llm.prompts", "llm.choices")
_DROPPED_WHEN_OFF_PREFIXES = ("llm.input_messages", "llm.output_messages")
_EVENT_KEYS_KEPT_WHEN_OFF = {"exception.type", "exception.escaped", "type", "severity"}
# Caller identity in free text: redacted mode removes e-mail addresses and the asker's own identifiers.
# The lookbehind keeps it linear on long runs of word characters (no retry from inside a run).
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}\b")
_FINAL_ANSWER_MARK = "FinalAnswerStep(output="


def _is_content(key: str) -> bool:
    return key in _CONTENT_KEYS or key.startswith(_CONTENT_PREFIXES)


# --- the switchable provider -------------------------------------------------------------------------


class _SwitchTracer(trace.Tracer):
    """A tracer that always uses the provider active right now (so setup can change after import)."""

    def __init__(self, switch: "_Switch", args: tuple) -> None:
        self._switch = switch
        self._args = args
        self._cached: tuple[trace.TracerProvider, trace.Tracer] | None = None

    def _tracer(self) -> trace.Tracer:
        active = self._switch.active
        cached = self._cached
        if cached is None or cached[0] is not active:
            cached = (active, active.get_tracer(*self._args))
            self._cached = cached
        return cached[1]

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return self._tracer().start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        return self._tracer().start_as_current_span(*args, **kwargs)


class _Switch(trace.TracerProvider):
    """The one provider agentdesk and openinference hold; tests and setup swap what is behind it."""

    def __init__(self) -> None:
        self.active: trace.TracerProvider = trace.NoOpTracerProvider()

    def get_tracer(self, instrumenting_module_name: str, instrumenting_library_version: str | None = None,
                   schema_url: str | None = None, attributes: Any = None) -> trace.Tracer:
        return _SwitchTracer(self, (instrumenting_module_name, instrumenting_library_version, schema_url, attributes))


_SWITCH = _Switch()
tracer = _SWITCH.get_tracer("agentdesk")


class _State:
    """What setup_tracing decided; read by request_span, the exporter and the log formatter."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.provider: TracerProvider | None = None
        self.exporter: PolicyExporter | None = None
        self.content = "redacted"
        self.redactor: Redactor | None = None
        self.instrumented_mode: str | None = None
        self.atexit_registered = False
        self.global_set = False


_STATE = _State()
# Identifiers of the person behind each live trace (trace id -> strings), for redacted mode.
_IDENTITIES: "OrderedDict[int, tuple[str, ...]]" = OrderedDict()
_IDENTITIES_MAX = 4096
_IDENTITIES_LOCK = threading.Lock()


# --- content policy ----------------------------------------------------------------------------------


class ContentPolicy:
    """Rewrites finished spans: content per AGENTDESK_TRACE_CONTENT, secrets and PII out, sizes capped."""

    def __init__(self, mode: str, redactor: Redactor, limit: int = VALUE_LIMIT) -> None:
        if mode not in CONTENT_MODES:
            raise ValueError(f"trace content mode must be one of {', '.join(CONTENT_MODES)}, got {mode!r}")
        self.mode = mode
        self.redactor = redactor
        self.limit = limit

    def text(self, value: str, identities: Sequence[str] = ()) -> str:
        value = self.redactor(value) or value
        if self.mode == "redacted":
            for ident in identities:
                value = value.replace(ident, REDACTED)
            value = _EMAIL.sub(REDACTED, value)
        return cap(value, self.limit) or ""

    def _value(self, value: Any, identities: Sequence[str]) -> Any:
        if isinstance(value, str):
            return self.text(value, identities)
        if isinstance(value, (list, tuple)):
            return tuple(self.text(v, identities) if isinstance(v, str) else v for v in value[:MAX_SEQUENCE_ITEMS])
        return value

    def attributes(self, attributes: Mapping[str, Any] | None, identities: Sequence[str] = (),
                   agent_span: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in (attributes or {}).items():
            if self.mode == "off" and _is_content(key):
                if key.startswith(_DROPPED_WHEN_OFF_PREFIXES) or not isinstance(value, str):
                    continue
                out[key] = HIDDEN
                continue
            if agent_span and key == "output.value" and isinstance(value, str):
                value = _agent_output(value)
            out[key] = self._value(value, identities)
        return out

    def event(self, event: Event, identities: Sequence[str]) -> Event:
        attrs = dict(event.attributes or {})
        if self.mode == "off":
            attrs = {k: v for k, v in attrs.items() if k in _EVENT_KEYS_KEPT_WHEN_OFF or not isinstance(v, str)}
        return Event(event.name, {k: self._value(v, identities) for k, v in attrs.items()}, event.timestamp)

    def status(self, status: Status, identities: Sequence[str]) -> Status:
        if not status.description:
            return status
        description = status.description
        if self.mode == "off":
            description = description.split(":", 1)[0]
        return Status(status.status_code, self.text(description, identities))

    def rewrite(self, span: ReadableSpan) -> ReadableSpan:
        """A copy of `span` fit to leave the process."""
        identities = _identities(span.context.trace_id) if span.context else ()
        agent_span = (span.attributes or {}).get("openinference.span.kind") == "AGENT"
        return ReadableSpan(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=self.attributes(span.attributes, identities, agent_span),
            events=[self.event(e, identities) for e in span.events],
            links=span.links,
            kind=span.kind,
            status=self.status(span.status, identities),
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )


def _agent_output(value: str) -> str:
    """The useful part of an AGENT span's output.

    In streaming runs openinference stores the concatenation of str() of every event, model inputs
    included; the final answer is the last FinalAnswerStep in it. A run without one (failed, interrupted)
    gets a note instead of megabytes of event reprs: its Step spans hold the details.
    """
    index = value.rfind(_FINAL_ANSWER_MARK)
    if index >= 0:
        answer = value[index + len(_FINAL_ANSWER_MARK):]
        return answer[:-1] if answer.endswith(")") else answer
    if len(value) > VALUE_LIMIT:
        return f"[no final answer; {len(value):,} characters of streamed events omitted, see the Step spans]"
    return value


class PolicyExporter(SpanExporter):
    """Applies the ContentPolicy to each span, then hands the copies to the real exporter."""

    def __init__(self, inner: SpanExporter, policy: ContentPolicy) -> None:
        self.inner = inner
        self.policy = policy
        self._stopped = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._stopped:
            metrics.SPANS_EXPORTED.labels("dropped").inc(len(spans))
            return SpanExportResult.FAILURE
        clean = []
        for span in spans:
            try:
                clean.append(self.policy.rewrite(span))
            except Exception:  # never export a span the policy could not clean
                log.exception("dropped span %r: the content policy could not rewrite it", span.name)
                metrics.SPANS_EXPORTED.labels("dropped").inc()
        if not clean:
            return SpanExportResult.SUCCESS
        try:
            result = self.inner.export(clean)
        except Exception as exc:
            log.warning("trace export failed (%s); the spans of this batch are lost", type(exc).__name__)
            result = SpanExportResult.FAILURE
        metrics.SPANS_EXPORTED.labels("ok" if result is SpanExportResult.SUCCESS else "failed").inc(len(clean))
        return result

    def shutdown(self) -> None:
        if not self._stopped:
            self._stopped = True
            self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _identities(trace_id: int) -> tuple[str, ...]:
    with _IDENTITIES_LOCK:
        return _IDENTITIES.get(trace_id, ())


def _remember_identities(span: trace.Span, request: ChatRequest) -> None:
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return
    values = tuple(v for v in (request.user, request.user_name, request.user_email) if v and len(v) >= 3)
    with _IDENTITIES_LOCK:
        _IDENTITIES[ctx.trace_id] = values
        _IDENTITIES.move_to_end(ctx.trace_id)
        while len(_IDENTITIES) > _IDENTITIES_MAX:
            _IDENTITIES.popitem(last=False)


# --- setup -------------------------------------------------------------------------------------------


def make_redactor(settings: Any = None) -> Redactor:
    """The redactor for spans and logs: this deployment's secrets, token shapes, AGENTDESK_PII_PATTERNS."""
    return Redactor(settings.secrets() if settings is not None else ())


def traces_endpoint(settings: Any) -> str | None:
    """The OTLP/HTTP URL spans are posted to.

    OTEL_EXPORTER_OTLP_ENDPOINT is a base URL (".../v1/traces" is appended, as the spec says);
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or any URL already ending in /v1/traces, is used as given.
    """
    endpoint = settings.otlp_endpoint
    if not endpoint:
        return None
    if endpoint == os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or endpoint.rstrip("/").endswith("/v1/traces"):
        return endpoint
    return endpoint.rstrip("/") + "/v1/traces"


def _protocol() -> str:
    raw = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    return (raw or "http/protobuf").strip().lower()


def _otlp_exporter(settings: Any) -> SpanExporter | None:
    """The OTLP exporter from the standard variables (headers, timeout, compression are read by it)."""
    protocol = _protocol()
    if protocol == "grpc":
        if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is None:
            log.error("OTEL_EXPORTER_OTLP_PROTOCOL=grpc but the gRPC exporter is not installed: traces are NOT "
                      "exported. Run `pip install 'agentdesk[grpc]'`, or use http/protobuf (the default; Phoenix "
                      "and Langfuse accept it on their HTTP port).")
            return None
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter(endpoint=settings.otlp_endpoint)
    if protocol not in ("http/protobuf", "http"):
        log.error("OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported (use http/protobuf or grpc): traces are NOT "
                  "exported.", protocol)
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=traces_endpoint(settings))


def _version() -> str:
    try:
        return metadata.version("agentdesk")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_resource(settings: Any) -> Resource:
    """service.name/version and the environment; OTEL_RESOURCE_ATTRIBUTES fills in anything else."""
    attrs: dict[str, Any] = {"service.name": settings.service_name or "agentdesk", "service.version": _version()}
    environment = os.environ.get("AGENTDESK_ENVIRONMENT")
    if environment:
        attrs["deployment.environment"] = environment
        attrs["deployment.environment.name"] = environment
    return Resource.create(attrs)


def _trace_config(mode: str):
    from openinference.instrumentation import TraceConfig

    if mode == "off":  # don't even build the content; the exporter would drop it anyway
        return TraceConfig(hide_inputs=True, hide_outputs=True, hide_input_messages=True,
                           hide_output_messages=True, hide_prompts=True, hide_choices=True)
    return TraceConfig()


def _instrument(mode: str | None) -> None:
    """Instrument smolagents once per content mode (None: remove the instrumentation)."""
    from openinference.instrumentation.smolagents import SmolagentsInstrumentor

    wanted = None if mode is None else ("off" if mode == "off" else "content")
    if _STATE.instrumented_mode == wanted:
        return
    instrumentor = SmolagentsInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    _STATE.instrumented_mode = None
    if wanted is not None:
        instrumentor.instrument(tracer_provider=_SWITCH, config=_trace_config(mode or "redacted"),
                                skip_dep_check=True)
        _STATE.instrumented_mode = wanted


def setup_tracing(settings: Any, *, exporter: SpanExporter | None = None) -> TracerProvider | None:
    """Export spans over OTLP when an endpoint is configured; returns the provider (None: tracing off).

    Safe to call again with other settings: the previous provider is flushed and replaced, and smolagents
    is instrumented at most once. Tests pass `exporter` (e.g. an in-memory one) to skip OTLP.
    """
    with _STATE.lock:
        mode = getattr(settings, "trace_content", "redacted") or "redacted"
        redactor = make_redactor(settings)
        _STATE.redactor = redactor
        _STATE.content = mode
        _close_provider()
        if exporter is None and settings.otlp_endpoint:
            exporter = _otlp_exporter(settings)
        if exporter is None:
            _instrument(None)
            return None
        provider = TracerProvider(
            resource=build_resource(settings),
            span_limits=SpanLimits(max_attribute_length=MEMORY_LIMIT, max_span_attribute_length=MEMORY_LIMIT),
            shutdown_on_exit=False,
        )
        policy_exporter = PolicyExporter(exporter, ContentPolicy(mode, redactor))
        provider.add_span_processor(BatchSpanProcessor(policy_exporter))
        _STATE.provider, _STATE.exporter = provider, policy_exporter
        _SWITCH.active = provider
        _instrument(mode)
        if not _STATE.global_set:
            _STATE.global_set = True
            if type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider":
                trace.set_tracer_provider(_SWITCH)  # other OpenTelemetry instrumentation joins the same traces
        if not _STATE.atexit_registered:
            _STATE.atexit_registered = True
            atexit.register(shutdown_tracing)
        if settings.otlp_endpoint:
            log.info("exporting traces to %s (%s, content=%s)", traces_endpoint(settings) if _protocol() != "grpc"
                     else settings.otlp_endpoint, _protocol(), mode)
        return provider


def _flush(provider: TracerProvider, timeout_s: float) -> bool:
    """force_flush bounded by timeout_s: the SDK's exports synchronously and ignores its timeout while the
    OTLP exporter retries an unreachable collector, so it runs in a helper thread."""
    done = threading.Event()

    def run() -> None:
        try:
            provider.force_flush()
        finally:
            done.set()

    threading.Thread(target=run, name="agentdesk-trace-flush", daemon=True).start()
    return done.wait(timeout_s)


def _close_provider(timeout_s: float = 5.0) -> None:
    """Flush what is buffered (bounded by timeout_s, even with the collector down), then stop."""
    provider, exporter = _STATE.provider, _STATE.exporter
    _STATE.provider = _STATE.exporter = None
    _SWITCH.active = trace.NoOpTracerProvider()
    if provider is None:
        return
    if not _flush(provider, timeout_s):
        log.warning("could not deliver every span to the OTLP endpoint within %.0f s; the rest are dropped",
                    timeout_s)
    if exporter is not None:
        exporter.shutdown()  # aborts the OTLP exporter's retries, so shutting down cannot hang
    provider.shutdown()


def flush_tracing(timeout_s: float = 5.0) -> bool:
    """Export what is buffered now; False when that did not finish within timeout_s."""
    provider = _STATE.provider
    return _flush(provider, timeout_s) if provider is not None else True


def shutdown_tracing(timeout_s: float = 5.0) -> None:
    """Flush (at most timeout_s), stop exporting and remove the smolagents instrumentation.

    setup_tracing registers it with atexit; calling it earlier (e.g. when the server stops) is fine.
    """
    with _STATE.lock:
        _close_provider(timeout_s)
        _instrument(None)


# --- spans the rest of agentdesk opens ---------------------------------------------------------------


def hashed(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


@contextmanager
def request_span(name: str, request: ChatRequest, **attributes: Any) -> Iterator[trace.Span]:
    """The root span of one chat request (Slack event, Teams activity, terminal ask).

    Everything the request causes nests under it, openinference's agent/step/LLM spans included (the
    runner's worker threads inherit the context). session.id/user.id go to every openinference span so
    Phoenix groups a thread's runs; the raw user id is recorded only with AGENTDESK_TRACE_CONTENT=full.
    """
    from openinference.instrumentation import using_session, using_user

    session = hashed(request.thread_key)
    user = request.caller.hashed_user
    attrs: dict[str, Any] = {
        "agentdesk.platform": request.platform,
        "agentdesk.workspace": request.workspace,
        "agentdesk.channel": request.channel,
        "agentdesk.thread": request.thread,
        "agentdesk.user_hash": user,
        "session.id": session,
        "user.id": user,
        "agentdesk.files": len(request.attachments),
        **attributes,
    }
    if request.team:
        attrs["agentdesk.team"] = request.team
    if _STATE.content == "full":
        attrs["enduser.id"] = request.user
    parent = propagate.extract(request.trace_carrier) if request.trace_carrier else None
    kind = trace.SpanKind.INTERNAL if request.platform == "terminal" else trace.SpanKind.SERVER
    with tracer.start_as_current_span(name, context=parent, kind=kind, attributes=attrs) as span:
        _remember_identities(span, request)
        with using_session(session), using_user(user):
            yield span


def _json(value: Any) -> str:
    try:
        return json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


@contextmanager
def tool_span(name: str, arguments: Mapping[str, Any]) -> Iterator[trace.Span]:
    """A span (and metrics) for one host-side tool call made over the sandbox bridge.

    Use around the call; record the result with `set_output(span, value)`. An exception leaving the
    block marks the span as an error and counts the call as failed.
    """
    started = time.monotonic()
    outcome = "error"
    try:
        with tracer.start_as_current_span(f"tool {name}", attributes={
            "openinference.span.kind": "TOOL",
            "tool.name": name,
            "input.value": _json(dict(arguments)),
            "input.mime_type": "application/json",
            "agentdesk.via": "sandbox-bridge",
        }) as span:
            yield span
            outcome = "ok"
    finally:
        metrics.TOOL_CALLS.labels(name, outcome).inc()
        metrics.TOOL_DURATION.labels(name).observe(time.monotonic() - started)


@contextmanager
def execution_span(code: str) -> Iterator[trace.Span]:
    """A span for one code action executed in the sandbox (code and output subject to the policy)."""
    with tracer.start_as_current_span("agentdesk.sandbox.execute", attributes={
        "openinference.span.kind": "CHAIN", "agentdesk.code": code,
    }) as span:
        yield span


@contextmanager
def reply_span(platform: str, kind: str, **attributes: Any) -> Iterator[trace.Span]:
    """A span (and a metric) for one message posted back to the thread (status, step, final, error, file)."""
    outcome = "error"
    try:
        with tracer.start_as_current_span("agentdesk.reply", attributes={
            "agentdesk.platform": platform, "agentdesk.reply.kind": kind, **attributes,
        }) as span:
            yield span
            outcome = "ok"
    finally:
        metrics.REPLIES.labels(platform, kind, outcome).inc()


def set_output(span: trace.Span, value: Any) -> None:
    """Record a tool's or a code action's result on its span (the content policy applies at export)."""
    span.set_attribute("output.value", value if isinstance(value, str) else _json(value))


def current_trace_id() -> str | None:
    """The hex trace id of the current span, if a real (exported) trace is running."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def trace_link(trace_id: str | None, settings: Any) -> str | None:
    """The trace's URL from AGENTDESK_TRACE_URL_TEMPLATE ({trace_id} is replaced), or None."""
    template = getattr(settings, "trace_url_template", None)
    if not trace_id or not template:
        return None
    if "{trace_id}" not in template:
        log.warning("AGENTDESK_TRACE_URL_TEMPLATE has no {trace_id} placeholder; no trace links are shown")
        return None
    return template.replace("{trace_id}", trace_id)


# --- logs --------------------------------------------------------------------------------------------


class TraceContextFilter(logging.Filter):
    """Adds `trace_id` and `span_id` of the current span (or None) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        record.trace_id = format(ctx.trace_id, "032x") if ctx.is_valid else None
        record.span_id = format(ctx.span_id, "016x") if ctx.is_valid else None
        return True


class _RedactingFormatter(logging.Formatter):
    def _redact(self, text: str) -> str:
        redactor = _STATE.redactor
        return (redactor(text) or text) if redactor is not None else text

    def _fields(self, record: logging.LogRecord) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": self._redact(record.getMessage()),
        }
        if getattr(record, "trace_id", None):
            fields["trace_id"] = record.trace_id
            fields["span_id"] = record.span_id
        if record.exc_info:
            fields["exc"] = self._redact(self.formatException(record.exc_info))
        return fields


class JsonFormatter(_RedactingFormatter):
    """One JSON object per line (for log shippers), secrets redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(self._fields(record), ensure_ascii=False, default=str)


class KeyValueFormatter(_RedactingFormatter):
    """`ts level logger msg key=value…` for people reading a terminal, secrets redacted."""

    def format(self, record: logging.LogRecord) -> str:
        fields = self._fields(record)
        line = f"{fields.pop('ts')} {fields.pop('level').upper()} {fields.pop('logger')} {fields.pop('msg')}"
        exc = fields.pop("exc", None)
        line += "".join(f" {k}={v}" for k, v in fields.items())
        return f"{line}\n{exc}" if exc else line


_HANDLER_MARK = "_agentdesk_handler"


def setup_logging(verbose: bool = False, *, json_lines: bool | None = None, stream: Any = None) -> logging.Handler:
    """Structured logs on stderr with trace/span ids and secrets redacted (idempotent).

    JSON lines unless stderr is a terminal (json_lines=None); key=value text otherwise.
    """
    stream = stream or sys.stderr
    if json_lines is None:
        json_lines = not (hasattr(stream, "isatty") and stream.isatty())
    if _STATE.redactor is None:
        _STATE.redactor = _env_redactor()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream)
    setattr(handler, _HANDLER_MARK, True)
    handler.addFilter(TraceContextFilter())
    handler.setFormatter(JsonFormatter() if json_lines else KeyValueFormatter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("urllib3", "httpx", "httpx2", "httpcore", "openai", "docker"):
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.WARNING)
    return handler


def _env_redactor() -> Redactor:
    """Secrets from the environment, for log lines written before setup_tracing(settings) runs."""
    from agents.settings import Settings, SettingsError

    try:
        return make_redactor(Settings.from_env(dotenv=False))
    except SettingsError:
        return make_redactor()
