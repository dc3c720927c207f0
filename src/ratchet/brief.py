"""The brief: everything a proposer needs to know before one proposal, as JSON.

It is written outside the worktree (its path is `$RATCHET_BRIEF`) and rewritten before
every proposal. The proposer reads it and never writes it. Secrets are scrubbed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ratchet.journal import ExperimentRecord, Journal
from ratchet.spec import Spec

HISTORY_LIMIT = 200  # the most recent experiments; the count of all is in `totals`
FAILURE_LIMIT = 5
FAILURE_TAIL = 2000  # characters of output per recent failure


def _entry(record: ExperimentRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "decision": record.decision,
        "why": record.why,
        "value": record.value,
        "rationale": record.rationale,
        "files": record.files,
    }


def build_brief(
    spec: Spec,
    journal: Journal,
    run: str,
    experiment: int,
    incumbent: ExperimentRecord,
    directive: str,
    budget_left: dict[str, float | int | None],
    totals: dict[str, int],
) -> dict[str, Any]:
    history = [
        _entry(r) for r in journal.experiments(run, limit=HISTORY_LIMIT) if r.decision is not None
    ]
    failures = [
        {
            "id": r.id,
            "decision": r.decision,
            "why": r.why,
            "tail": journal.last_output(r.id)[-FAILURE_TAIL:],
        }
        for r in journal.failures(run, FAILURE_LIMIT)
    ]
    return {
        "run": run,
        "experiment": experiment,
        "directive": directive,
        "scope": {
            "editable": spec.scope.editable,
            "context": spec.scope.context,
            "protected": spec.scope.protected,
        },
        "metric": {"name": spec.metric.name, "goal": spec.metric.goal},
        "incumbent": {
            "commit": incumbent.commit,
            "experiment": incumbent.id,
            "value": incumbent.value,
            "metrics": incumbent.metrics,
        },
        "history": history,
        "recent_failures": failures,
        "noise": None,
        "budget_left": budget_left,
        "totals": totals,
    }


def write_brief(path: Path, brief: dict[str, Any], redact: Callable[[str], str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(redact(json.dumps(brief, indent=1, default=str)))
    os.replace(tmp, path)
