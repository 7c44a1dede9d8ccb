"""A slow, obviously-correct rule evaluator: the AST walked bar by bar in plain Python.

It shares nothing with the compiler but the syntax tree and the column names. It reads
the definitions straight off the documentation:

- a number before its input has a value is unknown (NaN); arithmetic on unknowns is
  unknown, and so is ``x / 0``;
- comparisons of unknowns are unknown; ``and`` / ``or`` / ``not`` are Kleene's;
- ``x[n]`` is x evaluated n bars earlier; before the first bar it is unknown;
- ``crosses_above(a, b)`` is ``a[1] <= b[1] and a > b``, ``crosses_below`` its mirror,
  ``crosses`` either; ``within(c, n)`` is ``c or c[1] or … c[n-1]``;
- ``highest`` / ``lowest`` over n bars is unknown if any of them is;
- ``change_pct(x, n)`` is ``(x - x[n]) / x[n] * 100``.
"""

from __future__ import annotations

import math

from technic_stream.rules.ast import Binary, Call, Field, Indicator, Lag, Node, Num, Rule, Unary

NAN = float("nan")
TRUE, FALSE = 1.0, 0.0


def _unknown(*xs: float) -> bool:
    return any(math.isnan(x) for x in xs)


def _and(x: float, y: float) -> float:
    if x == FALSE or y == FALSE:
        return FALSE
    return NAN if _unknown(x, y) else TRUE


def _or(x: float, y: float) -> float:
    if x == TRUE or y == TRUE:
        return TRUE
    return NAN if _unknown(x, y) else FALSE


def _cmp(op: str, x: float, y: float) -> float:
    if _unknown(x, y):
        return NAN
    result = {
        "<": x < y,
        "<=": x <= y,
        ">": x > y,
        ">=": x >= y,
        "==": x == y,
        "!=": x != y,
    }[op]
    return TRUE if result else FALSE


def _arith(op: str, x: float, y: float) -> float:
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    if op == "*":
        return x * y
    return NAN if y == 0.0 else x / y


def value(node: Node, t: int, columns: dict[str, list[float]]) -> float:
    """The node's value at bar t (t < 0: before the series starts)."""
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Field | Indicator):
        if t < 0:
            return NAN
        name = node.name if isinstance(node, Field) else node.column
        return float(columns[name][t])
    if isinstance(node, Lag):
        return value(node.x, t - node.n, columns)
    if isinstance(node, Unary):
        x = value(node.x, t, columns)
        if node.op == "-":
            return -x
        return NAN if math.isnan(x) else (FALSE if x == TRUE else TRUE)
    if isinstance(node, Binary):
        x = value(node.a, t, columns)
        y = value(node.b, t, columns)
        if node.op == "and":
            return _and(x, y)
        if node.op == "or":
            return _or(x, y)
        if node.op in ("+", "-", "*", "/"):
            return _arith(node.op, x, y)
        return _cmp(node.op, x, y)
    assert isinstance(node, Call)
    return _call(node, t, columns)


def _call(node: Call, t: int, columns: dict[str, list[float]]) -> float:
    name, args, n = node.name, node.args, node.n
    if name in ("crosses_above", "crosses_below", "crosses"):
        a, b = args
        a0, b0 = value(a, t, columns), value(b, t, columns)
        a1, b1 = value(a, t - 1, columns), value(b, t - 1, columns)
        above = _and(_cmp("<=", a1, b1), _cmp(">", a0, b0))
        below = _and(_cmp(">=", a1, b1), _cmp("<", a0, b0))
        return {"crosses_above": above, "crosses_below": below}.get(name, _or(above, below))
    if name == "within":
        result = FALSE
        for i in range(n):
            result = _or(result, value(args[0], t - i, columns))
        return result
    if name in ("highest", "lowest"):
        xs = [value(args[0], t - i, columns) for i in range(n)]
        if _unknown(*xs):
            return NAN
        return max(xs) if name == "highest" else min(xs)
    if name == "change_pct":
        now, then = value(args[0], t, columns), value(args[0], t - n, columns)
        return _arith("*", _arith("/", now - then, then), 100.0)
    if name == "abs":
        return abs(value(args[0], t, columns))
    x, y = value(args[0], t, columns), value(args[1], t, columns)
    if _unknown(x, y):
        return NAN
    return min(x, y) if name == "min" else max(x, y)


def evaluate(
    rule: Rule, columns: dict[str, list[float]], n: int
) -> tuple[list[float], list[float]]:
    """(condition, score) at every bar 0..n-1; score is all-NaN without ``rank by``."""
    cond = [value(rule.where, t, columns) for t in range(n)]
    rank = rule.rank_by
    score = [NAN if rank is None else value(rank, t, columns) for t in range(n)]
    return cond, score
