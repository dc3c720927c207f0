"""The brief: everything a proposer needs to know before one proposal, as JSON.

It is written outside the worktree (its path is `$RATCHET_BRIEF`) and rewritten before
every proposal. The proposer reads it and never writes it. Secrets are scrubbed.

The history is kept in memory with each entry serialized once. The most recent
experiments are there in full; older ones stay as one compact line each (id, decision,
the start of the rationale), so a night's whole history fits, and a proposer can look
any of them up in the journal (the `llm` proposer's `show_experiment`).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ratchet.journal import Journal
from ratchet.journalrecords import ExperimentRecord
from ratchet.private import write_private
from ratchet.specmodel import Spec
from ratchet.suite.traces import failures_by_task
from ratchet.suite.trials import TrialResult

HISTORY_LIMIT = 200  # the most recent experiments, in full
EARLIER_LIMIT = 5000  # older ones, compact: autoresearch's two nights were ~700 experiments
EARLIER_RATIONALE = 120  # characters of an older experiment's rationale
FAILURE_LIMIT = 5
FAILURE_TAIL = 2000  # characters of output per recent failure


class History:
    """The recent experiments and failures, as the JSON fragments a brief is made of."""

    def __init__(self) -> None:
        self.entries: deque[tuple[str, str]] = deque()  # (full, compact), the recent ones
        self.earlier: deque[str] = deque(maxlen=EARLIER_LIMIT)  # compact
        self.failures: deque[str] = deque(maxlen=FAILURE_LIMIT)

    @classmethod
    def load(cls, journal: Journal, run: str) -> History:
        """The window a brief shows, read without patches and, for the older compact
        lines, without decoding rows: a resume after 100,000 experiments reads as much
        as after 5,200."""
        history = cls()
        for id_, decision, rationale in reversed(
            journal.decided(run, EARLIER_LIMIT, skip=HISTORY_LIMIT)
        ):
            history.earlier.append(_compact(id_, decision, rationale))
        for record in journal.recent_decided(run, HISTORY_LIMIT):
            history.entries.append((_entry(record), _compact_entry(record)))
        for record in reversed(journal.failures(run, FAILURE_LIMIT)):
            history.failures.append(_failure(record, journal.last_output(record.id)))
        return history

    def _append(self, record: ExperimentRecord) -> None:
        self.entries.append((_entry(record), _compact_entry(record)))
        if len(self.entries) > HISTORY_LIMIT:
            self.earlier.append(self.entries.popleft()[1])

    @property
    def recent(self) -> list[str]:
        return [full for full, _ in self.entries]

    def add(self, record: ExperimentRecord, output: str) -> None:
        self._append(record)
        if record.decision is not None and record.decision.is_failure:
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


def _compact_entry(record: ExperimentRecord) -> str:
    return _compact(record.id, record.decision, record.rationale)


def _compact(experiment: int, decision: str | None, rationale: str | None) -> str:
    first = (rationale or "").strip().splitlines()[:1]
    return json.dumps([experiment, decision, first[0][:EARLIER_RATIONALE] if first else ""])


def _failure(record: ExperimentRecord, output: str) -> str:
    tail = output[-FAILURE_TAIL:]
    return json.dumps(
        {"id": record.id, "decision": record.decision, "why": record.why, "tail": tail}
    )


def suite_section(
    trials: Sequence[tuple[TrialResult, Path]], traces: Path | None = None
) -> dict[str, Any]:
    """Harness mode's part of the brief: the incumbent's failures on the search split,
    grouped by task (rewards, last error lines, verifier tail), and where its traces
    are (the `traces/` folder the `llm` proposer's `list_trials` and `read_trace` read).
    Only search trials may be passed: a holdout trial folder raises SealedTrial."""
    section: dict[str, Any] = {"suite_failures": failures_by_task(trials)}
    if traces is not None:
        section["traces"] = str(traces)
    return section


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
    in_flight: list[dict[str, Any]] | None = None,
    suite: dict[str, Any] | None = None,
) -> str:
    head: dict[str, Any] = {
        "run": run,
        "experiment": experiment,
        "directive": directive,
        "scope": {
            "editable": spec.scope.editable,
            "context": spec.scope.context,
            "protected": spec.scope.protected,
            "regions": spec.scope.describe_regions(),  # files editable only between markers
        },
        "metric": {"name": spec.metric.name, "goal": spec.metric.goal},
        "incumbent": {
            "commit": incumbent.commit,
            "experiment": incumbent.id,
            "value": incumbent.value,
            "metrics": incumbent.metrics,
        },
        "noise": noise,
        # proposals other slots are measuring now: not yet decided, so not to repeat
        "in_flight": in_flight or [],
        "budget_left": budget_left,
        "totals": totals,
        **(suite or {}),  # harness mode: suite_section()
    }
    text = json.dumps(head)
    return (
        f'{text[:-1]}, "earlier": [{", ".join(history.earlier)}], '
        f'"history": [{", ".join(history.recent)}], '
        f'"recent_failures": [{", ".join(history.failures)}]}}'
    )


def fit_brief(brief: dict[str, Any], limit: int) -> str:
    """The brief as one JSON line of at most `limit` characters, for a model's prompt:
    the oldest compact entries go first, then the oldest full ones, then old failures,
    then (harness mode) failing tasks."""
    brief = dict(brief)
    while len(text := json.dumps(brief, separators=(",", ":"))) > limit:
        key = next(
            (
                k
                for k in ("earlier", "history", "recent_failures", "suite_failures")
                if brief.get(k)
            ),
            None,
        )
        if key is None:
            return text[:limit]
        entries = brief[key]
        brief[key] = entries[(len(entries) + 1) // 2 :]
    return text


def write_brief(path: Path, text: str, redact: Callable[[str], str]) -> None:
    """A fresh 0600 file renamed over `path`: a link planted there is replaced, not
    followed, and a proposer reading the brief never sees half of it."""
    write_private(path, redact(text))
