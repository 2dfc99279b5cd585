"""Prometheus metrics for operators (served at GET /metrics)."""
from __future__ import annotations

from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, PlatformCollector, ProcessCollector


def _version() -> str:
    try:
        return metadata.version("agentdesk")
    except metadata.PackageNotFoundError:
        return "unknown"


REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "agentdesk_requests", "Chat requests by platform, department and outcome",
    ["platform", "department", "outcome"], registry=REGISTRY,
)
TASK_DURATION = Histogram(
    "agentdesk_task_duration_seconds", "Wall time of an agent task", ["department"], registry=REGISTRY,
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
)
QUEUE_WAIT = Histogram(
    "agentdesk_queue_wait_seconds", "Time a request waited for a free slot", registry=REGISTRY,
    buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60),
)
STEPS = Histogram(
    "agentdesk_task_steps", "Agent steps per task", ["department"], registry=REGISTRY,
    buckets=(1, 2, 3, 4, 5, 6, 8, 10, 15, 20),
)
TOKENS = Counter("agentdesk_tokens", "Model tokens", ["department", "kind"], registry=REGISTRY)
SANDBOX_START = Histogram(
    "agentdesk_sandbox_start_seconds", "Time to get a ready sandbox", ["source"], registry=REGISTRY,
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
)
SANDBOX_POOL = Gauge("agentdesk_sandbox_pool_size", "Warm sandboxes ready", registry=REGISTRY)
IN_FLIGHT = Gauge("agentdesk_tasks_in_flight", "Agent tasks running or queued", registry=REGISTRY)
QUEUE_DEPTH = Gauge("agentdesk_queue_depth", "Tasks waiting in the queue for a worker", registry=REGISTRY)
QUEUE_LAG = Gauge("agentdesk_queue_lag_seconds", "Age of the oldest task waiting for a worker", registry=REGISTRY)
WORKER_IN_FLIGHT = Gauge("agentdesk_worker_tasks_in_flight", "Tasks this worker process holds (running or waiting "
                         "for their thread's turn)", registry=REGISTRY)
RECLAIMED = Counter("agentdesk_tasks_reclaimed", "Tasks taken over from a worker that stopped renewing its lease",
                    registry=REGISTRY)
LOCK_WAITS = Counter("agentdesk_thread_lock_waits", "Tasks that waited for the turn before them in their thread",
                     registry=REGISTRY)
LOCK_WAIT = Histogram("agentdesk_thread_lock_wait_seconds", "Time a task waited for its thread's lock",
                      registry=REGISTRY, buckets=(0.001, 0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300))
STORE_UP = Gauge("agentdesk_state_store_up", "1 when the shared state store (SQLite or Redis) answers",
                 registry=REGISTRY)
TOOL_CALLS = Counter(
    "agentdesk_tool_calls", "Host-side tool calls over the sandbox bridge by tool and outcome", ["tool", "outcome"],
    registry=REGISTRY,
)
TOOL_DURATION = Histogram(
    "agentdesk_tool_duration_seconds", "Wall time of a host-side tool call", ["tool"], registry=REGISTRY,
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
REPLIES = Counter(
    "agentdesk_replies", "Messages posted back to threads by platform, kind and outcome",
    ["platform", "kind", "outcome"], registry=REGISTRY,
)
FEEDBACK = Counter(
    "agentdesk_feedback", "Feedback presses on final answers by department and value (positive, negative)",
    ["platform", "department", "value"], registry=REGISTRY,
)
STOPPED = Counter("agentdesk_tasks_stopped", "Agent runs stopped by a person", ["department"], registry=REGISTRY)
SPANS_EXPORTED = Counter(
    "agentdesk_trace_spans", "Spans handed to the OTLP exporter by outcome (ok, failed, dropped)", ["outcome"],
    registry=REGISTRY,
)
BUILD = Info("agentdesk_build", "Version of this agentdesk deployment", registry=REGISTRY)
BUILD.info({"version": _version()})
# Process metrics (memory, CPU, open files) and the Python version, as the default registry would have.
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
