"""Sandbox latency: ours (warm pool and cold) against smolagents' DockerExecutor and LocalPythonExecutor.

Measured in one run on the same base image. For each executor:
  new thread -> first result: create/acquire the executor, send tools and variables, run the first code
                action and get its result (what a user waits for before the first step's observation);
  per step:   round trip of a trivial code action on a warm executor (median of many);
  teardown:   cleanup().
Targets: new thread to first result <= 0.25x DockerExecutor's; per-step overhead <= 20 ms above
LocalPythonExecutor's.

DockerExecutor needs a Jupyter kernel-gateway image; no registry is reachable, so it is built here as
`agentdesk-bench-jupyter` from the local sandbox base image with wheels downloaded on the host.

Run: python -m bench.sandbox [--runs 5]   (needs the Docker engine and `agentdesk sandbox build` done)
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


def bench_ours(settings: Settings, runs: int, steps: int, warm: bool) -> dict:
    provider = DockerSandboxProvider(dataclasses.replace(settings, sandbox_pool_size=1 if warm else 0))
    provider.start()
    first, step, down = [], [], []
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
            t = time.perf_counter()
            box.cleanup()
            down.append(time.perf_counter() - t)
    finally:
        provider.close()
    return {"first": first, "step": step, "down": down}


def bench_docker_executor(runs: int, steps: int) -> dict:
    from smolagents.remote_executors import DockerExecutor

    first, step, down = [], [], []
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
        finally:
            t = time.perf_counter()
            ex.cleanup()
            down.append(time.perf_counter() - t)
    return {"first": first, "step": step, "down": down}


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:9.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    settings = dataclasses.replace(Settings.from_env(), data_dir=Path(tempfile.mkdtemp(prefix="agentdesk-bench-")))
    ready, why = DockerSandboxProvider(settings).check()
    if not ready:
        print(f"cannot run: {why}")
        return 2
    results: dict[str, dict] = {}
    print(f"[bench] LocalPythonExecutor x{args.runs}")
    results["LocalPythonExecutor (in-process)"] = bench_local(args.runs, args.steps)
    print(f"[bench] agentdesk DockerSandbox, warm pool x{args.runs}")
    results["agentdesk sandbox, warm pool"] = bench_ours(settings, args.runs, args.steps, warm=True)
    print(f"[bench] agentdesk DockerSandbox, cold x{args.runs}")
    results["agentdesk sandbox, cold"] = bench_ours(settings, args.runs, args.steps, warm=False)
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

    med = {name: {k: statistics.median(v) for k, v in r.items()} for name, r in results.items()}
    print()
    print(f"{'executor':36} {'new thread -> 1st result':>26} {'per step':>12} {'teardown':>12}   (medians, "
          f"{args.runs} runs)")
    for name, m in med.items():
        print(f"{name:36} {fmt(m['first']):>26} {fmt(m['step']):>12} {fmt(m['down']):>12}")
    local = med["LocalPythonExecutor (in-process)"]
    docker_ex = med.get("smolagents DockerExecutor")
    print()
    for name in ("agentdesk sandbox, warm pool", "agentdesk sandbox, cold"):
        m = med[name]
        overhead = (m["step"] - local["step"]) * 1000
        line = f"{name}: per-step overhead vs LocalPythonExecutor {overhead:+.2f} ms (target <= 20 ms)"
        if docker_ex:
            ratio = m["first"] / docker_ex["first"]
            line += f"; first result {ratio:.3f}x DockerExecutor's (target <= 0.25x)"
        print(line)
    if not docker_ex:
        print("DockerExecutor baseline missing: ratios against it not computed (see the message above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
