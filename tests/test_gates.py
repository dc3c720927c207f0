"""Gates parse from the spec's strings, and fail with a sentence that says why."""

from __future__ import annotations

import math

import pytest

from ratchet.gates import Gate, check_gates, parse_gate, parse_gates


@pytest.mark.parametrize(
    ("text", "op", "bound"),
    [
        ("<= 40", "<=", 40.0),
        ("<40", "<", 40.0),
        (" >=  0.9 ", ">=", 0.9),
        ("> -1.5", ">", -1.5),
        ("== 3", "==", 3.0),
        ("!= 0", "!=", 0.0),
        ("<= 1e-3", "<=", 0.001),
        ("<= 2.5E+2", "<=", 250.0),
        ("< .5", "<", 0.5),
    ],
)
def test_parse(text: str, op: str, bound: float) -> None:
    assert parse_gate("m", text) == Gate("m", op, bound)


@pytest.mark.parametrize(
    "text", ["less than 40", "40", "<=", "=< 40", "<= 40 GB", "<= nan", "<= inf", "", "<< 4"]
)
def test_bad_gate_is_one_line_naming_the_metric(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_gate("memory_gb", text)
    message = str(info.value)
    assert message.startswith("gate 'memory_gb': expected an operator and a number")
    assert repr(text) in message and "\n" not in message


def test_bad_gate_message_example() -> None:
    with pytest.raises(ValueError) as info:
        parse_gate("memory_gb", "less than 40")
    assert str(info.value) == (
        "gate 'memory_gb': expected an operator and a number such as '<= 40', got 'less than 40'"
    )


def test_huge_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="too large"):
        parse_gate("m", "< 1e999")


@pytest.mark.parametrize(
    ("text", "passing", "failing"),
    [
        ("<= 40", [40.0, 39.9], [40.1]),
        ("< 40", [39.9], [40.0]),
        (">= 0.9", [0.9, 1.0], [0.89]),
        ("> 0.9", [0.91], [0.9]),
        ("== 3", [3.0], [3.0001]),
        ("!= 0", [1.0], [0.0]),
    ],
)
def test_check_each_operator(text: str, passing: list[float], failing: list[float]) -> None:
    gate = parse_gate("m", text)
    for value in passing:
        assert gate.check({"m": value}) is None, value
    for value in failing:
        assert gate.check({"m": value}) == f"m {value:g} is not {text}", value


def test_failure_sentence() -> None:
    gate = parse_gate("memory_gb", "<= 40")
    assert gate.check({"memory_gb": 43.2}) == "memory_gb 43.2 is not <= 40"
    assert str(gate) == "memory_gb <= 40"


def test_missing_metric_fails() -> None:
    gate = parse_gate("memory_gb", "<= 40")
    assert gate.check({"val_loss": 1.0}) == (
        "memory_gb was not reported, and the gate 'memory_gb <= 40' needs it"
    )


def test_nan_fails_every_operator() -> None:
    for text in ["<= 40", ">= 0", "!= 5"]:
        why = parse_gate("m", text).check({"m": math.nan})
        assert why is not None and "NaN" in why


def test_check_gates_returns_first_failure() -> None:
    gates = parse_gates({"memory_gb": "<= 40", "accuracy": ">= 0.9", "latency": "< 5"})
    assert [g.metric for g in gates] == ["memory_gb", "accuracy", "latency"]
    assert check_gates(gates, {"memory_gb": 30, "accuracy": 0.95, "latency": 1}) is None
    assert check_gates(gates, {"memory_gb": 30, "accuracy": 0.5, "latency": 9}) == (
        "accuracy 0.5 is not >= 0.9"
    )
    assert check_gates([], {}) is None


def test_parse_gates_raises_on_the_bad_one() -> None:
    with pytest.raises(ValueError, match=r"^gate 'accuracy'"):
        parse_gates({"memory_gb": "<= 40", "accuracy": "at least 0.9"})
