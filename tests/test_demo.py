"""`ratchet demo`, shortened: the bundled example improves, with one commit per keep."""

from __future__ import annotations

from pathlib import Path

from conftest import experiments, git, ratchet


def test_the_demo_finds_a_real_improvement_and_running_it_again_continues_it(
    tmp_path: Path,
) -> None:
    """One demo run, then the same command again: the second goes on from the first (one
    run of the demo for both, where a second test would repeat the first's experiments)."""
    demo = tmp_path / "demo"
    result = ratchet(tmp_path, "demo", str(demo), "--max-experiments", "6", timeout=300)
    assert result.returncode == 0, result.stderr
    rows = experiments(demo)
    assert len(rows) == 7
    keeps = [r for r in rows[1:] if r["decision"] == "keep"]
    assert keeps, "the demo kept nothing"
    assert min(k["value"] for k in keeps) < 0.9 * rows[0]["value"]  # a real improvement
    # one commit per keep on the run branch, each naming the metric change
    log = git(demo, "log", "--format=%s", "main..ratchet/default").splitlines()
    assert len(log) == len(keeps)
    assert all(line.startswith("val_loss ") and " -> " in line for line in log)
    header = (demo / ".ratchet" / "results.tsv").read_text().splitlines()[0].split("\t")
    assert header[:5] == ["commit", "val_loss", "memory_gb", "status", "description"]
    # the summary says where things are
    assert "val_loss: baseline" in result.stdout and "-> best" in result.stdout
    assert "results.tsv" in result.stdout
    # only train.py ever changed; the evaluator is untouched on the branch
    assert git(demo, "diff", "--name-only", "main", "ratchet/default") == "train.py"
    # run again, the same run continues: no new baseline, one more experiment (a longer
    # max_time, since the first run's time counts towards the demo's 2m, and on a loaded
    # machine it could use it all)
    again = ratchet(
        tmp_path, "demo", str(demo), "--max-experiments", "7", "--max-time", "10m", timeout=300
    )
    assert again.returncode == 0, again.stderr
    assert "resumed" in again.stdout
    assert len(experiments(demo)) == 8


def test_the_demo_refuses_a_folder_with_other_things_in_it(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine\n")
    result = ratchet(tmp_path, "demo", "busy")
    assert result.returncode == 2
    assert "exists and is not empty" in result.stderr
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine\n"
