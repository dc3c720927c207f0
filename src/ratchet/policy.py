"""Deciding keep or discard from measurements.

A policy sees the candidate's and the incumbent's samples of the metric and returns a
verdict with a sentence of why. `measure-again` lets a policy ask for another sample
before it commits to an answer (the noise-aware policy uses it; greedy never does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

Goal = Literal["minimize", "maximize"]
Verdict = Literal["keep", "discard", "measure-again"]


@dataclass(frozen=True)
class Samples:
    """Every measured value of one commit's metric."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def n(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    why: str


def improvement(candidate: float, incumbent: float, goal: Goal) -> float:
    """How much better the candidate is; positive means better, whatever the goal."""
    return incumbent - candidate if goal == "minimize" else candidate - incumbent


class Policy(Protocol):
    name: str

    def judge(self, candidate: Samples, incumbent: Samples, goal: Goal, metric: str) -> Judgement:
        """Keep, discard, or ask for another measurement of the candidate."""
        ...


class Greedy:
    """Keep only a strict improvement of the mean; a tie is not one."""

    name = "greedy"

    def judge(self, candidate: Samples, incumbent: Samples, goal: Goal, metric: str) -> Judgement:
        new, old = candidate.mean, incumbent.mean
        delta = improvement(new, old, goal)
        if delta > 0:
            return Judgement("keep", f"{metric} {old:.6g} -> {new:.6g} (better by {delta:.4g})")
        if delta == 0:
            return Judgement(
                "discard", f"{metric} {new:.6g} ties the incumbent; a tie is not a keep"
            )
        return Judgement(
            "discard", f"{metric} {new:.6g} is worse than the incumbent's {old:.6g} by {-delta:.4g}"
        )


POLICIES: dict[str, type[Greedy]] = {"greedy": Greedy}


def policy_for(kind: str) -> Policy:
    return POLICIES[kind]()
