"""The embedded backend: one SQLite file under AGENTDESK_DATA_DIR, for one process per data dir.

SQLite calls block, so each runs in a worker thread; a lock serialises them on the one connection.
"""
from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable

from agents.state import StateStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    expires_at REAL,
    PRIMARY KEY (namespace, key)
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS locks (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL);
"""
PRUNE_EVERY = 500  # writes between sweeps of expired rows


class SqliteStore(StateStore):
    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "state.sqlite3"
        self.description = f"SQLite at {self.path}"
        self._lock = threading.Lock()
        self._writes = 0
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    async def _run(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        def locked() -> Any:
            with self._lock:
                self._writes += 1
                if self._writes % PRUNE_EVERY == 0:
                    now = time.time()
                    self._db.execute("DELETE FROM records WHERE expires_at IS NOT NULL AND expires_at<=?", (now,))
                    self._db.execute("DELETE FROM counters WHERE expires_at<=?", (now,))
                return fn(self._db)

        return await asyncio.to_thread(locked)

    async def put_record(self, namespace: str, key: str, value: dict, ttl_s: float | None = None) -> None:
        expires = time.time() + ttl_s if ttl_s else None
        await self._run(lambda db: db.execute(
            "INSERT INTO records(namespace, key, value, expires_at) VALUES (?,?,?,?) "
            "ON CONFLICT(namespace, key) DO UPDATE SET value=excluded.value, expires_at=excluded.expires_at",
            (namespace, key, json.dumps(value, default=str), expires)))

    async def add_record(self, namespace: str, key: str, value: dict, ttl_s: float | None = None) -> bool:
        def add(db: sqlite3.Connection) -> bool:
            now = time.time()
            db.execute("DELETE FROM records WHERE namespace=? AND key=? AND expires_at IS NOT NULL "
                       "AND expires_at<=?", (namespace, key, now))
            cur = db.execute("INSERT OR IGNORE INTO records(namespace, key, value, expires_at) VALUES (?,?,?,?)",
                             (namespace, key, json.dumps(value, default=str), now + ttl_s if ttl_s else None))
            return cur.rowcount == 1

        return await self._run(add)

    async def get_record(self, namespace: str, key: str) -> dict | None:
        row = await self._run(lambda db: db.execute(
            "SELECT value, expires_at FROM records WHERE namespace=? AND key=?", (namespace, key)).fetchone())
        if not row or (row[1] is not None and row[1] <= time.time()):
            return None
        return json.loads(row[0])

    async def delete_record(self, namespace: str, key: str) -> None:
        await self._run(lambda db: db.execute("DELETE FROM records WHERE namespace=? AND key=?", (namespace, key)))

    async def list_records(self, namespace: str, prefix: str = "") -> dict[str, dict]:
        now = time.time()
        rows = await self._run(lambda db: db.execute(
            "SELECT key, value FROM records WHERE namespace=? AND substr(key, 1, ?)=? "
            "AND (expires_at IS NULL OR expires_at>?)", (namespace, len(prefix), prefix, now)).fetchall())
        return {k: json.loads(v) for k, v in rows}

    async def incr(self, name: str, delta: int, ttl_s: float, *, refresh_ttl: bool = True) -> int:
        def incr(db: sqlite3.Connection) -> int:
            now = time.time()
            db.execute("DELETE FROM counters WHERE name=? AND expires_at<=?", (name, now))
            db.execute("INSERT INTO counters(name, value, expires_at) VALUES (?,?,?) ON CONFLICT(name) DO UPDATE "
                       "SET value=value+excluded.value, expires_at=CASE WHEN ? THEN excluded.expires_at "
                       "ELSE expires_at END", (name, delta, now + ttl_s, int(refresh_ttl)))
            return db.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()[0]

        return await self._run(incr)

    async def acquire_lock(self, name: str, owner: str, lease_s: float) -> bool:
        def acquire(db: sqlite3.Connection) -> bool:
            now = time.time()
            db.execute("DELETE FROM locks WHERE name=? AND expires_at<=?", (name, now))
            cur = db.execute("INSERT OR IGNORE INTO locks(name, owner, expires_at) VALUES (?,?,?)",
                             (name, owner, now + lease_s))
            return cur.rowcount == 1

        return await self._run(acquire)

    async def extend_lock(self, name: str, owner: str, lease_s: float) -> bool:
        cur = await self._run(lambda db: db.execute(
            "UPDATE locks SET expires_at=? WHERE name=? AND owner=? AND expires_at>?",
            (time.time() + lease_s, name, owner, time.time())))
        return cur.rowcount == 1

    async def release_lock(self, name: str, owner: str) -> None:
        await self._run(lambda db: db.execute("DELETE FROM locks WHERE name=? AND owner=?", (name, owner)))

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        await self._run(lambda db: db.close())
