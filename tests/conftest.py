"""Real git repositories in temporary folders, and ratchet run as a real subprocess."""

from __future__ import annotations

import itertools
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# the `docker_image` fixture: a daemon and a test image, or a skip saying why not
pytest_plugins = ["docker_support"]

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test User",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test User",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}


def git(project: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", *args],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
        check=True,
    )
    return proc.stdout.strip()


def write_files(root: Path, files: dict[str, str]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(content).lstrip("\n"))
        if name.endswith(".sh"):
            path.chmod(0o755)


def make_project(root: Path, files: dict[str, str], spec: str | None = None) -> Path:
    """A git repository with `files` and `ratchet.toml`, all committed on `main`."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    all_files = {".gitignore": ".ratchet/\n", **files}
    if spec is not None:
        all_files["ratchet.toml"] = spec
    write_files(root, all_files)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


def ratchet(
    project: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`ratchet ARGS` in `project`, as a user would type it."""
    return subprocess.run(
        [sys.executable, "-m", "ratchet", *args],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV, **(env or {})},
        timeout=timeout,
    )


def experiments(project: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(project / ".ratchet" / "journal.db")
    db.row_factory = sqlite3.Row
    rows = [dict(r) for r in db.execute("SELECT * FROM experiments ORDER BY id")]
    db.close()
    return rows


def decisions(project: Path) -> list[str | None]:
    return [row["decision"] for row in experiments(project)]


def check_consistent(project: Path, run: str = "default") -> None:
    """The journal and the run branch agree: what `kill -9` at any moment must keep true."""
    rows = experiments(project)
    assert all(r["decision"] is not None for r in rows), "an experiment has no decision"
    ids = [r["id"] for r in rows]
    assert ids == sorted(set(ids))
    keeps = {r["commit_sha"]: r for r in rows if r["decision"] == "keep"}
    # the branch is exactly the chain of kept commits (in the order they were kept: with
    # parallel slots, not always the order their experiments started in)
    chain = git(project, "rev-list", "--reverse", f"ratchet/{run}").split()
    assert set(chain[-len(keeps) :]) == set(keeps)
    # every keep's parent is the keep before it
    for before, after in itertools.pairwise(chain[-len(keeps) :]):
        assert keeps[after]["parent"] == before
    tsv = (project / ".ratchet" / "results.tsv").read_text().splitlines()
    assert len(tsv) == len(rows) + 1
    assert git(project, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(project, "status", "--porcelain") == ""


SCORE_SPEC = """
[sandbox]
kind = "{sandbox}"
{sandbox_extra}
[scope]
editable = ["value.py"]
[metric]
command = "{python} score.py"
name = "score"
goal = "minimize"
budget = "{budget}"
grace = "0.5s"
[run]
max_experiments = {max_experiments}
[proposer]
kind = "command"
command = '''{propose}'''
budget = "20s"
"""

SCORE_FILES = {
    "value.py": "X = 5\n",
    "score.py": """
        from value import X
        print(f"score: {(X - 2) ** 2}")
    """,
}


@pytest.fixture
def score_project(tmp_path: Path) -> Callable[..., Path]:
    """A project whose metric is (X - 2)^2 for the constant X in value.py."""

    def build(
        propose: str,
        max_experiments: int = 1,
        budget: str = "20s",
        files: dict[str, str] | None = None,
        extra: str = "",
        sandbox: str = "process",
        sandbox_extra: str = "",
    ) -> Path:
        """The process layer by default: these tests watch files outside the worktree."""
        spec = SCORE_SPEC.format(
            python=sys.executable,
            propose=propose,
            budget=budget,
            max_experiments=max_experiments,
            sandbox=sandbox,
            sandbox_extra=sandbox_extra,
        )
        return make_project(tmp_path / "project", {**SCORE_FILES, **(files or {})}, spec + extra)

    return build


def layer_or_skip(layer: str) -> None:
    """Skip a test of the `bwrap` layer where bubblewrap's self-check fails, saying why."""
    if layer == "bwrap":
        from ratchet.sandbox.bwrap import bwrap_self_check

        works, why = bwrap_self_check("bwrap", False)
        if not works:
            pytest.skip(f"bubblewrap's self-check failed here: {why}")


# The files of long end-to-end runs (a minute each on a loaded 2-core machine), handed to
# the xdist workers first: the suite's wall time ends with its last test, and a long run
# dealt out at the end would leave the other workers idle while it runs. Only files of
# plain `ratchet run` subprocesses: those sharing a Ray cluster, a docker daemon or a
# browser keep their place, so that their setup does not meet the busiest minutes.
# Collection order within a file is kept.
LONG_RUNS_FIRST = (
    "test_suite_run.py",
    "test_agent_clis_real.py",
    "test_demo.py",
    "test_scope_caps.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: place for place, name in enumerate(LONG_RUNS_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
