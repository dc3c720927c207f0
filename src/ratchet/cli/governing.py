"""Commands for the humans in charge: review (approve, reject) and finalize."""

from __future__ import annotations

from typing import Any

import click

from ratchet.cli.common import (
    Argument,
    Group,
    _fmt,
    _journal,
    _print_json,
    _project,
    _run_name,
    _spec,
    app,
    console,
    guarded,
    json_flag,
    name_option,
)
from ratchet.cli.output import Span, output


# review, finalize -----------------------------------------------------------------------
# not added to `app` here: `--help` lists it last (cli/__init__.py adds it)
@click.group(
    cls=Group,
    invoke_without_command=True,
    help="List a run's keeps for a human decision; approve or reject them.",
)
@name_option
@click.option("--patch", is_flag=True, help="Print each keep's full diff.")
@json_flag
@click.pass_context
@guarded
def review(ctx: click.Context, name: str | None, patch: bool, as_json: bool) -> None:
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
    out = output()
    out.line(
        f"run {run.name}: {len(report.items)} keeps after the baseline ({run.metric}, "
        f"{run.goal}); approved {counts['approved']}, rejected {counts['rejected']}, "
        f"pending {counts['pending']}"
    )
    for label, record in (("baseline", report.baseline), ("incumbent", report.incumbent)):
        if record is not None:
            out.line(f"{label} {_fmt(record.value)} (#{record.id}, {(record.commit or '')[:7]})")
    if not report.items:
        return
    rows = []
    for item in report.items:
        r, approval = item.record, item.approval
        state = item.state
        if approval is not None:
            state += f" by {approval.who.split(' <')[0]}"
            state += f": {approval.note}" if approval.note else ""
        rows.append(
            (
                str(r.id),
                (r.commit or "")[:7],
                f"{_fmt(item.parent_value)} -> {_fmt(r.value)}",
                "-" if item.delta is None else f"{item.delta:+.4g}",
                state,
                Span(format_diffstat(diffstat(r.patch)), single=True),
                r.rationale,
            )
        )
    out.table(("#", "commit", run.metric, "delta", "approval", "diff", "rationale"), rows)
    if not patch:
        out.line(
            "full diffs: 'ratchet review --patch'; decide: 'ratchet review approve ID...' "
            "or 'ratchet review reject ID...'; then 'ratchet finalize'"
        )
        return
    for item in report.items:
        r = item.record
        out.line(Span(f"keep #{r.id} ({(r.commit or '')[:7]}): {r.rationale}", "bold"))
        out.diff(r.patch)


ids_argument = click.argument(
    "experiments", nargs=-1, required=True, type=int, metavar="ID...", cls=Argument,
    help="The keeps' experiment numbers.",
)  # fmt: skip
note_option = click.option("--note", default="", metavar="TEXT", help="Why, in a sentence.")


@review.command("approve")
@ids_argument
@note_option
@guarded
def review_approve(experiments: tuple[int, ...], note: str) -> None:
    """Approve keeps: 'ratchet finalize --approved-only' replays only approved ones."""
    _verdict(list(experiments), True, note)


@review.command("reject")
@ids_argument
@note_option
@guarded
def review_reject(experiments: tuple[int, ...], note: str) -> None:
    """Reject keeps: 'ratchet finalize' never replays a rejected keep."""
    _verdict(list(experiments), False, note)


def _verdict(experiments: list[int], approve: bool, note: str) -> None:
    from ratchet.governance import identity, record_verdict
    from ratchet.view import plain

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
            plain(
                f"{approval.verdict} keep #{record.id} of run {record.run} "
                f"({(record.commit or '')[:7]}: {record.rationale}) as {approval.who}"
                + (f"; note: {note}" if note else "")
            )
        )


@app.command()
@name_option
@click.option("--approved-only", is_flag=True, help="Replay only approved keeps.")
@json_flag
@guarded
def finalize(name: str | None, approved_only: bool, as_json: bool) -> None:
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
        raise SystemExit(1)


def _print_finalized(result: Any) -> None:
    from ratchet.view import plain

    def say(line: str) -> None:  # reasons and whys may quote a candidate's output
        console.print(plain(line))

    which = " (approved keeps only)" if result.approved_only else ""
    ids = ", ".join(f"#{i}" for i in result.replayed)
    replayed = f"keep{'s' if len(result.replayed) > 1 else ''} {ids}" if ids else "no keep"
    say(f"finalize run {result.run}: replayed {replayed} onto the base {result.base[:7]}{which}")
    for skipped in result.skipped:
        say(f"skipped keep #{skipped.experiment}: {skipped.reason}")
    if result.left_out:
        left = ", ".join(f"#{s.experiment} ({s.reason})" for s in result.left_out)
        say(f"left out: {left}")
    replaced = (
        f"; replaced the previous {result.branch} ({result.previous[:7]})"
        if result.previous
        else ""
    )
    say(f"branch {result.branch} at {result.commit[:7]}{replaced}")
    if result.spec_changed:
        say("note: the spec changed since the run was created; measured with the current one")
    m = result.measurement
    if result.value is None:
        say(f"{result.metric}: the final measurement failed ({m.status}): {m.why}")
        return

    def versus(label: str, record: Any) -> str:
        if record is None or record.value is None:
            return f"{label} -"
        return f"{label} {_fmt(record.value)} (#{record.id}, {result.against(record):+.4g})"

    say(
        f"{result.metric}: final {_fmt(result.value)} (re-measured once, seed 0) vs "
        f"{versus('baseline', result.baseline)}, {versus('incumbent', result.incumbent)}"
    )
