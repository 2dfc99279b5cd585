"""Boot of the WebAssembly sandbox's runner inside Pyodide (runs in the sandbox, never on the host).

The runner is the Docker sandbox's own (inside.py: same JSON-lines protocol on fds 0/1, same
LocalPythonExecutor, same tool stubs), plus two requests Pyodide needs because it has no host folders:
`upload` (the host copies INPUT_FILES and saved outputs into the in-memory filesystem) and `download`
(OUTPUT_DIR leaves as a tar stream in chunks, which the host reads as untrusted, as with Docker).

smolagents without its dependencies: Pyodide's npm distribution has the standard library only, and
smolagents' package `__init__` imports pillow, huggingface_hub, requests, jinja2 and more. The executor
needs none of them: `smolagents.local_python_executor` imports only `smolagents.tools.Tool` (used in type
hints) and `smolagents.utils` (which imports jinja2 at module level for an unrelated template helper). So
`install_smolagents` registers a bare `smolagents` package whose __path__ points into the unmodified
wheel (`pip download smolagents==<host version> --no-deps`, read through zipimport, so its __init__ never
runs), a `smolagents.tools` module holding an empty `Tool` class, and an empty `jinja2` module; then
`import smolagents.local_python_executor` loads the real executor from the wheel.

This file must not import agentdesk (only the standard library and the wheel exist in the sandbox).
"""
from __future__ import annotations

import base64
import os
import sys
import tarfile
import types

AGENTDESK_DIR = "/agentdesk"
WHEEL = f"{AGENTDESK_DIR}/smolagents.whl"
WORKSPACE = "/workspace"
CHUNK_BYTES = 1 << 20
#: Imported before the memory snapshot is taken, so the first steps of a task need no import from the zip.
PRELOAD = ("collections", "datetime", "itertools", "math", "queue", "random", "re", "stat", "statistics",
           "time", "unicodedata", "json", "csv", "io", "hashlib", "base64", "tarfile", "decimal", "fractions",
           "string", "textwrap", "calendar", "zoneinfo", "copy", "functools", "operator", "traceback", "pickle",
           "struct", "array", "bisect", "heapq", "enum", "typing", "dataclasses", "contextlib", "uuid", "pprint",
           "difflib", "html", "html.parser", "xml.etree.ElementTree", "urllib.parse", "urllib.request",
           "http.client", "email", "email.message", "socket", "subprocess", "threading", "glob", "fnmatch",
           "shutil", "pathlib", "tempfile", "gzip", "zipfile", "sqlite3", "locale", "gettext", "weakref",
           "numbers", "secrets", "hmac", "binascii", "codecs", "logging", "argparse", "shlex", "ipaddress",
           "mimetypes", "ctypes", "gc", "importlib", "asyncio", "concurrent.futures", "signal", "select",
           "string", "keyword", "colorsys", "graphlib", "cmath", "platform", "sysconfig", "sys")


def install_smolagents() -> None:
    """Make `import smolagents.local_python_executor` work from the wheel without smolagents' heavy deps."""
    if "smolagents.local_python_executor" in sys.modules:
        return
    package = types.ModuleType("smolagents")
    package.__path__ = [f"{WHEEL}/smolagents"]
    package.__package__ = "smolagents"
    tools = types.ModuleType("smolagents.tools")

    class Tool:
        """Stands in for smolagents.tools.Tool, which the executor only names in type hints."""

    tools.Tool = Tool
    package.tools = tools
    sys.modules.setdefault("jinja2", types.ModuleType("jinja2"))
    sys.modules["smolagents"] = package
    sys.modules["smolagents.tools"] = tools
    import smolagents.local_python_executor  # noqa: F401


def prepare() -> None:
    """Everything that can be done before a task: imports (kept in the memory snapshot)."""
    if AGENTDESK_DIR not in sys.path:
        sys.path.insert(0, AGENTDESK_DIR)
    install_smolagents()
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    import inside  # noqa: F401


def available_modules() -> str:
    """JSON list of the standard library's top-level modules that Pyodide can import (for load-time checks)."""
    import importlib.util
    import json

    found = []
    for name in sorted(sys.stdlib_module_names):
        try:
            if name in sys.builtin_module_names or importlib.util.find_spec(name) is not None:
                found.append(name)
        except (ImportError, ValueError):
            pass
    return json.dumps(found)


def _target(relative: str) -> str:
    """/workspace/<relative> for a host-chosen path under in/ or out/ (checked component by component)."""
    parts = relative.split("/")
    if len(parts) < 2 or parts[0] not in ("in", "out") or any(p in ("", ".", "..") or "\x00" in p for p in parts):
        raise ValueError(f"bad upload path {relative!r}")
    return "/".join([WORKSPACE, *parts])


def make_runner_class(memory_mb: int):
    import inside

    class WasmRunner(inside.Runner):
        """inside.Runner plus the file copies the host makes in and out of the in-memory filesystem."""

        def handle(self, msg: dict) -> dict:
            kind = msg.get("type")
            if kind == "upload":
                path = _target(str(msg.get("path")))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "ab" if msg.get("append") else "wb") as f:
                    f.write(base64.b64decode(msg.get("data") or ""))
                return {"type": "ok"}
            if kind == "download":
                return self.download()
            return super().handle(msg)

        def download(self) -> dict:
            """OUTPUT_DIR as an uncompressed tar (links and special files as entries, never followed)."""
            channel = self.channel

            class Chunks:
                def write(self, data: bytes) -> int:
                    for i in range(0, len(data), CHUNK_BYTES):
                        channel.send({"type": "chunk", "data": base64.b64encode(data[i:i + CHUNK_BYTES]).decode()})
                    return len(data)

            with tarfile.open(fileobj=Chunks(), mode="w|", format=tarfile.PAX_FORMAT) as tar:
                tar.add(inside.OUTPUT_DIR, arcname=os.path.basename(inside.OUTPUT_DIR), recursive=True)
            return {"type": "done"}

        def run(self, code: str) -> dict:
            reply = super().run(code)
            if reply.get("type") == "error" and "MemoryError" in reply.get("message", ""):
                reply["message"] += (f"\nThe sandbox's memory limit ({memory_mb} MB) was reached. Use less memory "
                                     "(process data in chunks; files in OUTPUT_DIR count towards it too).")
            return reply

    return WasmRunner


def warm_up() -> None:
    """Run the executor's hot paths a few times before saying "ready": V8 compiles the interpreter's wasm
    lazily and tiers it up on use, so a task's first steps would otherwise pay for that."""
    import json

    import inside
    from smolagents.local_python_executor import LocalPythonExecutor

    executor = LocalPythonExecutor(additional_authorized_imports=[], timeout_seconds=None)
    executor.send_tools({"final_answer": inside.final_answer})
    executor.send_variables({"OUTPUT_DIR": inside.OUTPUT_DIR, "INPUT_FILES": []})
    for i in range(40):
        result = executor(f"x = {i} + 1\nprint('step', x)\nx * 2")
        json.dumps(inside.to_json_value(result.output))
        inside.output_state()
    executor("final_answer({'warm': [1, 2.5, 'three']})")


#: Pyodide's bridges to JavaScript. Through them code could reach Deno's own API: still within Deno's
#: permissions, but JS allocations (ArrayBuffers) are outside the wasm memory cap. Never importable, even
#: when a department authorizes "*".
JS_BRIDGES = frozenset({"js", "pyodide", "pyodide_js", "_pyodide", "micropip"})


class _NoJsBridge:
    """A meta path finder that refuses the JS bridge modules (installed after the runner's own imports)."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in JS_BRIDGES:
            raise ImportError(f"{name} is not available in the sandbox")
        return None


def close_js_bridge() -> None:
    sys.meta_path.insert(0, _NoJsBridge())
    for name in list(sys.modules):
        if name.split(".")[0] in JS_BRIDGES:
            del sys.modules[name]


def serve(memory_mb: int, from_snapshot: bool) -> int:
    """Serve one task on stdin/stdout until the host closes stdin (inside.main with the Wasm runner)."""
    prepare()
    import inside

    warm_up()
    close_js_bridge()

    os.makedirs(f"{WORKSPACE}/in", exist_ok=True)
    os.makedirs(inside.OUTPUT_DIR, exist_ok=True)
    os.chdir("/tmp")
    inside.Runner = make_runner_class(int(memory_mb))
    return inside.main()
