"""What a command imports before it answers: `--help` only typer and the command line's
own modules; the reading commands no pydantic (typer's option coercion), git library,
pygments (off a terminal) or the run's machinery. Plain options are still checked as
typer checks them: a bad number is a usage error, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import pytest
import typer
from test_scale import _fill
from typer.testing import CliRunner

from conftest import GIT_ENV, make_project, ratchet
from ratchet.cli.plainparams import PlainTyper
from ratchet.journal import Journal

READERS_NEVER = ("pydantic", "pygit2", "pygments", "click", "optuna", "openai", "numpy",
                 "scipy", "rich.live", "ratchet.engine", "ratchet.spec")  # fmt: skip
HELP_NEVER = (*READERS_NEVER, "rich", "sqlite3", "json", "ratchet.journal")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = make_project(tmp_path / "project", {"value.py": "X = 1\n"})
    filled = Journal(root / ".ratchet" / "journal.db")
    _fill(filled, 12)
    filled.close()
    return root


def _imported(project: Path, args: list[str], watch: tuple[str, ...]) -> tuple[str, list[str]]:
    """`ratchet ARGS` run as the command line runs it: its output, and which of `watch`
    it imported (a module counts with its submodules)."""
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
                          text=True, env={**os.environ, **GIT_ENV})  # fmt: skip
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stderr.splitlines() if x.startswith("IMPORTED "))
    return done.stdout, eval(line.removeprefix("IMPORTED "))  # a list of names it printed


def test_help_imports_typer_and_nothing_of_the_commands(project: Path) -> None:
    out, imported = _imported(project, ["--help"], HELP_NEVER)
    assert "status" in out and "review" in out
    assert imported == []


@pytest.mark.parametrize(
    "args",
    [["status"], ["log", "--limit", "5"], ["show", "3"], ["review"], ["review", "--patch"]],
)
def test_reading_commands_import_no_pydantic_git_or_pygments(
    project: Path, args: list[str]
) -> None:
    out, imported = _imported(project, args, READERS_NEVER)
    assert out.strip()
    assert imported == []


def test_plain_options_are_checked_as_typer_checks_them(project: Path) -> None:
    listed = ratchet(project, "log", "--limit", "3", "--json")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count('"id":') == 3
    for args, option in ((["log", "--limit", "x"], "'--limit'"), (["show", "abc"], "'experiment'")):
        bad = ratchet(project, *args)
        assert bad.returncode == 2, bad.stderr
        assert f"Invalid value for {option}: Input should be a valid integer" in bad.stderr
        assert "Traceback" not in bad.stderr
    named = ratchet(project, "status", "--name", "nosuch")  # a str option, coerced plainly
    assert named.returncode == 2 and "no run named 'nosuch'" in named.stderr


def test_a_ranged_option_keeps_typers_own_check(project: Path) -> None:
    refused = ratchet(project, "run", "--max-experiments", "0")
    assert refused.returncode == 2
    assert "--max-experiments" in refused.stderr and "Traceback" not in refused.stderr


def _echo_app(kind: type[typer.Typer]) -> typer.Typer:
    app = kind(add_completion=False)

    @app.command()
    def echo(
        n: int,
        ratio: Annotated[float | None, typer.Option()] = None,
        label: Annotated[str | None, typer.Option()] = None,
        loud: Annotated[bool, typer.Option("--loud")] = False,
    ) -> None:
        print(repr((n, ratio, label, loud)))

    @app.command()
    def other() -> None:  # two commands: `echo` is named on the command line
        pass

    return app


@pytest.mark.parametrize(
    "args",
    [["echo", "3"], ["echo", "3", "--ratio", "0.5", "--label", "x y", "--loud"],
     ["echo", "-4", "--ratio", "1e3"], ["echo", "x"], ["echo", "3", "--ratio", "half"]],
)  # fmt: skip
def test_plain_coercion_answers_as_typers_own(args: list[str]) -> None:
    """The same values, and the same usage errors, as typer's pydantic coercion."""
    runner = CliRunner()
    plain = runner.invoke(_echo_app(PlainTyper), args)
    typers = runner.invoke(_echo_app(typer.Typer), args)
    assert (plain.exit_code, plain.output) == (typers.exit_code, typers.output)
    assert plain.exit_code in (0, 2)
