"""A run's life around the loop: one at a time, `kill -9` (with git's children) at every
stage then a consistent resume, a damaged journal, a full disk, giving up, and faults
fenced into decisions. Real repositories, real `ratchet` processes, real process groups."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from processes import read_pid, wait_dead, wait_for

from conftest import GIT_ENV, check_consistent, experiments, git, ratchet

PY = sys.executable
# each experiment moves X one closer to 2: every candidate is a keep until X = 2
DECREMENT = (
    f"{PY} -c \"import re; t = open('value.py').read(); "
    "x = int(re.search(r'X = (-?\\d+)', t).group(1)); "
    "open('value.py', 'w').write(f'X = {x - 1}\\n'); print(f'X to {x - 1}')\""
)


def start(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`ratchet ARGS` in the background, in a process group of its own: killing the
    group kills ratchet together with its git children."""
    return subprocess.Popen(
        [PY, "-m", "ratchet", *args],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **GIT_ENV, **(env or {})},
        start_new_session=True,
    )


def kill_group(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def audit(project: Path, event: str) -> list[dict[str, object]]:
    db = sqlite3.connect(project / ".ratchet" / "journal.db")
    rows = [json.loads(r[0]) for r in db.execute(
        "SELECT detail FROM audit WHERE event = ? ORDER BY id", (event,))]  # fmt: skip
    db.close()
    return rows


def snapshot(project: Path) -> dict[str, object]:
    """Everything a refused second run must leave as it was."""
    db = sqlite3.connect(project / ".ratchet" / "journal.db")
    tables = {t: db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
              for t in ("runs", "experiments", "measurements", "audit")}  # fmt: skip
    db.close()
    slots = project / ".ratchet" / "slots"
    return {
        "tables": tables,
        "refs": git(project, "for-each-ref", "--format=%(refname) %(objectname)"),
        "worktrees": git(project, "worktree", "list", "--porcelain"),
        "slots": sorted(str(p.relative_to(slots)) for p in slots.iterdir()),
        "tsv": (project / ".ratchet" / "results.tsv").read_text(),
    }


def _give_the_proposer(project: Path, budget: str) -> None:
    spec = (project / "ratchet.toml").read_text()
    head, proposer = spec.split("[proposer]")
    (project / "ratchet.toml").write_text(
        head + "[proposer]" + proposer.replace('budget = "20s"', f'budget = "{budget}"')
    )
    git(project, "commit", "-qam", f"the proposer gets {budget}")


# one run at a time ------------------------------------------------------------------
@pytest.mark.parametrize(
    "second",
    [("run",), ("run", "--name", "other"), ("noise", "--repeats", "2")],
    ids=["same-name", "other-name", "noise"],
)
def test_a_second_run_is_refused_and_the_first_goes_on(
    score_project: Callable[..., Path], tmp_path: Path, second: tuple[str, ...]
) -> None:
    held, release = tmp_path / "held", tmp_path / "release"
    wait = f"touch {held}; while [ ! -f {release} ]; do sleep 0.05; done"
    project = score_project(f"{wait}; {DECREMENT}", max_experiments=2)
    _give_the_proposer(project, "300s")  # it waits for the checks below
    first = start(project, "run")
    try:
        wait_for(held)  # the first run is proposing its first experiment
        before = snapshot(project)
        refused = ratchet(project, *second)
        assert refused.returncode == 2, refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in refused.stderr
        assert lines[0] == (
            f"ratchet: error: run 'default' is running in this project (process {first.pid}); "
            f"one run at a time: wait for it, or stop it with Ctrl-C or 'kill {first.pid}'"
        )
        assert snapshot(project) == before  # no row, no branch, no slot touched
        # reading the journal needs no lock
        for command in (("status",), ("log",), ("show", "1"), ("review",)):
            read = ratchet(project, *command)
            assert read.returncode == 0, (command, read.stderr)
        status = json.loads(ratchet(project, "status", "--json").stdout)
        assert status["baseline"] == 9
    finally:
        release.touch()
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert "stopped: reached max_experiments (2)" in out
    rows = experiments(project)
    assert [r["decision"] for r in rows] == ["keep", "keep", "keep"]
    assert git(project, "show", "ratchet/default:value.py") == "X = 3"
    assert git(project, "branch", "--list", "ratchet/other") == ""
    check_consistent(project)
    # the lock went with the run: the next one starts
    again = ratchet(project, "run", "--max-experiments", "3")
    assert again.returncode == 0, again.stderr


def test_the_lock_of_a_killed_run_is_released_by_the_system(
    score_project: Callable[..., Path], tmp_path: Path
) -> None:
    held = tmp_path / "held"
    # the first proposal hangs until the run is killed; the next one is quick
    project = score_project(
        f"if [ -f {held} ]; then {DECREMENT}; else touch {held}; sleep 60; fi", max_experiments=1
    )
    first = start(project, "run")
    wait_for(held)
    kill_group(first)
    assert (project / ".ratchet" / "run.lock").exists()  # the file stays, its lock does not
    again = ratchet(project, "run")
    assert again.returncode == 0, again.stderr
    assert "marked interrupted: #2" in again.stdout


# kill -9 at every stage, then resume ---------------------------------------------------
def _hang_once(flag: Path, pidfile: Path) -> str:
    """Shell that, the first time only, records its pid and hangs."""
    return f"if [ ! -f {flag} ]; then echo $$ > {pidfile}; touch {flag}; sleep 60; fi"


def test_killed_while_the_baseline_is_measured_then_resumed(
    score_project: Callable[..., Path], tmp_path: Path
) -> None:
    flag, pidfile = tmp_path / "flag", tmp_path / "pid"
    files = {"measure.sh": _hang_once(flag, pidfile) + "\n"}
    project = score_project(DECREMENT, max_experiments=2, files=files)
    spec = (project / "ratchet.toml").read_text()
    spec = spec.replace(f'command = "{PY} score.py"', f'command = "sh measure.sh && {PY} score.py"')
    (project / "ratchet.toml").write_text(spec)
    git(project, "commit", "-qam", "measure through a script")
    proc = start(project, "run")
    wait_for(flag)
    hung = read_pid(pidfile)
    kill_group(proc)
    stuck = experiments(project)
    assert [(r["proposer"], r["decision"], r["stage"]) for r in stuck] == [
        ("baseline", None, "measuring")
    ]
    result = ratchet(project, "run")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert wait_dead(hung)  # the orphaned measurement was killed on resume
    rows = experiments(project)
    assert [(r["proposer"], r["decision"]) for r in rows[:2]] == [
        ("baseline", "interrupted"),
        ("baseline", "keep"),
    ]
    assert "score: baseline 9 -> best 1" in result.stdout  # the summary, no TypeError
    status = json.loads(ratchet(project, "status", "--json").stdout)
    assert status["baseline"] == 9
    plain = ratchet(project, "status")
    assert plain.returncode == 0 and "baseline -" not in plain.stdout
    check_consistent(project)


def test_a_failed_baseline_is_measured_again_on_the_fixed_commit(
    score_project: Callable[..., Path],
) -> None:
    broken = {"score.py": "raise SystemExit('the metric is broken')\n"}
    project = score_project(DECREMENT, max_experiments=1, files=broken)
    first = ratchet(project, "run")
    assert first.returncode == 1
    assert "the baseline measurement failed (crash)" in first.stdout
    old_base = git(project, "rev-parse", "HEAD")
    (project / "score.py").write_text("from value import X\nprint(f'score: {(X - 2) ** 2}')\n")
    git(project, "commit", "-qam", "fix the metric")
    fixed = git(project, "rev-parse", "HEAD")
    second = ratchet(project, "run")
    assert second.returncode == 0, second.stderr + second.stdout
    rows = experiments(project)
    assert [(r["proposer"], r["decision"]) for r in rows[:2]] == [
        ("baseline", "crash"),
        ("baseline", "keep"),
    ]
    assert rows[1]["commit_sha"] == fixed and rows[1]["value"] == 9
    assert audit(project, "run-base-moved") == [{"base": fixed, "was": old_base}]
    assert git(project, "rev-parse", "ratchet/default~1") == fixed
    check_consistent(project)


# a `git` on PATH that, at its Nth `update-ref` of a ratchet branch, leaves the ref's
# lock file as git does while it holds it, and hangs until its process group is killed
GIT_WRAPPER = """#!/bin/sh
prev=""; ref=""
for arg in "$@"; do
  if [ "$prev" = "update-ref" ]; then ref="$arg"; fi
  prev="$arg"
done
case "$ref" in
  refs/heads/ratchet/*)
    n=$(cat "$STOP_DIR/count" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "$STOP_DIR/count"
    if [ "$n" = "$STOP_AT" ]; then
      common=$({real} rev-parse --path-format=absolute --git-common-dir)
      mkdir -p "$(dirname "$common/$ref")"
      echo "$@" > "$common/$ref.lock"
      echo $$ > "$STOP_DIR/pid"
      exec sleep 60
    fi;;
esac
exec {real} "$@"
"""


@pytest.fixture
def git_that_stops(tmp_path: Path) -> Callable[[int], dict[str, str]]:
    real = shutil.which("git")
    assert real is not None
    bin_dir, stop_dir = tmp_path / "bin", tmp_path / "stop"
    bin_dir.mkdir()
    stop_dir.mkdir()
    wrapper = bin_dir / "git"
    wrapper.write_text(GIT_WRAPPER.replace("{real}", real))
    wrapper.chmod(0o755)

    def env(stop_at: int) -> dict[str, str]:
        return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "STOP_DIR": str(stop_dir),
                "STOP_AT": str(stop_at)}  # fmt: skip

    return env


@pytest.mark.parametrize(
    ("stop_at", "moving"),
    [(1, "creating the run branch"), (2, "moving the branch to the first keep")],
)
def test_killed_with_git_while_the_branch_moves_then_resumed(
    score_project: Callable[..., Path],
    tmp_path: Path,
    git_that_stops: Callable[[int], dict[str, str]],
    stop_at: int,
    moving: str,
) -> None:
    project = score_project(DECREMENT, max_experiments=2)
    proc = start(project, "run", env=git_that_stops(stop_at))
    git_child = read_pid(tmp_path / "stop" / "pid")
    kill_group(proc)
    assert wait_dead(git_child)  # git went down with ratchet, its lock file left behind
    lock = project / ".git" / "refs" / "heads" / "ratchet" / "default.lock"
    assert lock.is_file()
    before = experiments(project)
    result = ratchet(project, "run")
    assert result.returncode == 0, result.stderr
    assert "removed stale git lock files: .git/refs/heads/ratchet/default.lock" in result.stdout
    assert not lock.exists()
    assert audit(project, "stale-lock-removed") == [
        {"file": ".git/refs/heads/ratchet/default.lock"}
    ]
    rows = experiments(project)
    if stop_at == 2:  # the keep was in the journal: the branch was brought up to it
        assert before[1]["decision"] == "keep"
        assert audit(project, "branch-repaired") == [{"commit": before[1]["commit_sha"]}]
    counted = [r for r in rows if r["proposer"] != "baseline"]
    assert [r["decision"] for r in counted] == ["keep", "keep"]
    assert git(project, "show", "ratchet/default:value.py") == "X = 3"
    check_consistent(project)


def test_stale_slot_locks_are_removed_and_the_users_are_not(
    score_project: Callable[..., Path], tmp_path: Path
) -> None:
    project = score_project(DECREMENT, max_experiments=1)
    assert ratchet(project, "run").returncode == 0
    common = project / ".git" / "worktrees"
    slot_gitdir = common / "0"
    assert (slot_gitdir / "gitdir").read_text().strip().endswith(".ratchet/slots/0/.git")
    # what a git or libgit2 killed in the slot leaves: its index and HEAD locks
    (slot_gitdir / "index.lock").write_text("")
    (slot_gitdir / "HEAD.lock").write_text("")
    # and the marker of a `git worktree add` killed while it created the slot
    (slot_gitdir / "locked").write_text("initializing")
    # and a worktree of the user's own, with a lock ratchet must not touch
    git(project, "worktree", "add", "-q", "--detach", str(tmp_path / "mine"), "HEAD")
    mine = next(p for p in common.iterdir() if p.name != "0")
    (mine / "index.lock").write_text("")
    (mine / "locked").write_text("initializing")
    result = ratchet(project, "run", "--max-experiments", "2")
    assert result.returncode == 0, result.stderr
    assert (
        "removed stale git lock files: .git/worktrees/0/HEAD.lock, .git/worktrees/0/index.lock,"
        " .git/worktrees/0/locked" in result.stdout
    )
    assert not (slot_gitdir / "index.lock").exists() and not (slot_gitdir / "HEAD.lock").exists()
    assert not (slot_gitdir / "locked").exists()
    assert (mine / "index.lock").exists() and (mine / "locked").exists()
    assert [r["decision"] for r in experiments(project)] == ["keep", "keep", "keep"]


# a damaged journal, a full disk ----------------------------------------------------------
def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("damage", ["not-a-database", "malformed"])
def test_a_damaged_journal_is_one_line_and_left_as_it_is(
    score_project: Callable[..., Path], damage: str
) -> None:
    project = score_project(DECREMENT, max_experiments=3)
    assert ratchet(project, "run").returncode == 0
    journal = project / ".ratchet" / "journal.db"
    assert not journal.with_name("journal.db-wal").exists()  # checkpointed when it closed
    data = bytearray(journal.read_bytes())
    if damage == "not-a-database":
        data[:100] = b"\x00" * 100
    else:  # a page in the middle, as a torn write leaves it
        data[4096 : 4096 + 512] = b"\xff" * 512
    journal.write_bytes(bytes(data))
    digest = _digest(journal)
    result = ratchet(project, "run", "--max-experiments", "5")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    word = "file is not a database" if damage == "not-a-database" else "malformed"
    assert lines[0].startswith(f"ratchet: error: the journal {journal} is damaged (")
    assert word in lines[0] and "nothing was written to it" in lines[0]
    assert _digest(journal) == digest
    assert not (project / ".ratchet" / "results.tsv.tmp").exists()
    status = ratchet(project, "status")  # a reader stops at the first damaged page it needs
    assert "Traceback" not in status.stderr
    if damage == "not-a-database":
        assert status.returncode == 1 and "damaged" in status.stderr
    assert _digest(journal) == digest


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs: a disk that a proposer can fill."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {done.stderr}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_is_one_line_then_the_run_resumes(
    score_project: Callable[..., Path], small_disk: Path, tmp_path: Path
) -> None:
    filler = small_disk / "filler"
    # the second proposal fills the disk, as a runaway log or checkpoint would
    once, filled = tmp_path / "once", tmp_path / "filled"
    fill = (f"if [ -f {once} ] && [ ! -f {filled} ]; then touch {filled}; dd if=/dev/zero "
            f"of={filler} bs=64k 2>/dev/null; fi; touch {once}; {DECREMENT}")  # fmt: skip
    project = score_project(fill, max_experiments=3)
    target = small_disk / "project"
    shutil.copytree(project, target, symlinks=True)
    full = ratchet(target, "run")
    assert full.returncode == 1, full.stdout + full.stderr
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in full.stderr, full.stderr
    assert lines[0].startswith("ratchet: error: the disk is full"), lines[0]
    assert "run the same command again" in lines[0]
    assert not (target / ".ratchet" / "results.tsv.tmp").exists()
    filler.unlink()
    again = ratchet(target, "run")
    assert again.returncode == 0, again.stderr
    rows = experiments(target)
    counted = [r for r in rows if r["proposer"] != "baseline" and r["decision"] != "interrupted"]
    assert len(counted) == 3
    check_consistent(target)


# giving up, fenced stages ----------------------------------------------------------------
def test_a_run_that_gives_up_exits_1(score_project: Callable[..., Path]) -> None:
    project = score_project("echo 'X = (' > value.py", max_experiments=20)
    spec = (project / "ratchet.toml").read_text()
    spec = spec.replace("max_experiments = 20\n", "max_experiments = 20\ngive_up_after = 2\n")
    (project / "ratchet.toml").write_text(spec)
    git(project, "commit", "-qam", "give up after 2")
    result = ratchet(project, "run")
    assert result.returncode == 1, result.stdout
    assert "stopped: gave up: 2 experiments in a row produced no measurement" in result.stdout
    assert result.stderr == ""
    assert [r["decision"] for r in experiments(project)] == ["keep", "crash", "duplicate"]


# fault injection: ratchet in-process with one stage made to fail as the fault would
DRIVER = """
import sys
from ratchet import judging, workspace

fault = sys.argv[1]
calls = {"n": 0}

def first_time(fn, error):
    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise error
        return fn(*args, **kwargs)
    return wrapper

if fault == "candidate-breaks-judging":
    judging.Judge.candidate = first_time(judging.Judge.candidate,
        workspace.GitError("git checkout failed: unable to read tree"))
elif fault == "candidate-breaks-commit":
    workspace.commit_candidate = first_time(workspace.commit_candidate,
        PermissionError(13, "Permission denied", "value.py"))
elif fault == "ratchet-bug":
    workspace.commit_message = first_time(workspace.commit_message,
        TypeError("unsupported format string passed to NoneType.__format__"))

from ratchet.cli import main
sys.argv = ["ratchet", "run"]
main()
"""


@pytest.mark.parametrize(
    ("fault", "why"),
    [
        ("candidate-breaks-judging", "(GitError: git checkout failed: unable to read tree)"),
        ("candidate-breaks-commit", "(PermissionError: [Errno 13] Permission denied: 'value.py')"),
    ],
)
def test_a_candidate_fault_after_proposing_is_a_decision(
    score_project: Callable[..., Path], tmp_path: Path, fault: str, why: str
) -> None:
    # X = 4, then X = 3: the second proposal is not a duplicate of the first
    counter = tmp_path / "x"
    count_down = (f'x=$(cat {counter} 2>/dev/null || echo 5); x=$((x - 1)); echo $x > {counter}; '
                  'echo "X = $x" > value.py')  # fmt: skip
    project = score_project(count_down, max_experiments=2)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    result = subprocess.run([PY, str(driver), fault], cwd=project, capture_output=True,
                            text=True, env={**os.environ, **GIT_ENV})  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = experiments(project)
    assert [r["decision"] for r in rows] == ["keep", "crash", "keep"]
    assert rows[1]["why"] == (
        f"the candidate broke the slot while it was measuring {why}; the slot was rebuilt "
        "and nothing of it was kept"
    )
    assert audit(project, "slot-rebuilt") == [{"slot": 0}]
    check_consistent(project)


def test_a_bug_of_ratchets_stops_the_run_with_a_log(
    score_project: Callable[..., Path], tmp_path: Path
) -> None:
    project = score_project(DECREMENT, max_experiments=2)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    result = subprocess.run([PY, str(driver), "ratchet-bug"], cwd=project, capture_output=True,
                            text=True, env={**os.environ, **GIT_ENV})  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(
        "ratchet: error: ratchet's own error (TypeError: unsupported format string passed "
        "to NoneType.__format__); the traceback is in .ratchet/logs/error-"
    )
    log = project / lines[0].split("the traceback is in ")[1].split(". Please")[0]
    text = log.read_text()
    assert text.startswith("Traceback (most recent call last)") and "in _judge" in text
    assert "TypeError: unsupported format string" in text
    rows = experiments(project)
    assert rows[1]["decision"] == "interrupted"
    assert (
        rows[1]["why"] == "ratchet's own error stopped the run (TypeError); nothing of it was kept"
    )
    stopped = audit(project, "run-stopped")
    assert stopped[-1]["reason"].startswith("an internal error: TypeError")  # type: ignore[union-attr]
    again = ratchet(project, "run")  # the bug was a one-off: the run resumes
    assert again.returncode == 0, again.stderr
    check_consistent(project)
