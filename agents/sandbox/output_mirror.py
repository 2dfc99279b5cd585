"""Output collection shared by backends: the host's copy of a sandbox's OUTPUT_DIR.

OUTPUT_DIR lives inside the sandbox (bounded, gone with it), so the host keeps a copy in
`host_output_dir`, taken through the instance's read_outputs hook:
  - after a step that changed the folder (the runner reports a fingerprint; the final step is left to
    finish()), so files survive an out-of-memory kill or crash of a later step;
  - before an instance is replaced after a timeout or a protocol breach (frozen first);
  - by finish(), which the task runner calls before collecting outputs.
A replacement instance is re-seeded from the copy before it is handed back. Each copy goes to a staging
folder first and replaces the previous copy only when it is complete.
"""
from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agents.sandbox.executor import SandboxInstance, SandboxLimits

log = logging.getLogger("agentdesk.sandbox")


class OutputMirror:
    def __init__(self, folder: Path, host_output_dir: Path, limits: "SandboxLimits"):
        self._folder = folder
        self.host_output_dir = host_output_dir
        self._limits = limits
        #: Fingerprint of OUTPUT_DIR at the last copy ("" = empty, None = unknown).
        self._saved_state: str | None = ""
        self.notices: list[str] = []

    def note_step(self, instance: "SandboxInstance", state: str) -> None:
        """After a step: copy the folder out if the runner's fingerprint says it changed."""
        if state != self._saved_state and self.save(instance):
            self._saved_state = state

    def forget_state(self) -> None:
        self._saved_state = None

    def save(self, instance: "SandboxInstance") -> bool:
        """Replace host_output_dir with the instance's OUTPUT_DIR; False (copy unchanged) if incomplete."""
        staging = self._folder / f".out-{uuid.uuid4().hex[:8]}"
        staging.mkdir(mode=0o700)
        complete, notices = instance.read_outputs(staging, max_entries=self._limits.output_entries,
                                                  max_bytes=self._limits.output_bytes)
        if not complete:
            log.warning("outputs of sandbox %s not copied (%s)", instance.id[:12], "; ".join(notices) or "incomplete")
            shutil.rmtree(staging, ignore_errors=True)
            return False
        old = self._folder / f".out-old-{uuid.uuid4().hex[:8]}"
        if self.host_output_dir.exists():
            os.rename(self.host_output_dir, old)
        os.rename(staging, self.host_output_dir)
        shutil.rmtree(old, ignore_errors=True)
        self.notices = notices
        return True

    def restore(self, instance: "SandboxInstance") -> None:
        """Put the saved files back into a replacement instance's OUTPUT_DIR (best effort)."""
        try:
            if not any(self.host_output_dir.iterdir()):
                return
        except OSError:
            return
        try:
            count = instance.write_outputs(self.host_output_dir, max_bytes=self._limits.output_bytes)
            log.info("restored %d output files into restarted sandbox %s", count, instance.id[:12])
        except OSError as exc:
            log.warning("could not restore the output files into sandbox %s: %s", instance.id[:12], exc)

    def finish(self, instance: "SandboxInstance | None") -> list[str]:
        """The final copy (the agent has stopped); notices for the person."""
        if instance is None:
            return [*self.notices,
                    "the sandbox had stopped: output files are those saved at the end of its last good step"]
        if not self.save(instance):
            return [*self.notices,
                    "some output files may be missing or out of date: the output folder could not be copied"]
        self._saved_state = None
        return list(self.notices)
