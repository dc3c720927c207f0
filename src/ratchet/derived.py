"""Derived metrics: `[metric] derive = { memory_gb = "peak_vram_mb / 1024" }`.

A derived metric is arithmetic over the metrics a measurement reported (names, numbers,
`+ - * / // % **`, parentheses, `round(x, n)`, `min`, `max`, `abs`), computed after the
output is read, so that gates, the metric itself and `results.tsv` see it like any
other. Expressions are parsed once, by `ast`, and never handed to `eval`.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Any

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {"round": round, "min": min, "max": max, "abs": abs}


def _check(node: ast.AST) -> None:
    if isinstance(node, ast.Expression):
        _check(node.body)
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        _check(node.left)
        _check(node.right)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        _check(node.operand)
    elif isinstance(node, ast.Name) or (
        isinstance(node, ast.Constant) and type(node.value) in (int, float)
    ):
        pass  # a metric's name, or a number
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        for arg in node.args:
            _check(arg)
    else:
        raise ValueError(f"{ast.unparse(node)!r} is not allowed (arithmetic over metric names)")


def parse_expression(text: str) -> ast.Expression:
    """The expression, checked; a ValueError names what is not allowed."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as error:
        raise ValueError(f"{text!r} is not an expression ({error.msg})") from None
    _check(tree)
    return tree


def names_in(tree: ast.Expression) -> set[str]:
    called = {
        id(n.func)
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in called}


def _value(node: ast.AST, metrics: dict[str, float]) -> float:
    if isinstance(node, ast.Expression):
        return _value(node.body, metrics)
    if isinstance(node, ast.BinOp):
        return float(
            _BINARY[type(node.op)](_value(node.left, metrics), _value(node.right, metrics))
        )
    if isinstance(node, ast.UnaryOp):
        operand = _value(node.operand, metrics)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.Constant):
        return float(node.value)  # type: ignore[arg-type]  # _check allowed only numbers
    if isinstance(node, ast.Name):
        return metrics[node.id]
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    args = [_value(a, metrics) for a in node.args]
    if node.func.id == "round":
        return float(round(args[0], int(args[1]) if len(args) > 1 else None))
    return float(_FUNCTIONS[node.func.id](*args))


def add_derived(metrics: dict[str, float], derive: dict[str, str]) -> None:
    """Add each derived metric whose inputs were all reported (in the order declared, so
    one may use another); a metric the output reported itself is left as reported."""
    for name, text in derive.items():
        if name in metrics:
            continue
        tree = parse_expression(text)
        if not names_in(tree) <= metrics.keys():
            continue
        try:
            metrics[name] = _value(tree, metrics)
        except (ArithmeticError, ValueError, TypeError):
            continue  # a division by zero: the metric is missing, as if not reported
