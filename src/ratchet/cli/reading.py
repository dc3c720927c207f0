"""Commands that read the journal: status, log, show."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

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
)
from ratchet.errors import UsageError
from ratchet.journal import ExperimentRecord


# status, log, show --------------------------------------------------------------------
@app.command()
@guarded
def status(name: NameOption = None, as_json: JsonFlag = False) -> None:
    """Summarize a run: baseline, incumbent, counts by decision."""
    from ratchet.view import plural

    journal = _journal(_project())
    run_name = _run_name(journal, name)
    run = journal.run(run_name)
    assert run is not None
    counts = journal.counts(run_name)
    baseline, incumbent = journal.baseline(run_name), journal.incumbent(run_name)
    last = journal.experiments(run_name, limit=1)
    decisions = journal.decision_counts(run_name)
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
        "last": last[0].to_json(with_patch=False) if last else None,
    }
    journal.close()
    if as_json:
        _print_json(data)
        return
    table = Table.grid(padding=(0, 2))
    table.add_row("run", f"{run_name} (branch {run.branch}, base {run.base_commit[:7]})")
    table.add_row("metric", f"{run.metric} ({run.goal})")
    table.add_row("baseline", _fmt(baseline.value if baseline else None))
    if incumbent:
        table.add_row(
            "incumbent",
            f"{_fmt(incumbent.value)} (#{incumbent.id}, {(incumbent.commit or '')[:7]})",
        )
    if incumbent and incumbent.holdout is not None:
        table.add_row("holdout", f"{_fmt(incumbent.holdout)} (search {_fmt(incumbent.value)}, "
                      f"gap {_gap(incumbent):+.4g})")  # fmt: skip
    table.add_row(
        "experiments",
        f"{counts.experiments} ({plural(counts.keeps, 'keep')}, {counts.since_keep} since the last keep)",
    )
    table.add_row("decisions", ", ".join(f"{k} {v}" for k, v in sorted(decisions.items())))
    table.add_row("elapsed", f"{counts.elapsed:.0f}s")
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
    from ratchet.view import decision_style

    journal = _journal(_project())
    records = journal.experiments(_run_name(journal, name), limit=limit)
    journal.close()
    if as_json:
        _print_json([r.to_json(with_patch=False) for r in records])
        return
    table = Table(header_style="bold", box=None)
    for column in ("#", "decision", "value", "files", "why"):
        table.add_column(column, overflow="fold")
    for r in records:
        table.add_row(
            str(r.id),
            Text(r.decision or r.stage, style=decision_style(r.decision)),
            _fmt(r.value),
            ", ".join(r.files),
            r.why or "",
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
    from ratchet.view import decision_style

    title = Text.assemble(
        (f"experiment #{record.id} ", "bold"),
        (record.decision or record.stage, decision_style(record.decision)),
    )
    console.print(title)
    console.print(
        f"run {record.run}, parent {record.parent[:7]}, proposer {record.proposer}, "
        f"commit {(record.commit or '-')[:7]}",
        highlight=False,
    )
    console.print(f"value: {_fmt(record.value)}", highlight=False)
    console.print(f"why: {record.why}", highlight=False)
    console.print(f"rationale: {record.rationale}", highlight=False)
    if record.patch:
        console.print(Syntax(record.patch, "diff", theme="ansi_dark", background_color="default"))
    if output:
        tail = "\n".join(output.splitlines()[-40:])
        console.print(Text("output (tail):", style="bold"))
        console.print(Text(tail))
