"""Trials as the meta proposer reads them: summaries, read_trace, failures by task in
the brief, the read-only traces/ folder, the llm proposer's list_trials and read_trace
(through the real openai SDK against the scripted fake server), and the holdout seal."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fake_llm import FakeLLM, tool_call

from ratchet.brief import fit_brief, suite_section
from ratchet.proposers.base import ProposerContext
from ratchet.proposers.llm import LLMProposer
from ratchet.sandbox import ProcessSandbox
from ratchet.spec import parse_spec
from ratchet.suite.traces import (
    HOLDOUT,
    INDEX,
    SEARCH,
    SealedTrial,
    failures_by_task,
    list_trials,
    materialize_traces,
    read_trace,
    summarize,
    write_trial_record,
)
from ratchet.suite.trials import (
    AGENT_LOG,
    TRAJECTORY,
    TRIAL_RECORD,
    VERIFIER_LOG,
    TrialResult,
    TrialStatus,
    TrialUsage,
)

FAILING_LOG = "a\nb\nc\nd\ne\nTraceback (most recent call last)\nKeyError: 'name'\n"
HOLDOUT_SECRET = "HOLDOUT-INSTRUCTION-7f3a: rename every file to upper case"


def trajectory(task: str, long_output: str = "") -> dict[str, object]:
    """An ATIF trajectory: a user step, an agent step with a tool call and its result,
    a final agent message; per-step metrics and final totals."""
    return {
        "schema_version": "ATIF-v1.2",
        "session_id": f"s-{task}",
        "agent": {"name": "harness", "version": "1", "model_name": "fake"},
        "steps": [
            {"step_id": 1, "source": "user", "message": f"Solve {task}."},
            {"step_id": 2, "source": "agent", "message": "I will look at the files.",
             "tool_calls": [{"tool_call_id": "c1", "function_name": "shell",
                             "arguments": {"cmd": "cat data.csv"}}],
             "observation": {"results": [{"source_call_id": "c1",
                                          "content": long_output or "a,b\n1,2"}]},
             "metrics": {"prompt_tokens": 300, "completion_tokens": 20}},
            {"step_id": 3, "source": "agent",
             "message": [{"type": "text", "text": "Done: wrote out.txt"}],
             "metrics": {"prompt_tokens": 400, "completion_tokens": 30}},
        ],
        "final_metrics": {"total_prompt_tokens": 700, "total_completion_tokens": 50,
                          "total_steps": 3},
    }  # fmt: skip


def make_trial(
    root: Path,
    task: str,
    attempt: int,
    status: TrialStatus,
    split: str | None = SEARCH,
    verifier: str = "",
    agent_log: str = "",
    long_output: str = "",
) -> tuple[TrialResult, Path]:
    folder = root / task / f"attempt-{attempt}"
    folder.mkdir(parents=True)
    reward = {TrialStatus.PASSED: 1.0, TrialStatus.FAILED: 0.0}.get(status)
    trial = TrialResult(task, attempt, status, reward, {} if reward is None else {"reward": reward},
                        12.5, TrialUsage(700, 50, 0.002, 2),
                        error="no reward file was written" if status is TrialStatus.ERROR else "",
                        trace_path=folder / TRAJECTORY)  # fmt: skip
    (folder / TRAJECTORY).write_text(json.dumps(trajectory(task, long_output)))
    (folder / VERIFIER_LOG).write_text(verifier or f"test_{task} ... {status.value}\n")
    (folder / AGENT_LOG).write_text(agent_log or "starting\nworking\n")
    if split is None:
        from ratchet.suite.trials import trial_to_dict

        (folder / TRIAL_RECORD).write_text(json.dumps(trial_to_dict(trial)))
    else:
        write_trial_record(folder, trial, split)
    return trial, folder


Suite = tuple[Path, list[tuple[TrialResult, Path]], Path]


@pytest.fixture
def suite(tmp_path: Path) -> Suite:
    """Search trials of three tasks (one passes, one fails twice, one errors) and one
    holdout trial whose verifier output holds a secret instruction."""
    root = tmp_path / "trials"
    trials = [
        make_trial(root, "csv-sum", 0, TrialStatus.PASSED),
        make_trial(
            root,
            "rename",
            0,
            TrialStatus.FAILED,
            agent_log="a\nb\nc\nd\ne\nTraceback (most recent call last)\nKeyError: 'name'\n",
            verifier="AssertionError: out.txt missing\nFAILED test_rename\n",
        ),
        make_trial(root, "rename", 1, TrialStatus.FAILED, long_output="x" * 20_000),
        make_trial(root, "wc", 0, TrialStatus.ERROR),
    ]
    _, holdout = make_trial(root, "sealed", 0, TrialStatus.FAILED, split=HOLDOUT,
                            verifier=HOLDOUT_SECRET)  # fmt: skip
    return root, trials, holdout


def test_a_summary_reads_the_trial_and_its_atif_trajectory(suite: Suite) -> None:
    _, trials, _ = suite
    summary = summarize(trials[1][1])
    assert (summary["task"], summary["attempt"], summary["status"]) == ("rename", 0, "failed")
    assert summary["reward"] == 0.0
    assert summary["last_error_lines"].endswith("KeyError: 'name'")
    assert len(summary["last_error_lines"].splitlines()) == 5
    assert "out.txt missing" in summary["verifier_tail"]
    assert summary["trajectory"] == {"steps": 3, "messages": 3, "tool_calls": 1,
                                     "prompt_tokens": 700, "completion_tokens": 50}  # fmt: skip
    assert summary["tokens"] == {"input": 700, "output": 50}


def test_list_trials_and_read_trace_show_search_trials_only(suite: Suite) -> None:
    root, _, _ = suite
    listed = list_trials(root)
    assert [(t["task"], t["attempt"], t["status"]) for t in listed] == [
        ("csv-sum", 0, "passed"), ("rename", 0, "failed"), ("rename", 1, "failed"),
        ("wc", 0, "error")]  # fmt: skip
    assert "sealed" not in json.dumps(listed)
    first = json.loads(read_trace(root, "rename/attempt-0"))
    assert first["status"] == "failed"
    messages = read_trace(root, "rename/attempt-0", "messages")
    assert "[1] user: Solve rename." in messages
    assert 'call shell({"cmd": "cat data.csv"})' in messages
    assert "-> a,b" in messages and "[3] agent: Done: wrote out.txt" in messages
    assert "FAILED test_rename" in read_trace(root, "rename/attempt-0", "verifier")
    with pytest.raises(SealedTrial):
        read_trace(root, "sealed/attempt-0", "verifier")
    for bad in ("../trials/rename/attempt-0", "/etc", "rename/../sealed/attempt-0", ""):
        with pytest.raises(SealedTrial):
            read_trace(root, bad)
    with pytest.raises(ValueError):
        read_trace(root, "rename/attempt-0", "files")


def test_a_long_trace_is_read_page_by_page(suite: Suite) -> None:
    root, _, _ = suite
    first = read_trace(root, "rename/attempt-1", "messages", limit=1000)
    assert "offset=1000 for more" in first
    total = int(first.rsplit(" of ", 1)[1].split(";")[0])
    assert total > 20_000
    last = read_trace(root, "rename/attempt-1", "messages", offset=total - 50, limit=1000)
    assert "Done: wrote out.txt" in last and "for more" not in last


def test_an_unmarked_or_linked_trial_folder_is_refused(tmp_path: Path, suite: Suite) -> None:
    root, _, holdout = suite
    _, unmarked = make_trial(root, "unmarked", 0, TrialStatus.FAILED, split=None)
    with pytest.raises(SealedTrial, match="not a search-split trial"):
        summarize(unmarked)
    (root / "alias").symlink_to(holdout.parent)  # a link to the holdout task's folder
    with pytest.raises(SealedTrial):
        read_trace(root, "alias/attempt-0")
    assert all(t["task"] not in ("unmarked", "sealed") for t in list_trials(root))


def test_the_brief_carries_failures_by_task_and_never_a_holdout(suite: Suite) -> None:
    _, trials, holdout = suite
    failing = failures_by_task(trials)
    assert [f["task"] for f in failing] == ["rename", "wc"]  # csv-sum passed
    rename = failing[0]
    assert (rename["trials"], rename["failed"], rename["rewards"]) == (2, 2, [0.0, 0.0])
    assert rename["statuses"] == ["failed", "failed"]
    assert failing[1]["last_error"].startswith("no reward file was written")
    section = suite_section(trials, Path("/tmp/traces"))
    assert section["traces"] == "/tmp/traces"
    text = fit_brief({"directive": "improve", **section}, 60_000)
    # the latest failure's verifier tail
    assert json.loads(text)["suite_failures"][0]["verifier_tail"] == "test_rename ... failed\n"
    sealed = TrialResult("sealed", 0, TrialStatus.FAILED, 0.0, {}, 1.0, TrialUsage())
    with pytest.raises(SealedTrial):
        failures_by_task([*trials, (sealed, holdout)])


def test_the_traces_folder_is_a_read_only_copy_of_search_trials(
    tmp_path: Path,
    suite: Suite,
) -> None:
    _, trials, holdout = suite
    (trials[0][1] / "planted").symlink_to(holdout / VERIFIER_LOG)
    dest = materialize_traces(trials, tmp_path / "brief" / "traces")
    index = json.loads((dest / INDEX).read_text())
    assert [t["id"] for t in index] == ["csv-sum/attempt-0", "rename/attempt-0",
                                        "rename/attempt-1", "wc/attempt-0"]  # fmt: skip
    copied = dest / "rename" / "attempt-0"
    assert (copied / VERIFIER_LOG).read_text().startswith("AssertionError")
    assert json.loads((copied / TRAJECTORY).read_text())["steps"][0]["source"] == "user"
    assert not (dest / "csv-sum" / "attempt-0" / "planted").exists()
    record = json.loads((copied / TRIAL_RECORD).read_text())
    assert record["split"] == SEARCH and record["trace_path"] == TRAJECTORY  # not ratchet's path
    assert HOLDOUT_SECRET not in "".join(p.read_text() for p in dest.rglob("*") if p.is_file())
    assert not os.access(copied / VERIFIER_LOG, os.W_OK) or os.geteuid() == 0
    assert (copied / VERIFIER_LOG).stat().st_mode & 0o222 == 0
    assert dest.stat().st_mode & 0o222 == 0
    again = materialize_traces(trials[:1], dest)  # rewritten for the next experiment
    assert [t["task"] for t in json.loads((again / INDEX).read_text())] == ["csv-sum"]
    sealed = TrialResult("sealed", 0, TrialStatus.FAILED, 0.0, {}, 1.0, TrialUsage())
    with pytest.raises(SealedTrial):
        materialize_traces([(sealed, holdout)], tmp_path / "other")
    assert not (tmp_path / "other").exists()


def llm_proposer(tmp_path: Path, fake: FakeLLM, monkeypatch: pytest.MonkeyPatch) -> LLMProposer:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-123456")
    (tmp_path / "agent.py").write_text("PROMPT = 'solve it'\n")
    spec = parse_spec(
        {"scope": {"editable": ["agent.py"]}, "metric": {"command": "x", "name": "reward"},
         "proposer": {"kind": "llm", "model": "fake", "base_url": fake.base_url, "retries": 0,
                      "budget": "60s"}},
        "t",
    )  # fmt: skip
    context = ProposerContext(spec, tmp_path, tmp_path, ["agent.py"], [], ProcessSandbox(),
                              tmp_path)  # fmt: skip
    return LLMProposer(context)


def test_the_llm_proposer_reads_traces_through_its_tools(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    suite: Suite,
) -> None:
    _, trials, _ = suite
    traces = materialize_traces(trials, tmp_path / "traces")
    script = [
        tool_call("list_trials"),
        tool_call("read_trace", trial="rename/attempt-0"),
        tool_call("read_trace", trial="rename/attempt-0", part="messages"),
        tool_call("read_trace", trial="../trials/sealed/attempt-0", part="verifier"),
        tool_call("edit", path="agent.py", search="solve it", replace="solve it; check files"),
        tool_call("finish", rationale="read the failing trace; check files first"),
    ]
    (tmp_path / "project").mkdir()
    with FakeLLM(script) as fake:
        proposer = llm_proposer(tmp_path / "project", fake, monkeypatch)
        brief = tmp_path / "brief.json"
        brief.write_text(json.dumps({"directive": "improve the agent", "history": [],
                                     **suite_section(trials, traces)}))  # fmt: skip
        proposal = proposer.propose(tmp_path / "project", brief)
    assert proposal.rationale == "read the failing trace; check files first"
    offered = {t["function"]["name"] for t in fake.requests[0]["tools"]}
    assert {"list_trials", "read_trace"} <= offered
    assert "rename" in fake.requests[0]["messages"][1]["content"]  # the brief's failures
    answers = [m["content"] for m in fake.requests[-1]["messages"] if m["role"] == "tool"]
    assert [t["id"] for t in json.loads(answers[0])][:2] == ["csv-sum/attempt-0",
                                                             "rename/attempt-0"]  # fmt: skip
    assert json.loads(answers[1])["verifier_tail"].startswith("AssertionError")
    assert 'call shell({"cmd": "cat data.csv"})' in answers[2]
    assert answers[3].startswith("error: not a trial id")
    every_request = json.dumps(fake.requests)
    assert HOLDOUT_SECRET not in every_request and "sealed" not in every_request.replace(
        "../trials/sealed", ""
    )  # only the model's own refused request names it
    assert "check files" in (tmp_path / "project" / "agent.py").read_text()


def test_the_trace_tools_are_offered_only_when_the_brief_names_traces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "project").mkdir()
    with FakeLLM([tool_call("finish", rationale="nothing")]) as fake:
        proposer = llm_proposer(tmp_path / "project", fake, monkeypatch)
        brief = tmp_path / "brief.json"
        brief.write_text(json.dumps({"directive": "x", "history": []}))
        proposer.propose(tmp_path / "project", brief)
    offered = {t["function"]["name"] for t in fake.requests[0]["tools"]}
    assert "read_file" in offered and not offered & {"list_trials", "read_trace"}


def test_render_brief_carries_the_suite_section(suite: Suite) -> None:
    from ratchet.brief import History, render_brief
    from ratchet.journal import ExperimentRecord

    _, trials, _ = suite
    spec = parse_spec({"scope": {"editable": ["agent.py"]},
                       "metric": {"command": "x", "name": "reward"}}, "t")  # fmt: skip
    incumbent = ExperimentRecord(0, "r", 0, "abc", "abc", "baseline", "", "", [], {}, 0.0, 0,
                                 0.0, "decided", None, None, 0.5, {}, None, 0.0, None)  # fmt: skip
    text = render_brief(spec, History(), "r", 1, incumbent, "improve", {}, {},
                        suite=suite_section(trials, Path("/state/traces")))  # fmt: skip
    brief = json.loads(text)
    assert brief["traces"] == "/state/traces"
    assert [f["task"] for f in brief["suite_failures"]] == ["rename", "wc"]
    assert brief["history"] == [] and brief["directive"] == "improve"
    plain = json.loads(render_brief(spec, History(), "r", 1, incumbent, "improve", {}, {}))
    assert "suite_failures" not in plain and "traces" not in plain
