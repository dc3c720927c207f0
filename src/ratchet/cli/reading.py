"""Commands that read the journal: status, log, show."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from ratchet.cli.common import (
    Argument,
    _fmt,
    _journal,
    _print_json,
    _project,
    _run_name,
    app,
    guarded,
    json_flag,
    name_option,
)
from ratchet.cli.output import Span, output
from ratchet.errors import UsageError
from ratchet.plaintext import plural, visible

if TYPE_CHECKING:
    from ratchet.journal import ExperimentRecord


# status, log, show --------------------------------------------------------------------
@app.command()
@name_option
@json_flag
@guarded
def status(name: str | None, as_json: bool) -> None:
    """Summarize a run: baseline, incumbent, counts by decision."""
    from ratchet.decisions import user_counts
    from ratchet.suite.store import pairing_of

    journal = _journal(_project())
    run_name = _run_name(journal, name)
    run = journal.run(run_name)
    assert run is not None
    counts = journal.counts(run_name)
    baseline, incumbent = journal.baseline(run_name), journal.incumbent(run_name)
    last = journal.experiments(run_name, limit=1, patches=False)
    pairing = pairing_of(journal, run_name)  # harness mode: the meta and task agent models
    # the baseline is the reference, not an experiment: no count includes it
    decisions, categories = user_counts(counts.decisions, counts.baseline_decisions)
    data: dict[str, Any] = {
        "run": run_name,
        "branch": run.branch,
        "base_commit": run.base_commit,
        "metric": run.metric,
        "goal": run.goal,
        "baseline": baseline.value if baseline else None,
        "incumbent": {
            "value": incumbent.value,
            "experiment": incumbent.id,
            "commit": incumbent.commit,
            "holdout": incumbent.holdout,
            "holdout_gap": _gap(incumbent),
        }
        if incumbent
        else None,
        "experiments": counts.experiments,
        "keeps": counts.keeps,
        "since_keep": counts.since_keep,
        "elapsed_seconds": round(counts.elapsed, 3),
        "cost_usd": counts.cost_usd,
        "decisions": decisions,
        "categories": categories,
        "last": last[0].to_json(with_patch=False) if last else None,
    }
    if pairing is not None:
        data["pairing"] = pairing
    journal.close()
    if as_json:
        _print_json(data)
        return
    rows = [
        ("run", f"{run_name} (branch {run.branch}, base {run.base_commit[:7]})"),
        ("metric", f"{run.metric} ({run.goal})"),
        ("baseline", _fmt(baseline.value if baseline else None)),
    ]
    if pairing is not None:
        rows.append(("pairing", pairing))
    if incumbent:
        commit = (incumbent.commit or "")[:7]
        rows.append(("incumbent", f"{_fmt(incumbent.value)} (#{incumbent.id}, {commit})"))
    if incumbent and incumbent.holdout is not None:
        gap = f"search {_fmt(incumbent.value)}, gap {_gap(incumbent):+.4g}"
        rows.append(("holdout", f"{_fmt(incumbent.holdout)} ({gap})"))
    rows += [
        (
            "experiments",
            f"{counts.experiments} ({plural(counts.keeps, 'keep')}, "
            f"{counts.since_keep} since the last keep)",
        ),
        ("decisions", ", ".join(f"{k} {v}" for k, v in sorted(decisions.items()))),
        ("categories", ", ".join(f"{k} {v}" for k, v in categories.items())),
        ("elapsed", f"{counts.elapsed:.0f}s"),
    ]
    output().grid(rows)


def _gap(record: ExperimentRecord) -> float | None:
    """How much worse the holdout is than the search metric (in the metric's units)."""
    if record.holdout is None or record.value is None:
        return None
    return record.holdout - record.value


@app.command()
@name_option
@click.option("--limit", type=int, metavar="N", help="Only the newest N experiments.")
@json_flag
@guarded
def log(name: str | None, limit: int | None, as_json: bool) -> None:
    """List a run's experiments with their decisions and whys."""
    from ratchet.decisions import style_of

    journal = _journal(_project())
    records = journal.experiments(_run_name(journal, name), limit=limit, patches=False)
    journal.close()
    if as_json:
        _print_json([r.to_json(with_patch=False) for r in records])
        return
    rows = [
        (
            str(r.id),
            Span(r.decision or r.stage, style_of(r.decision), single=True),
            _fmt(r.value),
            Span(", ".join(r.files), single=True),
            r.why or "",
        )
        for r in records
    ]
    output().table(("#", "decision", "value", "files", "why"), rows)


@app.command()
@click.argument("experiment", type=int, cls=Argument, help="The experiment's number.")
@json_flag
@guarded
def show(experiment: int, as_json: bool) -> None:
    """Show one experiment: its patch, rationale, why and output tail."""
    journal = _journal(_project())
    record = journal.experiment(experiment)
    if record is None:
        journal.close()
        raise UsageError(f"no experiment #{experiment}; 'ratchet log' lists them")
    measurements = journal.measurements(experiment)
    journal.close()
    if as_json:
        _print_json({**record.to_json(), "measurements": [m.__dict__ for m in measurements]})
        return
    _show_record(record, measurements[-1].output if measurements else "")


def _show_record(record: ExperimentRecord, output_text: str) -> None:
    from ratchet.decisions import style_of

    out = output()
    out.line(
        Span(f"experiment #{record.id} ", "bold"),
        Span(record.decision or record.stage, style_of(record.decision), single=True),
    )
    out.line(
        f"run {record.run}, parent {record.parent[:7]}, proposer {record.proposer}, "
        f"commit {(record.commit or '-')[:7]}"
    )
    out.line(f"value: {_fmt(record.value)}")
    out.line(f"why: {record.why}")
    out.line(f"rationale: {record.rationale}")
    if record.files:
        out.line(Span(f"files: {', '.join(record.files)}", single=True))
    if record.patch:
        out.diff(record.patch)
    if output_text:
        out.line(Span("output (tail):", "bold"))
        out.line("\n".join(visible(output_text).splitlines()[-40:]))
