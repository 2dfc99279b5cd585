"""What the WebAssembly sandbox needs on the host, where it lives, and how it is installed.

- Deno: the `deno` PyPI package (a dependency of agentdesk) puts the binary next to the venv's Python.
- Pyodide: the npm package `pyodide@PYODIDE_VERSION` (core, pyodide.asm.wasm and the standard library zip;
  no CDN packages: numpy, pandas, matplotlib and micropip are only listed in its lock file, to be fetched
  from the CDN, which is never reachable from the sandbox), installed with npm into the cache folder.
- smolagents' pure-Python wheel of the host's version (`pip download --no-deps`), loaded by wasm_boot.py.
- A Pyodide memory snapshot taken once after the runner's imports (Pyodide's private `_makeSnapshot`
  option, stable within the pinned version): a boot from it takes about a second instead of many.
  Its name carries a hash of everything it was made from, so a changed runner makes a new one.

All of it lives under `$XDG_CACHE_HOME/agentdesk/wasm` (default ~/.cache/agentdesk/wasm); `install()` is
idempotent (`python -m agents.sandbox.wasm_runtime`, run by scripts/test.sh and scripts/dev.sh).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

PYODIDE_VERSION = "314.0.7"
HERE = Path(__file__).parent
RUNNER = HERE / "wasm_runner.mjs"
BOOT = HERE / "wasm_boot.py"
INSIDE = HERE / "inside.py"
SNAPSHOT_TIMEOUT_S = 600


class WasmRuntimeMissing(RuntimeError):
    """A part of the Wasm runtime is not installed; the message says how to install it."""


def cache_root() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "agentdesk" / "wasm"


def find_deno() -> Path | None:
    beside = Path(sys.executable).parent / "deno"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("deno")
    return Path(found) if found else None


@dataclass(frozen=True)
class WasmRuntime:
    deno: Path
    pyodide: Path
    wheel: Path
    snapshot: Path
    modules: Path

    def command(self, memory_mb: int, *, mode: str = "run", snapshot_out: Path | None = None) -> list[str]:
        """The Deno command line of one sandbox process: read access to the runtime files only (mode
        "snapshot": the installer's boot, which may write `snapshot_out` and nothing else)."""
        readable = [self.pyodide, self.wheel, RUNNER, BOOT, INSIDE]
        if mode == "run":
            readable.append(self.snapshot)
        flags = [
            "--no-prompt", "--no-config", "--no-lock", "--no-remote", "--no-npm", "--quiet",
            "--allow-read=" + ",".join(str(p) for p in readable),
            "--deny-net", "--deny-env", "--deny-run", "--deny-ffi", "--deny-sys",
            # wasm linear memory (Python's heap, the in-memory files) in 64 KiB pages; the JS heap beside it
            f"--v8-flags=--max-old-space-size={max(64, memory_mb // 2)},--wasm-max-mem-pages={memory_mb * 16}",
        ]
        if mode == "snapshot":
            flags.append(f"--allow-write={snapshot_out}")
        else:
            flags.append("--deny-write")
        config = {"pyodide": str(self.pyodide), "wheel": str(self.wheel), "inside": str(INSIDE), "boot": str(BOOT),
                  "snapshot": str(snapshot_out if mode == "snapshot" else self.snapshot), "memory_mb": memory_mb,
                  "mode": mode}
        return [str(self.deno), "run", *flags, str(RUNNER), json.dumps(config)]

    def environment(self) -> dict[str, str]:
        """Deno's own environment: nothing of the host's (the sandbox cannot read it anyway)."""
        return {"PATH": "/usr/bin:/bin", "HOME": str(cache_root()), "DENO_DIR": str(cache_root() / "deno"),
                "NO_COLOR": "1", "DENO_NO_UPDATE_CHECK": "1"}

    def available_modules(self) -> set[str] | None:
        """Top-level modules importable in the sandbox (recorded when the snapshot was made), or None."""
        try:
            return set(json.loads(self.modules.read_text()))
        except (OSError, ValueError):
            return None


def _smolagents_version() -> str:
    return metadata.version("smolagents")


def _wheel_dir() -> Path:
    return cache_root() / "wheels"


def _pyodide_dir() -> Path:
    return cache_root() / f"pyodide-{PYODIDE_VERSION}" / "node_modules" / "pyodide"


def _find_wheel() -> Path | None:
    version = _smolagents_version()
    found = sorted(_wheel_dir().glob(f"smolagents-{version}-py3-none-any.whl"))
    return found[0] if found else None


def _key(wheel: Path) -> str:
    digest = hashlib.sha256(f"{PYODIDE_VERSION}\n{wheel.name}\n".encode())
    for path in (RUNNER, BOOT, INSIDE):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def locate(*, need_snapshot: bool = True) -> WasmRuntime:
    """The installed runtime; raises WasmRuntimeMissing saying what to run when a part is missing."""
    how = "run `python -m agents.sandbox.wasm_runtime` (or scripts/dev.sh, which does it)"
    deno = find_deno()
    if deno is None:
        raise WasmRuntimeMissing(f"Deno is not installed (pip install deno): {how}")
    pyodide = _pyodide_dir()
    if not (pyodide / "pyodide.asm.wasm").is_file() or not (pyodide / "python_stdlib.zip").is_file():
        raise WasmRuntimeMissing(f"Pyodide {PYODIDE_VERSION} is not installed in {pyodide}: {how}")
    wheel = _find_wheel()
    if wheel is None:
        raise WasmRuntimeMissing(f"the smolagents {_smolagents_version()} wheel is not in {_wheel_dir()}: {how}")
    key = _key(wheel)
    runtime = WasmRuntime(deno=deno, pyodide=pyodide, wheel=wheel, snapshot=cache_root() / f"snapshot-{key}.bin",
                          modules=cache_root() / f"modules-{key}.json")
    if need_snapshot and not runtime.snapshot.is_file():
        raise WasmRuntimeMissing(f"the Pyodide memory snapshot {runtime.snapshot.name} is missing: {how}")
    return runtime


def install(progress: Callable[[str], None] = print) -> WasmRuntime:
    """Install whatever is missing (npm for Pyodide, pip for the wheel), then make the snapshot."""
    if find_deno() is None:
        raise WasmRuntimeMissing("Deno is not installed: pip install deno (it is a dependency of agentdesk)")
    pyodide = _pyodide_dir()
    if not (pyodide / "pyodide.asm.wasm").is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise WasmRuntimeMissing("npm is needed once to install Pyodide (Debian: apt-get install npm)")
        prefix = pyodide.parents[1]
        prefix.mkdir(parents=True, exist_ok=True)
        progress(f"installing pyodide@{PYODIDE_VERSION} from npm into {prefix}")
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--no-save", "--omit=dev", "--prefix",
                        str(prefix), f"pyodide@{PYODIDE_VERSION}"], check=True, stdout=subprocess.DEVNULL)
    if _find_wheel() is None:
        version = _smolagents_version()
        _wheel_dir().mkdir(parents=True, exist_ok=True)
        progress(f"downloading the smolagents {version} wheel into {_wheel_dir()}")
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "-d", str(_wheel_dir()), f"smolagents=={version}"], check=True)
    runtime = locate(need_snapshot=False)
    if not runtime.snapshot.is_file():
        make_snapshot(runtime, progress)
    return runtime


def make_snapshot(runtime: WasmRuntime, progress: Callable[[str], None] = print) -> None:
    """Boot Pyodide once (slow), import the runner, save its memory and the list of importable modules."""
    progress("making the Pyodide memory snapshot (once; up to a minute)")
    tmp = Path(f"{runtime.snapshot}.{os.getpid()}.{threading.get_ident()}.tmp")
    done = subprocess.run(runtime.command(1024, mode="snapshot", snapshot_out=tmp), env=runtime.environment(),
                          capture_output=True,
                          timeout=SNAPSHOT_TIMEOUT_S, stdin=subprocess.DEVNULL)
    lines = [line for line in done.stdout.decode("utf-8", "replace").splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise WasmRuntimeMissing(f"making the Pyodide snapshot failed (exit {done.returncode}): "
                                 f"{done.stderr.decode('utf-8', 'replace')[-2000:]}")
    report = json.loads(lines[-1])
    modules_tmp = tmp.with_suffix(".modules")
    modules_tmp.write_text(json.dumps(sorted(report.get("modules") or [])))
    os.replace(modules_tmp, runtime.modules)
    os.replace(tmp, runtime.snapshot)
    for old in [*cache_root().glob("snapshot-*.bin"), *cache_root().glob("modules-*.json")]:
        if old not in (runtime.snapshot, runtime.modules) and time.time() - old.stat().st_mtime > 3600:
            old.unlink(missing_ok=True)  # kept an hour: another checkout's processes may still boot from it


def main() -> int:
    try:
        runtime = install()
    except (WasmRuntimeMissing, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        print(f"the WebAssembly sandbox could not be installed: {exc}", file=sys.stderr)
        return 1
    print(f"WebAssembly sandbox ready: Deno {runtime.deno}, Pyodide {PYODIDE_VERSION}, {runtime.wheel.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
