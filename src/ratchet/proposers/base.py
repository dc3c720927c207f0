"""The proposer protocol: change the slot's worktree, say why, learn from the outcome.

A proposer is untrusted. Whatever it changes in the worktree is the proposal; the
engine diffs it, checks its scope and measures it. A proposer that fails raises
`ProposalError`, which becomes an `invalid-proposal` decision with its message as why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ratchet.journalrecords import ExperimentRecord
from ratchet.sandbox import Sandbox
from ratchet.specmodel import Spec


class ProposalError(Exception):
    """The proposer produced no usable proposal; the message is the decision's why."""


@dataclass(frozen=True)
class Cost:
    seconds: float = 0.0
    tokens: int = 0
    usd: float = 0.0


@dataclass(frozen=True)
class Proposal:
    rationale: str
    cost: Cost = Cost()
    meta: dict[str, Any] = field(default_factory=dict)
    by: str | None = None  # the portfolio member that made it, recorded as the proposer


@dataclass(frozen=True)
class Outcome:
    """What became of a proposal, told back to the proposer that made it."""

    experiment: int
    decision: str
    value: float | None  # the candidate's metric, when it was measured
    parent_value: float | None  # the incumbent's metric the candidate was judged against
    meta: dict[str, Any]


@dataclass(frozen=True)
class ProposerContext:
    spec: Spec
    project: Path
    worktree: Path  # a slot holding the incumbent, to read the code from at start
    files: list[str]  # the incumbent's tracked files, POSIX paths relative to the worktree
    history: list[ExperimentRecord]  # recent and best experiments, oldest first, no patches
    sandbox: Sandbox
    state_dir: Path


class Proposer(Protocol):
    name: str

    def propose(self, worktree: Path, brief_path: Path) -> Proposal:
        """Edit files in `worktree` (which holds the parent commit); return why."""
        ...

    def observe(self, outcome: Outcome) -> None:
        """Learn from the decision on an earlier proposal."""
        ...
