"""A small TTL store of handled deliveries (Slack events, Teams activities), so retries and twins are
answered once.

Slack redelivers an event (same event_id, X-Slack-Retry-Num 1..3) when it gets no 2xx within 3 s, and
one channel mention arrives twice (app_mention and message.channels, same channel and ts). Claims are
decided in memory (a dict lookup: no SQLite call and no GIL hand-off on the event loop) and written behind
to SQLite under the data dir by one writer thread, in batches, so a restart in the middle of Slack's retry
window does not answer twice: unexpired claims are loaded back at start. Teams redelivers activities it
thinks timed out in the same way.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

log = logging.getLogger("agentdesk.dedupe")

DEFAULT_TTL_S = 3600.0  # Slack retries for up to ~5 minutes; an hour leaves a wide margin
PRUNE_EVERY = 500  # claims between sweeps of expired keys (memory and disk)


class DedupeStore:
    """`claim(key)` is True exactly once per key within the TTL, across restarts (one process per data dir)."""

    def __init__(self, path: Path, ttl_s: float = DEFAULT_TTL_S) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.ttl_s = ttl_s
        self._lock = threading.Lock()  # guards _seen, _pending, _claims
        self._db_lock = threading.Lock()  # one writer at a time on the connection
        self._claims = 0
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, expires REAL NOT NULL)")
        now = time.time()
        self._seen: dict[str, float] = dict(
            self._db.execute("SELECT key, expires FROM seen WHERE expires >= ?", (now,)).fetchall())
        self._pending: list[tuple[str, float]] = []
        self._prune_due = False
        self._wake = threading.Event()
        self._closed = False
        self._writer = threading.Thread(target=self._write_loop, name="slack-dedupe-writer", daemon=True)
        self._writer.start()

    def claim(self, key: str) -> bool:
        """Mark `key` handled; False when it already was (a duplicate). A dict lookup: safe on the event loop."""
        now = time.time()
        with self._lock:
            expires = self._seen.get(key)
            if expires is not None and expires >= now:
                return False
            expires = now + self.ttl_s
            self._seen[key] = expires
            self._pending.append((key, expires))
            self._claims += 1
            if self._claims % PRUNE_EVERY == 0:
                self._seen = {k: e for k, e in self._seen.items() if e >= now}
                self._prune_due = True
        self._wake.set()
        return True

    def _write_loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the in-memory claims still dedupe; only restarts would miss
                log.exception("could not persist Slack dedupe claims")
            if self._closed:
                return

    def flush(self) -> None:
        """Write pending claims to disk in one transaction (the writer thread does this; close() too)."""
        with self._lock:
            pending, self._pending = self._pending, []
            prune, self._prune_due = self._prune_due, False
        if not pending and not prune:
            return
        with self._db_lock:
            if self._closed and self._db is None:
                return
            self._db.execute("BEGIN")
            try:
                if prune:
                    self._db.execute("DELETE FROM seen WHERE expires < ?", (time.time(),))
                self._db.executemany(
                    "INSERT INTO seen (key, expires) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET expires = excluded.expires", pending)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._writer.join(timeout=10)
        self.flush()
        with self._db_lock:
            self._db.close()
            self._db = None  # type: ignore[assignment]
