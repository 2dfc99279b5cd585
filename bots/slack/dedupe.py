"""A small SQLite TTL store of handled Slack deliveries, so retries and twin events are answered once.

Slack redelivers an event (same event_id, X-Slack-Retry-Num 1..3) when it gets no 2xx within 3 s, and
one channel mention arrives twice (app_mention and message.channels, same channel and ts). The store
lives under the data dir so a restart in the middle of Slack's retry window does not answer twice.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

DEFAULT_TTL_S = 3600.0  # Slack retries for up to ~5 minutes; an hour leaves a wide margin


class DedupeStore:
    """`claim(key)` is True exactly once per key within the TTL, across restarts."""

    def __init__(self, path: Path, ttl_s: float = DEFAULT_TTL_S) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._claims = 0
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, expires REAL NOT NULL)")

    def claim(self, key: str) -> bool:
        """Mark `key` handled; False when it already was (a duplicate). Microseconds: safe in the ack path."""
        now = time.time()
        with self._lock:
            self._claims += 1
            if self._claims % 500 == 0:
                self._db.execute("DELETE FROM seen WHERE expires < ?", (now,))
            cur = self._db.execute(
                "INSERT INTO seen (key, expires) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET expires = excluded.expires WHERE seen.expires < ?",
                (key, now + self.ttl_s, now),
            )
            return cur.rowcount == 1

    def close(self) -> None:
        with self._lock:
            self._db.close()
