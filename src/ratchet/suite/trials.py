"""One trial of one task: the unit harness mode records, pairs and reports.

Every runner (``local``, ``harbor``) turns its own output into these values, so
the journal, the paired policy, the brief and the views never see a runner's
format.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class TrialStatus(StrEnum):
    """How a trial ended. Only ``passed`` and ``failed`` carry a reward that
    may decide a keep; ``error`` and ``timeout`` are counted apart."""

    PASSED = "passed"  # the verifier wrote a reward of 1 (or the task's full credit)
    FAILED = "failed"  # the verifier wrote a reward below full credit
    ERROR = "error"  # no reward file, a crashed verifier, an infrastructure fault
    TIMEOUT = "timeout"  # the agent or the verifier ran past task.toml's limit


@dataclass(frozen=True)
class TrialUsage:
    """What the task agent spent, as the metering proxy (or Harbor) saw it."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0


@dataclass(frozen=True)
class TrialResult:
    """The outcome of running the agent once on one task, then its verifier."""

    task: str
    attempt: int
    status: TrialStatus
    reward: float | None  # None unless status is passed or failed
    rewards: dict[str, float]  # every number the verifier reported (reward.json)
    duration_s: float
    usage: TrialUsage
    error: str = ""  # one line: why the trial is an error or a timeout
    verifier_tail: str = ""  # the last lines the verifier printed
    trace_path: Path | None = None  # ATIF trajectory JSON, when the agent left one

    @property
    def decides(self) -> bool:
        """Whether this trial's reward may count toward a decision."""
        return self.status in (TrialStatus.PASSED, TrialStatus.FAILED)
