"""The dashboard's JSON API and pages over a real run: pagination, escaping, the token
rules, and reviews recorded in the journal's audit table as the CLI's are."""

from __future__ import annotations

import json
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from conftest import git, ratchet
from ratchet.dashboard.app import create_app
from view_support import HOSTILE, start_dashboard, stop, view_project

TOKEN = "s3cret-token-for-tests"
LOOPBACK = "http://127.0.0.1"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = view_project(tmp_path_factory.mktemp("dashboard"))
    git(root, "config", "user.name", "Lead Person")
    git(root, "config", "user.email", "lead@example.com")
    result = ratchet(root, "run", timeout=300)
    assert result.returncode == 0, result.stderr
    return root


@pytest.fixture
def client(project: Path) -> Iterator[TestClient]:
    app = create_app(project, None, {"measuring": 30.0, "proposing": 300.0})
    with TestClient(app, base_url=LOOPBACK) as test_client:
        yield test_client


def journal_rows(project: Path, query: str, *args: Any) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(project / ".ratchet" / "journal.db")
    try:
        return db.execute(query, args).fetchall()
    finally:
        db.close()


def keep_ids(project: Path) -> list[int]:
    rows = journal_rows(project, "SELECT id FROM experiments WHERE decision = 'keep'"
                                 " AND proposer != 'baseline' ORDER BY id")  # fmt: skip
    return [r[0] for r in rows]


def test_run_summary_matches_the_journal(client: TestClient, project: Path) -> None:
    runs = client.get("/api/runs").json()
    assert [r["name"] for r in runs] == ["default"]
    run = client.get("/api/runs/default").json()
    assert run["baseline"]["value"] == 9 and run["best"]["value"] == 0
    assert run["experiments"] == 6 and run["keeps"] == 3 and run["since_keep"] == 2
    assert run["decisions"] == {"keep": 3, "discard": 2, "crash": 1}
    assert run["categories"] == {"kept": 3, "rejected": 2, "failed to measure": 1}
    assert run["in_flight"] == []
    assert client.get("/api/runs/nope").status_code == 404


def test_experiments_are_paginated_and_filtered(client: TestClient, project: Path) -> None:
    every = [r[0] for r in journal_rows(project, "SELECT id FROM experiments ORDER BY id DESC")]
    first = client.get("/api/runs/default/experiments", params={"limit": 3}).json()
    second = client.get("/api/runs/default/experiments", params={"limit": 3, "offset": 3}).json()
    third = client.get("/api/runs/default/experiments", params={"limit": 3, "offset": 6}).json()
    assert first["total"] == len(every) == 7
    pages = [first, second, third]
    assert [e["id"] for p in pages for e in p["experiments"]] == every
    # or page on from the last id seen: the same pages, no offset to skip
    keyset, before = [], None
    while True:
        params = {"limit": 3, **({"before": before} if before else {})}
        page = client.get("/api/runs/default/experiments", params=params).json()
        if not page["experiments"]:
            break
        keyset += [e["id"] for e in page["experiments"]]
        before = page["next_before"]
    assert keyset == every
    kept = client.get("/api/runs/default/experiments", params={"category": "kept"}).json()
    assert {e["decision"] for e in kept["experiments"]} == {"keep"} and kept["total"] == 4
    crash = client.get("/api/runs/default/experiments", params={"decision": "crash"}).json()
    assert crash["total"] == 1 and "X = 0 is not allowed" in crash["experiments"][0]["why"]
    bad = client.get("/api/runs/default/experiments", params={"decision": "maybe"})
    assert bad.status_code == 400 and bad.json()["detail"] == "no decision 'maybe'"
    too_many = client.get("/api/runs/default/experiments", params={"limit": 100_000})
    assert too_many.status_code == 422
    page = client.get("/runs/default/experiments", params={"per_page": 10, "decision": "discard"})
    assert page.status_code == 200 and "2 experiments" in page.text


def test_points_page_on_from_the_last_id(client: TestClient) -> None:
    whole = client.get("/api/runs/default/points").json()
    assert whole["columns"] == ["id", "decision", "value", "baseline"]
    assert len(whole["points"]) == 7 and whole["points"][0][3] == 1  # the baseline first
    paged, after = [], 0
    while True:
        page = client.get("/api/runs/default/points", params={"after": after, "limit": 3}).json()
        if not page["points"]:
            break
        paged += page["points"]
        after = page["last"]
    assert paged == whole["points"]
    assert whole["categories"]["crash"] == "failed to measure"


def test_experiment_has_its_patch_measurements_and_cost(client: TestClient, project: Path) -> None:
    keep = keep_ids(project)[0]
    found = client.get(f"/api/experiments/{keep}").json()
    assert "-X = 5" in found["patch"] and "+X = 4" in found["patch"]
    assert found["diffstat"] == [{"path": "value.py", "added": 1, "removed": 1, "binary": False}]
    assert found["measurements"] and "score: 4" in found["measurements"][0]["output_tail"]
    assert found["reviewable"] is True and found["review"]["state"] in ("pending", "approved",
                                                                         "rejected")  # fmt: skip
    assert found["rationale"] == "X to 4: " + HOSTILE
    assert client.get("/api/experiments/99999").status_code == 404


def test_hostile_text_is_escaped_on_every_page(client: TestClient, project: Path) -> None:
    keep = keep_ids(project)[0]
    pages = [f"/experiments/{keep}", "/runs/default/experiments", "/compare", "/runs/default"]
    for path in pages:
        text = client.get(path).text
        assert "<script>window.pwned" not in text and "<img src=x" not in text, path
    detail = client.get(f"/experiments/{keep}").text
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in detail
    assert "&lt;img src=x onerror=&#34;window.pwned=2&#34;&gt;" in detail
    policy = client.get("/runs/default").headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy


def test_compare_shows_runs_side_by_side(client: TestClient) -> None:
    page = client.get("/compare", params={"runs": "default"})
    assert page.status_code == 200
    row = page.text.split("<tbody>")[1].split("</tbody>")[0]
    cells = [c.split(">")[-1] for c in row.split("</td>")[:-1]]
    # run, metric, baseline, best, change, experiments, keeps, failed
    assert cells[1:8] == ["score (minimize)", "9", "0", "-9", "6", "3", "1"]


def test_approve_and_reject_go_through_governance(client: TestClient, project: Path) -> None:
    first, second, _ = keep_ids(project)
    done = client.post(f"/api/experiments/{first}/approve", json={"note": "looks <b>right</b>"})
    assert done.status_code == 200, done.text
    assert done.json()["verdict"] == "approved"
    assert done.json()["who"] == "Lead Person <lead@example.com>"
    rejected = client.post(f"/api/experiments/{second}/reject", json={"note": "a fluke"})
    assert rejected.json()["verdict"] == "rejected"
    audit = journal_rows(project, "SELECT event, detail FROM audit WHERE event IN"
                                  " ('approved', 'rejected') ORDER BY id")  # fmt: skip
    details = [(event, json.loads(d)["experiment"], json.loads(d)["note"]) for event, d in audit]
    assert ("approved", first, "looks <b>right</b>") in details
    assert ("rejected", second, "a fluke") in details
    # the CLI sees the same review
    review = json.loads(ratchet(project, "review", "--json").stdout)
    states = {k["id"]: k["state"] for k in review["keeps"]}
    assert states[first] == "approved" and states[second] == "rejected"
    keeps = client.get("/api/runs/default/keeps").json()["keeps"]
    assert {k["id"]: k["review"]["state"] for k in keeps}[second] == "rejected"
    # only keeps after the baseline can be reviewed, as on the command line
    crash = journal_rows(project, "SELECT id FROM experiments WHERE decision = 'crash'")[0][0]
    refused = client.post(f"/api/experiments/{crash}/approve", json={})
    assert refused.status_code == 400 and "not a keep" in refused.json()["detail"]
    baseline = client.post("/api/experiments/1/approve", json={})
    assert baseline.status_code == 400 and "baseline" in baseline.json()["detail"]


def test_writes_need_json_from_the_page_itself(client: TestClient, project: Path) -> None:
    keep = keep_ids(project)[-1]
    before = journal_rows(project, "SELECT COUNT(*) FROM audit")[0][0]
    form = client.post(f"/api/experiments/{keep}/approve", data={"note": "x"})
    assert form.status_code == 415
    cross = client.post(f"/api/experiments/{keep}/approve", json={},
                        headers={"Origin": "http://evil.example"})  # fmt: skip
    assert cross.status_code == 403
    assert journal_rows(project, "SELECT COUNT(*) FROM audit")[0][0] == before


def test_without_a_token_only_loopback_host_names_are_served(project: Path) -> None:
    app = create_app(project)
    with TestClient(app, base_url="http://attacker.example") as rebound:
        answer = rebound.get("/api/runs")
    assert answer.status_code == 403


def test_with_a_token_every_request_carries_it(project: Path) -> None:
    app = create_app(project, TOKEN)
    keep = keep_ids(project)[-1]
    with TestClient(app, base_url=LOOPBACK) as c:
        for path in ("/api/runs", "/runs/default", f"/experiments/{keep}", "/static/dashboard.js",
                     "/api/openapi.json"):  # fmt: skip
            assert c.get(path).status_code == 401, path
        assert (
            c.get("/api/runs", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
        )
        assert c.get("/api/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert c.get("/api/runs", headers={"X-Ratchet-Token": TOKEN}).status_code == 200
        # approve needs it even on loopback
        before = journal_rows(project, "SELECT COUNT(*) FROM audit")[0][0]
        assert c.post(f"/api/experiments/{keep}/approve", json={}).status_code == 401
        assert journal_rows(project, "SELECT COUNT(*) FROM audit")[0][0] == before
        ok = c.post(f"/api/experiments/{keep}/approve", json={}, headers={"X-Ratchet-Token": TOKEN})
        assert ok.status_code == 200
        # the browser: ?token= once sets a cookie; then the cookie alone carries it
        first = c.get("/runs/default", params={"token": TOKEN})
        assert first.status_code == 200 and "httponly" in first.headers["set-cookie"].lower()
        assert c.get("/api/runs").status_code == 200


def test_openapi_schema_describes_the_api(client: TestClient) -> None:
    schema = client.get("/api/openapi.json").json()
    paths = set(schema["paths"])
    assert {"/api/runs", "/api/runs/{run}", "/api/runs/{run}/experiments",
            "/api/runs/{run}/points", "/api/experiments/{experiment}",
            "/api/experiments/{experiment}/approve", "/api/experiments/{experiment}/reject",
            "/api/runs/{run}/events"} <= paths  # fmt: skip
    assert not any(not p.startswith("/api/") for p in paths)


def test_event_stream_sends_the_run(client: TestClient) -> None:
    with client.stream("GET", "/api/runs/default/events") as stream:
        lines = stream.iter_lines()
        event = next(line for line in lines if line.startswith("event: "))
        data = json.loads(next(lines)[len("data: ") :])
    assert event == "event: update"
    assert data["summary"]["keeps"] == 3 and len(data["points"]) == 7


def test_dashboard_beyond_loopback_needs_a_token(project: Path) -> None:
    result = ratchet(project, "dashboard", "--host", "0.0.0.0", "--port", "1")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--token" in result.stderr
    short = ratchet(project, "dashboard", "--token", "abc")
    assert short.returncode == 2 and "at least 8" in short.stderr


def test_served_for_real_with_a_token(project: Path) -> None:
    child, url = start_dashboard(project, "--token", TOKEN)
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/api/runs", timeout=30)
        assert refused.value.code == 401
        request = urllib.request.Request(f"{url}/api/runs", headers={"X-Ratchet-Token": TOKEN})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert json.load(answer)[0]["name"] == "default"
    finally:
        stop(child)
    assert TOKEN not in (child.stdout.read() if child.stdout else "")  # never printed


def test_tally_follows_the_journal_as_it_grows(project: Path, tmp_path: Path) -> None:
    """Folded once, then kept up to date: the same counts as `Journal.counts` at each step,
    an experiment in flight included (it holds the frontier back)."""
    import shutil

    from ratchet.dashboard.tally import Tally
    from ratchet.decisions import user_counts
    from ratchet.journal import Journal

    copy = tmp_path / "journal.db"
    source = Journal(project / ".ratchet" / "journal.db")
    source.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    source.close()
    shutil.copyfile(project / ".ratchet" / "journal.db", copy)
    journal = Journal(copy)
    tally = Tally("default")

    def agrees() -> None:
        counts = journal.counts("default")
        decisions, categories = user_counts(journal.decision_counts("default"),
                                            journal.baseline_decision_counts("default"))  # fmt: skip
        got = tally.read(journal)
        assert (got["experiments"], got["keeps"], got["since_keep"], got["cost_usd"]) == (
            counts.experiments, counts.keeps, counts.since_keep, counts.cost_usd)  # fmt: skip
        assert got["elapsed_seconds"] == round(counts.elapsed, 3)
        assert got["decisions"] == decisions and got["categories"] == categories

    agrees()
    parent = "0" * 40
    slow = journal.begin_experiment("default", 0, parent, "command")  # stays in flight
    fast = journal.begin_experiment("default", 1, parent, "command")
    journal.record_proposal(fast, "r", "", [], {}, 1.0, 10, 0.25)
    journal.decide(fast, "discard", "not better", 3.0)
    agrees()
    assert tally.frontier == slow  # nothing past the experiment in flight is folded
    journal.decide(slow, "keep", "better", 0.5)
    agrees()
    assert tally.read(journal)["since_keep"] == 1 and tally.frontier == fast + 1
    journal.close()
