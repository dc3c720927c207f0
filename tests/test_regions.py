"""Region scopes: a file editable only between its markers (OpenEvolve's EVOLVE-BLOCK)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fake_llm import FakeLLM, tool_call

from conftest import experiments, make_project, ratchet
from ratchet.regions import find_regions, region_violation
from ratchet.spec import SpecError, parse_spec

EVOLVE = ("# EVOLVE-BLOCK-START", "# EVOLVE-BLOCK-END")

PROGRAM = """\
import sys

OFFSET = 2
# EVOLVE-BLOCK-START
def solve():
    return 5
# EVOLVE-BLOCK-END


if __name__ == "__main__":
    print(f"score: {(solve() - OFFSET) ** 2}")
"""

# the proposer: what experiment N does, read from the brief ratchet writes for it
PROPOSE = """\
import json, os, pathlib
brief = json.loads(pathlib.Path(os.environ["RATCHET_BRIEF"]).read_text())
step = brief["experiment"]
path = pathlib.Path("initial_program.py")
text = path.read_text()
assert brief["scope"]["regions"]["initial_program.py"].startswith("only the lines between")
if step == 2:    # inside the block: kept
    text = text.replace("return 5", "return 3")
    pathlib.Path("run.log").write_text("a log the directive asked for\\n")
elif step == 3:  # outside the block: the known optimum, by cheating
    text = text.replace("OFFSET = 2", "OFFSET = 3")
elif step == 4:  # the markers removed
    text = text.replace("# EVOLVE-BLOCK-START\\n", "").replace("# EVOLVE-BLOCK-END\\n", "")
elif step == 5:  # a marker line itself edited
    text = text.replace("# EVOLVE-BLOCK-END", "# EVOLVE-BLOCK-END, moved")
path.write_text(text)
print("step", step)
"""


def _spec(propose: Path, extra_scope: str = "") -> str:
    return f"""
[scope]
editable = ["initial_program.py#EVOLVE-BLOCK"]
outputs = ["run.log"]
{extra_scope}
[metric]
command = "{sys.executable} initial_program.py"
name = "score"
goal = "minimize"
budget = "30s"
[policy]
kind = "greedy"
[run]
max_experiments = 4
[sandbox]
kind = "process"
[proposer]
kind = "command"
command = "{sys.executable} {propose}"
"""


def test_inside_kept_outside_and_markers_refused_with_lines(tmp_path: Path) -> None:
    propose = tmp_path / "propose.py"
    propose.write_text(PROPOSE)
    project = make_project(tmp_path / "p", {"initial_program.py": PROGRAM}, _spec(propose))
    (project / "run.log").write_text("left by an earlier manual run\n")  # untracked: no block
    result = ratchet(project, "run")
    assert result.returncode == 0, result.stderr
    rows = {r["id"]: r for r in experiments(project)}
    assert rows[2]["decision"] == "keep" and rows[2]["value"] == 1.0
    assert rows[2]["files"] == '["initial_program.py"]'  # run.log is no part of it
    assert rows[3]["decision"] == "out-of-scope"
    assert "initial_program.py at line 3, outside its EVOLVE-BLOCK (lines 5-6)" in rows[3]["why"]
    assert rows[4]["decision"] == "out-of-scope"
    assert "EVOLVE-BLOCK markers (1 regions before, 0 after)" in rows[4]["why"]
    assert rows[5]["decision"] == "out-of-scope"
    assert "at line 7, outside its EVOLVE-BLOCK" in rows[5]["why"]
    kept = (project / ".ratchet/slots/0/initial_program.py").read_text()
    assert "return 3" in kept and "OFFSET = 2" in kept


def test_markers_named_in_scope(tmp_path: Path) -> None:
    text = "keep = 1\n// BEGIN tune\nx = 2\n// END tune\ntail = 3\n"
    markers = ("// BEGIN tune", "// END tune")
    assert [(r.start_marker, r.end_marker) for r in find_regions(text, "tune", markers)] == [(2, 4)]
    assert region_violation("a.cfg", text, text.replace("x = 2", "x = 9"), "tune", markers) is None
    why = region_violation("a.cfg", text, text.replace("tail = 3", "tail = 4"), "tune", markers)
    assert why is not None and "at line 5, outside its tune (lines 3-3)" in why
    spec = parse_spec(
        {
            "scope": {
                "editable": ["*.cfg#tune"],
                "markers": {"tune": list(markers)},
            },
            "metric": {"command": "true", "name": "m"},
        },
        "ratchet.toml",
    )
    assert spec.scope.region_of("a.cfg") == ("tune", markers)
    assert spec.scope.region_of("b.py") is None


def test_region_violations() -> None:
    two = "a\n# EVOLVE-BLOCK-START\nb\n# EVOLVE-BLOCK-END\nc\n# EVOLVE-BLOCK-START\nd\n# EVOLVE-BLOCK-END\n"
    # both regions may change, and grow
    assert region_violation("p.py", two, two.replace("b\n", "b1\nb2\n").replace("d", "e"),
                            "EVOLVE-BLOCK", EVOLVE) is None  # fmt: skip
    between = region_violation("p.py", two, two.replace("c\n", "c!\n"), "EVOLVE-BLOCK", EVOLVE)
    assert between is not None and "at line 5" in between
    added = region_violation("p.py", two, "new first line\n" + two, "EVOLVE-BLOCK", EVOLVE)
    assert added is not None and "at line 1," in added
    deleted = region_violation("p.py", two, None, "EVOLVE-BLOCK", EVOLVE)
    assert deleted is not None and "deletes p.py" in deleted
    unclosed = region_violation("p.py", two, two.rsplit("# EVOLVE", 1)[0], "EVOLVE-BLOCK", EVOLVE)
    assert unclosed is not None and "never closed" in unclosed
    none = region_violation("p.py", "a\n", "b\n", "EVOLVE-BLOCK", EVOLVE)
    assert none is not None and "has no EVOLVE-BLOCK region" in none


def test_unknown_region_is_a_spec_error() -> None:
    with pytest.raises(SpecError) as error:
        parse_spec(
            {"scope": {"editable": ["a.py#NOPE"]}, "metric": {"command": "true", "name": "m"}},
            "ratchet.toml",
        )
    assert "names a region 'NOPE' that [scope] markers does not define" in str(error.value)


def test_the_llm_proposer_is_told_the_region_and_its_edit_outside_is_refused(
    tmp_path: Path,
) -> None:
    script = [
        tool_call("edit", path="initial_program.py", search="OFFSET = 2", replace="OFFSET = 5"),
        tool_call("edit", path="initial_program.py", search="return 5", replace="return 2"),
        tool_call("finish", rationale="the optimum, inside the block"),
    ]
    with FakeLLM(script) as fake:
        spec = f"""
[sandbox]
kind = "process"
[scope]
editable = ["initial_program.py#EVOLVE-BLOCK"]
[metric]
command = "{sys.executable} initial_program.py"
name = "score"
[policy]
kind = "greedy"
[run]
max_experiments = 1
[proposer]
kind = "llm"
model = "fake-model"
base_url = "{fake.base_url}"
api_key_env = "FAKE_LLM_KEY"
"""
        project = make_project(tmp_path / "p", {"initial_program.py": PROGRAM}, spec)
        result = ratchet(project, "run", env={"FAKE_LLM_KEY": "sk-fake-0123456789"})
    assert result.returncode == 0, result.stderr
    first = fake.requests[0]["messages"][-1]["content"]
    assert "In initial_program.py, only the lines between '# EVOLVE-BLOCK-START'" in first
    refused = fake.requests[1]["messages"][-1]["content"]
    assert "edit refused: the proposal changed initial_program.py at line 3" in refused
    row = experiments(project)[-1]
    assert row["decision"] == "keep" and row["value"] == 0.0


def test_a_region_scoped_file_without_its_markers_is_refused_at_the_start(tmp_path: Path) -> None:
    spec = f"""
[scope]
editable = ["initial_program.py#EVOLVE-BLOCK"]
[metric]
command = "{sys.executable} initial_program.py"
name = "score"
[proposer]
kind = "command"
command = "true"
"""
    files = {"initial_program.py": "def solve():\n    return 5\nprint('score: 1')\n"}
    project = make_project(tmp_path / "p", files, spec)
    result = ratchet(project, "run")
    assert result.returncode == 2
    assert result.stderr.strip().endswith(
        "[scope] editable: initial_program.py has no EVOLVE-BLOCK region "
        "(a line '# EVOLVE-BLOCK-START', later a line '# EVOLVE-BLOCK-END')"
    )
