"""The rule machine: postfix programs evaluated column-at-a-time over a vector axis.

A program is a sequence of instructions over a stack of vectors (one value per symbol
for a live or snapshot evaluation, one per bar for a history scan). Every instruction
runs one tight loop over the whole vector, so the cost per symbol is a few cycles per
instruction and no Python runs per symbol. A LOAD or CONST directly followed by a
binary operator is fused into it (``kind``), saving a copy.

Values are float64. A condition is 1.0 (true), 0.0 (false) or NaN (unknown: an input
was not ready); arithmetic and comparisons propagate NaN, ``and`` / ``or`` follow
Kleene's three-valued logic (false and unknown = false, true or unknown = true), and
``x / 0`` is unknown rather than infinite.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["run_programs_nb"]

LOAD, CONST, NEG, NOT, ABS = 0, 1, 2, 3, 4
ADD, SUB, MUL, DIV, LT, LE, GT, GE, EQ, NE, AND, OR, MIN, MAX = range(5, 19)
BINARY = frozenset(range(ADD, MAX + 1))
OPCODES = {
    "load": LOAD, "const": CONST, "neg": NEG, "not": NOT, "abs": ABS,
    "+": ADD, "-": SUB, "*": MUL, "/": DIV, "<": LT, "<=": LE, ">": GT, ">=": GE,
    "==": EQ, "!=": NE, "and": AND, "or": OR, "min": MIN, "max": MAX,
}  # fmt: skip

#: where a binary instruction takes its right operand from
ON_STACK, FROM_DATA, FROM_CONST = 0, 1, 2

NAN = np.nan


@njit(cache=True, inline="always")
def _binary_nb(op, x, y):
    if op == ADD:
        return x + y
    if op == SUB:
        return x - y
    if op == MUL:
        return x * y
    if op == DIV:
        return NAN if y == 0.0 else x / y
    if op == AND:
        if x == 0.0 or y == 0.0:
            return 0.0
        return NAN if (x != x or y != y) else 1.0
    if op == OR:
        if x == 1.0 or y == 1.0:
            return 1.0
        return NAN if (x != x or y != y) else 0.0
    if x != x or y != y:
        return NAN
    if op == LT:
        return 1.0 if x < y else 0.0
    if op == LE:
        return 1.0 if x <= y else 0.0
    if op == GT:
        return 1.0 if x > y else 0.0
    if op == GE:
        return 1.0 if x >= y else 0.0
    if op == EQ:
        return 1.0 if x == y else 0.0
    if op == NE:
        return 1.0 if x != y else 0.0
    if op == MIN:
        return x if x < y else y
    return x if x > y else y  # MAX


@njit(cache=True)
def _binary_vec_nb(op, a, b, n):
    # One loop per operator, so each loop body is branch-free enough to pipeline.
    if op == ADD:
        for s in range(n):
            a[s] = a[s] + b[s]
    elif op == SUB:
        for s in range(n):
            a[s] = a[s] - b[s]
    elif op == MUL:
        for s in range(n):
            a[s] = a[s] * b[s]
    elif op == LT:
        for s in range(n):
            a[s] = _binary_nb(LT, a[s], b[s])
    elif op == GT:
        for s in range(n):
            a[s] = _binary_nb(GT, a[s], b[s])
    elif op == AND:
        for s in range(n):
            a[s] = _binary_nb(AND, a[s], b[s])
    elif op == OR:
        for s in range(n):
            a[s] = _binary_nb(OR, a[s], b[s])
    else:
        for s in range(n):
            a[s] = _binary_nb(op, a[s], b[s])


@njit(cache=True)
def _binary_const_nb(op, a, y, n):
    if op == MUL:
        for s in range(n):
            a[s] = a[s] * y
    elif op == LT:
        for s in range(n):
            a[s] = _binary_nb(LT, a[s], y)
    elif op == GT:
        for s in range(n):
            a[s] = _binary_nb(GT, a[s], y)
    else:
        for s in range(n):
            a[s] = _binary_nb(op, a[s], y)


@njit(cache=True)
def run_programs_nb(ops, kinds, consts, rows, offs, starts, data, n, stack, out):
    """Run programs ``starts[p] .. starts[p + 1] - 1`` for p = 0..P-1 into ``out[p, :n]``.

    A LOAD (or a binary op fused with one) reads ``data[rows[i], offs[i] : offs[i] + n]``;
    a CONST (or fused) reads ``consts[i]``. ``stack`` has at least as many rows as the
    deepest program needs and n columns.
    """
    for p in range(starts.shape[0] - 1):
        sp = 0
        for i in range(starts[p], starts[p + 1]):
            op = ops[i]
            if op == LOAD:
                row = rows[i]
                off = offs[i]
                dst = stack[sp]
                for s in range(n):
                    dst[s] = data[row, off + s]
                sp += 1
            elif op == CONST:
                v = consts[i]
                dst = stack[sp]
                for s in range(n):
                    dst[s] = v
                sp += 1
            elif op == NEG:
                a = stack[sp - 1]
                for s in range(n):
                    a[s] = -a[s]
            elif op == NOT:
                a = stack[sp - 1]
                for s in range(n):
                    a[s] = 1.0 - a[s]
            elif op == ABS:
                a = stack[sp - 1]
                for s in range(n):
                    a[s] = abs(a[s])
            else:
                kind = kinds[i]
                if kind == FROM_CONST:
                    _binary_const_nb(op, stack[sp - 1], consts[i], n)
                elif kind == FROM_DATA:
                    off = offs[i]
                    _binary_vec_nb(op, stack[sp - 1], data[rows[i], off : off + n], n)
                else:
                    sp -= 1
                    _binary_vec_nb(op, stack[sp - 1], stack[sp], n)
        res = stack[0]
        dst = out[p]
        for s in range(n):
            dst[s] = res[s]
