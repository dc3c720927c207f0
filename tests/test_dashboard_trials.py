"""Harness mode on the dashboard: an experiment's page and API list its trials task by
task (search and holdout, marked), each with its verifier's tail and its trace, escaped."""

from __future__ import annotations

import json
from pathlib import Path

from starlette.testclient import TestClient
from test_scale import RUN, _fill

from ratchet.dashboard.app import create_app
from ratchet.journal import Journal
from ratchet.suite.store import TrialStore
from ratchet.suite.trials import (
    TRAJECTORY,
    VERIFIER_LOG,
    Split,
    TrialResult,
    TrialStatus,
    TrialUsage,
)

LOOPBACK = "http://127.0.0.1"


def test_an_experiment_shows_its_trials_and_verifier_tails(tmp_path: Path) -> None:
    journal = Journal(tmp_path / ".ratchet" / "journal.db")
    keep = _fill(journal, 12)["keep"][-1]
    folder = tmp_path / ".ratchet" / "trials" / "t"
    folder.mkdir(parents=True)
    (folder / VERIFIER_LOG).write_text("checking\n<script>alert(1)</script> expected 33\n")
    steps = [{"step_id": 1, "source": "agent", "message": "I will count <b>errors</b>",
              "tool_calls": [{"function_name": "shell", "arguments": {"cmd": "grep -c ERROR"}}],
              "observation": {"results": [{"content": "113"}]}}]  # fmt: skip
    (folder / TRAJECTORY).write_text(json.dumps({"steps": steps}))
    failed = TrialResult("count-errors", 0, TrialStatus.FAILED, 0.0, {}, 2.5, TrialUsage())
    passed = TrialResult("hello-file", 0, TrialStatus.PASSED, 1.0, {}, 1.5, TrialUsage())
    TrialStore(journal).record(RUN, keep, keep, Split.SEARCH, [(failed, folder)])
    TrialStore(journal).record(RUN, keep, keep, Split.HOLDOUT, [(passed, tmp_path / "h")])
    journal.close()
    with TestClient(create_app(tmp_path), base_url=LOOPBACK) as client:
        found = client.get(f"/api/experiments/{keep}").json()["trials"]
        assert [(t["task"], t["split"], t["status"], t["reward"]) for t in found] == [
            ("count-errors", "search", "failed", 0.0),
            ("hello-file", "holdout", "passed", 1.0),
        ]
        assert found[0]["verifier_tail"].endswith("<script>alert(1)</script> expected 33")
        assert "agent: I will count <b>errors</b>" in found[0]["trajectory"]
        assert "call shell" in found[0]["trajectory"] and "-> 113" in found[0]["trajectory"]
        assert "no trajectory was recorded" in found[1]["trajectory"]
        page = client.get(f"/experiments/{keep}").text
        assert 'id="trials"' in page and "count-errors" in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt; expected 33" in page
        assert "<script>alert(1)</script>" not in page and "<b>errors</b>" not in page
        assert "I will count &lt;b&gt;errors&lt;/b&gt;" in page
        other = client.get(f"/api/experiments/{keep - 1}").json()
        assert other["trials"] == []
