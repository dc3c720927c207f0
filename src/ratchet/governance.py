"""Governance: a human reviews a run's keeps, approves or rejects them, and finalizes.

This module owns the review: each keep after the baseline with the keep it was built
on, its change's size and every verdict on it. The verdicts are `approvals`', building
the `-final` branch is `finalize`'s; both are imported here too, where the command line
and the dashboard look for them. The review reads the journal alone: git (pygit2), the
spec's models (pydantic) and measuring are imported by what uses them, so
`ratchet review` stays quick.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ratchet.approvals import SCHEMA as SCHEMA
from ratchet.approvals import Approval as Approval
from ratchet.approvals import Verdict as Verdict
from ratchet.approvals import approval_history, keeps
from ratchet.approvals import ensure_schema as ensure_schema
from ratchet.approvals import identity as identity
from ratchet.approvals import record_verdict as record_verdict
from ratchet.errors import UsageError
from ratchet.finalize import FINAL_SUFFIX as FINAL_SUFFIX
from ratchet.finalize import Finalized as Finalized
from ratchet.finalize import Skipped as Skipped
from ratchet.finalize import final_branch as final_branch
from ratchet.finalize import finalize as finalize
from ratchet.finalize import measure_commit as measure_commit
from ratchet.finalize import replay as replay
from ratchet.journal import Journal
from ratchet.journalrecords import ExperimentRecord, RunRecord


@dataclass(frozen=True)
class FileStat:
    path: str
    added: int
    removed: int
    binary: bool = False


def diffstat(patch: str) -> list[FileStat]:
    """Lines added and removed per file of a git patch."""
    stats: list[FileStat] = []
    path: str | None = None
    added = removed = 0
    binary = in_hunk = False

    def flush() -> None:
        if path is not None:
            stats.append(FileStat(path, added, removed, binary))

    for line in patch.splitlines():
        if line.startswith("diff --git "):
            flush()
            header = line[len("diff --git ") :]
            path = header.rsplit(" b/", 1)[-1] if " b/" in header else header
            added = removed = 0
            binary = in_hunk = False
        elif line.startswith("@@"):
            in_hunk = True
        elif not in_hunk:
            if line.startswith(("Binary files ", "GIT binary patch")):
                binary = True
        elif line.startswith("+"):
            added += 1
        elif line.startswith("-"):
            removed += 1
    flush()
    return stats


def format_diffstat(stats: list[FileStat]) -> str:
    return ", ".join(
        f"{s.path} (binary)" if s.binary else f"{s.path} +{s.added} -{s.removed}" for s in stats
    )


@dataclass(frozen=True)
class ReviewItem:
    record: ExperimentRecord
    parent_experiment: int | None  # the keep this one was built on
    parent_value: float | None
    history: list[Approval]  # every decision on it, oldest first; the last one wins

    @property
    def approval(self) -> Approval | None:
        return self.history[-1] if self.history else None

    @property
    def state(self) -> str:
        return self.approval.verdict if self.approval else "pending"

    @property
    def delta(self) -> float | None:
        if self.record.value is None or self.parent_value is None:
            return None
        return self.record.value - self.parent_value

    def to_json(self, with_patch: bool = True) -> dict[str, Any]:
        r = self.record
        data: dict[str, Any] = {
            "id": r.id,
            "commit": r.commit,
            "parent": r.parent,
            "parent_experiment": self.parent_experiment,
            "parent_value": self.parent_value,
            "value": r.value,
            "delta": self.delta,
            "rationale": r.rationale,
            "why": r.why,
            "files": r.files,
            "diffstat": [s.__dict__ for s in diffstat(r.patch)],
            "state": self.state,
            "approval": self.approval.to_json() if self.approval else None,
            "history": [a.to_json() for a in self.history],
            "ended_at": r.ended_at,
        }
        if with_patch:
            data["patch"] = r.patch
        return data


@dataclass(frozen=True)
class Review:
    run: RunRecord
    baseline: ExperimentRecord | None
    incumbent: ExperimentRecord | None
    items: list[ReviewItem]

    def counts(self) -> dict[str, int]:
        counts = {"approved": 0, "rejected": 0, "pending": 0}
        for item in self.items:
            counts[item.state] += 1
        return counts

    def to_json(self, with_patch: bool = True) -> dict[str, Any]:
        def brief(record: ExperimentRecord | None) -> dict[str, Any] | None:
            if record is None:
                return None
            return {"experiment": record.id, "value": record.value, "commit": record.commit}

        return {
            "run": self.run.name,
            "branch": self.run.branch,
            "base_commit": self.run.base_commit,
            "metric": self.run.metric,
            "goal": self.run.goal,
            "baseline": brief(self.baseline),
            "incumbent": brief(self.incumbent),
            "counts": self.counts(),
            "keeps": [item.to_json(with_patch) for item in self.items],
        }


def review(journal: Journal, run: str) -> Review:
    record = journal.run(run)
    if record is None:
        raise UsageError(f"no run named '{run}'")
    baseline = journal.baseline(run)
    history = approval_history(journal, run)
    by_commit: dict[str, ExperimentRecord] = {}
    if baseline is not None and baseline.commit:
        by_commit[baseline.commit] = baseline
    items = []
    for keep in keeps(journal, run):
        parent = by_commit.get(keep.parent)
        items.append(
            ReviewItem(
                keep,
                parent.id if parent else None,
                parent.value if parent else None,
                history.get(keep.id, []),
            )
        )
        if keep.commit:
            by_commit[keep.commit] = keep
    return Review(record, baseline, journal.incumbent(run), items)
