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
    """One operator on two values. Written without short-circuit logic (``|`` not
    ``or``) so that, inlined with a constant ``op``, each loop compiles to selects and
    vectorises."""
    unknown = (x != x) | (y != y)
    if op == ADD:
        return x + y
    if op == SUB:
        return x - y
    if op == MUL:
        return x * y
    if op == DIV:
        return NAN if y == 0.0 else x / y
    if op == AND:
        return 0.0 if (x == 0.0) | (y == 0.0) else (NAN if unknown else 1.0)
    if op == OR:
        return 1.0 if (x == 1.0) | (y == 1.0) else (NAN if unknown else 0.0)
    if op == LT:
        r = 1.0 if x < y else 0.0
    elif op == LE:
        r = 1.0 if x <= y else 0.0
    elif op == GT:
        r = 1.0 if x > y else 0.0
    elif op == GE:
        r = 1.0 if x >= y else 0.0
    elif op == EQ:
        r = 1.0 if x == y else 0.0
    elif op == NE:
        r = 1.0 if x != y else 0.0
    elif op == MIN:
        r = x if x < y else y
    else:  # MAX
        r = x if x > y else y
    return NAN if unknown else r


@njit(cache=True, inline="always")
def _loop_nb(op, a, b, n):
    for s in range(n):
        a[s] = _binary_nb(op, a[s], b[s])


@njit(cache=True)
def _binary_vec_nb(op, a, b, n):
    # A loop per operator with the operator a constant in it, so none branches per element.
    if op == ADD:
        _loop_nb(ADD, a, b, n)
    elif op == SUB:
        _loop_nb(SUB, a, b, n)
    elif op == MUL:
        _loop_nb(MUL, a, b, n)
    elif op == DIV:
        _loop_nb(DIV, a, b, n)
    elif op == LT:
        _loop_nb(LT, a, b, n)
    elif op == LE:
        _loop_nb(LE, a, b, n)
    elif op == GT:
        _loop_nb(GT, a, b, n)
    elif op == GE:
        _loop_nb(GE, a, b, n)
    elif op == EQ:
        _loop_nb(EQ, a, b, n)
    elif op == NE:
        _loop_nb(NE, a, b, n)
    elif op == AND:
        _loop_nb(AND, a, b, n)
    elif op == OR:
        _loop_nb(OR, a, b, n)
    elif op == MIN:
        _loop_nb(MIN, a, b, n)
    else:
        _loop_nb(MAX, a, b, n)


#: Symbols per block: every program runs over one block before the next, so the stack
#: (a few vectors of BLOCK doubles) stays in L1 instead of streaming through L2.
BLOCK = 256


@njit(cache=True, nogil=True)
def run_programs_nb(ops, kinds, consts, rows, offs, starts, data, n, stack, out):
    """Run programs ``starts[p] .. starts[p + 1] - 1`` for p = 0..P-1 into ``out[p, :n]``.

    A LOAD (or a binary op fused with one) reads ``data[rows[i], offs[i] : offs[i] + n]``;
    a CONST (or fused) reads ``consts[i]``. ``stack`` has one row more than the deepest
    program needs (the last row broadcasts fused constants) and ``min(n, BLOCK)`` columns.
    """
    for b0 in range(0, n, BLOCK):
        m = min(BLOCK, n - b0)
        for p in range(starts.shape[0] - 1):
            sp = 0
            for i in range(starts[p], starts[p + 1]):
                op = ops[i]
                if op == LOAD:
                    src = data[rows[i], offs[i] + b0 : offs[i] + b0 + m]
                    dst = stack[sp]
                    for s in range(m):
                        dst[s] = src[s]
                    sp += 1
                elif op == CONST:
                    v = consts[i]
                    dst = stack[sp]
                    for s in range(m):
                        dst[s] = v
                    sp += 1
                elif op == NEG:
                    a = stack[sp - 1]
                    for s in range(m):
                        a[s] = -a[s]
                elif op == NOT:
                    a = stack[sp - 1]
                    for s in range(m):
                        a[s] = 1.0 - a[s]
                elif op == ABS:
                    a = stack[sp - 1]
                    for s in range(m):
                        a[s] = abs(a[s])
                else:
                    kind = kinds[i]
                    if kind == FROM_CONST:  # broadcast into the spare row
                        spare = stack[stack.shape[0] - 1]
                        v = consts[i]
                        for s in range(m):
                            spare[s] = v
                        _binary_vec_nb(op, stack[sp - 1], spare, m)
                    elif kind == FROM_DATA:
                        off = offs[i] + b0
                        _binary_vec_nb(op, stack[sp - 1], data[rows[i], off : off + m], m)
                    else:
                        sp -= 1
                        _binary_vec_nb(op, stack[sp - 1], stack[sp], m)
            res = stack[0]
            dst = out[p]
            for s in range(m):
                dst[b0 + s] = res[s]
