"""Commands that read the journal: status, log, show."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from ratchet.cli.common import (
    JsonFlag,
    NameOption,
    _fmt,
    _journal,
    _print_json,
    _project,
    _run_name,
    app,
    console,
    guarded,
    print_diff,
)
from ratchet.errors import UsageError

if TYPE_CHECKING:
    from ratchet.journal import ExperimentRecord


# status, log, show --------------------------------------------------------------------
@app.command()
@guarded
def status(name: NameOption = None, as_json: JsonFlag = False) -> None:
    """Summarize a run: baseline, incumbent, counts by decision."""
    from rich.table import Table
    from rich.text import Text

    from ratchet.decisions import user_counts
    from ratchet.suite.store import pairing_of
    from ratchet.view import plain, plural

    journal = _journal(_project())
    run_name = _run_name(journal, name)
    run = journal.run(run_name)
    assert run is not None
    counts = journal.counts(run_name)
    baseline, incumbent = journal.baseline(run_name), journal.incumbent(run_name)
    last = journal.experiments(run_name, limit=1, patches=False)
    pairing = pairing_of(journal, run_name)  # harness mode: the meta and task agent models
    # the baseline is the reference, not an experiment: no count includes it
    decisions, categories = user_counts(
        journal.decision_counts(run_name), journal.baseline_decision_counts(run_name)
    )
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
    table = Table.grid(padding=(0, 2))
    for label, value in rows:
        table.add_row(Text(label), plain(value))
    console.print(table)


def _gap(record: ExperimentRecord) -> float | None:
    """How much worse the holdout is than the search metric (in the metric's units)."""
    if record.holdout is None or record.value is None:
        return None
    return record.holdout - record.value


@app.command()
@guarded
def log(
    name: NameOption = None,
    limit: Annotated[int | None, typer.Option(help="Only the newest N experiments.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List a run's experiments with their decisions and whys."""
    from rich.table import Table
    from rich.text import Text

    from ratchet.view import decision_style, plain

    journal = _journal(_project())
    records = journal.experiments(_run_name(journal, name), limit=limit, patches=False)
    journal.close()
    if as_json:
        _print_json([r.to_json(with_patch=False) for r in records])
        return
    table = Table(header_style="bold", box=None)
    for column in ("#", "decision", "value", "files", "why"):
        table.add_column(column, overflow="fold")
    for r in records:
        table.add_row(
            Text(str(r.id)),
            plain(r.decision or r.stage, decision_style(r.decision), lines=False),
            Text(_fmt(r.value)),
            plain(", ".join(r.files), lines=False),
            plain(r.why),
        )
    console.print(table)


@app.command()
@guarded
def show(
    experiment: Annotated[int, typer.Argument(help="The experiment's number.")],
    as_json: JsonFlag = False,
) -> None:
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


def _show_record(record: ExperimentRecord, output: str) -> None:
    from rich.text import Text

    from ratchet.plaintext import visible
    from ratchet.view import decision_style, plain

    title = Text.assemble(
        (f"experiment #{record.id} ", "bold"),
        plain(record.decision or record.stage, decision_style(record.decision), lines=False),
    )
    console.print(title)
    console.print(
        plain(
            f"run {record.run}, parent {record.parent[:7]}, proposer {record.proposer}, "
            f"commit {(record.commit or '-')[:7]}"
        )
    )
    console.print(plain(f"value: {_fmt(record.value)}"))
    console.print(plain(f"why: {record.why}"))
    console.print(plain(f"rationale: {record.rationale}"))
    if record.files:
        console.print(plain(f"files: {', '.join(record.files)}", lines=False))
    if record.patch:  # the patch carries the candidate's files: escaped like any text
        patch = visible(record.patch)
        print_diff(patch)
    if output:
        tail = "\n".join(visible(output).splitlines()[-40:])
        console.print(Text("output (tail):", style="bold"))
        console.print(Text(tail))
