"""Harness mode's pure parts: the paired test, the holdout split, task loading, rewards."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from ratchet.spec import SpecError, SuiteSpec, parse_spec
from ratchet.suite import paired
from ratchet.suite.local import read_reward
from ratchet.suite.tasks import Split, holdout_names, load_suite


def pairs(values: list[tuple[float, float]]) -> list[paired.Pair]:
    return [paired.Pair(f"t{i}", 0, c, b) for i, (c, b) in enumerate(values)]


def test_mcnemar_uses_only_the_discordant_pairs() -> None:
    test = paired.paired_test(pairs([(1, 0)] * 6 + [(1, 1)] * 10 + [(0, 0)] * 4))
    assert test.binary and (test.better, test.worse) == (6, 0)
    assert test.p_value == pytest.approx(1 / 64)
    mixed = paired.paired_test(pairs([(1, 0)] * 5 + [(0, 1)]))
    assert mixed.p_value == pytest.approx(7 / 64)  # P(X >= 5), X ~ Bin(6, 1/2)


def test_partial_credit_uses_the_exact_sign_flip_test() -> None:
    test = paired.paired_test(pairs([(0.5, 0.25), (0.75, 0.5), (1.0, 0.5)]))
    assert not test.binary
    assert test.p_value == pytest.approx(1 / 8)  # only all-positive reaches the sum
    assert paired.sign_flip_p([0.1, -0.1]) == pytest.approx(0.75)


def test_the_sequential_steps() -> None:
    strong = paired.paired_test(pairs([(1, 0)] * 9))
    assert paired.step(strong, 0.01, 1, 3) == "keep"  # 1/512 <= 0.01/3
    weak = paired.paired_test(pairs([(1, 0)] * 3))
    assert paired.step(weak, 0.01, 1, 3) == "continue"
    assert paired.step(weak, 0.01, 3, 3) == "discard"
    behind = paired.paired_test(pairs([(0, 1)] * 3))
    assert paired.step(behind, 0.01, 1, 3) == "discard"
    assert paired.deciding_tasks(pairs([(1, 0), (1, 1), (0, 1)])) == ["t0", "t2"]


def test_coin_flip_candidates_are_rarely_kept() -> None:
    """No change on 50% tasks: the Bonferroni-split sequential test keeps at most alpha."""
    rng = random.Random(7)

    def coin_flips(tasks: Sequence[str], look: int) -> list[paired.Pair]:
        return [paired.Pair(t, look, rng.random() < 0.5, rng.random() < 0.5) for t in tasks]

    keeps = 0
    for _ in range(2000):
        tasks = [f"t{i}" for i in range(10)]
        verdict, _, _ = paired.sequential(tasks, 0.05, 3, coin_flips)
        keeps += verdict == "keep"
    assert keeps / 2000 <= 0.05
    # a real improvement is found: every task flipped from fail to pass
    always = paired.sequential(
        tasks, 0.05, 3, lambda ts, look: [paired.Pair(t, look, 1, 0) for t in ts]
    )
    assert always[0] == "keep"


def test_the_holdout_split_is_deterministic_and_stable() -> None:
    names = [f"task-{i:02d}" for i in range(20)]
    held = holdout_names(names, 0.25)
    assert len(held) == 5 and held == holdout_names(list(reversed(names)), 0.25)
    # adding a task moves no other task into or out of the holdout, beyond the count
    more = holdout_names([*names, "task-99"], 0.25)
    assert len(more - held - {"task-99"}) <= 1 and len(held - more) <= 1
    assert holdout_names(names, ["task-03"]) == {"task-03"}
    with pytest.raises(SpecError, match="no task named 'nope'"):
        holdout_names(names, ["nope"])
    assert holdout_names(["only"], 0.5) == set()


def write_task(root: Path, name: str, toml: str = "") -> None:
    (root / name / "tests").mkdir(parents=True)
    (root / name / "instruction.md").write_text(f"do {name}\n")
    (root / name / "tests" / "test.sh").write_text("#!/bin/sh\n")
    if toml:
        (root / name / "task.toml").write_text(toml)


def test_tasks_load_with_their_timeouts(tmp_path: Path) -> None:
    write_task(
        tmp_path / "tasks", "a", "[agent]\ntimeout_sec = 12.5\n[verifier]\ntimeout_sec = 3\n"
    )
    write_task(tmp_path / "tasks", "b")
    (tmp_path / "tasks" / "notes").mkdir()  # no instruction.md: not a task
    spec = SuiteSpec(tasks="tasks", agent="agent.py:run", holdout=["b"])
    suite = load_suite(tmp_path, spec)
    assert [t.name for t in suite.tasks] == ["a", "b"]
    a = suite.task("a")
    assert (a.agent_timeout, a.verifier_timeout, a.split) == (12.5, 3.0, Split.SEARCH)
    assert suite.task("b").split == Split.HOLDOUT and suite.task("b").agent_timeout == 600.0
    write_task(tmp_path / "bad", "c", "[agent]\ntimeout_sec = -1\n")
    with pytest.raises(SpecError, match=r"c/task.toml \[agent\] timeout_sec"):
        load_suite(tmp_path, SuiteSpec(tasks="bad", agent="agent.py:run"))


def test_reward_json_wins_and_a_missing_reward_says_so(tmp_path: Path) -> None:
    (tmp_path / "reward.txt").write_text("0\n")
    (tmp_path / "reward.json").write_text(json.dumps({"reward": 0.75, "style": 1}))
    assert read_reward(tmp_path) == (0.75, {"reward": 0.75, "style": 1.0}, "")
    (tmp_path / "reward.json").unlink()
    assert read_reward(tmp_path)[0] == 0.0
    (tmp_path / "reward.txt").unlink()
    reward, _, why = read_reward(tmp_path)
    assert reward is None and "wrote no reward" in why
    (tmp_path / "reward.txt").write_text("nan\n")
    assert read_reward(tmp_path)[0] is None


def test_the_suite_spec_and_its_pairing() -> None:
    data = {
        "scope": {"editable": ["agent.py"]},
        "suite": {"tasks": "tasks", "agent": "agent.py:run", "model": "gpt-x"},
        "proposer": {"kind": "llm"},
    }
    spec = parse_spec(data, "ratchet.toml")
    assert (spec.metric.name, spec.metric.goal, spec.proposer.model) == (
        "reward",
        "maximize",
        "gpt-x",
    )
    own = parse_spec({**data, "proposer": {"kind": "llm", "model": "other"}}, "ratchet.toml")
    assert own.proposer.model == "other"
    passed = parse_spec({**data, "metric": {"name": "passed"}}, "ratchet.toml")
    assert passed.metric.name == "passed"
    with pytest.raises(SpecError, match="'reward' or 'passed'"):
        parse_spec({**data, "metric": {"name": "score"}}, "ratchet.toml")
    with pytest.raises(SpecError, match="is maximized"):
        parse_spec({**data, "metric": {"goal": "minimize"}}, "ratchet.toml")
    with pytest.raises(SpecError, match=r"agent\.py:run"):
        parse_spec({**data, "suite": {"tasks": "t", "agent": "agent.run"}}, "ratchet.toml")
