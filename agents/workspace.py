"""Files shared with a request, fetched into the task's sandbox input folder with limits.

Everything here treats the platform's file as untrusted: names are sanitized (no path traversal, no
hidden files), the type must be on the department's allowlist, sizes are capped while streaming, and an
HTML page where a file was expected (Slack without files:read answers 200 with its login page) is refused.
Archives are stored as they came, never expanded.
"""
from __future__ import annotations

import mimetypes
import shutil
from pathlib import Path

import aiohttp

from agents.chat import Attachment
from agents.security import sanitize_filename

class AttachmentRejected(Exception):
    """A file the request cannot use; the message is for the person who shared it."""


def _unique(folder: Path, name: str) -> Path:
    candidate = folder / name
    stem, dot, ext = name.rpartition(".")
    n = 1
    while candidate.exists():
        n += 1
        candidate = folder / (f"{stem}-{n}.{ext}" if dot and stem else f"{name}-{n}")
    return candidate


async def fetch_attachments(
    attachments: tuple[Attachment, ...],
    dest: Path,
    *,
    allowed_types: tuple[str, ...],
    max_bytes: int,
    max_files: int,
    session: aiohttp.ClientSession | None = None,
) -> list[Path]:
    """Store every attachment in `dest`; raise AttachmentRejected naming each problem. Returns host paths."""
    if len(attachments) > max_files:
        raise AttachmentRejected(f"That's {len(attachments)} files; I can take at most {max_files} per message.")
    problems: list[str] = []
    saved: list[Path] = []
    own_session = session is None
    session = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
    try:
        for att in attachments:
            name = sanitize_filename(att.name)
            try:
                if att.unavailable:
                    raise AttachmentRejected(att.unavailable)
                _check_type(name, allowed_types)
                if att.size is not None and att.size > max_bytes:
                    raise AttachmentRejected(f"it is {att.size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB")
                target = _unique(dest, name)
                if att.path is not None:
                    await _copy_local(att.path, target, max_bytes)
                elif att.url:
                    await _download(session, att, target, max_bytes)
                else:
                    raise AttachmentRejected("the platform sent no way to download it")
                saved.append(target)
            except AttachmentRejected as exc:
                problems.append(f"`{name}`: {exc}")
    finally:
        if own_session:
            await session.close()
    if problems:
        for path in saved:
            path.unlink(missing_ok=True)
        raise AttachmentRejected("I couldn't use the file(s) you shared:\n" + "\n".join(f"• {p}" for p in problems))
    return saved


def _check_type(name: str, allowed: tuple[str, ...]) -> None:
    ext = name.rpartition(".")[2].lower() if "." in name else ""
    if allowed and ext not in {a.lower().lstrip(".") for a in allowed}:
        kinds = ", ".join(sorted(a.lstrip(".") for a in allowed))
        raise AttachmentRejected(f"files of type `.{ext or '?'}` aren't accepted here (accepted: {kinds})")


async def _copy_local(source: Path, target: Path, max_bytes: int) -> None:
    if not source.is_file():
        raise AttachmentRejected("no such file")
    if source.stat().st_size > max_bytes:
        raise AttachmentRejected(f"it is larger than the {max_bytes / 1e6:.0f} MB limit")
    shutil.copyfile(source, target)


async def _download(session: aiohttp.ClientSession, att: Attachment, target: Path, max_bytes: int) -> None:
    try:
        async with session.get(att.url, headers=dict(att.headers), allow_redirects=True) as resp:
            if resp.status in (401, 403):
                raise AttachmentRejected("the bot isn't allowed to download it (check the app's file permissions)")
            if resp.status >= 400:
                raise AttachmentRejected(f"download failed (HTTP {resp.status})")
            ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
            expected = (att.mimetype or mimetypes.guess_type(target.name)[0] or "").lower()
            if ctype == "text/html" and expected != "text/html":
                raise AttachmentRejected(
                    "the platform returned a login page instead of the file (the bot probably lacks the "
                    "files:read permission)"
                )
            declared = resp.content_length
            if declared is not None and declared > max_bytes:
                raise AttachmentRejected(f"it is {declared / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB")
            total = 0
            with target.open("wb") as out:
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    total += len(chunk)
                    if total > max_bytes:
                        raise AttachmentRejected(f"it is larger than the {max_bytes / 1e6:.0f} MB limit")
                    out.write(chunk)
    except AttachmentRejected:
        target.unlink(missing_ok=True)
        raise
    except (aiohttp.ClientError, TimeoutError) as exc:
        target.unlink(missing_ok=True)
        raise AttachmentRejected(f"download failed ({type(exc).__name__})") from exc
