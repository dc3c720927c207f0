"""Isolation layers behind one interface: run a shell command under a budget.

Measurements and proposer commands both run through a `Sandbox`; the engine never
spawns processes itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from ratchet.sandbox.process import (
    ProcessResult,
    ProcessSandbox,
    kill_leftover,
    pidfile_for,
    run_process,
)

__all__ = [
    "ProcessResult",
    "ProcessSandbox",
    "Sandbox",
    "kill_leftover",
    "pidfile_for",
    "run_process",
]


class Sandbox(Protocol):
    name: str

    def run(
        self,
        command: str,
        cwd: Path,
        env: Mapping[str, str],
        budget: float,
        grace: float,
        pidfile: Path | None = None,
    ) -> ProcessResult: ...
