"""The audit log: one JSON object per line in <AGENTDESK_DATA_DIR>/audit.log.

The runner writes audit events (requests with their outcome, department and trace id; refusals by the
access policy) as JSON strings to the logger "agentdesk.audit". `configure_audit(settings)` adds a file
handler for that logger, so an operator has a durable record of who asked what, which department
answered, the outcome and the trace id, separate from the application log. Users appear as the runner's
hashed ids, never by name or token; every line is passed through the same Redactor as replies, so a
secret value of this deployment (or a token-shaped string) can never be written even if a caller puts
one into an event by mistake.

Call it once at startup, after the settings are read: `agentdesk serve` and `agentdesk ask` (bots/cli.py),
before `TaskRunner.start()`. It is idempotent (a second call replaces the handler).
"""
from __future__ import annotations

import datetime
import json
import logging
import os
from pathlib import Path
from typing import Any

from agents.security import Redactor

LOGGER = "agentdesk.audit"
FILE_NAME = "audit.log"
_MARK = "_agentdesk_audit_handler"
_SCALARS = (str, int, float, bool, type(None))


class AuditFormatter(logging.Formatter):
    """A record of "agentdesk.audit" as one JSON line: its own JSON fields plus ts and level, redacted."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redactor(value)
        if isinstance(value, dict):
            return {str(k): self._clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._clean(v) for v in value]
        if isinstance(value, _SCALARS):
            return value
        return self.redactor(str(value))

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        try:
            fields = json.loads(message)
        except ValueError:
            fields = None
        if not isinstance(fields, dict):
            fields = {"event": "note", "message": message}
        line = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(timespec="milliseconds"),
            **self._clean(fields),
        }
        return json.dumps(line, ensure_ascii=False, default=str, sort_keys=False)


class _PrivateFileHandler(logging.FileHandler):
    """A FileHandler whose file is created readable by the bot's user only (0600)."""

    def _open(self):  # type: ignore[override]
        path = Path(self.baseFilename)
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.close(fd)
        return super()._open()


def audit_path(settings: Any) -> Path:
    return Path(settings.data_dir) / FILE_NAME


def configure_audit(settings: Any) -> logging.Handler:
    """Write "agentdesk.audit" events as JSON lines to <data_dir>/audit.log (idempotent); returns the handler."""
    path = audit_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    close_audit()
    logger = logging.getLogger(LOGGER)
    handler = _PrivateFileHandler(path, encoding="utf-8", delay=False)
    setattr(handler, _MARK, True)
    handler.setLevel(logging.INFO)
    handler.setFormatter(AuditFormatter(Redactor(settings.secrets())))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler


def read_audit(settings: Any) -> list[dict]:
    """Every event in the audit log (for tests and `agentdesk doctor`-style tooling)."""
    path = audit_path(settings)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def close_audit() -> None:
    """Remove and close the audit file handler (shutdown, tests)."""
    logger = logging.getLogger(LOGGER)
    for handler in list(logger.handlers):
        if getattr(handler, _MARK, False):
            logger.removeHandler(handler)
            handler.close()
