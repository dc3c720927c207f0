"""What every command shares: the app, one-line errors, finding the project and its run."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import click
import typer
from rich.console import Console

from ratchet import workspace
from ratchet.errors import RunError, UsageError, machine_failure
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
    """Turn every error into one line and an exit code: the user's (2), the run's or the
    machine's (1: a full disk, a damaged journal), and ratchet's own bugs (1, with the
    traceback in a log file whose path the line gives)."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.exceptions.Exit, click.ClickException):
            raise  # the command line's own exits and usage errors
        except Exception as error:
            machine = machine_failure(error)
            if machine is not None:  # git's errors too can be a full disk's
                fail(machine, 1)
            if isinstance(error, UsageError):
                fail(str(error), 2)
            if isinstance(error, (RunError, workspace.GitError)):
                fail(str(error), 1)
            log = _log_internal_error(error)
            fail(
                f"ratchet's own error ({type(error).__name__}: {_first_line(error)}); "
                f"the traceback is in {log}. Please report it; 'ratchet run' resumes the run",
                1,
            )

    return wrapper


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else "no message"


def _log_internal_error(error: BaseException) -> str:
    """Write the traceback under `.ratchet/logs/` (or the temporary folder outside a
    project); the path as the user can open it."""
    text = "".join(traceback.format_exception(error))
    name = f"error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    folders = []
    with contextlib.suppress(workspace.GitError, OSError):  # outside a project: tmp only
        folders.append(workspace.project_root(Path.cwd()) / workspace.STATE_DIR / "logs")
    folders.append(Path(tempfile.gettempdir()))
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
                out.write(text)
        except OSError:
            continue
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)
    return "no file (none could be written)"


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
