"""What a run tells whoever watches it: the terminal view, the dashboard, tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ratchet.journalrecords import ExperimentRecord, RunRecord


@dataclass(frozen=True)
class RunStarted:
    run: RunRecord
    proposer: str
    sandbox: str
    resumed: bool
    interrupted: list[int]
    incumbent: ExperimentRecord | None
    recovered: tuple[str, ...] = ()  # stale git lock files removed, relative to the project


@dataclass(frozen=True)
class StageStarted:
    experiment: int
    stage: str  # proposing | measuring
    budget: float
    at: float
    slot: int = 0


@dataclass(frozen=True)
class ExperimentDecided:
    record: ExperimentRecord
    incumbent: ExperimentRecord


@dataclass(frozen=True)
class RunStopped:
    reason: str
    incumbent: ExperimentRecord | None
    baseline: ExperimentRecord | None


Event = RunStarted | StageStarted | ExperimentDecided | RunStopped
Observer = Callable[[Event], None]
