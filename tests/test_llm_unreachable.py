"""An `llm` endpoint that cannot be reached: said at the start with its URL, before the
baseline; reached no more later, it is tried once per back-off period, not in every
experiment with the SDK's retries."""

from __future__ import annotations

import json
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import make_project, ratchet
from ratchet.proposers import ProposalError, ProposerContext
from ratchet.proposers.llm import LLMProposer
from ratchet.proposers.providers import BACKOFF, BACKOFF_FIRST
from ratchet.sandbox import ProcessSandbox
from ratchet.spec import parse_spec


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Dropper:
    """A listener that accepts each connection and closes it at once, counting them:
    the endpoint's host answers, its server does not."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/v1"
        self.accepted = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.accepted += 1
            connection.close()


@pytest.fixture
def dropper() -> Iterator[Dropper]:
    served = Dropper()
    yield served
    served.server.close()
    BACKOFF.reached(served.url)


def test_an_unreachable_endpoint_stops_the_run_before_the_baseline(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    spec = f"""
[sandbox]
kind = "process"
[scope]
editable = ["value.py"]
[metric]
command = "{sys.executable} -c 'print(1)'"
name = "score"
[proposer]
kind = "llm"
model = "m"
base_url = "{url}"
"""
    project = make_project(tmp_path / "p", {"value.py": "X = 1\n"}, spec)
    started = time.monotonic()
    result = ratchet(project, "run")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"cannot reach its endpoint {url}" in lines[0]
    assert time.monotonic() - started < 60  # no SDK retries paid at the start
    journal = project / ".ratchet" / "journal.db"
    if journal.exists():  # no baseline was measured
        rows = sqlite3.connect(journal).execute("SELECT COUNT(*) FROM experiments").fetchone()
        assert rows[0] == 0


def test_a_lost_endpoint_is_tried_once_per_back_off(tmp_path: Path, dropper: Dropper) -> None:
    (tmp_path / "value.py").write_text("X = 1\n")
    spec = parse_spec(
        {"scope": {"editable": ["value.py"]}, "metric": {"command": "x", "name": "score"},
         "proposer": {"kind": "llm", "model": "m", "base_url": dropper.url, "retries": 1,
                      "budget": "10s"}},
        "t",
    )  # fmt: skip
    context = ProposerContext(spec, tmp_path, tmp_path, ["value.py"], [], ProcessSandbox(),
                              tmp_path)  # fmt: skip
    assert BACKOFF_FIRST > 10  # the second proposal's budget ends within the back-off
    proposer = LLMProposer(context)  # the host answers: the run starts
    import openai  # noqa: F401  (imported before the clock starts: seconds on a busy machine)

    brief = tmp_path / "brief.json"
    brief.write_text(json.dumps({"history": []}))
    with pytest.raises(ProposalError) as first:
        proposer.propose(tmp_path, brief)
    assert f"endpoint {dropper.url} cannot be reached" in str(first.value)
    assert f"tries it in {BACKOFF_FIRST:.0f}s" in str(first.value)
    tried = dropper.accepted
    assert tried >= 1
    started = time.monotonic()
    with pytest.raises(ProposalError) as second:  # within the back-off: not tried
        proposer.propose(tmp_path, brief)
    assert dropper.accepted == tried
    assert dropper.url in str(second.value) and "back-off" in str(second.value)
    assert time.monotonic() - started < BACKOFF_FIRST  # waited its budget, no more
