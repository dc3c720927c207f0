"""Harness mode end to end: `ratchet run` on a suite of Harbor tasks, the task agent on
the real openai SDK against a loopback fake server, the meta proposer a command or an
llm proposer against another."""

from __future__ import annotations

import sys
from pathlib import Path

from fake_llm import FakeLLM
from suite_support import (
    ALWAYS_PASS,
    NO_REWARD,
    PASS_IF_ANSWERED,
    PASS_IF_SILENT,
    STDLIB_AGENT,
    command_proposer,
    flip_mode,
    suite_project,
    task_files,
    trial_rows,
)

from conftest import experiments, layer_or_skip, ratchet

# the agent for the tests that count decisions and trials, not the agent's requests
LIGHT = {"agent.py": STDLIB_AGENT}


def search_tasks(count: int) -> dict[str, str]:
    files: dict[str, str] = {}
    for i in range(count):
        files |= task_files(f"task-{i}", f"Write an answer for task {i}.", PASS_IF_ANSWERED)
    return files


def test_each_trial_is_recorded_a_missing_reward_is_an_error_and_a_slow_agent_a_timeout(
    tmp_path: Path,
) -> None:
    tasks = {
        **search_tasks(2),
        **task_files("no-reward", "Answer, please.", NO_REWARD),
        **task_files("slow", "SLOW: take your time.", PASS_IF_ANSWERED, agent_timeout=1),
    }
    with FakeLLM([]) as task_llm:
        project = suite_project(tmp_path / "p", tasks, flip_mode("good"), files=LIGHT)
        result = ratchet(project, "run", env={"TASK_LLM_URL": task_llm.base_url})
    assert result.returncode == 0, result.stderr
    rows = experiments(project)
    baseline, candidate = rows[0], rows[1]
    assert baseline["decision"] == "keep" and "4 trials" in baseline["why"]
    trials = {(t["experiment"], t["task"]): t for t in trial_rows(project)}
    # the baseline agent writes nothing: a real 0, not an error
    assert trials[(baseline["id"], "task-0")]["status"] == "failed"
    assert trials[(baseline["id"], "task-0")]["reward"] == 0.0
    # a verifier that writes no reward file: an error with its why, never a 0
    missing = trials[(baseline["id"], "no-reward")]
    assert missing["status"] == "error" and missing["reward"] is None
    assert "wrote no reward" in missing["error"] and "forgot to write" in missing["error"]
    slow = trials[(baseline["id"], "slow")]
    assert slow["status"] == "timeout" and "timeout_sec" in slow["error"]
    assert slow["duration"] < 20
    # the candidate that answers passes; its trials carry usage and cost
    assert trials[(candidate["id"], "task-1")]["status"] == "passed"
    assert trials[(candidate["id"], "task-1")]["reward"] == 1.0
    assert trials[(candidate["id"], "task-1")]["input_tokens"] == 100
    # the task agent's cost joins each experiment's cost: $0.25 for each of the 3 trials
    # whose agent reported it (the one killed at its timeout reported nothing)
    assert baseline["cost_usd"] == 0.75
    # every trial has its folder with the agent's and the verifier's output
    folder = Path(trials[(candidate["id"], "task-1")]["folder"])
    assert (folder / "trial.json").is_file() and "verified" in (folder / "verifier.txt").read_text()
    # every task agent call went to the task model's server
    assert len(task_llm.requests) >= 4
    assert all(r["model"] == "task-model" for r in task_llm.requests)


def test_a_keep_is_decided_by_the_paired_test(tmp_path: Path) -> None:
    with FakeLLM([]) as task_llm:
        project = suite_project(tmp_path / "p", search_tasks(6), flip_mode("good"), files=LIGHT)
        result = ratchet(project, "run", env={"TASK_LLM_URL": task_llm.base_url})
    assert result.returncode == 0, result.stderr
    candidate = experiments(project)[1]
    assert candidate["decision"] == "keep", candidate["why"]
    assert "6 better, 0 worse" in candidate["why"] and "exact McNemar" in candidate["why"]
    assert candidate["value"] == 1.0


def test_only_the_tasks_that_decide_are_run_again(tmp_path: Path) -> None:
    """Two tasks the change flips (p = 1/4 at the first look) and two it cannot (both pass
    always): the flipped ones, and only they, get fresh trials, the incumbent's too, until
    six discordant pairs (p = 1/64) keep it at the third look."""
    tasks = {
        **search_tasks(2),
        **task_files("easy-0", "Anything.", ALWAYS_PASS),
        **task_files("easy-1", "Anything.", ALWAYS_PASS),
    }
    with FakeLLM([]) as task_llm:
        project = suite_project(tmp_path / "p", tasks, flip_mode("good"), files=LIGHT)
        result = ratchet(project, "run", env={"TASK_LLM_URL": task_llm.base_url})
    assert result.returncode == 0, result.stderr
    baseline, candidate = experiments(project)[:2]
    assert candidate["decision"] == "keep", candidate["why"]
    assert "6 better, 0 worse" in candidate["why"] and "p=0.0156" in candidate["why"]
    attempts: dict[tuple[int, str], set[int]] = {}
    for t in trial_rows(project):
        attempts.setdefault((t["experiment"], t["task"]), set()).add(t["attempt"])
    for who in (baseline["id"], candidate["id"]):
        assert attempts[(who, "task-0")] == attempts[(who, "task-1")] == {0, 1, 2}
        assert attempts[(who, "easy-0")] == attempts[(who, "easy-1")] == {0}
    # the value is the first look's mean, not that of the re-run tasks
    assert candidate["value"] == 1.0 and baseline["value"] == 0.5


def test_an_overfit_keep_is_caught_by_the_holdout(tmp_path: Path) -> None:
    tasks = {
        **search_tasks(6),
        **task_files("held-a", "Do not write anything.", PASS_IF_SILENT),
        **task_files("held-b", "Leave the folder as it is.", PASS_IF_SILENT),
    }
    with FakeLLM([]) as task_llm:
        project = suite_project(
            tmp_path / "p", tasks, flip_mode("good"), holdout='["held-a", "held-b"]', files=LIGHT
        )
        result = ratchet(project, "run", env={"TASK_LLM_URL": task_llm.base_url})
    assert result.returncode == 0, result.stderr
    baseline, candidate = experiments(project)[:2]
    assert candidate["decision"] == "overfit", candidate["why"]
    assert "on the holdout reward fell 1 -> 0" in candidate["why"]
    assert "held-a" not in candidate["why"]  # the holdout's tasks are never named
    assert candidate["holdout"] == 0.0 and baseline["holdout"] == 1.0
    rows = trial_rows(project)
    held = [t for t in rows if t["split"] == "holdout"]
    assert {t["task"] for t in held} == {"held-a", "held-b"}
    assert all("/.ratchet/holdout/" in t["folder"] for t in held)
    # the baseline ran no holdout until a would-be keep needed it
    assert all(t["judged"] == candidate["id"] for t in held)


def test_equal_pass_rates_keep_the_smaller_harness_with_prefer_simpler(tmp_path: Path) -> None:
    shrink = command_proposer(
        "python3 -c \"import pathlib; p=pathlib.Path('agent.py'); "
        "p.write_text(p.read_text().replace('    usage = reply.usage', '    usage = reply.usage  # x'))\""
        " && sed -i '/^import os, time/a # a comment line that only adds bulk' agent.py"
        " && sed -i '/# a comment line that only adds bulk/d' agent.py"
        " && sed -i 's/  # x//' agent.py && sed -i '/^$/d' agent.py"
    )
    with FakeLLM([]) as task_llm:
        project = suite_project(
            tmp_path / "p", search_tasks(3), shrink, extra="prefer_simpler = true", files=LIGHT
        )
        result = ratchet(project, "run", env={"TASK_LLM_URL": task_llm.base_url})
    assert result.returncode == 0, result.stderr
    candidate = experiments(project)[1]
    assert candidate["decision"] == "keep", candidate["why"]
    assert "prefer_simpler keeps it" in candidate["why"]


def test_a_holdout_instruction_never_reaches_the_meta_model(tmp_path: Path) -> None:
    marker = "SEALED-7f3a-instruction"
    tasks = {
        **search_tasks(6),
        **task_files("held", f"{marker}: write an answer.", PASS_IF_ANSWERED),
    }
    from fake_llm import tool_call

    script = [
        tool_call("read_file", path="agent.py"),
        tool_call("edit", path="agent.py", search='MODE = "bad"', replace='MODE = "good"'),
        tool_call("finish", rationale="write the answer"),
        tool_call("list_files"),
        tool_call("grep", pattern="SEALED"),
        tool_call("finish", rationale="nothing more"),
    ]
    proposer = 'kind = "llm"\nbase_url = "{url}"\napi_key_env = "META_KEY"\nretries = 0'
    with FakeLLM([]) as task_llm, FakeLLM(script) as meta:
        project = suite_project(
            tmp_path / "p",
            tasks,
            proposer.format(url=meta.base_url),
            holdout='["held"]',
            run="max_experiments = 2",
            files=LIGHT,
        )
        env = {"TASK_LLM_URL": task_llm.base_url, "META_KEY": "sk-meta-0123456789"}
        result = ratchet(project, "run", env=env)
    assert result.returncode == 0, result.stderr
    rows = experiments(project)
    assert rows[1]["decision"] == "keep", rows[1]["why"]
    # the holdout ran (for the would-be keep), through the task model's server
    assert any(marker in str(r) for r in task_llm.requests)
    assert len(meta.requests) == 6
    for request in meta.requests:
        assert marker not in str(request)
        assert "held" not in str(request).replace("held out", "")
    # same-model pairing: the meta proposer asked for the task agent's model
    assert {r["model"] for r in meta.requests} == {"task-model"}
    assert "task agent task-model (same model)" in result.stdout
    status = ratchet(project, "status")
    assert "pairing" in status.stdout and "(same model)" in status.stdout
    # the keep's why and status carry the search/holdout gap
    assert "search 1, holdout 1 (gap +0)" in rows[1]["why"]
    assert rows[1]["holdout"] == 1.0


def test_max_cost_usd_covers_the_task_agent(tmp_path: Path) -> None:
    """Six baseline trials at $0.25 each pass a $1 cap: no experiment follows."""
    with FakeLLM([]) as task_llm:
        project = suite_project(
            tmp_path / "p",
            search_tasks(6),
            flip_mode("good"),
            run="max_cost_usd = 1.0",
            files=LIGHT,
        )
        result = ratchet(project, "run", env={"TASK_LLM_URL": task_llm.base_url})
    assert result.returncode == 0, result.stderr
    rows = experiments(project)
    assert len(rows) == 1 and rows[0]["cost_usd"] == 1.5
    assert "reached max_cost_usd ($1.50 of $1)" in result.stdout


def test_under_bwrap_the_agent_reaches_its_model_when_the_network_is_allowed(
    tmp_path: Path,
) -> None:
    layer_or_skip("bwrap")
    with FakeLLM([]) as task_llm:
        project = suite_project(
            tmp_path / "p",
            search_tasks(1),
            flip_mode("good"),
            sandbox="bwrap",
            sandbox_extra="network = true",
        )
        result = ratchet(project, "run", env={"TASK_LLM_URL": task_llm.base_url})
    assert result.returncode == 0, result.stderr
    trials = trial_rows(project)
    assert [t["status"] for t in trials[:2]] == ["failed", "passed"], trials
    assert trials[1]["input_tokens"] == 100
    assert len(task_llm.requests) >= 2


# first the change that earns a keep (so the holdout runs), then a look for the holdout's
# trials from inside the proposer's sandbox, written into agent.py where the journal keeps it
PEEK = """
import pathlib, re, subprocess
agent = pathlib.Path("agent.py")
text = agent.read_text()
if "MODE = 'bad'" in text or 'MODE = "bad"' in text:
    agent.write_text(re.sub("MODE = .*", "MODE = 'good'", text))
else:
    found = subprocess.run("ls -R ../../holdout ../../../tasks 2>&1; cat ../../holdout/*/*/*/*/agent.txt 2>&1",
                           shell=True, capture_output=True, text=True).stdout
    agent.write_text(text + "".join(f"# {line}\\n" for line in found.splitlines()))
"""


def test_a_proposer_under_bwrap_cannot_see_the_holdout(tmp_path: Path) -> None:
    layer_or_skip("bwrap")
    tasks = {
        **search_tasks(6),
        **task_files("held", "SEALED-b2c4: write an answer.", PASS_IF_ANSWERED),
    }
    proposer = command_proposer(f"{sys.executable} peek.py")
    with FakeLLM([]) as task_llm:
        project = suite_project(tmp_path / "p", tasks, proposer, sandbox="bwrap",
                                sandbox_extra="network = true", holdout='["held"]',
                                run="max_experiments = 2", files={**LIGHT, "peek.py": PEEK})  # fmt: skip
        result = ratchet(project, "run", env={"TASK_LLM_URL": task_llm.base_url})
    assert result.returncode == 0, result.stderr
    rows = experiments(project)
    assert rows[1]["decision"] == "keep", rows[1]["why"]
    assert (project / ".ratchet" / "holdout").is_dir()  # the holdout ran, on the host
    peek = rows[2]["patch"]
    assert "No such file" in peek  # the listing ran, and found nothing
    assert "SEALED" not in peek and "held" not in peek
