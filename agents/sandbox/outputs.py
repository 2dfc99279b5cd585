"""Copy the files the agent left in its output folder out of the sandbox, safely.

The folder is written by untrusted code, so: nothing is followed (symlinks, hard-link tricks through
reopened paths), only regular files are taken, names are sanitised, and count and total size are capped.
Each file is opened with O_NOFOLLOW and checked again with fstat, so a swap between lstat and open
cannot redirect the copy to a host file.
"""
from __future__ import annotations

import mimetypes
import os
import stat
from pathlib import Path

from agents.chat import OutputFile
from agents.security import sanitize_filename

MAX_DEPTH = 4


def _walk(root: Path, notices: list[str]):
    """(relative parts, path) of regular files under root, depth-first, sorted, never following links."""
    stack: list[tuple[Path, tuple[str, ...]]] = [(root, ())]
    while stack:
        folder, parts = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        subfolders = []
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                if len(parts) < MAX_DEPTH:
                    subfolders.append((Path(entry.path), parts + (entry.name,)))
                continue
            if not stat.S_ISREG(st.st_mode):
                kind = "symlink" if stat.S_ISLNK(st.st_mode) else "special file"
                notices.append(f"skipped {sanitize_filename(entry.name)}: a {kind}, not a regular file")
                continue
            yield parts + (entry.name,), Path(entry.path)
        stack.extend(reversed(subfolders))


def collect_outputs(host_output_dir: Path, dest_dir: Path, max_files: int, max_bytes: int
                    ) -> tuple[list[OutputFile], list[str]]:
    """Copy regular files from host_output_dir into dest_dir; returns the files and user-facing notices."""
    files: list[OutputFile] = []
    notices: list[str] = []
    if not Path(host_output_dir).is_dir():
        return files, notices
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    total = 0
    used: set[str] = set()
    skipped_count = 0
    for parts, path in _walk(Path(host_output_dir), notices):
        if len(files) >= max_files:
            skipped_count += 1
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            notices.append(f"skipped {sanitize_filename(parts[-1])}: could not be opened safely")
            continue
        with os.fdopen(fd, "rb") as src:
            st = os.fstat(src.fileno())
            if not stat.S_ISREG(st.st_mode):
                notices.append(f"skipped {sanitize_filename(parts[-1])}: not a regular file")
                continue
            if total + st.st_size > max_bytes:
                notices.append(f"skipped {sanitize_filename(parts[-1])}: over the {max_bytes / 1_000_000:g} MB total size limit")
                continue
            name = sanitize_filename("_".join(parts))
            base, dot, ext = name.rpartition(".")
            n = 1
            while name.lower() in used:
                n += 1
                name = f"{base}-{n}.{ext}" if dot else f"{name}-{n}"
            used.add(name.lower())
            target = dest_dir / name
            copied = 0
            with open(target, "wb") as dst:
                while copied <= st.st_size:
                    chunk = src.read(min(1 << 20, st.st_size - copied + 1))
                    if not chunk:
                        break
                    dst.write(chunk)
                    copied += len(chunk)
            if copied > st.st_size:
                target.unlink()
                notices.append(f"skipped {name}: it was still growing")
                continue
            total += copied
            mimetype = mimetypes.guess_type(name)[0] or "application/octet-stream"
            files.append(OutputFile(name=name, path=target, size=copied, mimetype=mimetype))
    if skipped_count:
        notices.append(f"{skipped_count} more file(s) not posted: at most {max_files} files per answer")
    return files, notices
