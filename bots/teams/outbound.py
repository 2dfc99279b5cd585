"""Sending into one Teams conversation, with Teams' rate limits and retries the SDK does not do.

Every send goes through the stored conversation reference (`continue_conversation` with `bot_app_id`, the
only CloudAdapter path that works outside the inbound turn). botbuilder never retries a POST (msrest's
retry policy is ignored by urllib3 2.x), so 429/412/502/503/504 and dropped connections are retried
here with exponential backoff and full jitter, honouring Retry-After.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Awaitable, Callable

from botbuilder.core import TurnContext
from botbuilder.schema import Activity, ConversationReference
from msrest.exceptions import ClientRequestError, HttpOperationError

from agents.telemetry import reply_span

log = logging.getLogger("agentdesk.teams")

RETRY_STATUSES = frozenset({412, 429, 502, 503, 504})

#: Teams' per-bot, per-thread limits: (sends, seconds), from the Teams platform docs' "rate limit" page.
THREAD_LIMITS = ((7, 1.0), (8, 2.0), (60, 30.0), (1800, 3600.0))


class SendFailed(Exception):
    """A send the connector refused for good (after retries); `status` is the HTTP status, if any."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class RateLimiter:
    """Sliding windows over the send times of one thread; `acquire` waits until every window has room."""

    def __init__(self, limits: tuple[tuple[int, float], ...] = THREAD_LIMITS) -> None:
        self._limits = limits
        self._sent: deque[float] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                horizon = max(seconds for _, seconds in self._limits)
                while self._sent and now - self._sent[0] > horizon:
                    self._sent.popleft()
                wait = 0.0
                for count, seconds in self._limits:
                    recent = [t for t in self._sent if now - t < seconds]
                    if len(recent) >= count:
                        wait = max(wait, seconds - (now - recent[-count]))
                if wait <= 0:
                    self._sent.append(now)
                    return
                await asyncio.sleep(wait)


class RateLimiters:
    """One limiter per conversation (thread), shared by every replier that writes to it."""

    def __init__(self) -> None:
        self._by_thread: dict[str, RateLimiter] = {}

    def for_thread(self, conversation_id: str) -> RateLimiter:
        if len(self._by_thread) > 10_000:
            self._by_thread.clear()
        return self._by_thread.setdefault(conversation_id, RateLimiter())


@dataclass
class RetryPolicy:
    attempts: int = 5
    base_s: float = 0.5
    cap_s: float = 20.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = random.uniform(0, min(self.cap_s, self.base_s * 2**attempt))
        return max(backoff, min(retry_after or 0.0, self.cap_s))


Continue = Callable[[ConversationReference, Callable[[TurnContext], Awaitable[None]]], Awaitable[None]]


class ConversationSender:
    """send / update / delete in one conversation, each through `continue_conversation`."""

    def __init__(
        self,
        reference: ConversationReference,
        continue_conversation: Continue,
        limiter: RateLimiter,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.reference = reference
        self._continue = continue_conversation
        self._limiter = limiter
        self._retry = retry or RetryPolicy()

    async def send(self, activity: Activity) -> str | None:
        """Post an activity as a reply to the person's message; returns its id (the streamId for a stream start)."""
        result: list[str | None] = []

        async def logic(ctx: TurnContext) -> None:
            # continue_conversation makes up a random activity id, which botbuilder would reply to; every
            # reply is tied to the person's message instead (replyToId and the reply URL).
            ctx.activity.id = self.reference.activity_id
            response = await ctx.send_activity(activity)
            result.append(response.id if response else None)

        await self._call("send", logic)
        return result[0] if result else None

    async def update(self, activity_id: str, activity: Activity) -> None:
        async def logic(ctx: TurnContext) -> None:
            activity.id = activity_id
            await ctx.update_activity(activity)

        await self._call("update", logic)

    async def delete(self, activity_id: str) -> None:
        async def logic(ctx: TurnContext) -> None:
            await ctx.delete_activity(activity_id)

        await self._call("delete", logic)

    async def _call(self, what: str, logic: Callable[[TurnContext], Awaitable[None]]) -> None:
        with reply_span("teams", what):
            await self._call_with_retry(what, logic)

    async def _call_with_retry(self, what: str, logic: Callable[[TurnContext], Awaitable[None]]) -> None:
        attempt = 0
        while True:
            await self._limiter.acquire()
            try:
                await self._continue(self.reference, logic)
                return
            except HttpOperationError as exc:
                status = getattr(exc.response, "status_code", None)
                code = _error_code(exc)
                if status not in RETRY_STATUSES or attempt + 1 >= self._retry.attempts:
                    raise SendFailed(f"Teams connector refused {what}: HTTP {status} {code or ''}".strip(),
                                     status, code) from exc
                delay = self._retry.delay(attempt, _retry_after(exc))
            except ClientRequestError as exc:
                if attempt + 1 >= self._retry.attempts:
                    raise SendFailed(f"Teams connector unreachable for {what}: {type(exc).__name__}") from exc
                delay = self._retry.delay(attempt, None)
            attempt += 1
            log.info("teams %s throttled or failed transiently; retry %d in %.1fs", what, attempt, delay)
            await asyncio.sleep(delay)


def _retry_after(exc: HttpOperationError) -> float | None:
    headers = getattr(exc.response, "headers", None) or {}
    raw = headers.get("Retry-After")
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def _error_code(exc: HttpOperationError) -> str | None:
    """The connector's error code (e.g. ContentStreamNotAllowed), read from the JSON body if present."""
    try:
        body = exc.response.json()
    except Exception:  # noqa: BLE001 - any unreadable body just means no code
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error.get("code") if isinstance(error, dict) else None
