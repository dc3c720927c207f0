"""The llm proposer through the real openai SDK, against a scripted server on loopback."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from fake_llm import FakeLLM, error, tool_call

from conftest import experiments, git, make_project, ratchet

FILES = {
    "value.py": "X = 5\n",
    "score.py": "from value import X\nprint(f'score: {(X - 2) ** 2}')\n",
    "secret_eval.py": "HOLDOUT = 42\n",
}


def llm_project(tmp_path: Path, base_url: str, extra: str = "") -> Path:
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


def test_a_scripted_model_lists_reads_edits_and_finishes_and_is_kept(tmp_path: Path) -> None:
    script = [
        tool_call("list_files"),
        tool_call("read_file", path="value.py"),
        tool_call("edit", path="value.py", search="X = 5", replace="X = 2"),
        tool_call("finish", rationale="move X to the minimum"),
    ]
    with FakeLLM(script) as fake:
        row = run(llm_project(tmp_path, fake.base_url))
    assert row["decision"] == "keep" and row["rationale"] == "move X to the minimum"
    assert row["cost_tokens"] == 4 * 110
    assert row["cost_usd"] == (4 * 100 * 1.0 + 4 * 10 * 10.0) / 1e6
    project = tmp_path / "p"
    assert git(project, "show", "ratchet/default:value.py") == "X = 2"
    first = fake.requests[0]
    assert first["model"] == "fake-model"
    assert {t["function"]["name"] for t in first["tools"]} >= {"edit", "finish", "grep"}
    assert "X = 5" in first["messages"][1]["content"]  # the scope's files, shown
    listing = fake.requests[1]["messages"][-1]["content"]
    assert "score.py" in listing and "secret_eval.py" not in listing  # hidden: protected


def test_an_edit_outside_the_scope_is_refused_to_the_model(tmp_path: Path) -> None:
    script = [
        tool_call("edit", path="score.py", search="print", replace="0 and print"),
        tool_call("read_file", path="secret_eval.py"),
        tool_call("finish", rationale="gave up"),
    ]
    with FakeLLM(script) as fake:
        row = run(llm_project(tmp_path, fake.base_url))
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
        row = run(llm_project(tmp_path, fake.base_url))
    assert row["decision"] == "keep"
    assert len(fake.requests) == 4


def test_a_model_that_never_finishes_is_an_invalid_proposal(tmp_path: Path) -> None:
    with FakeLLM([{"content": "thinking..."}] * 5) as fake:
        row = run(llm_project(tmp_path, fake.base_url, extra="max_turns = 3"))
    assert row["decision"] == "invalid-proposal"
    assert row["why"] == "the model did not call finish within 3 turns"
    assert len(fake.requests) == 3


def test_a_malformed_reply_is_an_invalid_proposal(tmp_path: Path) -> None:
    with FakeLLM(["this is not json"]) as fake:
        row = run(llm_project(tmp_path, fake.base_url))
    assert row["decision"] == "invalid-proposal"
    assert row["why"].startswith("the model's endpoint failed")


def test_the_api_key_reaches_the_endpoint_only(tmp_path: Path) -> None:
    with FakeLLM([tool_call("finish", rationale="nothing")]) as fake:
        project = llm_project(tmp_path, fake.base_url)
        run(project)
    assert b"sk-fake-0123456789" not in (project / ".ratchet" / "journal.db").read_bytes()


def test_a_model_without_tools_can_answer_with_search_replace_blocks(tmp_path: Path) -> None:
    reply = (
        "Move X to the minimum of the score.\n\n"
        "value.py\n<<<<<<< SEARCH\nX = 5\n=======\nX = 2\n>>>>>>> REPLACE\n"
    )
    with FakeLLM([{"content": reply}]) as fake:
        row = run(llm_project(tmp_path, fake.base_url))
    assert row["decision"] == "keep"
    assert row["rationale"] == "Move X to the minimum of the score."
    assert len(fake.requests) == 1


def test_a_search_replace_block_outside_the_scope_is_an_invalid_proposal(tmp_path: Path) -> None:
    reply = "Cheat.\n\nscore.py\n<<<<<<< SEARCH\nprint\n=======\n0 and print\n>>>>>>> REPLACE\n"
    with FakeLLM([{"content": reply}]) as fake:
        row = run(llm_project(tmp_path, fake.base_url))
    assert row["decision"] == "invalid-proposal"
    assert "outside the editable scope" in row["why"]
