"""The journal's rows as typed records: a run, an experiment, a measurement.

What the journal's queries return and what the rest of ratchet (views, events, proposers,
the public API) passes around. Kept apart from `Journal` so that code which only reads
records never needs the journal's connection or its queries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ratchet.decisions import BASELINE_PROPOSER, Decision, decision_of

if TYPE_CHECKING:
    import sqlite3


@dataclass(frozen=True)
class RunRecord:
    name: str
    branch: str
    base_commit: str
    spec_digest: str
    metric: str
    goal: str
    created_at: float


@dataclass(frozen=True)
class ExperimentRecord:
    id: int
    run: str
    slot: int
    parent: str
    commit: str | None
    proposer: str
    rationale: str
    patch: str
    files: list[str]
    meta: dict[str, Any]
    cost_seconds: float
    cost_tokens: int
    cost_usd: float
    stage: str
    decision: Decision | None
    why: str | None
    value: float | None
    metrics: dict[str, float]
    duration: float | None
    started_at: float
    ended_at: float | None
    holdout: float | None = None  # the confirmation command's value (keeps, incumbents)
    patch_hash: str | None = None  # of the normalized patch: what was changed, not where

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> ExperimentRecord:
        data = dict(row)
        data["commit"] = data.pop("commit_sha")
        for key in ("files", "meta", "metrics"):
            data[key] = json.loads(data[key])
        data["decision"] = decision_of(data["decision"])
        return cls(**data)

    @property
    def is_baseline(self) -> bool:
        """The run's baseline: stored as a `keep`, never counted as one."""
        return self.proposer == BASELINE_PROPOSER

    def to_json(self, with_patch: bool = True) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if with_patch or k != "patch"}
        return data


@dataclass(frozen=True)
class MeasurementRecord:
    id: int
    experiment: int
    seed: int
    status: str
    value: float | None
    metrics: dict[str, float]
    duration: float
    output: str
    started_at: float
