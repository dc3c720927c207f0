"""One trial of one task: the unit harness mode records, pairs and reports.

Every runner (``local``, ``harbor``) turns its own output into these values, so
the journal, the paired policy, the brief and the views never see a runner's
format.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class Split(StrEnum):
    """Which side of the suite a task is on (`ratchet.suite.tasks` splits them)."""

    SEARCH = "search"  # run for every candidate; proposers see their traces
    HOLDOUT = "holdout"  # run only for would-be keeps; never shown to a proposer


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


# A trial's folder (one per task, attempt and experiment) holds these files; the
# runners write them, the brief, the `read_trace` tool and the views read them.
TRIAL_RECORD = "trial.json"  # the TrialResult, as trial_to_dict writes it
TRAJECTORY = "trajectory.json"  # the agent's ATIF trajectory (messages, tool calls, tokens)
AGENT_LOG = "agent.txt"  # what the agent printed (capped)
VERIFIER_LOG = "verifier.txt"  # what tests/test.sh printed (capped)


def trial_to_dict(trial: TrialResult) -> dict[str, object]:
    return {
        "task": trial.task,
        "attempt": trial.attempt,
        "status": trial.status.value,
        "reward": trial.reward,
        "rewards": dict(trial.rewards),
        "duration_s": trial.duration_s,
        "usage": {
            "input_tokens": trial.usage.input_tokens,
            "output_tokens": trial.usage.output_tokens,
            "cost_usd": trial.usage.cost_usd,
            "calls": trial.usage.calls,
        },
        "error": trial.error,
        "verifier_tail": trial.verifier_tail,
        "trace_path": str(trial.trace_path) if trial.trace_path else None,
    }


def trial_from_dict(data: dict[str, object]) -> TrialResult:
    usage = data.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    rewards = data.get("rewards")
    reward = data.get("reward")
    trace = data.get("trace_path")
    return TrialResult(
        task=str(data["task"]),
        attempt=int(str(data["attempt"])),
        status=TrialStatus(str(data["status"])),
        reward=float(str(reward)) if reward is not None else None,
        rewards={str(k): float(v) for k, v in rewards.items()} if isinstance(rewards, dict) else {},
        duration_s=float(str(data.get("duration_s", 0.0))),
        usage=TrialUsage(
            input_tokens=int(usage.get("input_tokens", 0)),
            output_tokens=int(usage.get("output_tokens", 0)),
            cost_usd=float(usage.get("cost_usd", 0.0)),
            calls=int(usage.get("calls", 0)),
        ),
        error=str(data.get("error", "")),
        verifier_tail=str(data.get("verifier_tail", "")),
        trace_path=Path(str(trace)) if trace else None,
    )
