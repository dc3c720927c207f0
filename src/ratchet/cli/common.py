"""What every command shares: the app, one-line errors, finding the project and its run.

The command line is click's: typer (which ratchet used before, and which is built on
click) costs `--help` and every command about 70 ms more to import, and its option
coercion imports pydantic; click alone is about 25 ms, and its decorators are typer's
nearly one for one (`python -X importtime`: typer ~68 ms, click ~27, argparse ~4).
argparse would save a reading command another 0.02 s, at the price of writing click's
help, range checks and command groups again; `ratchet --help` needs neither (its text is
kept, cli/helptext.py), and the rest of a reading command's time is the journal's.
Usage errors are one line on stderr, exit 2
(`run_command_line`), not click's block of usage and hint.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar, cast

import click

from ratchet.cli.output import make_console
from ratchet.errors import RunError, UsageError, machine_failure
from ratchet.plaintext import one_line, visible

if TYPE_CHECKING:  # imported where used: `ratchet --help` and `status` stay quick
    from rich.console import Console

    from ratchet.journal import Journal
    from ratchet.spec import Spec

STATE_DIR = ".ratchet"  # workspace.STATE_DIR, without importing pygit2 for it


class Argument(click.Argument):
    """A positional argument with a help text (click's have none), shown by `Command`."""

    def __init__(self, decls: Sequence[str], help: str = "", **attrs: Any) -> None:
        super().__init__(decls, **attrs)
        self.help = help


class Command(click.Command):
    """A command whose help lists its arguments, with their help, before its options."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for param in self.get_params(ctx):
            if isinstance(param, Argument):
                notes = "  [required]" if param.required else ""
                if isinstance(param.default, (str, int, float, Path)):  # not click's unset
                    notes = f"  [default: {param.default}]"
                rows.append((param.human_readable_name, param.help + notes))
        if rows:
            with formatter.section("Arguments"):
                formatter.write_dl(rows)
        super().format_options(ctx, formatter)


class Group(click.Group):
    """A command group that lists its commands in the order they were added (click
    sorts them by name), and whose commands are `Command`s."""

    command_class = Command
    group_class = type  # click's word for "a group of this same class"

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


app = Group(
    name="ratchet",
    help="Run the autoresearch loop: propose a change, measure it, keep it only if it improves.",
    no_args_is_help=True,
)


def run_command_line(args: Sequence[str] | None = None) -> int:
    """Run `app` on `args` (default: sys.argv): the exit code. A usage error is one line
    on stderr, exit 2; no arguments at all show the help (on stderr, exit 2)."""
    try:
        code = app.main(args, prog_name="ratchet", standalone_mode=False)
        sys.stdout.flush()  # here, where a closed pipe can still be caught
    except click.UsageError as error:
        if "NoArgsIsHelp" in type(error).__name__:  # click 8.2 on: the help, as an error
            error.show()
            return 2
        message = one_line(error.format_message()).rstrip(".")
        where = f"; see '{error.ctx.command_path} --help'" if error.ctx is not None else ""
        print(f"ratchet: error: {message}{where}", file=sys.stderr)
        return 2
    except click.ClickException as error:
        print(f"ratchet: error: {one_line(error.format_message())}", file=sys.stderr)
        return error.exit_code
    except click.Abort:  # Ctrl-C or end of input at a prompt
        print("ratchet: aborted", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader (`ratchet log | head`) has read all it wanted:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1  # no message, and click's exit code for it (inside a command, click's own)
    return code if isinstance(code, int) else 0


class _FirstUse:
    """The console, made when a command first prints (importing rich takes a while)."""

    def __init__(self) -> None:
        self._console: Console | None = None

    def _made(self) -> Console:
        if self._console is None:
            self._console = make_console()
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self._made(), name)

    # a live display enters the console: special methods are not found by __getattr__
    def __enter__(self) -> Console:
        return self._made().__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._made().__exit__(*exc)


console = cast("Console", _FirstUse())
json_flag = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
name_option = click.option(
    "--name", metavar="NAME", default=None, help="The run (default: [run] name in the spec)."
)


def fail(message: str, code: int = 2) -> NoReturn:
    # an error may quote a candidate's output or a file name: no control character passes
    print(f"ratchet: error: {visible(message)}", file=sys.stderr)
    raise SystemExit(code)


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
        except (click.exceptions.Exit, click.Abort, click.ClickException, BrokenPipeError):
            raise  # the command line's own exits and usage errors; a reader gone
        except Exception as error:
            machine = machine_failure(error)
            if machine is not None:  # git's errors too can be a full disk's
                fail(machine, 1)
            if isinstance(error, UsageError):
                fail(str(error), 2)
            from ratchet.workspace import GitError

            if isinstance(error, (RunError, GitError)):
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
    import contextlib
    import tempfile
    import time
    import traceback

    from ratchet import workspace

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
    """The project: the git repository around the working directory. Asked of git
    directly, not through `workspace` (which imports pygit2 and the spec's models,
    most of a reading command's time)."""
    import subprocess

    try:
        found = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=Path.cwd(),
                               capture_output=True, text=True, check=False)  # fmt: skip
    except (FileNotFoundError, NotADirectoryError):
        found = None
    if found is None or found.returncode != 0:
        raise UsageError(f"{Path.cwd()} is not inside a git repository; run 'git init' first")
    return Path(found.stdout.strip())


def _spec(project: Path) -> Spec:
    """The project's spec, checked against the files of its current commit."""
    from ratchet import workspace
    from ratchet.spec import load_spec

    files = workspace.tracked_files(project) if workspace.resolve(project, "HEAD") else []
    return load_spec(project, files)


def _journal(project: Path) -> Journal:
    """The journal, to read (not the engine's import: reading commands stay quick)."""
    from ratchet.journal import JOURNAL_FILE, Journal
    from ratchet.private import private_dir

    state = project / STATE_DIR
    if not (state / JOURNAL_FILE).exists():
        raise UsageError("no runs yet in this project; start one with 'ratchet run'")
    return Journal(private_dir(state) / JOURNAL_FILE)  # tightens what an older one left


def _run_name(journal: Journal, name: str | None) -> str:
    """`name`, checked, or else the newest run (the views' own rule)."""
    from ratchet.runview import run_name

    return run_name(journal, name)


def _duration(value: str | None, option: str) -> float | None:
    if value is None:
        return None
    from ratchet.spec import parse_duration

    try:
        return parse_duration(value)
    except ValueError as error:
        raise UsageError(f"{option}: {error}") from None


def _print_json(data: Any) -> None:
    import json

    print(json.dumps(data, indent=2, default=str))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"
