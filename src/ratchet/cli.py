"""The command line: turns arguments into calls. Exit 0 on success, 2 on a usage or spec
error (one line, never a traceback), 1 when a run could not go on."""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from ratchet import workspace
from ratchet.errors import RunError, UsageError
from ratchet.journal import ExperimentRecord, Journal
from ratchet.spec import SPEC_FILE, Spec, parse_duration

app = typer.Typer(
    name="ratchet",
    help="Run the autoresearch loop: propose a change, measure it, keep it only if it improves.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
console = Console()
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
NameOption = Annotated[
    str | None, typer.Option("--name", help="The run (default: [run] name in the spec).")
]


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"ratchet: error: {message}", file=sys.stderr)
    raise typer.Exit(code)


P = ParamSpec("P")
R = TypeVar("R")


def guarded(command: Callable[P, R]) -> Callable[P, R]:
    """Turn ratchet's own errors into one line and an exit code."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except UsageError as error:
            fail(str(error), 2)
        except (RunError, workspace.GitError) as error:
            fail(str(error), 1)

    return wrapper


def _project() -> Path:
    try:
        return workspace.project_root(Path.cwd())
    except workspace.GitError as error:
        raise UsageError(str(error)) from None


def _spec(project: Path) -> Spec:
    """The project's spec, checked against the files of its current commit."""
    from ratchet.spec import load_spec

    files = workspace.tracked_files(project) if workspace.resolve(project, "HEAD") else []
    return load_spec(project, files)


def _journal(project: Path) -> Journal:
    from ratchet.engine import JOURNAL_FILE, state_dir

    path = state_dir(project) / JOURNAL_FILE
    if not path.exists():
        raise UsageError("no runs yet in this project; start one with 'ratchet run'")
    return Journal(path)


def _run_name(journal: Journal, name: str | None) -> str:
    runs = journal.runs()
    if name is None:
        if not runs:
            raise UsageError("no runs yet in this project; start one with 'ratchet run'")
        return runs[-1].name
    if journal.run(name) is None:
        known = ", ".join(r.name for r in runs) or "none"
        raise UsageError(f"no run named '{name}' (runs: {known})")
    return name


def _duration(value: str | None, option: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as error:
        raise UsageError(f"{option}: {error}") from None


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


# init ---------------------------------------------------------------------------------
@app.command()
@guarded
def init(
    force: Annotated[bool, typer.Option(help="Overwrite an existing ratchet.toml.")] = False,
) -> None:
    """Write a commented ratchet.toml and add .ratchet/ to .gitignore."""
    from ratchet.templates import spec_template

    project = _project()
    target = project / SPEC_FILE
    if target.exists() and not force:
        raise UsageError(f"{SPEC_FILE} already exists; pass --force to overwrite it")
    files = workspace.tracked_files(project) if workspace.resolve(project, "HEAD") else []
    target.write_text(spec_template(files))
    workspace.ensure_ignored(project)
    console.print(
        f"wrote {SPEC_FILE} and added .ratchet/ to .gitignore; edit the spec, "
        "commit both, then run 'ratchet run'"
    )


# run ----------------------------------------------------------------------------------
@app.command()
@guarded
def run(
    name: NameOption = None,
    max_experiments: Annotated[
        int | None, typer.Option(help="Stop after this many experiments.", min=1)
    ] = None,
    max_time: Annotated[str | None, typer.Option(help="Stop after this long, e.g. 8h.")] = None,
) -> None:
    """Run the loop on this project, or continue the run of that name."""
    project = _project()
    outcome = _start(project, name, max_experiments, _duration(max_time, "--max-time"))
    if outcome.incumbent is None:
        raise typer.Exit(1)


def _start(
    project: Path, name: str | None, max_experiments: int | None, max_time: float | None
) -> Any:
    from ratchet.engine import Engine, Limits, open_journal
    from ratchet.view import LiveView, PlainView

    spec = _spec(project)
    limits = Limits.of(spec, max_experiments, max_time)
    journal = open_journal(project)
    view: LiveView | PlainView = LiveView(console) if console.is_terminal else PlainView(sys.stdout)
    try:
        with view:
            stopped = Engine(project, spec, journal, view, name, limits).run()
    finally:
        journal.close()
    _summary(stopped, spec.metric.name, project)
    return stopped


def _summary(stopped: Any, metric: str, project: Path) -> None:
    baseline, best = stopped.baseline, stopped.incumbent
    if best is None or baseline is None:
        return
    from ratchet.engine import open_journal
    from ratchet.view import plural

    journal = open_journal(project)
    try:
        counts = journal.counts(best.run)
        run = journal.run(best.run)
    finally:
        journal.close()
    assert run is not None
    console.print(
        f"{metric}: baseline {baseline.value:.6g} -> best {best.value:.6g} "
        f"(#{best.id}, {(best.commit or '')[:7]}); {plural(counts.experiments, 'experiment')}, "
        f"{plural(counts.keeps, 'keep')}",
        highlight=False,
    )
    console.print(f"branch {run.branch}; results in .ratchet/results.tsv", highlight=False)


# doctor -------------------------------------------------------------------------------
@app.command()
@guarded
def doctor(as_json: JsonFlag = False) -> None:
    """Which sandbox layers work on this machine, and why not."""
    from ratchet.sandbox.select import doctor_report

    image = network = None
    try:
        from ratchet.spec import load_spec

        spec = load_spec(_project())
        image, network = spec.sandbox.image, spec.sandbox.network
    except UsageError:
        pass  # no project or no spec here: check the layers as they come
    report = doctor_report(image, bool(network))
    if as_json:
        _print_json([{"layer": n, "works": ok, "why": why} for n, ok, why in report])
        return
    table = Table.grid(padding=(0, 2))
    for layer, ok, why in report:
        table.add_row(layer, Text("yes", style="green") if ok else Text("no", style="red"), why)
    console.print(table, highlight=False)


# noise --------------------------------------------------------------------------------
@app.command()
@guarded
def noise(
    repeats: Annotated[
        int, typer.Option(help="How many measurements of the incumbent.", min=2)
    ] = 5,
    name: NameOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Measure the incumbent again and again: how noisy is the metric?"""
    from ratchet.engine import Engine, open_journal

    project = _project()
    spec = _spec(project)
    journal = open_journal(project)
    try:
        report = Engine(project, spec, journal, run_name=name).measure_noise(repeats)
    finally:
        journal.close()
    if as_json:
        _print_json(report.__dict__)
        return
    metric = spec.metric.name
    table = Table.grid(padding=(0, 2))
    table.add_row("measured", f"experiment #{report.experiment}, {report.n} times")
    table.add_row("mean", f"{metric} {report.mean:.6g}")
    table.add_row("sd", _fmt(report.sd))
    table.add_row("spread", f"{report.low:.6g} .. {report.high:.6g}")
    table.add_row("pooled sd", f"{_fmt(report.pooled_sd)} ({report.pooled_df} degrees of freedom)")
    table.add_row(
        "smallest keep",
        f"{_fmt(report.smallest_detectable)} (an improvement the policy can tell apart at "
        f"confidence {spec.policy.confidence:g}, with a candidate measured twice)",
    )
    console.print(table, highlight=False)


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


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


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


# demo ---------------------------------------------------------------------------------
@app.command()
@guarded
def demo(
    directory: Annotated[Path, typer.Argument(help="Where to put the demo project.")] = Path(
        "ratchet-demo"
    ),
    max_experiments: Annotated[
        int | None, typer.Option(help="Stop after this many experiments.", min=1)
    ] = None,
    max_time: Annotated[
        str | None, typer.Option(help="Stop after this long (default: the demo's 2m).")
    ] = None,
) -> None:
    """Copy the bundled training example into DIRECTORY and improve it, offline."""
    from ratchet.demo import prepare_demo

    project = prepare_demo(directory.resolve())
    console.print(f"demo project in {project}", highlight=False)
    started = time.monotonic()
    outcome = _start(project, None, max_experiments, _duration(max_time, "--max-time"))
    console.print(
        f"demo finished in {time.monotonic() - started:.0f}s; see 'git -C {directory} "
        f"log ratchet/default' and {directory}/.ratchet/results.tsv",
        highlight=False,
    )
    if outcome.incumbent is None:
        raise typer.Exit(1)


# review, finalize -----------------------------------------------------------------------
review_app = typer.Typer(
    help="List a run's keeps for a human decision; approve or reject them.",
    add_completion=False,
    rich_markup_mode=None,
)
app.add_typer(review_app, name="review")


@review_app.callback(invoke_without_command=True)
@guarded
def review(
    ctx: typer.Context,
    name: NameOption = None,
    patch: Annotated[bool, typer.Option("--patch", help="Print each keep's full diff.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """List a run's keeps (the baseline aside): metric deltas, rationales, approvals, diffs."""
    if ctx.invoked_subcommand is not None:
        return
    from ratchet.governance import diffstat, format_diffstat
    from ratchet.governance import review as build_review

    journal = _journal(_project())
    try:
        report = build_review(journal, _run_name(journal, name))
    finally:
        journal.close()
    if as_json:
        _print_json(report.to_json())
        return
    run, counts = report.run, report.counts()
    console.print(
        f"run {run.name}: {len(report.items)} keeps after the baseline ({run.metric}, {run.goal}"
        f"); approved {counts['approved']}, rejected {counts['rejected']}, "
        f"pending {counts['pending']}",
        highlight=False,
    )
    for label, record in (("baseline", report.baseline), ("incumbent", report.incumbent)):
        if record is not None:
            console.print(f"{label} {_fmt(record.value)} (#{record.id}, "
                          f"{(record.commit or '')[:7]})", highlight=False)  # fmt: skip
    if not report.items:
        return
    table = Table(header_style="bold", box=None)
    for column in ("#", "commit", run.metric, "delta", "approval", "diff", "rationale"):
        table.add_column(column, overflow="fold")
    for item in report.items:
        r, approval = item.record, item.approval
        state = item.state
        if approval is not None:
            state += f" by {approval.who.split(' <')[0]}"
            state += f": {approval.note}" if approval.note else ""
        table.add_row(
            str(r.id),
            (r.commit or "")[:7],
            f"{_fmt(item.parent_value)} -> {_fmt(r.value)}",
            "-" if item.delta is None else f"{item.delta:+.4g}",
            state,
            format_diffstat(diffstat(r.patch)),
            r.rationale,
        )
    console.print(table)
    if not patch:
        console.print(
            "full diffs: 'ratchet review --patch'; decide: 'ratchet review approve ID...' or "
            "'ratchet review reject ID...'; then 'ratchet finalize'",
            highlight=False,
        )
        return
    for item in report.items:
        r = item.record
        console.print(Text(f"keep #{r.id} ({(r.commit or '')[:7]}): {r.rationale}", style="bold"))
        console.print(Syntax(r.patch, "diff", theme="ansi_dark", background_color="default"))


IdsArgument = Annotated[
    list[int], typer.Argument(help="The keeps' experiment numbers.", metavar="ID")
]
NoteOption = Annotated[str, typer.Option("--note", help="Why, in a sentence.")]


@review_app.command("approve")
@guarded
def review_approve(experiments: IdsArgument, note: NoteOption = "") -> None:
    """Approve keeps: 'ratchet finalize --approved-only' replays only approved ones."""
    _verdict(experiments, True, note)


@review_app.command("reject")
@guarded
def review_reject(experiments: IdsArgument, note: NoteOption = "") -> None:
    """Reject keeps: 'ratchet finalize' never replays a rejected keep."""
    _verdict(experiments, False, note)


def _verdict(experiments: list[int], approve: bool, note: str) -> None:
    from ratchet.governance import identity, record_verdict

    project = _project()
    journal = _journal(project)
    try:
        done = record_verdict(
            journal, experiments, "approved" if approve else "rejected", identity(project), note
        )
    finally:
        journal.close()
    for record, approval in done:
        console.print(
            f"{approval.verdict} keep #{record.id} of run {record.run} ({(record.commit or '')[:7]}: "
            f"{record.rationale}) as {approval.who}" + (f"; note: {note}" if note else ""),
            highlight=False,
        )


@app.command()
@guarded
def finalize(
    name: NameOption = None,
    approved_only: Annotated[
        bool, typer.Option("--approved-only", help="Replay only approved keeps.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Build ratchet/<run>-final from the base with the keeps replayed, and measure it once."""
    from ratchet.governance import finalize as build_final

    project = _project()
    spec = _spec(project)
    journal = _journal(project)
    try:
        result = build_final(project, journal, spec, _run_name(journal, name), approved_only)
    finally:
        journal.close()
    if as_json:
        _print_json(result.to_json())
    else:
        _print_finalized(result)
    if result.value is None:
        raise typer.Exit(1)


def _print_finalized(result: Any) -> None:
    which = " (approved keeps only)" if result.approved_only else ""
    ids = ", ".join(f"#{i}" for i in result.replayed)
    replayed = f"keep{'s' if len(result.replayed) > 1 else ''} {ids}" if ids else "no keep"
    console.print(
        f"finalize run {result.run}: replayed {replayed} onto the base {result.base[:7]}{which}",
        highlight=False,
    )
    for skipped in result.skipped:
        console.print(f"skipped keep #{skipped.experiment}: {skipped.reason}", highlight=False)
    if result.left_out:
        left = ", ".join(f"#{s.experiment} ({s.reason})" for s in result.left_out)
        console.print(f"left out: {left}", highlight=False)
    replaced = (
        f"; replaced the previous {result.branch} ({result.previous[:7]})"
        if result.previous
        else ""
    )
    console.print(f"branch {result.branch} at {result.commit[:7]}{replaced}", highlight=False)
    if result.spec_changed:
        console.print(
            "note: the spec changed since the run was created; measured with the current one",
            highlight=False,
        )
    m = result.measurement
    if result.value is None:
        console.print(f"{result.metric}: the final measurement failed ({m.status}): {m.why}",
                      highlight=False)  # fmt: skip
        return

    def versus(label: str, record: Any) -> str:
        if record is None or record.value is None:
            return f"{label} -"
        return f"{label} {_fmt(record.value)} (#{record.id}, {result.against(record):+.4g})"

    console.print(
        f"{result.metric}: final {_fmt(result.value)} (re-measured once, seed 0) vs "
        f"{versus('baseline', result.baseline)}, {versus('incumbent', result.incumbent)}",
        highlight=False,
    )


def main() -> None:
    app()
