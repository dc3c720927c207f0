"""Harness mode's parts wired together, end to end through `ratchet run`: traces reach
the meta proposer (and holdout trials never do), the metering proxy stands between the
task agent and its model, the harbor runner is registered, and the task agent is told
its model. The task agent uses the real openai SDK against a loopback fake server, the
meta proposer another."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fake_llm import FakeLLM, tool_call
from suite_support import PASS_IF_ANSWERED, command_proposer, suite_project, task_files

from conftest import experiments, layer_or_skip, ratchet

SEALED = "SEALED-q9z-instruction"  # the holdout task's instruction
HELD = "sealed-task-q9z"  # the holdout task's name
# a verifier whose output says why the trial failed, for read_trace to return
EXPLAINED = """#!/bin/sh
if [ -s answer.txt ]; then echo 1 > "$RATCHET_LOGS/verifier/reward.txt"; echo "VERDICT: answered"
else echo 0 > "$RATCHET_LOGS/verifier/reward.txt"; echo "VERDICT: answer.txt is missing"; fi
"""
NEVER = """#!/bin/sh
echo 0 > "$RATCHET_LOGS/verifier/reward.txt"
echo "VERDICT: this task can not be passed"
"""


def wiring_tasks() -> dict[str, str]:
    files: dict[str, str] = {}
    for i in range(6):
        files |= task_files(f"task-{i}", f"Write an answer for task {i}.", EXPLAINED)
    files |= task_files("hopeless", "Try anyway.", NEVER)
    files |= task_files(HELD, f"{SEALED}: write an answer.", PASS_IF_ANSWERED)
    return files


def test_the_meta_model_reads_search_traces_and_never_a_holdout_one(tmp_path: Path) -> None:
    script = [
        tool_call("list_trials"),
        tool_call("read_trace", trial="task-0/attempt-0", part="verifier"),
        tool_call("edit", path="agent.py", search='MODE = "bad"', replace='MODE = "good"'),
        tool_call("finish", rationale="write the answer"),
        tool_call("list_trials"),
        tool_call("read_trace", trial="hopeless/attempt-0", part="summary"),
        tool_call("finish", rationale="nothing more"),
    ]
    proposer = 'kind = "llm"\nbase_url = "{url}"\napi_key_env = "META_KEY"\nretries = 0'
    with FakeLLM([]) as task_llm, FakeLLM(script) as meta:
        project = suite_project(tmp_path / "p", wiring_tasks(), proposer.format(url=meta.base_url),
                                holdout=f'["{HELD}"]', run="max_experiments = 2")  # fmt: skip
        env = {"TASK_LLM_URL": task_llm.base_url, "META_KEY": "sk-meta-0123456789"}
        result = ratchet(project, "run", env=env)
    assert result.returncode == 0, result.stderr
    rows = experiments(project)
    assert rows[1]["decision"] == "keep", rows[1]["why"]
    # the holdout ran, for the would-be keep
    assert any(SEALED in str(r) for r in task_llm.requests)
    holdout = project / ".ratchet" / "holdout"
    assert any(holdout.rglob("trial.json"))
    assert len(meta.requests) == len(script)
    # the first brief carries the baseline's search failures, grouped by task
    first = json.dumps(meta.requests[0])
    assert "suite_failures" in first and "task-0" in first and "answer.txt is missing" in first
    # list_trials answered with search trials; read_trace returned the verifier's output
    listed = json.dumps(meta.requests[1]["messages"][-1])
    assert "task-0/attempt-0" in listed and "hopeless/attempt-0" in listed
    read = meta.requests[2]["messages"][-1]
    assert read["role"] == "tool" and "VERDICT: answer.txt is missing" in read["content"]
    # the second proposal's brief is the keep's: the hopeless task is its one failure
    second = json.dumps(meta.requests[4])
    assert "hopeless" in second and "this task can not be passed" in second
    summary = meta.requests[6]["messages"][-1]["content"]
    assert '"status": "failed"' in summary and "hopeless" in summary
    for request in meta.requests:
        text = json.dumps(request)
        assert SEALED not in text and HELD not in text
        assert str(holdout) not in text and "/.ratchet/holdout" not in text
    brief = (project / ".ratchet" / "brief-0.json").read_text()
    assert "suite_failures" in brief and "hopeless" in brief
    assert SEALED not in brief and HELD not in brief and "/.ratchet/holdout" not in brief
    # the traces folder was never part of a proposal, and is gone from the slot
    assert all(".ratchet-traces" not in (r["patch"] or "") for r in rows)
    assert not list((project / ".ratchet").rglob(".ratchet-traces"))


# a CLI proposer: copies everything it finds in the traces folder the brief names to a
# file outside the project, then makes the change that earns a keep
PEEK_TRACES = """
import json, os, pathlib, re, sys
brief = json.loads(pathlib.Path(os.environ["RATCHET_BRIEF"]).read_text())
traces = pathlib.Path(brief["traces"])
seen = [f"TRACES AT {traces}"]
for path in sorted(traces.rglob("*")):
    seen.append(f"== {path.relative_to(traces)}")
    if path.is_file():
        seen.append(path.read_text(errors="replace"))
    if path.stat().st_mode & 0o222:  # the mode, not a write: root may write anyway
        seen.append(f"WRITABLE {path}")
with open(sys.argv[1], "a") as out:
    out.write("\\n".join(seen) + "\\n")
agent = pathlib.Path("agent.py")
agent.write_text(re.sub("MODE = .*", "MODE = 'good'", agent.read_text()))
"""


def test_a_cli_proposer_gets_a_read_only_traces_folder_without_the_holdout(
    tmp_path: Path,
) -> None:
    seen = tmp_path / "seen.txt"
    proposer = command_proposer(f"{sys.executable} peek.py {seen}")
    with FakeLLM([]) as task_llm:
        project = suite_project(tmp_path / "p", wiring_tasks(), proposer, holdout=f'["{HELD}"]',
                                run="max_experiments = 2", files={"peek.py": PEEK_TRACES})  # fmt: skip
        result = ratchet(project, "run", env={"TASK_LLM_URL": task_llm.base_url})
    assert result.returncode == 0, result.stderr
    rows = experiments(project)
    assert rows[1]["decision"] == "keep", rows[1]["why"]
    assert any((project / ".ratchet" / "holdout").rglob("trial.json"))  # the holdout ran
    text = seen.read_text()
    assert text.count("TRACES AT") == 2
    # the search trials are there: records, verifier output, the index
    assert "== task-0/attempt-0/verifier.txt" in text and "answer.txt is missing" in text
    assert "== index.json" in text and "== hopeless/attempt-0/trial.json" in text
    assert "WRITABLE" not in text
    assert SEALED not in text and HELD not in text and "/.ratchet/holdout" not in text
    assert all(".ratchet-traces" not in (r["patch"] or "") for r in rows)


# a task agent that takes its endpoint and key from the environment, as the example's does,
# says what key it was given, and misreports its own usage
METERED_AGENT = """
import os
from openai import OpenAI

def run(instruction, workspace):
    key = os.environ.get("OPENAI_API_KEY", "")
    print("KEY-IS-DUMMY" if key == "ratchet-metered" else "KEY-IS-SOMETHING-ELSE")
    print("REAL-KEY-VISIBLE" if any("sk-real" in v for v in os.environ.values()) else "NO-REAL-KEY")
    client = OpenAI(max_retries=0)
    reply = client.chat.completions.create(
        model=os.environ.get("RATCHET_TASK_MODEL", "unset"),
        messages=[{"role": "user", "content": instruction}])
    with open(os.path.join(workspace, "answer.txt"), "w") as handle:
        handle.write(reply.choices[0].message.content or "")
    return {"usage": {"input_tokens": 1, "output_tokens": 1, "cost_usd": 0.01, "calls": 1}}
"""
REAL_KEY = "sk-real-upstream-0123456789"
PRICED = (
    'kind = "command"\ncommand = "true"\nbudget = "20s"\n'
    "[proposer.prices.task-model]\ninput = 1000.0\noutput = 10000.0"
)


def metered_project(root: Path, tasks: int, **options: str) -> Path:
    files: dict[str, str] = {}
    for i in range(tasks):
        files |= task_files(f"task-{i}", f"Write an answer for task {i}.", EXPLAINED)
    return suite_project(root, files, PRICED, extra='env = ["OPENAI_API_KEY"]',
                         files={"agent.py": METERED_AGENT}, concurrency=1, **options)  # fmt: skip


def check_metered(project: Path, upstream: FakeLLM, tasks: int) -> None:
    from suite_support import trial_rows

    rows = experiments(project)
    trials = trial_rows(project)
    assert len(trials) == tasks and all(t["status"] == "passed" for t in trials), trials
    # the fake upstream saw the real key, on every call, and the task model
    assert len(upstream.requests) == tasks
    assert {h["authorization"] for h in upstream.headers} == {f"Bearer {REAL_KEY}"}
    assert {r["model"] for r in upstream.requests} == {"task-model"}
    for t in trials:
        folder = Path(t["folder"])
        printed = (folder / "agent.txt").read_text()
        assert "KEY-IS-DUMMY" in printed and "NO-REAL-KEY" in printed, printed
        calls = [
            json.loads(line) for line in (folder / "model_calls.jsonl").read_text().splitlines()
        ]
        assert len(calls) == 1 and calls[0]["status"] == 200
        # the trial's usage is the proxy's: 100 in, 10 out at $1000/$10000 per million
        assert (t["input_tokens"], t["output_tokens"]) == (100, 10)
        assert t["cost_usd"] == calls[0]["cost_usd"] == 0.2
        assert "reported usage disagrees with the proxy" in t["error"]
        record = json.loads((folder / "trial.json").read_text())
        assert record["usage"]["calls"] == 1 and record["usage"]["cost_usd"] == 0.2
    # the experiment's cost includes the task agent's metered spend
    assert abs(rows[0]["cost_usd"] - 0.2 * tasks) < 1e-9


def test_the_task_agent_reaches_its_model_only_through_the_metering_proxy(
    tmp_path: Path,
) -> None:
    with FakeLLM([]) as upstream:
        project = metered_project(tmp_path / "p", 2, run="max_experiments = 1")
        env = {"OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": REAL_KEY}
        result = ratchet(project, "run", env=env)
    assert result.returncode == 0, result.stderr
    check_metered(project, upstream, 2)


def test_under_bwrap_without_network_the_proxy_is_reached_through_the_bridge(
    tmp_path: Path,
) -> None:
    layer_or_skip("bwrap")
    with FakeLLM([]) as upstream:
        project = metered_project(tmp_path / "p", 1, run="max_experiments = 1",
                                  sandbox="bwrap", sandbox_extra="network = false")  # fmt: skip
        env = {"OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": REAL_KEY}
        result = ratchet(project, "run", env=env)
    assert result.returncode == 0, result.stderr
    check_metered(project, upstream, 1)


def test_the_spend_cap_is_what_max_cost_usd_leaves(tmp_path: Path) -> None:
    """Two trials one after the other under a $0.2 cap: the first spends it, so the
    proxy refuses the second's call, and the trial fails without reaching the model."""
    with FakeLLM([]) as upstream:
        project = metered_project(tmp_path / "p", 2, run="max_cost_usd = 0.2")
        env = {"OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": REAL_KEY}
        result = ratchet(project, "run", env=env)
    from suite_support import trial_rows

    trials = trial_rows(project)
    assert len(upstream.requests) == 1
    refused = [t for t in trials if t["cost_usd"] == 0]
    assert len(refused) == 1 and refused[0]["status"] != "passed"
    calls = (Path(refused[0]["folder"]) / "model_calls.jsonl").read_text()
    assert '"status": 402' in calls and "spend cap" in calls
    assert "reached max_cost_usd" in result.stdout


def stub_harbor_on_path(root: Path) -> dict[str, str]:
    """The stub `harbor` of test_suite_harbor, with tasks named `flip-*` that pass only
    when the agent on Harbor's PYTHONPATH has been switched to MODE = 'good'."""
    import os

    from test_suite_harbor import HELP_NEW, STUB

    flip = (
        "\nagent_file = Path(os.environ['PYTHONPATH'].split(os.pathsep)[0]) / 'agent.py'\n"
        "FLIP = 1.0 if \"MODE = 'good'\" in agent_file.read_text() else 0.0\n"
    )
    stub = STUB.replace('"half": 0.5}', '"half": 0.5, "flip": FLIP}')
    stub = stub.replace("job.mkdir(parents=True, exist_ok=True)\n",
                        "job.mkdir(parents=True, exist_ok=True)\n" + flip, 1)  # fmt: skip
    assert stub != STUB and "FLIP = " in stub
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "harbor").write_text(f"#!{sys.executable}\n{stub}")
    (bin_dir / "harbor").chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "STUB_HELP": HELP_NEW}


def test_a_run_with_the_harbor_runner_records_trials_and_decides(tmp_path: Path) -> None:
    from suite_support import flip_mode, trial_rows

    tasks: dict[str, str] = {}
    for i in range(6):
        tasks |= task_files(f"flip-{i}", f"Flip {i}.", EXPLAINED)
    tasks |= task_files("pass-a", "Always.", EXPLAINED)
    tasks |= task_files("held-x", "Held out.", EXPLAINED)
    env = stub_harbor_on_path(tmp_path)
    project = suite_project(tmp_path / "p", tasks, flip_mode("good"), holdout='["held-x"]',
                            extra='runner = "harbor"')  # fmt: skip
    result = ratchet(project, "run", env=env)
    assert result.returncode == 0, result.stderr
    baseline, candidate = experiments(project)[:2]
    assert baseline["decision"] == "keep" and "7 trials" in baseline["why"], baseline["why"]
    assert candidate["decision"] == "keep", candidate["why"]
    assert "6 better, 0 worse" in candidate["why"]
    rows = trial_rows(project)
    mine = {t["task"]: t for t in rows if t["experiment"] == candidate["id"]}
    assert mine["flip-0"]["status"] == "passed" and mine["pass-a"]["reward"] == 1.0
    assert mine["held-x"]["split"] == "holdout"  # run for the would-be keep
    theirs = {t["task"]: t for t in rows if t["experiment"] == baseline["id"]}
    assert theirs["flip-0"]["status"] == "failed" and theirs["flip-0"]["reward"] == 0.0
    # Harbor's usage is charged: 7 search trials at $0.004 for the baseline
    assert theirs["flip-0"]["input_tokens"] == 1200
    assert abs(baseline["cost_usd"] - 7 * 0.004) < 1e-9
    # each record lies in the request's folder, marked with its split, with the trace
    folder = Path(mine["flip-0"]["folder"])
    record = json.loads((folder / "trial.json").read_text())
    assert record["split"] == "search" and record["status"] == "passed"
    assert (folder / "trajectory.json").is_file() and "checking flip-0" in (
        folder / "verifier.txt"
    ).read_text()
    held = json.loads((Path(mine["held-x"]["folder"]) / "trial.json").read_text())
    assert held["split"] == "holdout" and "/.ratchet/holdout/" in mine["held-x"]["folder"]
    # the last Harbor call: the agent as an import path, the task model paired
    [call_file] = (project / ".ratchet").rglob("stub-call.json")
    call = json.loads(call_file.read_text())
    assert call["argv"][call["argv"].index("-a") + 1] == "agent:run"
    assert call["env"]["RATCHET_TASK_MODEL"] == "task-model"
