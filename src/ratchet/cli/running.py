"""Commands that run things: init, run, doctor, noise, demo."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from ratchet.cli.common import (
    Argument,
    _duration,
    _fmt,
    _print_json,
    _project,
    app,
    console,
    guarded,
    json_flag,
    name_option,
)
from ratchet.errors import UsageError


# init ---------------------------------------------------------------------------------
@app.command()
@click.argument(
    "path",
    required=False,
    type=click.Path(path_type=Path),
    cls=Argument,
    help="With --from: the source's folder or file (default: here).",
)
@click.option(
    "--force/--no-force",
    default=False,
    show_default=True,
    help="Overwrite an existing ratchet.toml.",
)
@click.option(
    "--from",
    "source",
    metavar="NAME",
    help="Import a set-up made for autoresearch, openevolve or harbor.",
)
@click.option(
    "--example", metavar="NAME", help="Write a bundled example project here instead: 'harness'."
)
@guarded  # fmt: skip
def init(path: Path | None, force: bool, source: str | None, example: str | None) -> None:
    """Write a commented ratchet.toml and add .ratchet/ to .gitignore."""
    from rich.text import Text

    from ratchet import workspace

    if example is not None:
        if source is not None or path is not None:
            raise UsageError("--example writes a bundled project; it takes no --from or PATH")
        _init_example(example)
        return
    from ratchet.spec import SPEC_FILE
    from ratchet.templates import guess_editable, spec_template

    project = _project()
    target = project / SPEC_FILE
    if target.exists() and not force:
        raise UsageError(f"{SPEC_FILE} already exists; pass --force to overwrite it")
    if path is not None and source is None:
        raise UsageError("a PATH is read only with --from autoresearch|openevolve|harbor")
    notes: list[str] = []
    if source is not None:
        from ratchet.importers import import_spec

        imported = import_spec(source, project, path)
        text, notes = imported.spec, imported.notes
        notes += [f"wrote {name}" for name in imported.written]
    else:
        files = workspace.tracked_files(project) if workspace.resolve(project, "HEAD") else []
        guess = guess_editable(files)
        if guess.ambiguous and console.is_terminal and sys.stdin.isatty():
            guess.chosen = click.prompt(
                f"Which file may proposals change? ({', '.join(guess.candidates[:6])})",
                default=guess.chosen,
            )
        elif guess.note:
            notes.append(guess.note)
        text = spec_template(guess.chosen)
    target.write_text(text)
    workspace.ensure_ignored(project)
    for note in notes:
        console.print(Text(f"assumed: {note}" if not note.startswith("wrote ") else note))
    console.print(
        Text(
            f"wrote {SPEC_FILE} and added .ratchet/ to .gitignore; edit the spec, "
            "commit both, then run 'ratchet run'"
        )
    )


def _init_example(name: str) -> None:
    from ratchet.example_projects import write_example
    from ratchet.view import plain

    here = Path.cwd()
    committed = write_example(name, here)
    then = "then run" if committed else "commit them, then run"
    console.print(
        plain(f"wrote the {name} example into {here}; read its program.md, {then} 'ratchet run'")
    )


# run ----------------------------------------------------------------------------------
max_experiments_option = click.option(
    "--max-experiments",
    type=click.IntRange(min=1),
    metavar="N",
    help="Stop after this many experiments.",
)


@app.command()
@name_option
@max_experiments_option
@click.option("--max-time", metavar="DURATION", help="Stop after this long, e.g. 8h.")
@click.option(
    "--parallel",
    type=click.IntRange(1, 256),
    metavar="N",
    help="Experiments at once (default: [executor] parallel).",
)
@click.option(
    "--report", is_flag=True, help="Redraw .ratchet/reports/RUN/progress.png after decisions."
)
@guarded  # fmt: skip
def run(
    name: str | None,
    max_experiments: int | None,
    max_time: str | None,
    parallel: int | None,
    report: bool,
) -> None:
    """Run the loop on this project, or continue the run of that name."""
    project = _project()
    outcome = _start(project, name, max_experiments, _duration(max_time, "--max-time"), parallel,
                     report)  # fmt: skip
    if _failed(outcome):
        raise SystemExit(1)


def _failed(stopped: Any) -> bool:
    """A run that measured no baseline, or gave up on failures in a row, failed: exit 1."""
    return stopped.incumbent is None or stopped.reason.startswith("gave up")


def _start(
    project: Path,
    name: str | None,
    max_experiments: int | None,
    max_time: float | None,
    parallel: int | None = None,
    report: bool = False,
) -> Any:
    from ratchet.cli.signals import stopping_on_signals
    from ratchet.events import Event
    from ratchet.project import Project
    from ratchet.view import LiveView, PlainView

    api = Project(project)
    spec = api.spec
    view = LiveView(console) if console.is_terminal else PlainView(sys.stdout)
    refresher = None
    if report:  # the plot is redrawn beside the view, in a thread of its own
        from ratchet.report import ProgressRefresher

        refresher = ProgressRefresher(project, spec, name or spec.run.name)

    def observer(event: Event) -> None:
        view(event)
        if refresher is not None:
            refresher(event)

    run = api.run(name, max_experiments=max_experiments, max_time=max_time,
                  parallel=parallel, observer=observer)  # fmt: skip
    try:
        with view, stopping_on_signals(run.stop):
            stopped = run.start().wait()
    finally:
        if refresher is not None:
            refresher.close()
    _summary(stopped, spec.metric.name, project, spec.run.results)
    return stopped


def _summary(stopped: Any, metric: str, project: Path, results: str) -> None:
    baseline, best = stopped.baseline, stopped.incumbent
    if best is None or baseline is None or baseline.value is None or best.value is None:
        return
    from ratchet.engine import open_journal
    from ratchet.plaintext import plural
    from ratchet.view import plain

    journal = open_journal(project)
    try:
        counts = journal.counts(best.run)
        run = journal.run(best.run)
    finally:
        journal.close()
    assert run is not None
    console.print(
        plain(
            f"{metric}: baseline {baseline.value:.6g} -> best {best.value:.6g} "
            f"(#{best.id}, {(best.commit or '')[:7]}); "
            f"{plural(counts.experiments, 'experiment')}, {plural(counts.keeps, 'keep')}"
        )
    )
    console.print(plain(f"branch {run.branch}; results in {results}"))


# doctor -------------------------------------------------------------------------------
@app.command()
@json_flag
@guarded
def doctor(as_json: bool) -> None:
    """Which sandbox layers work on this machine, and why not; whether another installed
    distribution claims ratchet's module or command."""
    from rich.table import Table
    from rich.text import Text

    from ratchet.sandbox.select import doctor_report
    from ratchet.view import plain

    image = network = None
    try:
        from ratchet.spec import load_spec

        spec = load_spec(_project())
        image, network = spec.sandbox.image, spec.sandbox.network
    except UsageError:
        pass  # no project or no spec here: check the layers as they come
    report = doctor_report(image, bool(network))
    from ratchet.installation import DISTRIBUTION, name_clashes

    clashes = name_clashes()
    report.append(("name", not clashes, "; ".join(clashes) or f"only {DISTRIBUTION} provides "
                   "the 'ratchet' module and command"))  # fmt: skip
    if as_json:
        _print_json([{"layer": n, "works": ok, "why": why} for n, ok, why in report])
        return
    table = Table.grid(padding=(0, 2))
    for layer, ok, why in report:
        verdict = Text("yes", style="green") if ok else Text("no", style="red")
        table.add_row(Text(layer), verdict, plain(why))  # a why may quote a tool's stderr
    console.print(table)


# noise --------------------------------------------------------------------------------
@app.command()
@click.option(
    "--repeats",
    type=click.IntRange(min=2),
    metavar="N",
    default=5,
    show_default=True,
    help="How many measurements of the incumbent.",
)
@name_option
@json_flag
@guarded  # fmt: skip
def noise(repeats: int, name: str | None, as_json: bool) -> None:
    """Measure the incumbent again and again: how noisy is the metric?"""
    from rich.table import Table
    from rich.text import Text

    from ratchet.cli.signals import stopping_on_signals
    from ratchet.project import Project

    api = Project(_project())
    spec = api.spec
    measuring = api.measure_noise(repeats, name)
    with stopping_on_signals(measuring.stop):
        report = measuring.wait()
    if as_json:
        _print_json(report.__dict__)
        return
    metric = spec.metric.name
    rows = [
        ("measured", f"experiment #{report.experiment}, {report.n} times"),
        ("mean", f"{metric} {report.mean:.6g}"),
        ("sd", _fmt(report.sd)),
        ("spread", f"{report.low:.6g} .. {report.high:.6g}"),
        ("pooled sd", f"{_fmt(report.pooled_sd)} ({report.pooled_df} degrees of freedom)"),
        (
            "smallest keep",
            f"{_fmt(report.smallest_detectable)} (the smallest improvement a keep can prove at "
            f"confidence {spec.policy.confidence:g}, with {spec.policy.max_repeats} measurements)",
        ),
    ]
    if report.warning:
        rows.append(("warning", report.warning))
    table = Table.grid(padding=(0, 2))
    for label, value in rows:
        table.add_row(Text(label), Text(value))
    console.print(table)


# demo ---------------------------------------------------------------------------------
@app.command()
@click.argument(
    "directory",
    required=False,
    default=Path("ratchet-demo"),
    type=click.Path(path_type=Path),
    cls=Argument,
    help="Where to put the demo project.",
)
@max_experiments_option
@click.option(
    "--max-time", metavar="DURATION", help="Stop after this long (default: the demo's 2m)."
)
@guarded  # fmt: skip
def demo(directory: Path, max_experiments: int | None, max_time: str | None) -> None:
    """Copy the bundled training example into DIRECTORY and improve it, offline."""
    from ratchet.demo import prepare_demo
    from ratchet.view import plain

    project = prepare_demo(directory.resolve())
    console.print(plain(f"demo project in {project}"))
    started = time.monotonic()
    outcome = _start(project, None, max_experiments, _duration(max_time, "--max-time"))
    console.print(
        plain(
            f"demo finished in {time.monotonic() - started:.0f}s; see 'git -C {directory} "
            f"log ratchet/default' and {directory}/.ratchet/results.tsv"
        )
    )
    if outcome.incumbent is None:
        raise SystemExit(1)
