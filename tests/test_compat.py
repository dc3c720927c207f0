"""Switches users reach for: derived metrics, run-time outputs, the budget warning, a
results file elsewhere, and the names other installed distributions claim."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import experiments, make_project, ratchet
from ratchet.derived import add_derived, parse_expression
from ratchet.installation import name_clashes
from ratchet.measure import budget_warning
from ratchet.spec import SpecError, parse_spec

PY = sys.executable


def test_derived_metrics() -> None:
    metrics = {"peak_vram_mb": 45060.2, "a": 4.0}
    add_derived(metrics, {"memory_gb": "round(peak_vram_mb / 1024, 1)", "b": "max(a, 1) ** 2",
                          "c": "missing * 2", "d": "a / 0"})  # fmt: skip
    assert metrics["memory_gb"] == 44.0 and metrics["b"] == 16.0
    assert "c" not in metrics and "d" not in metrics  # absent inputs, or no number: not reported
    reported = {"memory_gb": 3.0, "peak_vram_mb": 45060.2}
    add_derived(reported, {"memory_gb": "peak_vram_mb / 1024"})
    assert reported["memory_gb"] == 3.0  # what the output said wins
    for bad in ("__import__('os')", "a.b", "open('x')", "[1]"):
        with pytest.raises(ValueError, match="not allowed"):
            parse_expression(bad)


def test_derive_and_results_keys_are_checked() -> None:
    base = {"scope": {"editable": ["a.py"]}}
    with pytest.raises(SpecError, match=r"\[metric\] derive: m: .*__import__.* is not allowed"):
        parse_spec({**base, "metric": {"command": "x", "name": "n",
                                       "derive": {"m": "__import__('os')"}}}, "ratchet.toml")  # fmt: skip
    with pytest.raises(SpecError, match="must be a file path inside the project"):
        parse_spec({**base, "metric": {"command": "x", "name": "n"},
                    "run": {"results": "../results.tsv"}}, "ratchet.toml")  # fmt: skip


def test_a_derived_metric_is_the_metric_and_the_budget_warning(tmp_path: Path) -> None:
    spec = f"""
[scope]
editable = ["value.py"]
[metric]
command = "{PY} score.py"
name = "loss"
budget = "12s"
derive = {{ loss = "err_pct / 100" }}
[run]
max_experiments = 1
results = "out/results.tsv"
[sandbox]
kind = "process"
[proposer]
kind = "command"
command = "echo 'X = 2' > value.py"
"""
    # the baseline takes about 10.2 s of the 12 s budget: under the 25% headroom that warns,
    # with room left for a slow interpreter start on a loaded machine
    score = (
        "import time\nfrom value import X\ntime.sleep(10.2 if X == 5 else 0)\n"
        "print(f'err_pct: {abs(X - 2) * 10}')\n"
    )
    files = {"value.py": "X = 5\n", "score.py": score, ".gitignore": ".ratchet/\ncache/\n"}
    project = make_project(tmp_path / "p", files, spec)
    (project / "cache").mkdir()
    (project / "cache" / "weights.bin").write_bytes(b"\0" * 64)  # ignored: never blocks a run
    result = ratchet(project, "run")
    assert result.returncode == 0, result.stderr
    rows = experiments(project)
    assert rows[0]["value"] == pytest.approx(0.3) and rows[1]["value"] == pytest.approx(0.0)
    assert "warning: the baseline took" in rows[0]["why"]
    assert "raise [metric] budget to at least" in rows[0]["why"]
    assert (project / "out" / "results.tsv").read_text().startswith("commit\tloss\tmemory_gb")


def test_budget_warning_threshold() -> None:
    assert budget_warning(300, 200) is None
    warning = budget_warning(300, 290)
    assert warning is not None and "took 290s of the 5m budget" in warning
    assert warning.endswith("raise [metric] budget to at least 363s")


def test_doctor_names_other_distributions_with_the_same_names(tmp_path: Path) -> None:
    old = tmp_path / "ratchet-0.4.1.dist-info"
    old.mkdir()
    (old / "METADATA").write_text("Metadata-Version: 2.1\nName: ratchet\nVersion: 0.4.1\n")
    (old / "top_level.txt").write_text("ratchet\n")
    ci = tmp_path / "ratchet_ci-0.1.0.dist-info"
    ci.mkdir()
    (ci / "METADATA").write_text("Metadata-Version: 2.1\nName: ratchet-ci\nVersion: 0.1.0\n")
    (ci / "entry_points.txt").write_text("[console_scripts]\nratchet = ratchet_ci.cli:main\n")
    ours = tmp_path / "ratchet_loop-0.1.0.dist-info"
    ours.mkdir()
    (ours / "METADATA").write_text("Metadata-Version: 2.1\nName: ratchet_loop\nVersion: 0.1.0\n")
    (ours / "top_level.txt").write_text("ratchet\n")
    clashes = name_clashes([str(tmp_path)])
    assert len(clashes) == 2
    assert clashes[0].startswith("ratchet 0.4.1 also provides the module 'ratchet'")
    assert clashes[1].startswith("ratchet-ci 0.1.0 also provides the command 'ratchet'")
    assert name_clashes([str(tmp_path / "nothing")]) == []


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ("LR = 0.02  # the rate  # ratchet: knob log 1e-4..1e-1", "follows another comment"),
        ("def f(x=0.1):  # ratchet: knob float 0..1", "is on a def or class line"),
        ("# ratchet: knob float 0..1", "is on a line of its own"),
        ("f(0.1)  # ratchet: knob float 0..1", "is not after 'NAME = literal'"),
    ],
)
def test_every_unreadable_knob_annotation_is_an_error_with_its_line(
    tmp_path: Path, line: str, said: str
) -> None:
    from ratchet.proposers.knobs import find_knobs

    (tmp_path / "train.py").write_text(f"A = 1  # ratchet: knob int 0..9\n\n{line}\n")
    with pytest.raises(SpecError) as error:
        find_knobs(tmp_path, ["train.py"], ["train.py"])
    assert str(error.value).startswith(f"train.py:3: this knob annotation {said}")


def test_a_results_file_that_is_not_the_runs_is_never_overwritten(tmp_path: Path) -> None:
    spec = f"""
[scope]
editable = ["value.py"]
[metric]
command = "{PY} score.py"
name = "score"
[run]
max_experiments = 1
results = "results.tsv"
results_format = "autoresearch"
[sandbox]
kind = "process"
[proposer]
kind = "command"
command = "echo 'X = 2' > value.py"
"""
    score = "from value import X\nprint(f'score: {(X - 2) ** 2}')\n"
    project = make_project(tmp_path / "p", {"value.py": "X = 5\n", "score.py": score}, spec)
    earlier = (
        "commit\tscore\tmemory_gb\tstatus\tdescription\na1b2c3d\t0.997900\t44.0\tkeep\tbaseline\n"
    )
    (project / "results.tsv").write_text(earlier)  # an agent's own session, before ratchet
    result = ratchet(project, "run")
    assert result.returncode == 2
    assert "results.tsv already holds results that are not this run's" in result.stderr
    assert (project / "results.tsv").read_text() == earlier
    (project / "results.tsv").unlink()  # moved away by its owner
    result = ratchet(project, "run")
    assert result.returncode == 0, result.stderr
    assert len((project / "results.tsv").read_text().splitlines()) == 3  # header, baseline, #2
