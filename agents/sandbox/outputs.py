"""Copy the files the agent left in its output folder out of the sandbox, safely.

The folder is written by untrusted code, so: nothing is followed (symlinks, hard-link tricks through
reopened paths), only regular files are taken, names are sanitised, and count and total size are capped.
Each file is opened with O_NOFOLLOW and checked again with fstat, so a swap between lstat and open
cannot redirect the copy to a host file.
"""
from __future__ import annotations

import io
import mimetypes
import os
import stat
import tarfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

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


# -- copying a sandbox's output folder out of (and back into) a container as a tar stream -------------------
#
# The Docker sandbox keeps OUTPUT_DIR on a size-limited tmpfs inside the engine, not on a host folder, so the
# agent's code cannot fill the bot host's disk. Its files reach the host as the tar stream Docker's archive
# API produces. The stream is untrusted (the agent chose every name and file type in it): it is read
# sequentially with tarfile's stream mode, never extracted with extract()/extractall(); only regular files
# and folders are written, under names checked component by component, into a folder this process just
# created (so nothing in it can be a link); entry count and bytes are capped while reading.

MAX_TAR_DEPTH = 8
MAX_NOTICES = 20


class _CappedStream(io.RawIOBase):
    """A read-only file over an iterator of byte chunks that fails once more than `limit` bytes arrived."""

    def __init__(self, chunks: Iterable[bytes], limit: int):
        self._chunks = iter(chunks)
        self._chunk = memoryview(b"")
        self._limit = limit
        self.total = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not len(self._chunk):
            try:
                self._chunk = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._chunk))
        buffer[:n] = self._chunk[:n]
        self._chunk = self._chunk[n:]
        self.total += n
        if self.total > self._limit:
            raise OutputsTooLarge(f"the output archive is larger than {self._limit} bytes")
        return n


class OutputsTooLarge(Exception):
    """The archive stream went past its byte cap."""


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hard link"
    return "special file"


def extract_output_archive(chunks: Iterable[bytes], dest_dir: Path, *, root_name: str, max_entries: int,
                           max_bytes: int) -> tuple[bool, list[str]]:
    """Write the regular files of a Docker archive stream of the folder `root_name` into dest_dir (empty).

    Returns (complete, notices): complete is False when the stream broke off or was malformed (the caller
    should then keep its previous copy); hitting a cap is not an error (the rest is skipped with a notice).
    """
    dest_dir = Path(dest_dir)
    notices: list[str] = []
    skipped = 0

    def notice(text: str) -> None:
        nonlocal skipped
        if len(notices) < MAX_NOTICES:
            notices.append(text)
        else:
            skipped += 1

    entries = 0
    total = 0
    capped_count = capped_bytes = False
    # tar framing: a 512-byte header per entry, long names/attributes in PAX headers, 10 KiB records
    stream = _CappedStream(chunks, max_bytes + max_entries * 8192 + (1 << 20))
    complete = True
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if not parts or parts[0] != root_name or member.name.startswith("/"):
                    notice(f"skipped {sanitize_filename(member.name)}: not inside the output folder")
                    continue
                rel = parts[1:]
                if not rel:
                    continue  # the folder itself
                shown = sanitize_filename(rel[-1])
                if any(p in ("", ".", "..") or "\x00" in p or len(p.encode("utf-8", "surrogateescape")) > 255
                       for p in rel):
                    notice(f"skipped {shown}: not a plain file name")
                    continue
                if len(rel) > MAX_TAR_DEPTH:
                    notice(f"skipped {shown}: nested more than {MAX_TAR_DEPTH} folders deep")
                    continue
                if not (member.isreg() or member.isdir()):
                    notice(f"skipped {shown}: a {_kind(member)}, not a regular file")
                    continue
                if entries >= max_entries:
                    capped_count = True
                    continue
                entries += 1
                try:
                    parent = _make_dirs(dest_dir, rel if member.isdir() else rel[:-1])
                except OSError:
                    notice(f"skipped {shown}: its folder could not be created")
                    continue
                if member.isdir():
                    continue
                if total + member.size > max_bytes:
                    capped_bytes = True
                    continue
                source = tar.extractfile(member)
                if source is None:
                    continue
                try:
                    fd = os.open(parent / rel[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                except OSError:
                    notice(f"skipped {shown}: a file of that name was already taken")
                    continue
                with os.fdopen(fd, "wb") as target:
                    while True:
                        block = source.read(1 << 20)
                        if not block:
                            break
                        total += len(block)
                        target.write(block)
    except (tarfile.TarError, EOFError, OSError, OutputsTooLarge, ValueError) as exc:
        complete = False
        notices.append(f"the output folder could not be read completely ({type(exc).__name__})")
    if capped_count:
        notices.append(f"some output files were not kept: at most {max_entries} files and folders")
    if capped_bytes:
        notices.append(f"some output files were not kept: over the {max_bytes / 1_000_000:g} MB output limit")
    if skipped:
        notices.append(f"{skipped} more file(s) skipped")
    return complete, notices


def _make_dirs(root: Path, parts: tuple[str, ...]) -> Path:
    """root/parts..., creating folders; every component must be a real folder (never a link)."""
    path = root
    for part in parts:
        path = path / part
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                raise NotADirectoryError(str(path)) from None
    return path


def pack_output_folder(folder: Path, fileobj: BinaryIO, *, uid: int, max_bytes: int) -> int:
    """Write a tar of the regular files and folders under `folder` (never following links) to fileobj.

    The entries are owned by uid:uid and carry no special bits; returns the number of files packed.
    """
    count = 0
    total = 0
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tar:
        stack: list[tuple[Path, tuple[str, ...]]] = [(Path(folder), ())]
        while stack:
            current, parts = stack.pop()
            try:
                entries = sorted(os.scandir(current), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                rel = parts + (entry.name,)
                info = tarfile.TarInfo("/".join(rel))
                info.uid = info.gid = uid
                info.mtime = int(st.st_mtime)
                if stat.S_ISDIR(st.st_mode) and len(rel) <= MAX_TAR_DEPTH:
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o700
                    tar.addfile(info)
                    stack.append((Path(entry.path), rel))
                elif stat.S_ISREG(st.st_mode) and total + st.st_size <= max_bytes:
                    try:
                        fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                    except OSError:
                        continue
                    with os.fdopen(fd, "rb") as src:
                        fst = os.fstat(src.fileno())
                        if not stat.S_ISREG(fst.st_mode):
                            continue
                        info.size = fst.st_size
                        info.mode = 0o600
                        tar.addfile(info, src)
                    total += info.size
                    count += 1
    return count
