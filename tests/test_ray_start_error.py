"""A Ray cluster that does not start is the environment's failure, said in one line with
what to do, exit 1: not "ratchet's own error ... Please report it"."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import ratchet

pytest.importorskip("ray", reason="the Ray executor needs Ray: pip install 'ratchet-loop[ray]'")

EXECUTOR = """
[executor]
kind = "ray"
parallel = 1
"""


def test_a_local_cluster_that_cannot_start_is_one_line_with_what_to_do(
    tmp_path: Path, score_project: Callable[..., Path]
) -> None:
    """Ray's temporary folder under a regular file: its local cluster fails at once, with
    an OSError from inside `ray.init` (a startup timeout takes 30 s and more to show)."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    project = score_project("true", extra=EXECUTOR)
    env = {"RAY_TMPDIR": str(blocker / "ray"), "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_ADDRESS": ""}  # fmt: skip
    result = ratchet(project, "run", env=env)
    assert result.returncode == 1, result.stderr
    # Ray itself may print a warning of its own first (its SIGTERM handler, off the main
    # thread); ratchet's part is one line, and no traceback
    lines = [line for line in result.stderr.splitlines() if line.startswith("ratchet:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "Please report it" not in lines[0] and "ratchet's own error" not in lines[0]
    assert lines[0].startswith("ratchet: error: Ray did not start a local cluster ("), lines[0]
    assert "NotADirectoryError" in lines[0] and str(blocker) in lines[0]
    assert "set [executor] address to a running cluster" in lines[0]
    journal = project / ".ratchet" / "journal.db"
    if journal.exists():  # nothing was measured
        db = sqlite3.connect(journal)
        assert db.execute("SELECT COUNT(*) FROM measurements").fetchone()[0] == 0
        db.close()
