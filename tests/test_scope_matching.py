"""Matching many paths at once (`matching`) accepts exactly what matching them one by one
(`matches`) does: the start of a run checks every tracked file against the scope with it."""

from __future__ import annotations

import pytest

from ratchet.specmodel import matches, matching

PATHS = [
    "train.py",
    "src/model.py",
    "src/deep/nested/layer.py",
    "src/deep/nested/data.json",
    ".hidden/config.py",
    "docs/readme.md",
    "initial_program.py",
    "a{b}.py",
]


@pytest.mark.parametrize(
    "patterns",
    [
        ["train.py"],
        ["src/**/*.py"],
        ["**/*.py"],
        ["src/*.py", "docs/*.md"],
        ["{train,initial_program}.py"],
        ["initial_program.py#EVOLVE-BLOCK"],
        [".hidden/*"],
        ["nothing/**"],
        [],
    ],
)
def test_matching_agrees_with_matches_path_by_path(patterns: list[str]) -> None:
    assert matching(PATHS, patterns) == [p for p in PATHS if matches(p, patterns)]


def test_a_run_on_a_big_repository_checks_its_scope_in_one_pass() -> None:
    paths = [f"pkg{i // 100}/module{i}.py" for i in range(20_000)] + ["train.py"]
    assert matching(paths, ["train.py"]) == ["train.py"]
    assert len(matching(paths, ["pkg1/*.py"])) == 100
