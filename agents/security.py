"""Output hygiene shared by every platform: secrets and configured PII never leave, sizes are capped."""
from __future__ import annotations

import os
import re
import unicodedata
from typing import Iterable

# Token shapes worth catching even when the value isn't one of ours (a tool may return someone else's).
_SECRET_PATTERNS = [
    re.compile(r"xox[abposr]-[A-Za-z0-9-]{8,}"),
    re.compile(r"xapp-[A-Za-z0-9-]{8,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{12,}"),
    re.compile(r"\bhf_[A-Za-z0-9]{20,}"),
    re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/=-]{16,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),  # JWTs
]


def pii_patterns() -> list[re.Pattern]:
    """Operator-configured PII patterns (AGENTDESK_PII_PATTERNS, regexes separated by ';;')."""
    raw = os.environ.get("AGENTDESK_PII_PATTERNS", "")
    return [re.compile(p) for p in raw.split(";;") if p.strip()]


class Redactor:
    """Replaces known secret values, token-shaped strings and PII patterns with a marker."""

    def __init__(self, secrets: Iterable[str] = (), extra_patterns: Iterable[re.Pattern] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)
        self.patterns = [*_SECRET_PATTERNS, *pii_patterns(), *extra_patterns]

    def __call__(self, text: str | None) -> str | None:
        if not text:
            return text
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        for pattern in self.patterns:
            text = pattern.sub("[redacted]", text)
        return text


def cap(text: str | None, limit: int, marker: str = "… [truncated]") -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: max(0, limit - len(marker))] + marker


_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")


def sanitize_filename(name: str, fallback: str = "file") -> str:
    """A safe single path component: no folders, no leading dots, printable ASCII, bounded length."""
    name = unicodedata.normalize("NFKD", name or "").encode("ascii", "ignore").decode()
    name = name.replace("\\", "/").split("/")[-1]
    name = _UNSAFE_NAME.sub("_", name).strip(" .")
    name = re.sub(r"_+", "_", name)
    if not name or name in {".", ".."}:
        name = fallback
    stem, dot, ext = name.rpartition(".")
    if dot and len(ext) <= 10:
        return f"{stem[: 120 - len(ext)]}.{ext}" if stem else f"{fallback}.{ext}"
    return name[:120]
