"""The terminal as a chat platform: `agentdesk ask` prints steps as they happen and saves output files."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TextIO

from agents.chat import FinalAnswer, StepUpdate, ThreadReplier


class TerminalReplier(ThreadReplier):
    def __init__(self, out_dir: Path, stream: TextIO = sys.stdout) -> None:
        self.out_dir = out_dir
        self.stream = stream
        self.failed: str | None = None
        self.answer: FinalAnswer | None = None
        self.saved: list[Path] = []

    def _print(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)

    async def status(self, text: str) -> None:
        self._print(f"… {text}")

    async def step(self, update: StepUpdate) -> None:
        meta = []
        if update.duration_s is not None:
            meta.append(f"{update.duration_s:.1f}s")
        if update.input_tokens is not None:
            meta.append(f"{update.input_tokens}+{update.output_tokens} tokens")
        self._print(f"\n── {' › '.join(update.agent_path) + ' · ' if update.agent_path else ''}Step {update.step_number}: {update.title}" + (f" ({', '.join(meta)})" if meta else ""))
        if update.code:
            self._print("\n".join("   │ " + line for line in update.code.splitlines()))
        if update.observation:
            self._print("   → " + update.observation.replace("\n", "\n     "))
        if update.error:
            self._print("   ✗ " + update.error.replace("\n", "\n     "))

    async def final(self, answer: FinalAnswer) -> None:
        self.answer = answer
        for notice in answer.notices:
            self._print(f"\n⚠️  {notice}")
        self._print(f"\n═══ {answer.department.upper()} answer ═══\n{answer.text}")
        if answer.files:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            for f in answer.files:
                target = self.out_dir / f.name
                shutil.copyfile(f.path, target)
                self.saved.append(target)
                self._print(f"📎 saved {target} ({f.size:,} bytes)")
        if answer.trace_url or answer.trace_id:
            self._print(f"trace: {answer.trace_url or answer.trace_id}")

    async def error(self, message: str) -> None:
        self.failed = message
        self._print(f"\n⚠️  {message}")
