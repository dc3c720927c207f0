"""The command line as a user meets it: init, run, status, log, show, their --json."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from conftest import git, make_project, ratchet

TO_TWO = "echo 'X = 2' > value.py && echo set X to 2"


def test_init_writes_a_commented_spec_and_ignores_the_state(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", {"train.py": "print('val_loss: 1')\n"})
    (project / ".gitignore").write_text("*.log\n")
    result = ratchet(project, "init")
    assert result.returncode == 0, result.stderr
    spec = (project / "ratchet.toml").read_text()
    assert 'editable = ["train.py"]' in spec
    assert "# " in spec  # commented
    assert (project / ".gitignore").read_text() == "*.log\n.ratchet/\n"
    again = ratchet(project, "init")
    assert again.returncode == 2 and "already exists" in again.stderr
    # the written spec is valid as it stands: commit it and run
    git(project, "add", "-A")
    git(project, "commit", "-qm", "ratchet spec")
    run = ratchet(project, "run", "--max-experiments", "1")
    # valid, and the knobs proposer says at once what it lacks, before any measurement
    assert run.returncode == 2
    assert run.stderr.startswith("ratchet: error: [proposer] kind = 'knobs' found no knob")
    (project / "train.py").write_text("X = 1  # ratchet: knob int 0..3\nprint(f'val_loss: {X}')\n")
    git(project, "commit", "-qam", "a knob")
    run = ratchet(project, "run", "--max-experiments", "1")
    assert run.returncode == 0, run.stderr
    assert "baseline: val_loss 1 on the base commit" in run.stdout


def test_run_refuses_a_dirty_tree_and_names_the_files(score_project: Callable[..., Path]) -> None:
    project = score_project(TO_TWO)
    (project / "value.py").write_text("X = 7\n")
    (project / "notes.txt").write_text("todo\n")
    result = ratchet(project, "run")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "ratchet: error: the working tree has uncommitted changes (notes.txt, value.py); "
        "commit or stash them first"
    )


def test_status_log_and_show_agree_with_the_journal(score_project: Callable[..., Path]) -> None:
    project = score_project(TO_TWO)
    ratchet(project, "run")
    status = json.loads(ratchet(project, "status", "--json").stdout)
    assert status["baseline"] == 9
    assert status["incumbent"]["value"] == 0
    assert status["incumbent"]["commit"] == git(project, "rev-parse", "ratchet/default")
    assert status["experiments"] == 1 and status["keeps"] == 1
    assert status["decisions"] == {"keep": 1}  # the baseline is no keep in any count
    log = json.loads(ratchet(project, "log", "--json").stdout)
    assert [e["decision"] for e in log] == ["keep", "keep"]
    assert log[1]["rationale"] == "set X to 2"
    shown = json.loads(ratchet(project, "show", str(log[1]["id"]), "--json").stdout)
    assert "+X = 2" in shown["patch"]
    assert shown["measurements"][0]["output"].strip() == "score: 0"
    text = ratchet(project, "show", str(log[1]["id"])).stdout
    assert "why: kept: score 9 -> 0 (delta 9; deterministic: every repeated" in text
    assert "+X = 2" in text
    table = ratchet(project, "status").stdout
    assert "incumbent" in table and "0 (#2" in table
    assert "score 9 -> 0" in ratchet(project, "log").stdout


def test_show_an_unknown_experiment(score_project: Callable[..., Path]) -> None:
    project = score_project(TO_TWO)
    ratchet(project, "run")
    result = ratchet(project, "show", "99")
    assert result.returncode == 2
    assert result.stderr.strip() == "ratchet: error: no experiment #99; 'ratchet log' lists them"


def test_status_before_any_run(score_project: Callable[..., Path]) -> None:
    result = ratchet(score_project(TO_TWO), "status")
    assert result.returncode == 2
    assert "no runs yet" in result.stderr


def test_results_tsv_starts_with_the_autoresearch_columns(
    score_project: Callable[..., Path],
) -> None:
    project = score_project(TO_TWO)
    ratchet(project, "run")
    lines = (project / ".ratchet" / "results.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    assert header[:5] == ["commit", "score", "memory_gb", "status", "description"]
    assert header[5:9] == ["holdout", "experiment", "decision", "why"]
    row = dict(zip(header, lines[2].split("\t"), strict=True))
    assert row["status"] == "keep" and row["description"] == "set X to 2"
    assert git(project, "rev-parse", "--short=7", "ratchet/default") == row["commit"]


def test_help_lists_every_command() -> None:
    result = ratchet(Path.cwd(), "--help")
    for command in ("init", "run", "status", "log", "show", "demo"):
        assert command in result.stdout
    assert ratchet(Path.cwd(), "run", "--help").returncode == 0


def test_outside_a_git_repository(tmp_path: Path) -> None:
    result = ratchet(tmp_path, "run")
    assert result.returncode == 2
    assert "not inside a git repository" in result.stderr


def _run_in_terminal(project: Path, *args: str, on_screen: tuple[str, Path] | None = None) -> str:
    """Run ratchet with a pseudo-terminal as its stdout, as a person at a terminal would;
    with `on_screen` (text, flag), create the flag once the text has been drawn."""
    import os
    import pty
    import subprocess
    import sys

    from conftest import GIT_ENV

    master, slave = pty.openpty()
    env = {**os.environ, **GIT_ENV, "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color"}
    proc = subprocess.Popen([sys.executable, "-m", "ratchet", *args], cwd=project,
                            stdout=slave, stderr=slave, env=env)  # fmt: skip
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
        if on_screen and on_screen[0] in b"".join(chunks).decode(errors="replace"):
            on_screen[1].touch()
    proc.wait(timeout=60)
    os.close(master)
    return b"".join(chunks).decode(errors="replace")


def test_a_terminal_gets_the_live_view(score_project: Callable[..., Path], tmp_path: Path) -> None:
    # the proposer waits until the view has drawn it proposing (an event, not a sleep)
    drawn = tmp_path / "drawn"
    wait = f"n=0; until [ -f {drawn} ] || [ $n -ge 600 ]; do n=$((n + 1)); sleep 0.05; done"
    project = score_project(f"{wait}; echo 'X = 2' > value.py", max_experiments=2)
    screen = _run_in_terminal(project, "run", on_screen=("experiment #2 proposing", drawn))
    assert "experiment #2 proposing" in screen  # the current experiment, with its stage
    assert "s budget" in screen  # and its budget bar
    assert "decision" in screen and "why" in screen  # the recent decisions table
    assert "incumbent 0 (#2" in screen
    assert "stopped: reached max_experiments (2)" in screen
    assert "#2 keep" not in screen  # no plain lines on a terminal


def test_doctor_reports_every_layer(tmp_path: Path) -> None:
    from ratchet.sandbox.bwrap import run_bwrap_check

    result = ratchet(tmp_path, "doctor", "--json")
    assert result.returncode == 0, result.stderr
    layers = {row["layer"]: row for row in json.loads(result.stdout)}
    assert set(layers) == {"process", "bwrap", "docker", "name"}  # name: who else is `ratchet`
    assert layers["process"]["works"] is True
    # what the CLI says of bwrap is what its self-check finds, run here on its own (past
    # the cache, which other tests fill with checks of their own)
    bwrap = shutil.which("bwrap")
    here = run_bwrap_check.__wrapped__(bwrap, False) if bwrap else (False,)
    assert layers["bwrap"]["works"] is here[0], (layers["bwrap"], here)
    assert all(row["why"] for row in layers.values())
    assert "process" in ratchet(tmp_path, "doctor").stdout
    # and with no bwrap on PATH it says so
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    without = ratchet(tmp_path, "doctor", "--json", env={"PATH": str(empty)})
    assert without.returncode == 0, without.stderr
    bwrap = next(row for row in json.loads(without.stdout) if row["layer"] == "bwrap")
    assert bwrap["works"] is False
    assert bwrap["why"] == "bwrap not found on PATH (Debian/Ubuntu package: bubblewrap)"


def test_auto_names_the_layer_it_took(score_project: Callable[..., Path]) -> None:
    import sqlite3

    project = score_project(TO_TWO, sandbox="auto")
    result = ratchet(project, "run")
    header = result.stdout.splitlines()[0]
    layers = json.loads(ratchet(project, "doctor", "--json").stdout)
    expected = "bwrap" if any(r["layer"] == "bwrap" and r["works"] for r in layers) else "process"
    assert f"sandbox {expected}" in header
    db = sqlite3.connect(project / ".ratchet" / "journal.db")
    started = db.execute("SELECT detail FROM audit WHERE event = 'run-started'").fetchone()[0]
    assert json.loads(started)["sandbox"].startswith(expected)
