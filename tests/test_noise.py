"""Honest keeps: noise estimates, the noise-aware policy, and the integrity of a measurement.

Noisy metrics come from a generator seeded by `$RATCHET_SEED`, which ratchet sets for
every measurement, so every test here is reproducible.
"""

from __future__ import annotations

import json
import re
import sqlite3
import sys
from pathlib import Path

import pytest
from noisy_support import NOISY_SCORE, noisy_project

from conftest import experiments, git, ratchet
from holdout_support import holdout_project
from ratchet.policy import Judgement, NoiseAware, NoiseModel, compare


def measurements(project: Path, experiment: int) -> list[dict[str, object]]:
    db = sqlite3.connect(project / ".ratchet" / "journal.db")
    db.row_factory = sqlite3.Row
    rows = db.execute("SELECT * FROM measurements WHERE experiment = ? ORDER BY id", (experiment,))
    result = [dict(r) for r in rows]
    db.close()
    return result


def test_ratchet_noise_measures_the_incumbent_and_stores_the_estimate(tmp_path: Path) -> None:
    project = noisy_project(tmp_path, "true")
    result = ratchet(project, "noise", "--repeats", "8", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n"] == 8
    assert 0.15 < report["sd"] < 2.5  # N(0, 1) noise, eight draws: outside about 1 in 10^5
    assert report["low"] < report["mean"] < report["high"]
    assert report["pooled_df"] == 7
    assert report["smallest_detectable"] > report["pooled_sd"]
    assert len(measurements(project, 1)) == 8
    status = json.loads(ratchet(project, "status", "--json").stdout)
    assert status["incumbent"]["value"] == pytest.approx(report["mean"])
    table = ratchet(project, "noise", "--repeats", "2").stdout
    assert "smallest keep" in table and "pooled sd" in table
    after = json.loads(ratchet(project, "status", "--json").stdout)
    # noise adds no experiment: the baseline alone, which no count includes
    assert after["decisions"] == {} and after["experiments"] == 0
    assert len(experiments(project)) == 1


def test_a_deterministic_metric_decides_on_one_measurement_and_confirms_a_keep(
    tmp_path: Path,
) -> None:
    project = noisy_project(tmp_path, "echo 'X = 2' > value.py",
                            files={"score.py": "from value import X\nprint(f'loss: {X * X}')\n"})  # fmt: skip
    assert ratchet(project, "run").returncode == 0
    rows = experiments(project)
    assert rows[1]["decision"] == "keep"
    assert rows[1]["why"] == (
        "kept: loss 25 -> 4 (delta 21; deterministic: every repeated measurement so far "
        "agreed exactly (3 of them), and a second measurement gave the same)"
    )
    assert "agreed exactly" in rows[0]["why"]  # the evidence is stated at the baseline
    assert len(measurements(project, 1)) == 3  # the baseline, to learn there is no noise
    # the candidate: once to decide, once to confirm (the evidence that it is deterministic)
    assert [m["status"] for m in measurements(project, 2)] == ["ok", "confirm"]


def test_a_real_improvement_on_a_noisy_metric_is_kept_with_its_statistics(
    tmp_path: Path,
) -> None:
    project = noisy_project(tmp_path, "echo 'X = 2' > value.py")
    assert ratchet(project, "run").returncode == 0
    row = experiments(project)[1]
    assert row["decision"] == "keep"
    assert re.fullmatch(
        r"kept: loss 4\d\.\d+ -> \S+ \(t = delta \S+ / se \S+ = \S+; n=2 vs 1 interleaved; "
        r"sd \S+ of one measurement, 3 df; t >= \S+, look 2 of 10 at alpha 0.01\); "
        r"recorded at 1 fresh measurement",
        row["why"],
    )
    # never kept on one draw: measured twice, interleaved with the incumbent, then confirmed
    assert [m["status"] for m in measurements(project, 2)] == ["ok", "ok", "confirm"]
    assert len(measurements(project, 1)) == 4  # the baseline's 3 and one interleaved
    kept = experiments(project)[1]["value"]
    assert kept == measurements(project, 2)[-1]["value"]  # recorded at the confirmation


def test_pure_noise_keeps_nothing_and_says_why(tmp_path: Path) -> None:
    propose = 'echo "X = 5 # $(od -An -N2 -tu2 /dev/urandom | tr -dc 0-9)" > value.py'
    project = noisy_project(tmp_path, propose, experiments_=15)
    assert ratchet(project, "run").returncode == 0
    rows = experiments(project)[1:]
    # seeds differ from run to run: a false keep has about a 5% chance in 15 trials, and
    # two have about 0.1% (bench/noise.py measures the rate)
    assert [r["decision"] for r in rows].count("keep") <= 1
    assert all(" sd" in r["why"] for r in rows)
    assert sum(r["why"].startswith("discarded: ") for r in rows) >= 14
    # most trials cost one measurement (the futility bound); none more than max_repeats.
    # The total has a long tail while the noise estimate has few degrees of freedom, so
    # the average cost is measured by bench/noise.py, not asserted here
    counts = sorted(len(measurements(project, r["id"])) for r in rows)
    assert counts[len(counts) // 2] == 1 and counts[-1] <= 10


def test_unpaired_and_paired_seeds(tmp_path: Path) -> None:
    project = noisy_project(tmp_path, "echo 'X = 2' > value.py")
    ratchet(project, "run")
    baseline = [m["seed"] for m in measurements(project, 1)]
    candidate = [m["seed"] for m in measurements(project, 2)]
    assert len(set(baseline + candidate)) == 7  # all different (the incumbent's 4th too)
    other = noisy_project(tmp_path / "other", "echo 'X = 2' > value.py")
    ratchet(other, "run")
    assert [m["seed"] for m in measurements(other, 1)] != baseline  # and different per run
    paired = noisy_project(tmp_path / "paired", "echo 'X = 2' > value.py",
                           extra="[policy]\npaired_seeds = true")  # fmt: skip
    ratchet(paired, "run")
    # the incumbent's interleaved measurement runs on the seed of the candidate's it pairs with
    assert [m["seed"] for m in measurements(paired, 1)] == [0, 1, 2, 0]
    assert [m["seed"] for m in measurements(paired, 2)] == [0, 1, 2]
    outputs = [m["output"] for m in measurements(paired, 2)]
    assert outputs[0].startswith("seed: 0")  # the command saw the seed it was given


def test_only_the_incumbents_measurements_enter_the_noise_estimate() -> None:
    """A candidate measured again after a good first draw is selected on its value; the
    incumbent's interleaved measurements are not, and they alone join the estimate."""
    noise = NoiseModel()
    for value in (10.0, 10.5, 9.5):
        noise.add("incumbent", value)
    candidate = iter([8.0, 9.8, 10.1, 10.2, 9.9, 10.0])
    incumbent = iter([10.1, 10.0, 9.9, 10.2, 10.0])
    judgement = compare(NoiseAware(), noise, "incumbent", "minimize", "loss",
                        lambda k: next(candidate), lambda k: next(incumbent))  # fmt: skip
    assert isinstance(judgement, Judgement) and judgement.verdict == "discard"
    assert judgement.candidate[0] == 8.0 and len(judgement.candidate) >= 2
    assert noise.samples("incumbent").values[3:] == judgement.incumbent
    assert set(noise.groups) == {"incumbent"}
    # 8.0, 9.8 and 10.1 against the incumbent's latest 5 (10.1 and 10.0 the fresh ones):
    # the futility line ends it at the third look
    assert (
        "futility at look 3" in judgement.why and "n=3 vs the incumbent's latest 5" in judgement.why
    )
    assert " se " in judgement.why and " sd " in judgement.why


def test_a_measurement_that_writes_a_protected_file_is_tampered(tmp_path: Path) -> None:
    hack = f"echo 'print(\"loss: -1\")' >> score.py; {sys.executable} score.py"
    project = noisy_project(tmp_path, "echo 'X = 3' > value.py", experiments_=2)
    spec = (project / "ratchet.toml").read_text()
    (project / "ratchet.toml").write_text(
        spec.replace(f'command = "{sys.executable} score.py"', "command = '''sh measure.sh'''")
    )
    (project / "measure.sh").write_text(
        f'if grep -q "X = 3" value.py; then {hack}; else {sys.executable} score.py; fi\n'
    )
    git(project, "add", "-A")
    git(project, "commit", "-qm", "measure through a script")
    assert ratchet(project, "run").returncode == 0
    rows = experiments(project)
    assert [r["decision"] for r in rows] == ["keep", "tampered", "duplicate"]
    assert rows[1]["why"] == "protected files changed during the measurement: score.py changed"
    assert git(project, "rev-parse", "ratchet/default") == git(project, "rev-parse", "main")


@pytest.mark.parametrize(("allow", "decision"), [("", "out-of-scope"), ('["json"]', "keep")])
def test_a_new_file_that_shadows_a_module(tmp_path: Path, allow: str, decision: str) -> None:
    project = noisy_project(tmp_path, "echo 'X = 2' > value.py && echo 'dumps = 1' > json.py")
    spec = (project / "ratchet.toml").read_text().replace('editable = ["value.py"]',
                                                          'editable = ["*.py"]')  # fmt: skip
    spec = spec.replace('protected = ["score.py"]', "")
    if allow:
        spec = spec.replace("[metric]", f"allow_shadowing = {allow}\n[metric]")
    (project / "ratchet.toml").write_text(spec)
    git(project, "commit", "-qam", "wider scope")
    ratchet(project, "run")
    row = experiments(project)[1]
    assert row["decision"] == decision
    if decision == "out-of-scope":
        assert "json.py (shadows the standard library's json)" in row["why"]


def test_gates_and_checks_stand_between_a_would_be_keep_and_a_keep(tmp_path: Path) -> None:
    marker = tmp_path / "checks-ran"
    heavy = "print('memory_gb: 50')\n" + NOISY_SCORE
    gated = noisy_project(tmp_path / "gates", "echo 'X = 2' > value.py",
                          extra='gates = { memory_gb = "<= 40" }', files={"score.py": heavy})  # fmt: skip
    ratchet(gated, "run")
    assert experiments(gated)[1]["decision"] == "discard"
    assert "a gate failed: memory_gb 50 is not <= 40" in experiments(gated)[1]["why"]

    failing = noisy_project(tmp_path / "checks", "echo 'X = 2' > value.py", experiments_=2,
                            extra=f"checks = '''touch {marker}; echo 2 tests failed; exit 1'''")  # fmt: skip
    ratchet(failing, "run")
    rows = experiments(failing)
    assert rows[1]["decision"] == "discard"
    assert re.search(r"but the checks failed \(exit code 1, [\d.]+s\): 2 tests failed$", rows[1]["why"])  # fmt: skip
    assert marker.exists()

    marker.unlink()
    worse = noisy_project(tmp_path / "worse", "echo 'X = 9' > value.py",
                          extra=f"checks = '''touch {marker}'''")  # fmt: skip
    ratchet(worse, "run")
    assert experiments(worse)[1]["decision"] == "discard"
    assert not marker.exists()  # checks run only for would-be keeps


def test_a_strict_metric_printed_after_the_real_one_is_no_metric(tmp_path: Path) -> None:
    forged = NOISY_SCORE + "if X == 2:\n    print('loss: -100')\n"
    project = noisy_project(tmp_path, "echo 'X = 2' > value.py", extra="strict = true",
                            files={"score.py": forged})  # fmt: skip
    ratchet(project, "run")
    row = experiments(project)[1]
    assert row["decision"] == "no-metric"
    assert row["why"] == "'loss' was reported 2 times and the metric is strict"


def test_a_bad_gate_is_a_spec_error(tmp_path: Path) -> None:
    project = noisy_project(tmp_path, "true", extra='gates = { memory_gb = "less than 40" }')
    result = ratchet(project, "run")
    assert result.returncode == 2
    assert "gate 'memory_gb'" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("best", "decision"), [(6, "overfit"), (3, "keep")])
def test_holdout_confirmation(tmp_path: Path, best: int, decision: str) -> None:
    """The search metric improves from X = 5 to X = 3; the holdout is best at `best`."""
    project = holdout_project(tmp_path / "p", best)
    assert ratchet(project, "run").returncode == 0
    rows = experiments(project)
    assert rows[1]["decision"] == decision
    assert rows[0]["holdout"] == (5 - best) ** 2  # the incumbent's, measured once
    assert rows[1]["holdout"] == (3 - best) ** 2
    if decision == "overfit":
        assert rows[1]["why"] == (
            "overfit: loss on the holdout 1 -> 9 is worse than the incumbent's by 8, "
            "beyond the noise (0)"
        )
        assert git(project, "rev-parse", "ratchet/default") == git(project, "rev-parse", "main")
    status = json.loads(ratchet(project, "status", "--json").stdout)
    incumbent = status["incumbent"]
    assert incumbent["holdout_gap"] == incumbent["holdout"] - incumbent["value"]
    assert "holdout" in ratchet(project, "status").stdout
    # holdout measurements never enter the search metric's noise estimate
    assert [m["status"] for m in measurements(project, rows[1]["id"])] == [
        "ok",
        "confirm",
        "holdout",
    ]


def test_the_brief_carries_the_noise_estimate(tmp_path: Path) -> None:
    seen = tmp_path / "brief.json"
    project = noisy_project(tmp_path, f"cp $RATCHET_BRIEF {seen}")
    ratchet(project, "run")
    brief = json.loads(seen.read_text())
    assert brief["noise"]["df"] == 2  # the baseline, measured three times
    assert 0 < brief["noise"]["sd"] < 3
    assert brief["history"][0]["why"].startswith("baseline: loss")
