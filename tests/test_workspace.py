"""Slots: each proposal starts from exactly the parent's tree, whatever came before."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conftest import experiments, git, ratchet


def test_each_proposal_starts_from_a_clean_parent_tree(
    score_project: Callable[..., Path], tmp_path: Path
) -> None:
    # the metric leaves files behind (ignored and not), the proposer checks they are gone
    leave = "mkdir -p out/deep && touch out/deep/model.bin leftover.txt run.log && "
    check = tmp_path / "check.sh"
    check.write_text(
        "set -e\n"
        "test ! -e leftover.txt && test ! -e out && test ! -e run.log && test ! -e junk.tmp\n"
        'test "$(git status --porcelain --ignored)" = ""\n'
        "touch junk.tmp\n"  # ignored, made by the proposer: removed before measuring
        "echo 'X = 3' > value.py\n"
    )
    project = score_project(
        f"sh {check}", max_experiments=3, files={".gitignore": ".ratchet/\n*.log\n*.tmp\n"}
    )
    spec = (project / "ratchet.toml").read_text()
    spec = spec.replace('command = "', f'command = "{leave}', 1)
    (project / "ratchet.toml").write_text(spec)
    git(project, "commit", "-qam", "leave files behind")
    result = ratchet(project, "run")
    assert result.returncode == 0, result.stderr
    assert [r["decision"] for r in experiments(project)] == [
        "keep",
        "keep",
        "no-change",
        "no-change",
    ]
    assert "junk.tmp" not in experiments(project)[1]["patch"]


def test_a_proposal_that_deletes_the_slots_git_file_is_survived(
    score_project: Callable[..., Path],
) -> None:
    project = score_project("rm -rf .git && echo 'X = 2' > value.py", max_experiments=2)
    result = ratchet(project, "run")
    assert result.returncode == 0, result.stderr
    rows = experiments(project)
    assert [r["decision"] for r in rows] == ["keep", "invalid-proposal", "invalid-proposal"]
    assert "lost its .git file" in rows[1]["why"] and "the slot was rebuilt" in rows[1]["why"]
    slot = project / ".ratchet" / "slots" / "0"
    assert (slot / ".git").is_file()  # a worktree of its own again, not the project's
    assert git(slot, "rev-parse", "--show-toplevel") == str(slot.resolve())
    assert git(project, "rev-parse", "ratchet/default") == git(project, "rev-parse", "main")
    assert git(project, "status", "--porcelain") == ""
