"""Build the sandbox image without a container registry or network access inside the build.

The base is `python:3.11-slim` when it can be pulled, otherwise a Debian bookworm root filesystem made
with debootstrap and imported. Python packages are downloaded as wheels on the host (where PyPI's TLS
works) and installed offline in the image, so a build needs no egress from a container. Wheels are
cached per requirements hash and the Docker layer cache is kept, so a second build is a cache hit.
"""
from __future__ import annotations

import collections
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

import docker
from docker.errors import APIError, BuildError, DockerException, ImageNotFound

from agents.settings import Settings

HERE = Path(__file__).parent
PULL_BASE = "python:3.11-slim"
LOCAL_BASE = "agentdesk-sandbox-base:bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")

Progress = Callable[[str], None]


class ImageBuildError(RuntimeError):
    """The image could not be built; the message says which phase failed and why."""


def requirements_text() -> str:
    """The image's requirements: the bundled list plus smolagents pinned to the host's version."""
    lines = [ln.strip() for ln in (HERE / "requirements.txt").read_text().splitlines()]
    reqs = [ln for ln in lines if ln and not ln.startswith("#")]
    reqs.append(f"smolagents=={metadata.version('smolagents')}")
    return "\n".join(reqs) + "\n"


def cache_dir() -> Path:
    """Wheels and the build context live here, outside the repository, and survive between builds."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "agentdesk" / "sandbox-build"


def _client() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=600)
        client.ping()
        return client
    except DockerException as exc:
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise ImageBuildError(
            f"Docker engine not reachable at {host} ({exc}): run scripts/ensure_docker.sh or set DOCKER_HOST"
        ) from exc


def _has_image(client: docker.DockerClient, name: str) -> bool:
    try:
        client.images.get(name)
        return True
    except ImageNotFound:
        return False


def image_exists(settings: Settings) -> bool:
    """True when the configured sandbox image is present in the local engine (False if unreachable)."""
    try:
        client = docker.from_env(timeout=10)
        try:
            return _has_image(client, settings.sandbox_image)
        finally:
            client.close()
    except DockerException:
        return False


def _run(cmd: list[str], progress: Progress, *, stdin=None, env=None) -> None:
    """Run a command, streaming its output lines to progress; raise with the tail on failure."""
    proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    tail: collections.deque[str] = collections.deque(maxlen=20)
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail.append(line)
        progress(f"    {line}")
    if proc.wait() != 0:
        raise ImageBuildError(f"{' '.join(cmd[:3])} ... failed (exit {proc.returncode}):\n" + "\n".join(tail))


def ensure_base(client: docker.DockerClient, progress: Progress) -> str:
    """Return a base image name: python:3.11-slim if present or pullable, else the debootstrapped one."""
    if _has_image(client, PULL_BASE):
        progress(f"[base] using {PULL_BASE} (present locally)")
        return PULL_BASE
    try:
        progress(f"[base] trying to pull {PULL_BASE}")
        client.images.pull(PULL_BASE)
        return PULL_BASE
    except (APIError, DockerException) as exc:
        progress(f"[base] cannot pull {PULL_BASE} ({str(exc).splitlines()[0][:160]}); using a local base")
    if _has_image(client, LOCAL_BASE):
        progress(f"[base] {LOCAL_BASE} already exists: skipping debootstrap")
        return LOCAL_BASE
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debootstrap is not installed: run scripts/ensure_docker.sh (or apt-get install debootstrap)")
    if os.geteuid() != 0:
        raise ImageBuildError("building the local base image needs root (debootstrap); run the build as root once")
    with tempfile.TemporaryDirectory(prefix="agentdesk-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        progress(f"[base] debootstrap bookworm into {rootfs} (about a minute)")
        t0 = time.monotonic()
        _run(
            ["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
             "bookworm", str(rootfs), DEBIAN_MIRROR],
            progress,
        )
        progress(f"[base] debootstrap done in {time.monotonic() - t0:.0f}s; importing as {LOCAL_BASE}")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            _run(["docker", "import", "-", LOCAL_BASE], progress, stdin=tar.stdout)
        finally:
            assert tar.stdout is not None
            tar.stdout.close()
            tar.wait()
    return LOCAL_BASE


def ensure_wheels(settings: Settings, progress: Progress) -> Path:
    """Download the wheel set for the current requirements once; reuse it while the hash is unchanged."""
    reqs = requirements_text()
    digest = hashlib.sha256(reqs.encode()).hexdigest()[:16]
    wheels = cache_dir() / "wheels" / digest
    marker = wheels / ".complete"
    if marker.exists():
        progress(f"[wheels] cached wheel set {digest} ({len(list(wheels.glob('*.whl')))} wheels): skipping download")
        return wheels
    if wheels.exists():
        shutil.rmtree(wheels)
    wheels.mkdir(parents=True)
    (wheels / "requirements.txt").write_text(reqs)
    progress(f"[wheels] downloading wheels for Python 3.11 / manylinux x86_64 into {wheels}")
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:",
           "--python-version", "3.11", "--implementation", "cp"]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    cmd += ["-d", str(wheels), "-r", str(wheels / "requirements.txt")]
    _run(cmd, progress)
    marker.write_text(digest)
    return wheels


def _prepare_context(settings: Settings, wheels: Path) -> Path:
    """A stable build context (same path, same bytes) so Docker's layer cache hits on rebuilds."""
    ctx = cache_dir() / "context"
    ctx.mkdir(parents=True, exist_ok=True)
    link = ctx / "wheels"
    if link.exists() and (link / ".complete").read_text() != (wheels / ".complete").read_text():
        shutil.rmtree(link)
    if not link.exists():
        shutil.copytree(wheels, link)
    for name in ("Dockerfile", "inside.py"):
        src = (HERE / name).read_bytes()
        dst = ctx / name
        if not dst.exists() or dst.read_bytes() != src:
            dst.write_bytes(src)
    (ctx / ".dockerignore").write_text("wheels/.complete\n")
    return ctx


def build_image(settings: Settings, progress: Progress = print) -> str:
    """Build settings.sandbox_image (base, wheels, image), printing each phase; returns the image id."""
    t0 = time.monotonic()
    client = _client()
    try:
        base = ensure_base(client, progress)
        wheels = ensure_wheels(settings, progress)
        ctx = _prepare_context(settings, wheels)
        progress(f"[image] docker build {settings.sandbox_image} FROM {base}")
        image_id = None
        try:
            for chunk in client.api.build(path=str(ctx), tag=settings.sandbox_image, rm=True, forcerm=True,
                                          buildargs={"BASE": base}, decode=True,
                                          labels={"agentdesk.sandbox.image": "1"}):
                if "stream" in chunk:
                    for line in chunk["stream"].splitlines():
                        if line.strip():
                            progress(f"    {line}")
                if "error" in chunk:
                    raise ImageBuildError(f"docker build failed: {chunk['error'].strip()}")
                if "aux" in chunk and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
        except (APIError, BuildError) as exc:
            raise ImageBuildError(f"docker build failed: {exc}") from exc
        image_id = image_id or client.images.get(settings.sandbox_image).id
        progress(f"[image] {settings.sandbox_image} ready ({image_id[:19]}) in {time.monotonic() - t0:.1f}s")
        return image_id
    finally:
        client.close()
