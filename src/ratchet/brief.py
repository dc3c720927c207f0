"""The brief: everything a proposer needs to know before one proposal, as JSON.

It is written outside the worktree (its path is `$RATCHET_BRIEF`) and rewritten before
every proposal. The proposer reads it and never writes it. Secrets are scrubbed.

The history is kept in memory with each entry serialized once, so writing a brief costs
the same after ten experiments as after a hundred thousand.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ratchet.journal import ExperimentRecord, Journal
from ratchet.spec import Spec

HISTORY_LIMIT = 200  # the most recent experiments; the count of all is in `totals`
FAILURE_LIMIT = 5
FAILURE_TAIL = 2000  # characters of output per recent failure
NOT_FAILURES = {"keep", "discard", "no-change", "duplicate", "interrupted"}


class History:
    """The recent experiments and failures, as the JSON fragments a brief is made of."""

    def __init__(self) -> None:
        self.entries: deque[str] = deque(maxlen=HISTORY_LIMIT)
        self.failures: deque[str] = deque(maxlen=FAILURE_LIMIT)

    @classmethod
    def load(cls, journal: Journal, run: str) -> History:
        history = cls()
        for record in journal.experiments(run, limit=HISTORY_LIMIT):
            if record.decision is not None:
                history.entries.append(_entry(record))
        for record in reversed(journal.failures(run, FAILURE_LIMIT)):
            history.failures.append(_failure(record, journal.last_output(record.id)))
        return history

    def add(self, record: ExperimentRecord, output: str) -> None:
        self.entries.append(_entry(record))
        if record.decision not in NOT_FAILURES:
            self.failures.append(_failure(record, output))


def _entry(record: ExperimentRecord) -> str:
    return json.dumps(
        {
            "id": record.id,
            "decision": record.decision,
            "why": record.why,
            "value": record.value,
            "rationale": record.rationale,
            "files": record.files,
        }
    )


def _failure(record: ExperimentRecord, output: str) -> str:
    tail = output[-FAILURE_TAIL:]
    return json.dumps(
        {"id": record.id, "decision": record.decision, "why": record.why, "tail": tail}
    )


def render_brief(
    spec: Spec,
    history: History,
    run: str,
    experiment: int,
    incumbent: ExperimentRecord,
    directive: str,
    budget_left: dict[str, float | int | None],
    totals: dict[str, int],
    noise: dict[str, float | int | None] | None = None,
) -> str:
    head: dict[str, Any] = {
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
        "noise": noise,
        "budget_left": budget_left,
        "totals": totals,
    }
    text = json.dumps(head)
    return (
        f'{text[:-1]}, "history": [{", ".join(history.entries)}], '
        f'"recent_failures": [{", ".join(history.failures)}]}}'
    )


def write_brief(path: Path, text: str, redact: Callable[[str], str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(redact(text))
    os.replace(tmp, path)
