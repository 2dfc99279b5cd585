"""Durable state in SQLite under AGENTDESK_DATA_DIR: thread memory and department, and task records.

Thread memory is the agent's own steps, so a follow-up after a restart still has its context. Task records
let a restarted bot tell every person whose request was interrupted that it was.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from smolagents.memory import ActionStep, TaskStep, ToolCall
from smolagents.monitoring import AgentLogger, LogLevel, Timing, TokenUsage
from smolagents.utils import AgentError

from agents.chat import ChatRequest

SCHEMA = """
CREATE TABLE IF NOT EXISTS threads (
    thread_key TEXT PRIMARY KEY,
    department TEXT NOT NULL,
    steps TEXT NOT NULL DEFAULT '[]',
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    thread_key TEXT NOT NULL,
    platform TEXT NOT NULL,
    request TEXT NOT NULL,
    department TEXT,
    status TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks(status);
CREATE TABLE IF NOT EXISTS records (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    expires_at REAL,
    PRIMARY KEY (namespace, key)
);
"""

_QUIET = AgentLogger(level=LogLevel.OFF)


def _step_to_dict(step: Any) -> dict | None:
    if isinstance(step, TaskStep):
        return {"kind": "task", "task": step.task}
    if isinstance(step, ActionStep):
        return {
            "kind": "action",
            "step_number": step.step_number,
            "start": step.timing.start_time,
            "end": step.timing.end_time,
            "model_output": step.model_output if isinstance(step.model_output, str) else None,
            "code_action": step.code_action,
            "tool_calls": [{"name": t.name, "arguments": t.arguments, "id": t.id} for t in step.tool_calls or []],
            "observations": step.observations,
            "error": str(step.error.message) if step.error else None,
            "input_tokens": step.token_usage.input_tokens if step.token_usage else None,
            "output_tokens": step.token_usage.output_tokens if step.token_usage else None,
            "is_final_answer": step.is_final_answer,
        }
    return None


def _step_from_dict(data: dict) -> TaskStep | ActionStep:
    if data["kind"] == "task":
        return TaskStep(task=data["task"])
    usage = None
    if data.get("input_tokens") is not None:
        usage = TokenUsage(input_tokens=data["input_tokens"], output_tokens=data["output_tokens"] or 0)
    return ActionStep(
        step_number=data["step_number"],
        timing=Timing(start_time=data["start"], end_time=data.get("end")),
        model_output=data.get("model_output"),
        code_action=data.get("code_action"),
        tool_calls=[ToolCall(name=t["name"], arguments=t["arguments"], id=t["id"]) for t in data["tool_calls"]]
        or None,
        observations=data.get("observations"),
        error=AgentError(data["error"], _QUIET) if data.get("error") else None,
        token_usage=usage,
        is_final_answer=data.get("is_final_answer", False),
    )


@dataclass(frozen=True)
class TaskRecord:
    task_id: str
    thread_key: str
    platform: str
    request: dict
    department: str | None
    status: str
    started_at: float


class StateStore:
    """One SQLite file; safe to use from the event loop and worker threads (short transactions)."""

    def __init__(self, data_dir: Path, max_thread_steps: int = 60) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "state.sqlite3"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self.max_thread_steps = max_thread_steps

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # threads -------------------------------------------------------------------------------------
    def thread_department(self, thread_key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT department FROM threads WHERE thread_key=?", (thread_key,)).fetchone()
        return row[0] if row else None

    def claim_thread(self, thread_key: str, department: str) -> None:
        """Record the department answering in a thread (routing keeps it for every follow-up)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO threads(thread_key, department, steps, updated_at) VALUES (?,?,?,?) "
                "ON CONFLICT(thread_key) DO UPDATE SET department=excluded.department, updated_at=excluded.updated_at",
                (thread_key, department, "[]", time.time()),
            )

    @staticmethod
    def memory_key(thread_key: str, department: str) -> str:
        """Memory is kept per thread and department, so switching department in a DM starts clean."""
        return f"{thread_key}#{department}"

    def load_steps(self, thread_key: str) -> list[TaskStep | ActionStep]:
        with self._lock:
            row = self._db.execute("SELECT steps FROM threads WHERE thread_key=?", (thread_key,)).fetchone()
        return [_step_from_dict(d) for d in json.loads(row[0])] if row else []

    def save_steps(self, thread_key: str, department: str, steps: list[Any]) -> None:
        data = [d for d in (_step_to_dict(s) for s in steps) if d is not None][-self.max_thread_steps :]
        with self._lock:
            self._db.execute(
                "INSERT INTO threads(thread_key, department, steps, updated_at) VALUES (?,?,?,?) "
                "ON CONFLICT(thread_key) DO UPDATE SET steps=excluded.steps, updated_at=excluded.updated_at",
                (thread_key, department, json.dumps(data, default=str), time.time()),
            )

    # tasks ---------------------------------------------------------------------------------------
    def task_started(self, task_id: str, request: ChatRequest) -> None:
        payload = asdict(request)
        payload["attachments"] = [{"name": a.name} for a in request.attachments]
        payload.pop("trace_carrier", None)
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO tasks(task_id, thread_key, platform, request, status, started_at) "
                "VALUES (?,?,?,?,?,?)",
                (task_id, request.thread_key, request.platform, json.dumps(payload, default=str), "running",
                 time.time()),
            )

    def task_finished(self, task_id: str, status: str, department: str | None = None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE tasks SET status=?, department=COALESCE(?, department), finished_at=? WHERE task_id=?",
                (status, department, time.time(), task_id),
            )

    # records: small JSON documents by namespace and key (answers, feedback, approvals) ---------------
    def put_record(self, namespace: str, key: str, value: dict, ttl_s: float | None = None) -> None:
        """Write (or overwrite) one record; it disappears after `ttl_s` seconds when given."""
        expires = time.time() + ttl_s if ttl_s else None
        with self._lock:
            self._db.execute(
                "INSERT INTO records(namespace, key, value, expires_at) VALUES (?,?,?,?) "
                "ON CONFLICT(namespace, key) DO UPDATE SET value=excluded.value, expires_at=excluded.expires_at",
                (namespace, key, json.dumps(value, default=str), expires),
            )

    def add_record(self, namespace: str, key: str, value: dict, ttl_s: float | None = None) -> bool:
        """Write a record only if none (or only an expired one) exists: True for the one caller that wins."""
        now = time.time()
        expires = now + ttl_s if ttl_s else None
        with self._lock:
            self._db.execute("DELETE FROM records WHERE namespace=? AND key=? AND expires_at IS NOT NULL "
                             "AND expires_at<=?", (namespace, key, now))
            cur = self._db.execute(
                "INSERT OR IGNORE INTO records(namespace, key, value, expires_at) VALUES (?,?,?,?)",
                (namespace, key, json.dumps(value, default=str), expires),
            )
        return cur.rowcount == 1

    def get_record(self, namespace: str, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT value, expires_at FROM records WHERE namespace=? AND key=?",
                                   (namespace, key)).fetchone()
        if not row or (row[1] is not None and row[1] <= time.time()):
            return None
        return json.loads(row[0])

    def delete_record(self, namespace: str, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM records WHERE namespace=? AND key=?", (namespace, key))

    def list_records(self, namespace: str, prefix: str = "") -> dict[str, dict]:
        """Every live record of a namespace whose key starts with `prefix`."""
        now = time.time()
        with self._lock:
            rows = self._db.execute(
                "SELECT key, value FROM records WHERE namespace=? AND substr(key, 1, ?)=? "
                "AND (expires_at IS NULL OR expires_at>?)", (namespace, len(prefix), prefix, now)).fetchall()
        return {k: json.loads(v) for k, v in rows}

    def interrupted_tasks(self, platform: str | None = None) -> list[TaskRecord]:
        """Tasks that were running when the process died (call before accepting new work)."""
        query = "SELECT task_id, thread_key, platform, request, department, status, started_at FROM tasks " \
                "WHERE status='running'"
        args: tuple = ()
        if platform:
            query += " AND platform=?"
            args = (platform,)
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return [TaskRecord(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6]) for r in rows]
