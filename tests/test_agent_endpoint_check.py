"""An agent CLI's `base_url` that no connection opens to stops the run at its start,
before the baseline, naming the URL; one that answers, or none at all (the CLI's hosted
default), lets the run go on."""

from __future__ import annotations

import socket
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import experiments, make_project, ratchet
from ratchet.decisions import BASELINE_PROPOSER

SPEC = """
[sandbox]
kind = "process"
[scope]
editable = ["value.py"]
[metric]
command = "{python} -c 'print(\\"score: 1\\")'"
name = "score"
[run]
max_experiments = 1
[proposer]
kind = "{kind}"
executable = "/bin/true"
{base_url}
"""
# the check is skipped behind a proxy; these runs must not inherit one from the shell
NO_PROXY = {v: "" for name in ("https_proxy", "http_proxy", "all_proxy")
            for v in (name, name.upper())}  # fmt: skip
KINDS = ["claude-code", "codex", "aider"]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def listening() -> Iterator[int]:
    """A port with a listener: connections open (the backlog takes them unaccepted)."""
    server = socket.create_server(("127.0.0.1", 0))
    yield int(server.getsockname()[1])
    server.close()


def _project(tmp_path: Path, kind: str, base_url: str | None) -> Path:
    line = f'base_url = "{base_url}"' if base_url else ""
    spec = SPEC.format(python=sys.executable, kind=kind, base_url=line)
    return make_project(tmp_path / "p", {"value.py": "X = 1\n"}, spec)


@pytest.mark.parametrize("kind", KINDS)
def test_a_closed_endpoint_stops_the_run_before_the_baseline(tmp_path: Path, kind: str) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    project = _project(tmp_path, kind, url)
    result = ratchet(project, "run", env=NO_PROXY)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"the {kind} proposer cannot reach its endpoint {url}" in lines[0]
    assert "start the model's server or fix [proposer] base_url" in lines[0]
    journal = project / ".ratchet" / "journal.db"
    if journal.exists():  # no baseline was measured
        db = sqlite3.connect(journal)
        assert db.execute("SELECT COUNT(*) FROM experiments").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM measurements").fetchone()[0] == 0
        db.close()


@pytest.mark.parametrize("kind", KINDS)
def test_an_open_endpoint_lets_the_run_go_on(tmp_path: Path, kind: str, listening: int) -> None:
    project = _project(tmp_path, kind, f"http://127.0.0.1:{listening}/v1")
    result = ratchet(project, "run", env=NO_PROXY)
    assert "cannot reach its endpoint" not in result.stderr
    assert result.returncode == 0, result.stderr
    rows = experiments(project)
    assert rows[0]["proposer"] == BASELINE_PROPOSER
    assert len(rows) == 2  # and the one experiment ran (/bin/true proposes nothing)


def test_without_a_base_url_nothing_is_checked(tmp_path: Path) -> None:
    """The CLI's hosted default is not ratchet's to probe: a machine without network
    still starts the run (the CLI says what it can reach)."""
    project = _project(tmp_path, "claude-code", None)
    result = ratchet(project, "run", env=NO_PROXY)
    assert "cannot reach its endpoint" not in result.stderr
    assert result.returncode == 0, result.stderr
    assert experiments(project)[0]["proposer"] == BASELINE_PROPOSER
