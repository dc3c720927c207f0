"""What the dashboard's JSON API answers: plain dicts built from read-only journal
queries (`runview`), each bounded (a page, a slice of points), so that every answer
costs the same on a journal of 100,000 experiments as on a new one."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ratchet import runview
from ratchet.dashboard.tally import Tallies
from ratchet.errors import UsageError
from ratchet.journal import Journal
from ratchet.journalrecords import ExperimentRecord, RunRecord
from ratchet.runview import reading

OUTPUT_TAIL = 200  # lines of a measurement's output shown
TRAJECTORY_TAIL = 20_000  # characters of a trial's trajectory (its end) shown


class NotFound(UsageError):
    """A run or an experiment the journal does not hold (404)."""


def _brief(record: ExperimentRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {"id": record.id, "value": record.value, "commit": record.commit,
            "holdout": record.holdout}  # fmt: skip


def _run(journal: Journal, name: str) -> RunRecord:
    record = journal.run(name)
    if record is None:
        raise NotFound(f"no run named '{name}'")
    return record


def runs(root: Path, tallies: Tallies) -> list[dict[str, Any]]:
    """Every run with its baseline and best: the index and the comparison."""
    with reading(root) as journal:
        return [summary_of(journal, r, tallies) for r in journal.runs()]


def summary_of(journal: Journal, run: RunRecord, tallies: Tallies,
               budgets: dict[str, float] | None = None) -> dict[str, Any]:  # fmt: skip
    name = run.name
    baseline, best = journal.baseline(name), journal.incumbent(name)
    improvement = None
    if baseline is not None and best is not None and None not in (baseline.value, best.value):
        assert baseline.value is not None and best.value is not None
        improvement = best.value - baseline.value
    flights = [in_flight_of(journal, r, budgets or {}) for r in runview.in_flight(journal, name)]
    return {
        "name": name,
        "branch": run.branch,
        "base_commit": run.base_commit,
        "metric": run.metric,
        "goal": run.goal,
        "created_at": run.created_at,
        "baseline": _brief(baseline),
        "best": _brief(best),
        "improvement": improvement,
        **tallies.of(name).read(journal),
        "in_flight": flights,
        "now": time.time(),
    }


def in_flight_of(journal: Journal, record: ExperimentRecord, budgets: dict[str, float]
                 ) -> dict[str, Any]:  # fmt: skip
    """An experiment in flight: its stage, since when, and the budget of that stage."""
    since = record.started_at
    if record.stage == "measuring":
        row = journal.db.execute(
            "SELECT MAX(started_at) FROM measurements WHERE experiment = ?", (record.id,)
        ).fetchone()
        since = row[0] if row and row[0] is not None else since
    return {"id": record.id, "slot": record.slot, "stage": record.stage,
            "proposer": record.proposer, "since": since,
            "budget": budgets.get(record.stage)}  # fmt: skip


def summary(root: Path, name: str, tallies: Tallies, budgets: dict[str, float]
            ) -> dict[str, Any]:  # fmt: skip
    with reading(root) as journal:
        return summary_of(journal, _run(journal, name), tallies, budgets)


def points(root: Path, name: str, after: int, limit: int) -> dict[str, Any]:
    """Progress points as compact rows (`columns` names them), and each decision's
    category: a long series stays small and quick to encode."""
    with reading(root) as journal:
        _run(journal, name)
        found = runview.point_rows(journal, name, after, max(1, min(limit, runview.POINTS_MAX)))
    return {"run": name, "after": after, "columns": ["id", "decision", "value", "baseline"],
            "points": found, "categories": runview.CATEGORY,
            "last": found[-1][0] if found else after}  # fmt: skip


def row_of(record: ExperimentRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "slot": record.slot,
        "decision": record.decision.value if record.decision else None,
        "category": record.decision.category.value if record.decision else None,
        "stage": record.stage,
        "value": record.value,
        "proposer": record.proposer,
        "rationale": record.rationale,
        "why": record.why,
        "files": record.files,
        "cost_usd": record.cost_usd,
        "started_at": record.started_at,
        "ended_at": record.ended_at,
    }


def experiments(root: Path, name: str, tallies: Tallies, offset: int, limit: int,
                decision: str | None, category: str | None, before: int | None = None
                ) -> dict[str, Any]:  # fmt: skip
    """A page of experiments; the total from the run's tally, not from counting rows."""
    chosen = runview.decisions_of(category, decision)
    with reading(root) as journal:
        _run(journal, name)
        total = tallies.of(name).rows(journal, chosen)
        found = runview.page(journal, name, offset, limit, chosen, before, total)
    records = found.records
    return {"run": name, "total": found.total, "offset": found.offset, "limit": found.limit,
            "before": before, "next_before": records[-1].id if records else None,
            "decision": decision, "category": category,
            "experiments": [row_of(r) for r in records]}  # fmt: skip


def experiment(root: Path, experiment_id: int) -> dict[str, Any]:
    from ratchet.governance import diffstat

    with reading(root) as journal:
        record = journal.experiment(experiment_id)
        if record is None:
            raise NotFound(f"no experiment #{experiment_id}")
        measurements = journal.measurements(experiment_id)
        trials = _trials(journal, experiment_id)
        review = runview.review_states(journal, record.run).get(record.id)
        baseline = journal.baseline(record.run)
    is_keep = (
        record.decision == "keep"
        and not record.is_baseline
        and (baseline is None or baseline.id != record.id)
    )
    return {
        **row_of(record),
        "run": record.run,
        "parent": record.parent,
        "commit": record.commit,
        "patch": record.patch,
        "diffstat": [s.__dict__ for s in diffstat(record.patch)],
        "metrics": record.metrics,
        "holdout": record.holdout,
        "duration": record.duration,
        "cost_seconds": record.cost_seconds,
        "cost_tokens": record.cost_tokens,
        "meta": record.meta,
        "reviewable": is_keep,
        "review": {"state": review[0], "note": review[1]}
        if review
        else {"state": "pending" if is_keep else None, "note": ""},
        "measurements": [
            {
                "seed": m.seed,
                "status": m.status,
                "value": m.value,
                "metrics": m.metrics,
                "duration": m.duration,
                "started_at": m.started_at,
                "output_tail": "\n".join(m.output.splitlines()[-OUTPUT_TAIL:]),
            }
            for m in measurements
        ],
        "trials": trials,
    }


def _trials(journal: Journal, experiment_id: int) -> list[dict[str, Any]]:
    """Harness mode: the experiment's trials, task by task, with each one's verifier tail
    (the dashboard is for the people who run ratchet: the holdout is shown, marked)."""
    from ratchet.safeio import Refused, read_capped
    from ratchet.suite.traces import render_messages
    from ratchet.suite.trials import VERIFIER_LOG

    if not journal.db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'trials'"
    ).fetchone():
        return []
    rows = journal.db.execute(
        "SELECT task, attempt, split, status, reward, duration, cost_usd, error, folder"
        " FROM trials WHERE experiment = ? ORDER BY split DESC, task, attempt, id",
        (experiment_id,),
    ).fetchall()
    found = []
    for task, attempt, split, status, reward, duration, cost, error, folder in rows:
        try:
            raw = read_capped(Path(folder), VERIFIER_LOG, 64 * 1024)
            verifier = raw.decode("utf-8", "replace")
        except (OSError, Refused):
            verifier = ""
        messages = render_messages(Path(folder))
        found.append({"task": task, "attempt": attempt, "split": split, "status": status,
                      "reward": reward, "duration": duration, "cost_usd": cost,
                      "error": error, "verifier_tail": "\n".join(
                          verifier.splitlines()[-OUTPUT_TAIL // 10:]),
                      "trajectory": messages[-TRAJECTORY_TAIL:]})  # fmt: skip
    return found


def keeps(root: Path, name: str) -> dict[str, Any]:
    """The run's keeps with their review state: the review list."""
    with reading(root) as journal:
        _run(journal, name)
        found = runview.keeps(journal, name)
        states = runview.review_states(journal, name)
    return {"run": name, "keeps": [
        {**row_of(r), "commit": r.commit, "holdout": r.holdout,
         "review": {"state": states.get(r.id, ("pending", ""))[0],
                    "note": states.get(r.id, ("pending", ""))[1]}}
        for r in found]}  # fmt: skip


def verdict(root: Path, experiment_id: int, approve: bool, note: str) -> dict[str, Any]:
    """Approve or reject a keep through governance, as `ratchet review` does: the
    `approvals` and `audit` tables record it."""
    from ratchet.approvals import identity, record_verdict
    from ratchet.engine import open_journal

    journal = open_journal(root)
    try:
        done = record_verdict(journal, [experiment_id], "approved" if approve else "rejected",
                              identity(root), note)  # fmt: skip
    finally:
        journal.close()
    record, approval = done[0]
    return {"experiment": record.id, "run": record.run, **approval.to_json()}
