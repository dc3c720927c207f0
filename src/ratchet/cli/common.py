"""What every command shares: the app, one-line errors, finding the project and its run."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console

from ratchet import workspace
from ratchet.errors import RunError, UsageError
from ratchet.journal import Journal
from ratchet.plaintext import visible
from ratchet.spec import Spec, parse_duration

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
    # an error may quote a candidate's output or a file name: no control character passes
    print(f"ratchet: error: {visible(message)}", file=sys.stderr)
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
    from ratchet.engine import JOURNAL_FILE, open_journal, state_dir

    if not (state_dir(project) / JOURNAL_FILE).exists():
        raise UsageError("no runs yet in this project; start one with 'ratchet run'")
    return open_journal(project)  # tightens what an older ratchet left readable


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


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"
