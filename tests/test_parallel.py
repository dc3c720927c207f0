"""`[executor] parallel = N`: N slots propose and measure at once; one decides at a time."""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from processes import adopting, descendants_gone, living_descendants, wait_for

from conftest import GIT_ENV, check_consistent, experiments, git, make_project, ratchet

# two constants, far enough apart that changing both is no conflict for a three-way merge
FILES = {
    "value.py": "A = 5\n\n# A and B are tuned apart\n\nB = 5\n",
    "score.py": "from value import A, B\nprint(f'score: {(A - 2) ** 2 + (B - 2) ** 2}')\n",
}


def parallel_project(tmp_path: Path, propose: str, *, extra: str = "", slots: int = 2) -> Path:
    spec = f"""
[sandbox]
kind = "process"
[scope]
editable = ["value.py"]
protected = ["score.py", "measure.sh"]
[metric]
command = "sh measure.sh && {sys.executable} score.py"
name = "score"
grace = "0.5s"
[proposer]
kind = "command"
command = '''{propose}'''
[executor]
parallel = {slots}
{extra}
"""
    files = {**FILES, "measure.sh": "true\n"}
    return make_project(tmp_path / "p", files, spec)


def slot_of_worktree(then_0: str, then_1: str) -> str:
    """A proposer command that does one thing in slot 0 and another in slot 1."""
    return f'if [ "$(basename "$PWD")" = 0 ]; then {then_0}; else {then_1}; fi'


# waits (in a slot's worktree, which shares the project's refs) until the run branch has
# moved past main: a keep was made. Ordering by this event, not by a sleep
AFTER_A_KEEP = (
    'n=0; until [ "$(git rev-list --count main..ratchet/default)" -ge 1 ]; do '
    'n=$((n + 1)); [ "$n" -gt 1200 ] && exit 1; sleep 0.05; done'
)


def intervals(project: Path, baseline: bool = False) -> list[tuple[int, float, float]]:
    """(slot, start, end) of every measurement (the baseline's too, with `baseline`)."""
    db = sqlite3.connect(project / ".ratchet" / "journal.db")
    rows = db.execute(
        "SELECT e.slot, m.started_at, m.started_at + m.duration FROM measurements m"
        " JOIN experiments e ON e.id = m.experiment WHERE ? OR e.proposer != 'baseline'",
        (baseline,),
    ).fetchall()
    db.close()
    return [(r[0], r[1], r[2]) for r in rows]


def test_two_slots_measure_at_once(tmp_path: Path) -> None:
    bump = "python3 -c \"import random; open('value.py','w').write(f'A = {random.random()}\\\\n\\\\nB = 5\\\\n')\""
    project = parallel_project(tmp_path, bump, extra="")
    # a candidate's first measurement waits (on files, not on the clock) until the other
    # slot's has begun too: at least one measurement of each slot overlaps, whatever the load
    marks = tmp_path / "marks"
    marks.mkdir()
    (project / "measure.sh").write_text(
        "if ! grep -q '^A = 5$' value.py; then\n"
        f"  touch {marks}/$$; n=0\n"
        f'  until [ "$(ls {marks} | wc -l)" -ge 2 ] || [ $n -ge 600 ]; do\n'
        "    n=$((n + 1)); sleep 0.05\n"
        "  done\n"
        "fi\n"
        "sleep 0.5\n"
    )
    spec = (project / "ratchet.toml").read_text() + "[run]\nmax_experiments = 6\n"
    (project / "ratchet.toml").write_text(spec)
    git(project, "commit", "-qam", "a slow metric")
    result = ratchet(project, "run")
    assert result.returncode == 0, result.stderr
    rows = experiments(project)[1:]
    assert len(rows) == 6
    assert {r["slot"] for r in rows} == {0, 1}
    spans = intervals(project)
    overlapping = [
        (a, b)
        for a in spans
        for b in spans
        if a[0] == 0 and b[0] == 1 and a[1] < b[2] and b[1] < a[2]
    ]
    assert overlapping, f"no measurement of slot 0 overlapped one of slot 1: {spans}"
    # elapsed is wall time: overlapping experiments count once, not once per slot
    every = experiments(project)
    summed = sum(r["ended_at"] - r["started_at"] for r in every)
    union = max(r["ended_at"] for r in every) - min(r["started_at"] for r in every)
    elapsed = json.loads(ratchet(project, "status", "--json").stdout)["elapsed_seconds"]
    assert elapsed <= union + 0.01 and elapsed < 0.8 * summed
    check_consistent(project)


def test_each_slot_gets_its_own_gpu(tmp_path: Path) -> None:
    bump = "python3 -c \"import random; open('value.py','w').write(f'A = {random.random()}\\\\n\\\\nB = 5\\\\n')\""
    project = parallel_project(tmp_path, bump, extra="gpus = [3, 5]\n[run]\nmax_experiments = 4")
    (project / "measure.sh").write_text('echo "gpu: $CUDA_VISIBLE_DEVICES"\n')
    git(project, "commit", "-qam", "print the gpu")
    result = ratchet(project, "run")
    assert result.returncode == 0, result.stderr
    db = sqlite3.connect(project / ".ratchet" / "journal.db")
    seen = db.execute(
        "SELECT e.slot, m.metrics FROM measurements m JOIN experiments e ON e.id = m.experiment"
    ).fetchall()
    db.close()
    by_slot = {(slot, json.loads(metrics)["gpu"]) for slot, metrics in seen}
    assert by_slot == {(0, 3.0), (1, 5.0)}


RAY = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_ADDRESS": "127.0.0.1:9"}


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_stale_keep_is_rebased_onto_the_new_incumbent_and_kept(
    tmp_path: Path, executor: str
) -> None:
    if executor == "ray":
        pytest.importorskip(
            "ray", reason="the Ray executor needs Ray: pip install 'ratchet-loop[ray]'"
        )
    # slot 0 improves A at once; slot 1 improves B, but only after slot 0's keep
    propose = slot_of_worktree(
        "sed -i 's/^A = 5$/A = 2/' value.py",
        f"{AFTER_A_KEEP}; sed -i 's/^B = 5$/B = 3/' value.py",
    )
    extra = f'kind = "{executor}"\n[run]\nmax_experiments = 2'
    project = parallel_project(tmp_path, propose, extra=extra)
    result = ratchet(project, "run", env=RAY if executor == "ray" else None)
    assert result.returncode == 0, result.stderr
    rows = {r["slot"]: r for r in experiments(project)[1:]}
    first, second = rows[0], rows[1]
    assert first["decision"] == "keep" and second["decision"] == "keep"
    assert second["parent"] == first["commit_sha"]  # rebased onto slot 0's keep
    assert second["value"] == 1.0  # measured again after the rebase: A = 2 and B = 3
    assert git(project, "show", "ratchet/default:value.py").splitlines()[::4] == ["A = 2", "B = 3"]
    db = sqlite3.connect(project / ".ratchet" / "journal.db")
    statuses = [r[0] for r in db.execute(
        "SELECT status FROM measurements WHERE experiment = ? ORDER BY id", (second["id"],)
    )]  # fmt: skip
    events = [r[0] for r in db.execute("SELECT event FROM audit")]
    db.close()
    assert statuses[0] == "ok" and statuses[-1] == "rebased"
    assert "rebased" in events
    check_consistent(project)


def race(tmp_path: Path, later_change: str) -> tuple[Path, dict[int, dict[str, Any]]]:
    """Slot 0 keeps A = 2 at once; slot 1 makes `later_change` after that keep."""
    propose = slot_of_worktree(
        "sed -i 's/^A = 5$/A = 2/' value.py", f"{AFTER_A_KEEP}; sed -i '{later_change}' value.py"
    )
    project = parallel_project(tmp_path, propose, extra="[run]\nmax_experiments = 2")
    result = ratchet(project, "run")
    assert result.returncode == 0, result.stderr
    rows = {r["slot"]: r for r in experiments(project)[1:]}
    assert rows[0]["decision"] == "keep"
    return project, rows


def test_a_stale_keep_that_conflicts_is_stale(tmp_path: Path) -> None:
    # both slots improve A, to different values: the later one cannot be rebased
    project, rows = race(tmp_path, "s/^A = 5$/A = 3/")
    assert rows[1]["decision"] == "stale"
    assert rows[1]["why"] == (
        f"stale: would keep against #1, but #{rows[0]['id']} was kept meanwhile and "
        f"its change conflicts with #{rows[0]['id']}'s"
    )
    tsv = (project / ".ratchet" / "results.tsv").read_text().splitlines()
    assert tsv[-1].split("\t")[3] == "discard" and "\tstale\t" in tsv[-1]
    check_consistent(project)


def test_a_candidate_that_loses_after_the_incumbent_moved_says_so(tmp_path: Path) -> None:
    _, rows = race(tmp_path, "s/^B = 5$/B = 9/")
    assert rows[1]["decision"] == "discard"
    assert rows[1]["why"].endswith(f"; #{rows[0]['id']} has been kept since")


def test_kill_9_with_every_slot_busy_then_resumed(tmp_path: Path) -> None:
    flags = tmp_path / "flags"
    flags.mkdir()
    bump = "python3 -c \"import random; open('value.py','w').write(f'A = {random.random()}\\\\n\\\\nB = 5\\\\n')\""
    project = parallel_project(tmp_path, bump, extra="[run]\nmax_experiments = 6")
    # a candidate hangs the first time each slot measures one; the baseline does not
    hang = (f'if grep -q "A = 0" value.py && [ ! -f {flags}/$(basename "$PWD") ]; then '
            f'touch {flags}/$(basename "$PWD"); sleep 60; fi\n')  # fmt: skip
    (project / "measure.sh").write_text(hang)
    git(project, "commit", "-qam", "hang once per slot")
    slots = project / ".ratchet" / "slots"
    with adopting():  # the children ratchet leaves are re-parented to this test
        proc = subprocess.Popen([sys.executable, "-m", "ratchet", "run"], cwd=project,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, **GIT_ENV})  # fmt: skip
        # both candidates hang, and ratchet has recorded both process groups
        wait_for(flags / "0", flags / "1", slots / "0.pid", slots / "1.pid")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stuck = [r for r in experiments(project) if r["decision"] is None]
        assert sorted(r["slot"] for r in stuck) == [0, 1]
        assert living_descendants()  # the orphans outlived ratchet
        result = ratchet(project, "run")
        assert descendants_gone()  # and the resumed run killed them
    assert result.returncode == 0, result.stderr
    rows = experiments(project)
    for row in stuck:
        again = next(r for r in rows if r["id"] == row["id"])
        assert again["decision"] == "interrupted"
    db = sqlite3.connect(project / ".ratchet" / "journal.db")
    killed = [json.loads(r[0])["slot"] for r in db.execute(
        "SELECT detail FROM audit WHERE event = 'orphan-killed'")]  # fmt: skip
    db.close()
    assert sorted(killed) == [0, 1]
    check_consistent(project)


def test_ctrl_c_with_two_slots_busy_interrupts_both(tmp_path: Path) -> None:
    flags = tmp_path / "flags"
    flags.mkdir()
    propose = f'touch {flags}/$(basename "$PWD"); sleep 30'
    project = parallel_project(tmp_path, propose, extra="[run]\nmax_experiments = 6")
    proc = subprocess.Popen([sys.executable, "-m", "ratchet", "run"], cwd=project,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **GIT_ENV})  # fmt: skip
    slots = project / ".ratchet" / "slots"  # both propose, their groups recorded
    wait_for(flags / "0", flags / "1", slots / "0.pid", slots / "1.pid")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped by SIGINT" in out and "Traceback" not in err
    rows = experiments(project)[1:]
    assert [r["decision"] for r in rows] == ["interrupted", "interrupted"]
    check_consistent(project)


def test_parallel_must_be_a_positive_number(tmp_path: Path) -> None:
    project = parallel_project(tmp_path, "true", slots=0)
    result = ratchet(project, "run")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("ratchet: error: ratchet.toml: [executor] parallel")


def test_knobs_share_one_study_across_slots(tmp_path: Path) -> None:
    files = {"value.py": "A = 5.0  # ratchet: knob float 0..10\n\n# apart\n\nB = 5\n"}
    project = make_project(
        tmp_path / "k",
        {**FILES, **files, "measure.sh": "sleep 0.2\n"},
        f"""
[sandbox]
kind = "process"
[scope]
editable = ["value.py"]
[metric]
command = "sh measure.sh && {sys.executable} score.py"
name = "score"
[run]
max_experiments = 10
[executor]
parallel = 2
""",
    )
    result = ratchet(project, "run")
    assert result.returncode == 0, result.stderr
    rows = experiments(project)[1:]
    trials = [json.loads(r["meta"])["trial"] for r in rows]
    asked = [json.loads(r["meta"])["params"]["value.py:A"] for r in rows]
    assert {r["slot"] for r in rows} == {0, 1}
    # one study: trial numbers are never handed out twice, and no value is tried twice
    assert len(set(trials)) == len(trials) == 10
    assert len(set(asked)) == len(asked)
    # every trial was measured; a would-be keep overtaken by the other slot's keep of the
    # same line is `stale`
    assert all(r["decision"] in {"keep", "discard", "stale"} for r in rows)


def test_ratchet_noise_measures_in_every_slot_with_its_own_seeds(tmp_path: Path) -> None:
    project = parallel_project(tmp_path, "true")
    # after the baseline's three, the next two measurements wait for each other (on files,
    # not on the clock): two of them overlap, whatever the load
    marks = tmp_path / "marks"
    marks.mkdir()
    (project / "measure.sh").write_text(
        f"c=$(ls {marks} | wc -l); touch {marks}/$$\n"
        'if [ "$c" -ge 3 ]; then n=0\n'
        f'  until [ "$(ls {marks} | wc -l)" -ge 5 ] || [ $n -ge 600 ]; do\n'
        "    n=$((n + 1)); sleep 0.05\n"
        "  done\n"
        "fi\n"
        'sleep 0.3; echo "seed_seen: $RATCHET_SEED"\n'
    )
    git(project, "commit", "-qam", "a slow metric that shows its seed")
    result = ratchet(project, "noise", "--repeats", "9", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["n"] == 9
    spans = sorted(intervals(project, baseline=True), key=lambda span: span[1])[
        3:
    ]  # after the baseline
    assert any(b[1] < a[2] for a, b in itertools.pairwise(spans))  # two at once
    db = sqlite3.connect(project / ".ratchet" / "journal.db")
    seeds = [r[0] for r in db.execute("SELECT seed FROM measurements")]
    db.close()
    assert len(seeds) == 9 and len(set(seeds)) == 9  # concurrent measurements, never one seed


def test_the_command_line_sets_the_slots(tmp_path: Path) -> None:
    bump = "python3 -c \"import random; open('value.py','w').write(f'A = {random.random()}\\\\n\\\\nB = 5\\\\n')\""
    project = parallel_project(tmp_path, bump, slots=1)
    (project / "measure.sh").write_text("sleep 0.2\n")
    git(project, "commit", "-qam", "a slower metric")
    result = ratchet(project, "run", "--parallel", "2", "--max-experiments", "4")
    assert result.returncode == 0, result.stderr
    assert {r["slot"] for r in experiments(project)[1:]} == {0, 1}
    refused = ratchet(project, "run", "--parallel", "0")
    assert refused.returncode == 2 and "--parallel" in refused.stderr
