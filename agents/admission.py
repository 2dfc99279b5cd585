"""Admission, where a request arrives: input checks, per-person limits and queue backpressure.

Limits are counters in the shared store, so they hold across every web replica: a fixed one-minute window
per person for the request rate, and an in-flight count the worker releases when the task is over (it
expires by itself if a worker dies without releasing it).
"""
from __future__ import annotations

import re

from agents.chat import ChatRequest
from agents.departments import Company
from agents.settings import Settings
from agents.state import StateStore
from agents.taskqueue import TaskQueue

BUSY_MESSAGE = "I'm handling too many requests right now. Please try again in a few minutes."
_INJECTION = re.compile(
    r"(?i)(ignore (all |any )?(the )?(previous|prior|above) (instructions|rules)|disregard (your|the) (rules|instructions)"
    r"|you are now|system prompt|</?\s*user_message\s*>|new instructions:)"
)


def looks_like_injection(text: str) -> bool:
    """Obvious prompt-injection phrasing: flagged in the trace for review; the request still runs framed."""
    return bool(_INJECTION.search(text))


class Admission:
    def __init__(self, settings: Settings, company: Company, store: StateStore, queue: TaskQueue) -> None:
        self.settings = settings
        self.company = company
        self.store = store
        self.queue = queue

    def check_input(self, request: ChatRequest) -> str | None:
        if len(request.text) > self.settings.max_text_chars:
            return (f"Your message is {len(request.text):,} characters; the limit is "
                    f"{self.settings.max_text_chars:,}. Please shorten it or attach it as a file.")
        if not request.text.strip() and not request.attachments:
            names = ", ".join(f"`{n}: …`" for n in self.company.departments)
            return f"Hi! Ask me something, starting with a department if you like: {names}."
        return None

    def _in_flight_key(self, request: ChatRequest) -> str:
        return f"inflight:{request.caller.hashed_user}"

    async def admit(self, request: ChatRequest) -> str | None:
        """None when the request may proceed (it then counts as in flight for its person), else why not."""
        limit = self.settings.user_rate_per_minute
        sent = await self.store.incr(f"rate:{request.caller.hashed_user}", 1, 60, refresh_ttl=False)
        if sent > limit:
            return (f"You've sent {limit} requests in the last minute, which is my limit per person. "
                    "Please wait a moment and try again.")
        held = await self.store.incr(self._in_flight_key(request), 1, self._in_flight_ttl())
        if held > self.settings.max_tasks_per_user:
            await self.store.incr(self._in_flight_key(request), -1, self._in_flight_ttl())
            return (f"You already have {held - 1} requests in progress. I'll take new ones as soon as "
                    "one of them finishes.")
        return None

    async def release(self, request: ChatRequest) -> None:
        """The request is over (answered, refused, or given up): it no longer counts as in flight."""
        await self.store.incr(self._in_flight_key(request), -1, self._in_flight_ttl())

    def _in_flight_ttl(self) -> float:
        # Longer than any task may wait and run, so only a leak (a worker killed mid-task) ever expires.
        return self.settings.task_timeout_s + self.settings.max_queue_age_s + 600

    async def busy(self) -> str | None:
        """The busy message when the oldest waiting task is older than the queue's age limit."""
        _, oldest = await self.queue.stats()
        if oldest > self.settings.max_queue_age_s:
            return BUSY_MESSAGE
        return None

    async def enqueue(self, job: dict) -> str | None:
        """Length check and enqueue in one atomic step (a burst cannot pass the check together)."""
        if await self.queue.put(job, self.settings.max_queued_tasks):
            return None
        return BUSY_MESSAGE
