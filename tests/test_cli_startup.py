"""What a command imports before it answers, and how the command line answers: `--help`
nothing (its text is kept, equal to click's rendering), a command click and the command
line's own modules; the reading commands, off a terminal, no
rich (they print plain text, in the same words and columns as rich's tables), pydantic,
git library or the run's machinery. A usage error is one line on stderr, exit 2."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_scale import _fill

from conftest import GIT_ENV, make_project, ratchet
from ratchet.journal import Journal

READERS_NEVER = ("rich", "typer", "pydantic", "pygit2", "pygments", "optuna", "openai",
                 "numpy", "scipy", "ratchet.engine", "ratchet.spec", "ratchet.view")  # fmt: skip
HELP_NEVER = (*READERS_NEVER, "sqlite3", "json", "ratchet.journal")
READING = [["status"], ["log", "--limit", "5"], ["show", "3"], ["show", "14"], ["review"],
           ["review", "--patch"]]  # fmt: skip
# the order `ratchet --help` lists the commands in (typer's, kept)
COMMANDS = ["init", "run", "doctor", "noise", "demo", "status", "log", "show", "finalize",
            "report", "dashboard", "review"]  # fmt: skip
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# a multi-line rationale with wide characters and markup that must stay text
ODD_RATIONALE = "first line [bold]not markup[/bold]\n幅の広い文字 second line\nthird"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = make_project(tmp_path / "project", {"value.py": "X = 1\n"})
    filled = Journal(root / ".ratchet" / "journal.db")
    _fill(filled, 12)
    odd = filled.begin_experiment("night", 0, "p" * 40, "llm")  # #14, a keep
    filled.record_proposal(odd, ODD_RATIONALE, "diff --git a/v b/v\n+x\n", ["value.py"], {}, 0.1)
    filled.add_measurement(odd, 0, "ok", 1.5, {}, 1.0, "out 1\nout 2\n", 0.0)
    filled.decide(odd, "keep", "better: 幅 wide\nand on two lines", 1.5, commit=f"{odd:040x}")
    filled.close()
    return root


def _imported(
    project: Path, args: list[str], watch: tuple[str, ...], env: dict[str, str] | None = None
) -> tuple[str, list[str]]:
    """`ratchet ARGS` run as the command line runs it, its stdout a pipe: its output, and
    which of `watch` it imported (a module counts with its submodules)."""
    code = (
        "import sys\nfrom ratchet.cli import main\n"
        f"sys.argv = ['ratchet', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        f"watch = {watch!r}\n"
        "found = sorted(w for w in watch if any(m == w or m.startswith(w + '.')"
        " for m in sys.modules))\n"
        "print('IMPORTED', found, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True,
                          text=True, env={**os.environ, **GIT_ENV, "FORCE_COLOR": "",
                                          **(env or {})})  # fmt: skip
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stderr.splitlines() if x.startswith("IMPORTED "))
    return done.stdout, eval(line.removeprefix("IMPORTED "))  # a list of names it printed


def test_help_imports_not_even_click(project: Path) -> None:
    out, imported = _imported(project, ["--help"], (*HELP_NEVER, "click", "ratchet.cli.common"))
    listed = re.findall(r"^  (\w+)  ", out.split("Commands:")[1], re.MULTILINE)
    assert listed == COMMANDS
    assert imported == []


def test_the_kept_help_is_click_s_own() -> None:
    """`ratchet --help` prints cli/helptext.py; click renders the same from the commands."""
    import click

    from ratchet.cli.commands import app
    from ratchet.cli.helptext import HELP

    rendered = app.get_help(click.Context(app, info_name="ratchet", terminal_width=80))
    assert rendered == HELP, f"paste this into src/ratchet/cli/helptext.py:\n{rendered}"
    sub = ratchet(Path.cwd(), "log", "--help")  # a command's own help is click's
    assert sub.returncode == 0 and sub.stdout.startswith("Usage: ratchet log [OPTIONS]")


@pytest.mark.parametrize("args", READING)
def test_reading_commands_off_a_terminal_import_no_rich_pydantic_or_git(
    project: Path, args: list[str]
) -> None:
    out, imported = _imported(project, args, READERS_NEVER)
    assert out.strip()
    assert imported == []


def test_colours_asked_for_off_a_terminal_are_rich_s(project: Path) -> None:
    out, imported = _imported(project, ["log"], ("rich",), env={"FORCE_COLOR": "1"})
    assert imported == ["rich"]
    assert "\x1b[" in out


@pytest.mark.parametrize("args", READING)
def test_plain_output_is_rich_s_without_its_colours(project: Path, args: list[str]) -> None:
    """The same words in the same columns: rich's output (colours asked for, so rich
    draws it), its colour codes and trailing spaces taken out, is the plain output."""
    plain = ratchet(project, *args, env={"FORCE_COLOR": "", "NO_COLOR": ""})
    coloured = ratchet(project, *args, env={"FORCE_COLOR": "1", "NO_COLOR": ""})
    assert plain.returncode == coloured.returncode == 0, plain.stderr + coloured.stderr
    assert "\x1b" not in plain.stdout
    assert "\x1b[" in coloured.stdout or args == ["status"]  # status has no style

    def lines(text: str) -> list[str]:
        return [line.rstrip() for line in ANSI.sub("", text).splitlines()]

    assert lines(plain.stdout) == lines(coloured.stdout)


def test_plain_tables_keep_their_columns_and_lines(project: Path) -> None:
    shown = ratchet(project, "review", env={"FORCE_COLOR": ""}).stdout.splitlines()
    header = next(line for line in shown if line.startswith(" #"))
    at = header.index("rationale")
    row = next(i for i, line in enumerate(shown) if line.startswith(" 14 "))
    assert shown[row][at:] == "first line [bold]not markup[/bold]"
    # the next lines of the cell, under it; a wide character takes two columns
    assert shown[row + 1] == " " * at + "幅の広い文字 second line"
    assert shown[row + 2] == " " * at + "third"
    long_line = next(line for line in shown if line.startswith(" 11 "))
    assert len(long_line) > 300  # never wrapped


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["log", "--limit", "x"], "Invalid value for '--limit': 'x' is not a valid integer"),
        (["show", "abc"], "Invalid value for 'EXPERIMENT': 'abc' is not a valid integer"),
        (["show"], "Missing argument 'EXPERIMENT'"),
        (["status", "--bogus"], "No such option '--bogus'"),
        (["nosuch"], "No such command 'nosuch'"),
        (["review", "approve"], "Missing argument 'ID...'"),
        (["run", "--max-experiments", "0"], "'--max-experiments': 0 is not in the range x>=1"),
        (["dashboard", "--port", "70000"], "'--port': 70000 is not in the range 0<=x<=65535"),
    ],
)
def test_a_usage_error_is_one_line_and_exit_2(project: Path, args: list[str], words: str) -> None:
    bad = ratchet(project, *args)
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert bad.stderr.count("\n") == 1, bad.stderr  # one line
    assert bad.stderr.startswith("ratchet: error: ") and words in bad.stderr
    assert "--help'" in bad.stderr and "Usage:" not in bad.stderr


def test_options_are_read_as_their_types(project: Path) -> None:
    listed = ratchet(project, "log", "--limit", "3", "--json")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count('"id":') == 3
    named = ratchet(project, "status", "--name", "nosuch")
    assert named.returncode == 2 and "no run named 'nosuch'" in named.stderr


def test_no_arguments_show_the_help_exit_2(project: Path) -> None:
    bare = ratchet(project)
    assert bare.returncode == 2
    assert "Usage: ratchet [OPTIONS] COMMAND" in bare.stderr and "Commands:" in bare.stderr


@pytest.mark.parametrize("command", [*COMMANDS, "review approve", "review reject"])
def test_every_command_has_its_help(project: Path, command: str) -> None:
    helped = ratchet(project, *command.split(), "--help")
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith(f"Usage: ratchet {command} ")
    assert "--help  " in helped.stdout


def test_arguments_are_listed_with_their_help(project: Path) -> None:
    shown = ratchet(project, "show", "--help").stdout
    assert "Arguments:\n  EXPERIMENT  The experiment's number.  [required]" in shown
    demo = ratchet(project, "demo", "--help").stdout
    assert "DIRECTORY  Where to put the demo project.  [default: ratchet-demo]" in demo


def test_a_reader_that_stops_early_gets_no_traceback(project: Path) -> None:
    """`ratchet log | head`: the pipe closes before the output is written. Exit 1 and
    nothing on stderr, as click (and Python's own advice for a closed pipe) has it."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command writes a byte
    try:
        done = subprocess.run([sys.executable, "-m", "ratchet", "review", "--patch"],
                              cwd=project, stdout=write_end, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, **GIT_ENV})  # fmt: skip
    finally:
        os.close(write_end)
    assert done.returncode == 1
    assert done.stderr == ""  # no "ratchet's own error", no traceback
