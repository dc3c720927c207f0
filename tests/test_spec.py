"""A malformed spec is one line naming the key or file, and exit code 2; never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import make_project, ratchet
from ratchet.spec import SpecError, parse_duration, parse_spec

GOOD = """
[scope]
editable = ["train.py"]
context = ["prepare.py"]
directive = "program.md"
protected = ["prepare.py"]
[metric]
command = "python3 train.py"
name = "val_loss"
budget = "5m"
"""
FILES = {"train.py": "LR = 0.1\n", "prepare.py": "", "program.md": "be good\n"}

MALFORMED = [
    ("unknown key", GOOD + "nmae = 'x'\n", "unknown key 'nmae' in [metric]"),
    ("unknown section", GOOD + "[proposr]\nkind = 'knobs'\n", "unknown key 'proposr'"),
    ("wrong type", GOOD.replace('budget = "5m"', "budget = true"), "[metric] budget"),
    ("bad duration", GOOD.replace('"5m"', '"5 parsecs"'), "[metric] budget: expected a duration"),
    ("bad goal", GOOD + "goal = 'min'\n", "[metric] goal"),
    ("missing metric", GOOD.split("[metric]")[0], "section [metric] is missing"),
    ("missing name", GOOD.replace('name = "val_loss"', ""), "[metric] name: required key"),
    ("empty scope", GOOD.replace('["train.py"]', "[]", 1), "the scope is empty"),
    ("scope matches nothing", GOOD.replace('["train.py"]', '["nope/*.py"]', 1), "matches no file"),
    ("missing directive", GOOD.replace("program.md", "missing.md"), "file 'missing.md'"),
    (
        "missing context",
        GOOD.replace('context = ["prepare.py"]', 'context = ["gone.py"]'),
        "file 'gone.py'",
    ),
    ("bad regex", GOOD + "pattern = 'loss: ([0-9.]+'\n", "pattern: not a valid regular expression"),
    ("regex without a group", GOOD + "pattern = 'loss'\n", "exactly one group"),
    (
        "editable and protected",
        GOOD.replace('protected = ["prepare.py"]', 'protected = ["*.py"]'),
        "train.py is both editable and protected",
    ),
    (
        "command proposer without command",
        GOOD + "[proposer]\nkind = 'command'\n",
        "[proposer] command",
    ),
    ("unknown proposer", GOOD + "[proposer]\nkind = 'magic'\n", "[proposer] kind"),
    ("negative count", GOOD + "[run]\nmax_experiments = -3\n", "[run] max_experiments"),
    ("bad run name", GOOD + "[run]\nname = 'my run'\n", "cannot be a branch name"),
    ("not toml", "[scope\neditable = 1", "not valid TOML"),
]


@pytest.mark.parametrize(("case", "spec", "expected"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_malformed_spec_is_one_line_and_exit_code_2(
    tmp_path: Path, case: str, spec: str, expected: str
) -> None:
    project = make_project(tmp_path / "p", FILES, spec)
    result = ratchet(project, "run")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ratchet: error: ")
    assert expected in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert not (project / ".ratchet").exists()  # nothing was started


def test_the_spec_can_live_in_pyproject(tmp_path: Path) -> None:
    pyproject = "[project]\nname = 'x'\n\n" + GOOD.replace("[scope]", "[tool.ratchet.scope]")
    pyproject = pyproject.replace("[metric]", "[tool.ratchet.metric]")
    knob = {"train.py": "LR = 0.1  # ratchet: knob log 1e-3..1\n"}
    project = make_project(tmp_path / "p", {**FILES, **knob, "pyproject.toml": pyproject})
    result = ratchet(project, "run", "--max-experiments", "1")
    # the spec was read: the run started, and stopped on the metric command's failure
    assert result.returncode == 1
    assert "the baseline measurement failed (no-metric)" in result.stdout
    assert (project / ".ratchet" / "journal.db").exists()


def test_no_spec_at_all_says_how_to_make_one(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", FILES)
    result = ratchet(project, "run")
    assert result.returncode == 2
    assert "run 'ratchet init'" in result.stderr


def test_bad_command_line_values_are_exit_code_2(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", FILES, GOOD)
    result = ratchet(project, "run", "--max-time", "soon")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "ratchet: error: --max-time: expected a duration such as '90s', '5m' or '8h', got 'soon'"
    )
    assert ratchet(project, "run", "--max-experiments", "0").returncode == 2


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), (12, 12), ("2.5h", 9000)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_defaults_fill_what_the_spec_leaves_out() -> None:
    spec = parse_spec(
        {"scope": {"editable": ["a.py"]}, "metric": {"command": "x", "name": "m"}}, "t"
    )
    assert spec.metric.goal == "minimize"
    assert spec.metric.budget == 300
    assert spec.proposer.kind == "knobs"
    assert spec.policy.kind == "noise-aware"
    assert spec.policy.confidence == 0.99
    assert spec.run.name == "default"
    with pytest.raises(SpecError):
        parse_spec({"scope": {"editable": ["a.py"]}}, "t")
