"""What every command shares: the app, one-line errors, finding the project and its run."""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, ParamSpec, TypeVar, cast

import typer

from ratchet.cli.plainparams import PlainTyper

try:  # typer's own click (0.29 on); importing click beside it costs every command
    from typer import TyperException as CommandLineError
except ImportError:  # pragma: no cover  (an older typer, on click itself)
    from click import ClickException as CommandLineError  # type: ignore[assignment]
from ratchet.errors import RunError, UsageError, machine_failure
from ratchet.plaintext import visible

if TYPE_CHECKING:  # imported where used: `ratchet --help` and `status` stay quick
    from rich.console import Console

    from ratchet.journal import Journal
    from ratchet.spec import Spec

app = PlainTyper(  # a typer.Typer whose plain options need no pydantic (cli/plainparams.py)
    name="ratchet",
    help="Run the autoresearch loop: propose a change, measure it, keep it only if it improves.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
STATE_DIR = ".ratchet"  # workspace.STATE_DIR, without importing pygit2 for it
UNWRAPPED = 1 << 20  # the width of a console that is not a terminal: lines never wrap


def make_console() -> Console:
    """rich's console for stdout. On a terminal, its width and colours; elsewhere (a pipe,
    a file) lines are not wrapped and not coloured, unless FORCE_COLOR asks for colours
    (NO_COLOR, as rich reads it, takes them away anywhere)."""
    from rich.console import Console

    if sys.stdout.isatty():
        return Console()
    # not a terminal to rich either (so `run` prints plain lines, not a live view), with
    # colours only when asked for (https://force-color.org)
    colours = bool(os.environ.get("FORCE_COLOR"))
    return Console(width=UNWRAPPED, soft_wrap=True, force_terminal=False,
                   color_system="standard" if colours else None)  # fmt: skip


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
        except (typer.Exit, typer.Abort, CommandLineError):
            raise  # the command line's own exits and usage errors
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


def print_diff(diff: str) -> None:
    """A diff, coloured by pygments where the console shows colours; as it is elsewhere
    (importing pygments costs a reading command a tenth of a second for nothing)."""
    if console.color_system is None:
        from rich.text import Text

        console.print(Text(diff))
        return
    from rich.syntax import Syntax

    console.print(Syntax(diff, "diff", theme="ansi_dark", background_color="default"))


def _print_json(data: Any) -> None:
    import json

    print(json.dumps(data, indent=2, default=str))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"
