"""Sandbox latency: ours (Docker and WebAssembly, warm pool and cold) against smolagents' DockerExecutor
and LocalPythonExecutor.

Measured in one run on the same machine. For each executor:
  new thread -> first result: create/acquire the executor, send tools and variables, run the first code
                action and get its result (what a user waits for before the first step's observation);
  per step:   round trip of a trivial code action on a warm executor (median of many);
  teardown:   cleanup();
  memory:     what one sandbox holds (Docker: the container's cgroup usage; Wasm: the Deno process's RSS).
Targets: Docker sandbox first result <= 0.25x DockerExecutor's and per-step overhead <= 20 ms above
LocalPythonExecutor's; Wasm sandbox warm first result <= 20 ms and per-step overhead <= 5 ms above
LocalPythonExecutor's.

DockerExecutor needs a Jupyter kernel-gateway image; no registry is reachable, so it is built here as
`agentdesk-bench-jupyter` from the local sandbox base image with wheels downloaded on the host, and its
client needs smolagents' `docker` extra (`pip install -e '.[bench]'`; scripts/test.sh installs it).

Run: python -m bench.sandbox [--runs 5]   (Docker rows need the engine and `agentdesk sandbox build`; Wasm
rows need scripts/install_wasm.sh; each kind is skipped, saying why, when it cannot run)
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import docker
from smolagents.default_tools import FinalAnswerTool
from smolagents.local_python_executor import LocalPythonExecutor
from smolagents.monitoring import AgentLogger, LogLevel

from agents.chat import Caller
from agents.sandbox.docker_sandbox import DockerSandboxProvider
from agents.sandbox.image import PLATFORMS, cache_dir, ensure_base
from agents.sandbox.wasm_sandbox import WasmSandboxProvider
from agents.settings import Settings

JUPYTER_IMAGE = "agentdesk-bench-jupyter:latest"
CALLER = Caller("bench", "bench", "bench")
FIRST = "x = 20 + 1\nx * 2"
STEP = "y = x + 1\ny"


def build_jupyter_image(client: docker.DockerClient) -> None:
    """Kernel-gateway image from our base, installed offline from host-downloaded wheels (cached)."""
    base = ensure_base(client, print)
    reqs = (f"jupyter_kernel_gateway\njupyter_client\nipykernel\nnumpy\npillow\n"
            f"smolagents=={metadata.version('smolagents')}\n")
    wheels = cache_dir() / "bench-jupyter-wheels"
    if not (wheels / ".complete").exists():
        wheels.mkdir(parents=True, exist_ok=True)
        (wheels / "requirements.txt").write_text(reqs)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", "3.11",
               "--implementation", "cp", "-d", str(wheels), "-r", str(wheels / "requirements.txt")]
        for platform in PLATFORMS:
            cmd += ["--platform", platform]
        subprocess.run(cmd, check=True)
        (wheels / ".complete").write_text("ok")
    with tempfile.TemporaryDirectory() as ctx:
        shutil.copytree(wheels, Path(ctx) / "wheels")
        (Path(ctx) / "Dockerfile").write_text(
            f"FROM {base}\n"
            "COPY wheels /wheels\n"
            "RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install -q --no-index --find-links /wheels "
            "-r /wheels/requirements.txt && rm -rf /wheels\n"
            "ENV PATH=/opt/venv/bin:/usr/bin:/bin\n"
            "EXPOSE 8888\n"
            'CMD ["jupyter", "kernelgateway", "--KernelGatewayApp.ip=0.0.0.0", "--KernelGatewayApp.port=8888"]\n'
        )
        print(f"[bench] building {JUPYTER_IMAGE} FROM {base} (cached after the first time)")
        client.images.build(path=ctx, tag=JUPYTER_IMAGE, rm=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def per_step(executor, n: int) -> float:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        executor(STEP)
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def container_memory(client: docker.DockerClient, container_id: str) -> float:
    stats = client.api.stats(container_id, stream=False)["memory_stats"]
    return float(stats.get("usage", 0) - (stats.get("stats") or {}).get("cache", 0))


def process_memory(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) * 1024
    return 0.0


def bench_local(runs: int, steps: int) -> dict:
    first, step, down = [], [], []
    for _ in range(runs):
        t = time.perf_counter()
        ex = LocalPythonExecutor(additional_authorized_imports=[])
        ex.send_tools({"final_answer": FinalAnswerTool()})
        ex.send_variables({"OUTPUT_DIR": "/tmp"})
        assert ex(FIRST).output == 42
        first.append(time.perf_counter() - t)
        step.append(per_step(ex, steps))
        t = time.perf_counter()
        del ex
        down.append(time.perf_counter() - t)
    return {"first": first, "step": step, "down": down}


def bench_ours(settings: Settings, runs: int, steps: int, warm: bool, kind: str = "docker") -> dict:
    provider_class = DockerSandboxProvider if kind == "docker" else WasmSandboxProvider
    provider = provider_class(dataclasses.replace(settings, sandbox=kind, sandbox_pool_size=1 if warm else 0))
    provider.start()
    client = docker.from_env() if kind == "docker" else None
    first, step, down, memory = [], [], [], []
    try:
        for _ in range(runs):
            deadline = time.monotonic() + 60
            while warm and provider.warm < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            t = time.perf_counter()
            box = provider.acquire(authorized_imports=[], step_timeout_s=30, caller=CALLER)
            box.send_tools({"final_answer": FinalAnswerTool()})
            box.send_variables({"OUTPUT_DIR": box.output_dir, "INPUT_FILES": []})
            assert box(FIRST).output == 42
            first.append(time.perf_counter() - t)
            step.append(per_step(box, steps))
            if client is not None:
                memory.append(container_memory(client, box.instance_id))
            else:
                memory.append(process_memory(box._instance.process.pid))
            t = time.perf_counter()
            box.cleanup()
            down.append(time.perf_counter() - t)
    finally:
        provider.close()
        if client is not None:
            client.close()
    return {"first": first, "step": step, "down": down, "memory": memory}


def bench_docker_executor(runs: int, steps: int) -> dict:
    from smolagents.remote_executors import DockerExecutor

    first, step, down, memory = [], [], [], []
    logger = AgentLogger(level=LogLevel.OFF)
    for _ in range(runs):
        t = time.perf_counter()
        ex = DockerExecutor(additional_imports=[], logger=logger, port=free_port(), image_name=JUPYTER_IMAGE,
                            build_new_image=False)
        try:
            ex.send_tools({"final_answer": FinalAnswerTool()})
            ex.send_variables({"OUTPUT_DIR": "/tmp"})
            out = ex(FIRST).output
            assert str(out) == "42", out
            first.append(time.perf_counter() - t)
            step.append(per_step(ex, steps))
            memory.append(container_memory(ex.client, ex.container.id))
        finally:
            t = time.perf_counter()
            ex.cleanup()
            down.append(time.perf_counter() - t)
    return {"first": first, "step": step, "down": down, "memory": memory}


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:9.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    settings = dataclasses.replace(Settings.from_env(), data_dir=Path(tempfile.mkdtemp(prefix="agentdesk-bench-")))
    docker_ready, docker_why = DockerSandboxProvider(settings).check()
    wasm_ready, wasm_why = WasmSandboxProvider(settings).check()
    if not docker_ready:
        print(f"[bench] Docker rows skipped: {docker_why}")
    if not wasm_ready:
        print(f"[bench] Wasm rows skipped: {wasm_why}")
    if not (docker_ready or wasm_ready):
        return 2
    results: dict[str, dict] = {}
    print(f"[bench] LocalPythonExecutor x{args.runs}")
    results["LocalPythonExecutor (in-process)"] = bench_local(args.runs, args.steps)
    for kind, ready in (("docker", docker_ready), ("wasm", wasm_ready)):
        if not ready:
            continue
        for warm in (True, False):
            name = f"agentdesk {kind}, {'warm pool' if warm else 'cold'}"
            print(f"[bench] {name} x{args.runs}")
            results[name] = bench_ours(settings, args.runs, args.steps, warm=warm, kind=kind)
    if docker_ready:
        client = docker.from_env()
        try:
            build_jupyter_image(client)
            print(f"[bench] smolagents DockerExecutor x{args.runs}")
            results["smolagents DockerExecutor"] = bench_docker_executor(args.runs, max(10, args.steps // 5))
        except Exception as exc:  # noqa: BLE001 - report why the baseline is missing and keep the rest
            print(f"[bench] smolagents DockerExecutor could not be measured: {type(exc).__name__}: {exc}")
        finally:
            client.close()
    shutil.rmtree(settings.data_dir, ignore_errors=True)

    med = {name: {k: statistics.median(v) for k, v in r.items() if v} for name, r in results.items()}
    print()
    print(f"{'executor':36} {'new thread -> 1st result':>26} {'per step':>12} {'teardown':>12} {'memory':>10}"
          f"   (medians, {args.runs} runs)")
    for name, m in med.items():
        memory = f"{m['memory'] / 2 ** 20:7.0f} MiB" if "memory" in m else f"{'-':>10}"
        print(f"{name:36} {fmt(m['first']):>26} {fmt(m['step']):>12} {fmt(m['down']):>12} {memory:>10}")
    local = med["LocalPythonExecutor (in-process)"]
    docker_ex = med.get("smolagents DockerExecutor")
    print()
    for name, m in med.items():
        if not name.startswith("agentdesk "):
            continue
        wasm = "wasm" in name
        overhead = (m["step"] - local["step"]) * 1000
        line = f"{name}: per-step overhead vs LocalPythonExecutor {overhead:+.2f} ms (target <= {5 if wasm else 20} ms)"
        if wasm and "warm" in name:
            line += f"; first result {m['first'] * 1000:.1f} ms (target <= 20 ms)"
        if docker_ex:
            ratio = m["first"] / docker_ex["first"]
            line += f"; first result {ratio:.3f}x DockerExecutor's" + ("" if wasm else " (target <= 0.25x)")
        print(line)
    if docker_ready and not docker_ex:
        print("DockerExecutor baseline missing: ratios against it not computed (see the message above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
