"""`kind = "portfolio"`: proposers mixed by weight, each told its own outcomes."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from fake_llm import FakeLLM, tool_call

from conftest import experiments, git, make_project, ratchet

FILES = {
    "value.py": "X = 9.0\n",
    "score.py": "from value import X\nprint(f'score: {(X - 2) ** 2}')\n",
}


def portfolio_project(tmp_path: Path, members: str, max_experiments: int) -> Path:
    spec = f"""
[sandbox]
kind = "process"
[scope]
editable = ["value.py"]
protected = ["score.py"]
[metric]
command = "{sys.executable} score.py"
name = "score"
[run]
max_experiments = {max_experiments}
give_up_after = 1000
[proposer]
kind = "portfolio"
seed = 7
{members}
"""
    return make_project(tmp_path / "p", FILES, spec)


ANNOTATED = "X = 6.0  # ratchet: knob float 0..10"


def test_an_llm_adds_a_knob_that_optuna_then_tunes(tmp_path: Path) -> None:
    annotate = [
        tool_call("edit", path="value.py", search="X = 9.0", replace=ANNOTATED),
        tool_call("finish", rationale="make X a knob, and move it closer"),
    ]
    with FakeLLM(annotate) as fake:
        members = f"""
[[proposer.members]]
kind = "llm"
model = "fake-model"
base_url = "{fake.base_url}"
weight = 1
[[proposer.members]]
kind = "knobs"
weight = 1000
"""
        project = portfolio_project(tmp_path, members, max_experiments=8)
        result = ratchet(project, "run")
    assert result.returncode == 0, result.stderr
    rows = experiments(project)[1:]
    # no knob existed, so the first turn went to the llm whatever the draw
    assert rows[0]["proposer"] == "llm" and rows[0]["decision"] == "keep"
    tuned = [r for r in rows[1:] if r["proposer"] == "knobs"]
    assert len(tuned) >= 5
    assert all(r["rationale"].startswith("knobs: X 6.0 -> ") for r in tuned[:1])
    assert all(json.loads(r["meta"])["member"] == 1 for r in tuned)
    keeps = [r for r in tuned if r["decision"] == "keep"]
    assert keeps, "Optuna should find a value of X better than 6"
    final = git(project, "show", "ratchet/default:value.py")
    assert final.endswith("# ratchet: knob float 0..10")
    assert len(fake.requests) == 2  # one llm turn: its edit and its finish
    assert float(final.split("=")[1].split("#")[0]) != 6.0


def test_members_share_the_proposals_by_weight(tmp_path: Path) -> None:
    write = f"{sys.executable} -c 'import random; print(f\"X = {{random.random()}}\")' > value.py"
    members = f"""
[[proposer.members]]
kind = "command"
command = {json.dumps(write)}
weight = 1
[[proposer.members]]
kind = "command"
command = {json.dumps(write)}
weight = 3
"""
    project = portfolio_project(tmp_path, members, max_experiments=40)
    result = ratchet(project, "run")
    assert result.returncode == 0, result.stderr
    rows = experiments(project)[1:]
    assert len(rows) == 40
    shares = Counter(json.loads(r["meta"])["member"] for r in rows)
    assert 4 <= shares[0] <= 17 and shares[0] + shares[1] == 40  # 10 expected; 3 sd is 8


def test_a_failing_member_is_named_in_the_why(tmp_path: Path) -> None:
    members = """
[[proposer.members]]
kind = "command"
command = "exit 3"
"""
    project = portfolio_project(tmp_path, members, max_experiments=1)
    result = ratchet(project, "run")
    assert result.returncode == 0, result.stderr
    row = experiments(project)[-1]
    assert row["decision"] == "invalid-proposal"
    assert row["why"] == "command: the proposer exited with code 3: no output"


def test_a_portfolio_needs_members_and_cannot_nest(tmp_path: Path) -> None:
    project = portfolio_project(tmp_path, "", max_experiments=1)
    result = ratchet(project, "run")
    assert result.returncode == 2
    assert "[proposer] members: kind = 'portfolio' needs members" in result.stderr
    nested = '[[proposer.members]]\nkind = "portfolio"\n'
    (project / "ratchet.toml").write_text((project / "ratchet.toml").read_text() + nested)
    result = ratchet(project, "run")
    assert result.returncode == 2
    assert "members" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_portfolio_whose_members_cannot_start_is_a_usage_error(tmp_path: Path) -> None:
    project = portfolio_project(tmp_path, '[[proposer.members]]\nkind = "knobs"\n', 1)
    result = ratchet(project, "run")
    assert result.returncode == 2
    assert "no portfolio member could start: knobs:" in result.stderr
