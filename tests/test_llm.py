"""The llm proposer through the real openai and anthropic SDKs, against a scripted server
on loopback that speaks both wire protocols."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fake_llm import FakeLLM, error, late, tool_call

from conftest import experiments, git, make_project, ratchet

FILES = {
    "value.py": "X = 5\n",
    "score.py": "from value import X\nprint(f'score: {(X - 2) ** 2}')\n",
    "secret_eval.py": "HOLDOUT = 42\n",
}


def llm_project(tmp_path: Path, fake: FakeLLM, extra: str = "", provider: str = "openai") -> Path:
    base_url = fake.anthropic_url if provider == "anthropic" else fake.base_url
    spec = f"""
[sandbox]
kind = "process"
[scope]
editable = ["value.py"]
context = ["score.py"]
protected = ["score.py", "secret_eval.py"]
[metric]
command = "{sys.executable} score.py"
name = "score"
[run]
max_experiments = 1
[proposer]
kind = "llm"
provider = "{provider}"
model = "fake-model"
base_url = "{base_url}"
api_key_env = "FAKE_LLM_KEY"
retries = 3
{extra}
[proposer.prices]
"fake-model" = {{ input = 1.0, output = 10.0 }}
"""
    return make_project(tmp_path / "p", FILES, spec)


def run(project: Path) -> dict[str, Any]:
    result = ratchet(project, "run", env={"FAKE_LLM_KEY": "sk-fake-0123456789"})
    assert result.returncode == 0, result.stderr
    return experiments(project)[-1]


def test_an_edit_outside_the_scope_is_refused_to_the_model(tmp_path: Path) -> None:
    script = [
        tool_call("edit", path="score.py", search="print", replace="0 and print"),
        tool_call("read_file", path="secret_eval.py"),
        tool_call("finish", rationale="gave up"),
    ]
    with FakeLLM(script) as fake:
        row = run(llm_project(tmp_path, fake))
    assert row["decision"] == "no-change"
    assert "outside the editable scope" in fake.requests[1]["messages"][-1]["content"]
    assert "not a readable project file" in fake.requests[2]["messages"][-1]["content"]


def test_a_429_storm_with_retry_after_is_waited_out(tmp_path: Path) -> None:
    script = [
        error(429, **{"Retry-After": "0"}),
        error(503),
        tool_call("edit", path="value.py", search="X = 5", replace="X = 3"),
        tool_call("finish", rationale="closer"),
    ]
    with FakeLLM(script) as fake:
        row = run(llm_project(tmp_path, fake))
    assert row["decision"] == "keep"
    assert len(fake.requests) == 4


def test_a_model_that_never_finishes_is_an_invalid_proposal(tmp_path: Path) -> None:
    with FakeLLM([{"content": "thinking..."}] * 5) as fake:
        row = run(llm_project(tmp_path, fake, extra="max_turns = 3"))
    assert row["decision"] == "invalid-proposal"
    assert row["why"] == "the model did not call finish within 3 turns"
    assert len(fake.requests) == 3


def test_a_malformed_reply_is_an_invalid_proposal(tmp_path: Path) -> None:
    with FakeLLM(["this is not json"]) as fake:
        row = run(llm_project(tmp_path, fake))
    assert row["decision"] == "invalid-proposal"
    assert row["why"].startswith("the model's endpoint failed")


def test_the_api_key_reaches_the_endpoint_only(tmp_path: Path) -> None:
    with FakeLLM([tool_call("finish", rationale="nothing")]) as fake:
        project = llm_project(tmp_path, fake)
        run(project)
    assert b"sk-fake-0123456789" not in (project / ".ratchet" / "journal.db").read_bytes()


def test_a_model_without_tools_can_answer_with_search_replace_blocks(tmp_path: Path) -> None:
    reply = (
        "Move X to the minimum of the score.\n\n"
        "value.py\n<<<<<<< SEARCH\nX = 5\n=======\nX = 2\n>>>>>>> REPLACE\n"
    )
    with FakeLLM([{"content": reply}]) as fake:
        row = run(llm_project(tmp_path, fake))
    assert row["decision"] == "keep"
    assert row["rationale"] == "Move X to the minimum of the score."
    assert len(fake.requests) == 1


def test_a_search_replace_block_outside_the_scope_is_an_invalid_proposal(tmp_path: Path) -> None:
    reply = "Cheat.\n\nscore.py\n<<<<<<< SEARCH\nprint\n=======\n0 and print\n>>>>>>> REPLACE\n"
    with FakeLLM([{"content": reply}]) as fake:
        row = run(llm_project(tmp_path, fake))
    assert row["decision"] == "invalid-proposal"
    assert "outside the editable scope" in row["why"]


# the same behaviour over Anthropic's /v1/messages -------------------------------------
BOTH = pytest.mark.parametrize("provider", ["openai", "anthropic"])


def tool_names(request: dict[str, Any]) -> set[str]:
    return {t.get("name") or t["function"]["name"] for t in request["tools"]}


@BOTH
def test_a_full_run_over_either_protocol_is_kept_with_its_cost(
    tmp_path: Path, provider: str
) -> None:
    script = [
        tool_call("list_files"),
        tool_call("read_file", path="value.py"),
        tool_call("edit", path="value.py", search="X = 5", replace="X = 2"),
        tool_call("finish", rationale="move X to the minimum"),
    ]
    with FakeLLM(script) as fake:
        row = run(llm_project(tmp_path, fake, provider=provider))
    assert row["decision"] == "keep" and row["rationale"] == "move X to the minimum"
    assert row["cost_tokens"] == 4 * 110
    assert row["cost_usd"] == pytest.approx((4 * 100 * 1.0 + 4 * 10 * 10.0) / 1e6)
    assert git(tmp_path / "p", "show", "ratchet/default:value.py") == "X = 2"
    first = fake.requests[0]
    assert first["model"] == "fake-model"
    assert tool_names(first) >= {"edit", "finish", "grep", "show_experiment"}
    if provider == "anthropic":
        assert "improve a program" in first["system"]
        assert "X = 5" in first["messages"][0]["content"]  # the scope's files, shown
        result = fake.requests[1]["messages"][-1]["content"][0]
        assert result["type"] == "tool_result" and result["tool_use_id"] == "call-list_files"
        listing = result["content"]
    else:
        assert "X = 5" in first["messages"][1]["content"]
        listing = fake.requests[1]["messages"][-1]["content"]
    assert "score.py" in listing and "secret_eval.py" not in listing  # hidden: protected


def test_anthropic_usage_totals_reach_status_and_results_tsv(tmp_path: Path) -> None:
    script = [
        tool_call("edit", path="value.py", search="X = 5", replace="X = 9"),
        tool_call("finish", rationale="farther"),
    ]
    with FakeLLM(script) as fake:
        project = llm_project(tmp_path, fake, provider="anthropic")
        row = run(project)
    assert row["decision"] == "discard" and row["cost_tokens"] == 220
    expected = (200 * 1.0 + 20 * 10.0) / 1e6  # two turns of 100 in and 10 out
    status = json.loads(ratchet(project, "status", "--json").stdout)
    assert status["cost_usd"] == pytest.approx(expected)
    header, _, last = (project / ".ratchet" / "results.tsv").read_text().splitlines()
    assert float(last.split("\t")[header.split("\t").index("cost_usd")]) == pytest.approx(expected)


@BOTH
def test_a_429_storm_is_waited_out_over_either_protocol(tmp_path: Path, provider: str) -> None:
    script = [
        error(429, **{"Retry-After": "1"}),
        error(429, **{"retry-after-ms": "10"}),
        error(503),
        tool_call("edit", path="value.py", search="X = 5", replace="X = 3"),
        tool_call("finish", rationale="closer"),
    ]
    with FakeLLM(script) as fake:
        started = time.monotonic()
        row = run(llm_project(tmp_path, fake, provider=provider))
    assert row["decision"] == "keep"
    assert len(fake.requests) == 5
    assert time.monotonic() - started >= 1.0  # the first Retry-After was honoured


@BOTH
def test_a_reply_that_times_out_is_retried(tmp_path: Path, provider: str) -> None:
    script = [
        late(5, tool_call("finish", rationale="too late")),
        tool_call("edit", path="value.py", search="X = 5", replace="X = 3"),
        tool_call("finish", rationale="in time"),
    ]
    with FakeLLM(script) as fake:
        extra = 'request_timeout = "1s"\nbudget = "20s"'
        row = run(llm_project(tmp_path, fake, provider=provider, extra=extra))
    assert row["decision"] == "keep" and row["rationale"] == "in time"
    assert len(fake.requests) == 3


@BOTH
def test_an_endpoint_that_never_answers_in_time_is_an_invalid_proposal(
    tmp_path: Path, provider: str
) -> None:
    with FakeLLM([late(3, tool_call("finish", rationale="late"))] * 4) as fake:
        started = time.monotonic()
        extra = 'request_timeout = "1s"'
        row = run(llm_project(tmp_path, fake, provider=provider, extra=extra))
    assert row["decision"] == "invalid-proposal"
    assert "Timeout" in row["why"], row["why"]
    assert time.monotonic() - started < 30


@BOTH
def test_a_model_that_never_finishes_over_either_protocol(tmp_path: Path, provider: str) -> None:
    with FakeLLM([{"content": "thinking..."}] * 5) as fake:
        row = run(llm_project(tmp_path, fake, provider=provider, extra="max_turns = 2"))
    assert row["decision"] == "invalid-proposal"
    assert row["why"] == "the model did not call finish within 2 turns"


@BOTH
def test_a_malformed_reply_over_either_protocol(tmp_path: Path, provider: str) -> None:
    with FakeLLM(["{not json"]) as fake:
        row = run(llm_project(tmp_path, fake, provider=provider))
    assert row["decision"] == "invalid-proposal"
    assert row["why"].startswith("the model's endpoint failed")


@BOTH
def test_the_same_edit_twice_is_a_duplicate_naming_the_first(tmp_path: Path, provider: str) -> None:
    worse = [
        tool_call("edit", path="value.py", search="X = 5", replace="X = 9"),
        tool_call("finish", rationale="try nine"),
    ]
    with FakeLLM(worse * 2) as fake:
        project = llm_project(tmp_path, fake, provider=provider, extra="")
        spec = (
            (project / "ratchet.toml")
            .read_text()
            .replace("max_experiments = 1", "max_experiments = 2")
        )
        (project / "ratchet.toml").write_text(spec)
        git(project, "commit", "-qam", "two experiments")
        result = ratchet(project, "run", env={"FAKE_LLM_KEY": "k"})
    assert result.returncode == 0, result.stderr
    rows = experiments(project)
    assert [r["decision"] for r in rows] == ["keep", "discard", "duplicate"]
    assert rows[2]["why"].startswith(f"the same change as experiment #{rows[1]['id']}")


def test_a_model_without_tools_can_answer_with_a_whole_file(tmp_path: Path) -> None:
    reply = "Set X to its best value.\n\nvalue.py\n```python\nX = 2\n```\n"
    with FakeLLM([{"content": reply}]) as fake:
        row = run(llm_project(tmp_path, fake))
    assert row["decision"] == "keep" and row["rationale"] == "Set X to its best value."
    assert git(tmp_path / "p", "show", "ratchet/default:value.py") == "X = 2"


def test_a_whole_file_outside_the_scope_is_an_invalid_proposal(tmp_path: Path) -> None:
    reply = "Cheat.\n\nscore.py\n```python\nprint('score: 0')\n```\n"
    with FakeLLM([{"content": reply}]) as fake:
        row = run(llm_project(tmp_path, fake))
    assert row["decision"] == "invalid-proposal"
    assert "score.py, outside the editable scope" in row["why"]


def test_two_slots_ask_the_model_at_once(tmp_path: Path) -> None:
    def change(value: int) -> dict[str, Any]:  # one turn: the edit, then finish
        calls = tool_call("edit", path="value.py", search="X = 5", replace=f"X = {value}")
        done = tool_call("finish", rationale=f"try {value}")
        return {"tool_calls": calls["tool_calls"] + done["tool_calls"]}

    with FakeLLM([late(3, change(3)), late(3, change(4))]) as fake:
        project = llm_project(tmp_path, fake, extra="")
        spec = (
            (project / "ratchet.toml")
            .read_text()
            .replace("max_experiments = 1", "max_experiments = 2")
        )
        (project / "ratchet.toml").write_text(spec + "[executor]\nparallel = 2\n")
        git(project, "commit", "-qam", "two slots")
        result = ratchet(project, "run", env={"FAKE_LLM_KEY": "k"})
    assert result.returncode == 0, result.stderr
    rows = experiments(project)[1:]
    assert {r["slot"] for r in rows} == {0, 1}
    assert {r["rationale"] for r in rows} == {"try 3", "try 4"}
    assert len(fake.requests) == 2  # one conversation each
    # side by side: the second request came before the first reply (3 s late) went out
    assert fake.arrived[1] - fake.arrived[0] < 3
