"""Gates: bounds on secondary metrics that a candidate must respect to be kept.

The spec names them as `gates = { memory_gb = "<= 40", accuracy = ">= 0.9" }`. A
candidate that improves the primary metric but breaks a gate is discarded, and the
reason says which gate and by how much. A gate whose metric was not reported, or was
NaN, fails: a gate that silently passes on missing data guards nothing.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
    "==": operator.eq,
    "!=": operator.ne,
}
_GATE = re.compile(
    r"\s*(?P<op><=|>=|==|!=|<|>)\s*"
    r"(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*"
)


def _show(value: float) -> str:
    """40.0 -> '40', 43.2 -> '43.2', 1e-07 -> '1e-07': short, and exact."""
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


@dataclass(frozen=True)
class Gate:
    """`metric op bound`, e.g. `memory_gb <= 40`; `==` and `!=` compare floats exactly."""

    metric: str
    op: str
    bound: float

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {_show(self.bound)}"

    def check(self, metrics: Mapping[str, float]) -> str | None:
        """None when the gate passes; otherwise why it failed, as a sentence."""
        value = metrics.get(self.metric)
        if value is None:
            return f"{self.metric} was not reported, and the gate '{self}' needs it"
        value = float(value)
        if math.isnan(value):
            return f"{self.metric} was NaN, which fails the gate '{self}'"
        if _OPS[self.op](value, self.bound):
            return None
        return f"{self.metric} {_show(value)} is not {self.op} {_show(self.bound)}"


def parse_gate(metric: str, text: str) -> Gate:
    """`parse_gate("memory_gb", "<= 40")` -> Gate; ValueError in one line otherwise."""
    match = _GATE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"gate {metric!r}: expected an operator and a number such as '<= 40', got {text!r}"
        )
    bound = float(match["num"])
    if math.isinf(bound):
        raise ValueError(f"gate {metric!r}: the bound {match['num']!r} is too large")
    return Gate(metric=metric, op=match["op"], bound=bound)


def parse_gates(raw: Mapping[str, str]) -> list[Gate]:
    """The spec's `gates` table -> Gates, in the table's order.

    Raises ValueError, so it can serve as a pydantic validator: the message then
    lands on the `gates` key.
    """
    return [parse_gate(metric, text) for metric, text in raw.items()]


def check_gates(gates: list[Gate], metrics: Mapping[str, float]) -> str | None:
    """Why the first failing gate fails, or None when all pass."""
    for gate in gates:
        why = gate.check(metrics)
        if why is not None:
            return why
    return None
