"""Prometheus metrics for operators (served at GET /metrics)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
