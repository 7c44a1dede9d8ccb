"""Plan and compile rules: the indicators and history a rule needs, and its program.

Compilation pushes every lookback down to the leaves: ``(a + b)[2]`` reads ``a`` and
``b`` two bars back, ``within(c, 3)`` is ``c or c[1] or c[2]``, ``crosses_above(a, b)``
is ``a[1] <= b[1] and a > b``. The program therefore only ever loads *inputs* — a
column (a bar field or one indicator output) at a lag — and a set of rules shares one
input table, so indicators used by several rules are computed and loaded once.
``highest(high, n)`` and ``lowest(low, n)`` read the Donchian channel the kernels keep
in O(1) per bar instead of expanding into n loads.

The engine evaluates a :class:`RuleSet` for the latest bar of every symbol at once
(:meth:`RuleSet.evaluate_latest`); a history scan evaluates it over every bar of one
symbol (:meth:`RuleSet.evaluate_series`). Both run the same programs.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from technic_stream.indicators.registry import IndicatorSpec, spec
from technic_stream.indicators.series import batch_outputs
from technic_stream.rules import vm
from technic_stream.rules.ast import (
    FIELDS,
    Binary,
    Call,
    Field,
    Indicator,
    Lag,
    Node,
    Num,
    Rule,
    Unary,
)
from technic_stream.rules.parser import RuleError, RuleLimits, parse_rule

__all__ = ["Input", "RuleResults", "RuleSet", "compile_rules"]

MATCH, NO_MATCH, NOT_READY = 1, 0, -1


@dataclass(frozen=True, slots=True)
class Input:
    """One value a program reads: ``column`` (a bar field or indicator output) ``lag`` bars ago."""

    column: str
    lag: int
    lookback: int  # bars the column needs before its first value

    @property
    def history(self) -> int:
        """Bars a symbol must have seen before this input has a value."""
        return self.lag + self.lookback + 1


@dataclass(slots=True)
class _Emitter:
    text: str
    limits: RuleLimits
    inputs: dict[tuple[str, int], int]
    input_list: list[Input]
    specs: dict[IndicatorSpec, None]
    code: list[tuple[int, int, int, float]] = field(default_factory=list)  # op, kind, input, c
    calls: list[int] = field(default_factory=list)  # columns of the enclosing window calls

    def load(self, column: str, lookback: int, lag: int) -> None:
        key = (column, lag)
        index = self.inputs.get(key)
        if index is None:
            index = self.inputs[key] = len(self.input_list)
            self.input_list.append(Input(column, lag, lookback))
        self.push(vm.LOAD, index)

    def push(self, op: int, index: int = -1, const: float = 0.0) -> None:
        if len(self.code) >= self.limits.max_program:
            raise RuleError(
                self.text,
                self.calls[0] if self.calls else 1,  # the outermost window multiplies most
                f"rule expands to more than {self.limits.max_program:,} steps "
                "(window functions repeat their argument once per bar); use smaller windows",
            )
        self.code.append((op, vm.ON_STACK, index, const))

    def binary(self, op: int) -> None:
        last_op, _, index, const = self.code[-1]
        if last_op in (vm.LOAD, vm.CONST):  # the right operand is a leaf: fuse it
            self.code[-1] = (
                op,
                vm.FROM_DATA if last_op == vm.LOAD else vm.FROM_CONST,
                index,
                const,
            )
        else:
            self.push(op)

    def emit(self, node: Node, lag: int) -> None:
        if lag > self.limits.max_history:
            raise RuleError(
                self.text,
                node.col,
                f"reads {lag} bars back; the limit is {self.limits.max_history}",
            )
        if isinstance(node, Num):
            self.push(vm.CONST, const=node.value)
        elif isinstance(node, Field):
            self.load(node.name, 0, lag)
        elif isinstance(node, Indicator):
            self.specs[node.spec] = None
            self.load(node.column, node.lookback, lag)
        elif isinstance(node, Lag):
            self.emit(node.x, lag + node.n)
        elif isinstance(node, Unary):
            self.emit(node.x, lag)
            self.push(vm.NOT if node.op == "not" else vm.NEG)
        elif isinstance(node, Binary):
            self.emit(node.a, lag)
            self.emit(node.b, lag)
            self.binary(vm.OPCODES[node.op])
        elif isinstance(node, Call):
            self.call(node, lag)
        else:  # pragma: no cover - the parser builds only the nodes above
            raise TypeError(f"cannot compile {type(node).__name__}")

    def call(self, node: Call, lag: int) -> None:
        self.calls.append(node.col)
        try:
            self._call(node, lag)
        finally:
            self.calls.pop()

    def _call(self, node: Call, lag: int) -> None:
        name = node.name
        args = node.args
        if name in ("crosses_above", "crosses_below", "crosses"):
            a, b = args
            if name == "crosses":
                self.crossing(a, b, lag, above=True)
                self.crossing(a, b, lag, above=False)
                self.binary(vm.OR)
            else:
                self.crossing(a, b, lag, above=name == "crosses_above")
        elif name in ("highest", "lowest"):
            (x,) = args
            hi = name == "highest"
            if isinstance(x, Field) and x.name == ("high" if hi else "low"):
                channel = Indicator(node.col, spec("donchian", node.n), "upper" if hi else "lower")
                self.emit(channel, lag)
                return
            op = vm.MAX if hi else vm.MIN
            self.emit(x, lag)
            for i in range(1, node.n):
                self.emit(x, lag + i)
                self.binary(op)
        elif name == "within":
            (c,) = args
            self.emit(c, lag)
            for i in range(1, node.n):
                self.emit(c, lag + i)
                self.binary(vm.OR)
        elif name == "change_pct":  # (x - x[n]) / x[n] * 100
            (x,) = args
            self.emit(x, lag)
            self.emit(x, lag + node.n)
            self.binary(vm.SUB)
            self.emit(x, lag + node.n)
            self.binary(vm.DIV)
            self.push(vm.CONST, const=100.0)
            self.binary(vm.MUL)
        elif name == "abs":
            self.emit(args[0], lag)
            self.push(vm.ABS)
        else:  # min, max
            self.emit(args[0], lag)
            self.emit(args[1], lag)
            self.binary(vm.OPCODES[name])

    def crossing(self, a: Node, b: Node, lag: int, *, above: bool) -> None:
        # above: a[1] <= b[1] and a > b;  below: a[1] >= b[1] and a < b
        self.emit(a, lag + 1)
        self.emit(b, lag + 1)
        self.binary(vm.LE if above else vm.GE)
        self.emit(a, lag)
        self.emit(b, lag)
        self.binary(vm.GT if above else vm.LT)
        self.binary(vm.AND)


def _stack_depth(code: list[tuple[int, int, int, float]]) -> int:
    depth = peak = 0
    for op, kind, _, _ in code:
        if op in (vm.LOAD, vm.CONST):
            depth += 1
        elif op in vm.BINARY and kind == vm.ON_STACK:
            depth -= 1
        peak = max(peak, depth)
    return peak


Code = tuple[tuple[int, int, int, float], ...]  # op, kind, input, const


@dataclass(frozen=True, slots=True)
class _Program:
    """One rule compiled on its own: its programs (``where``, then ``rank by`` or None)
    read its own inputs, numbered from 0; :class:`RuleSet` renumbers them into the shared
    table."""

    inputs: tuple[Input, ...]
    specs: tuple[IndicatorSpec, ...]
    parts: tuple[Code | None, Code | None]
    depth: int


@functools.lru_cache(maxsize=16_384)
def _program(rule: Rule, limits: RuleLimits) -> _Program:
    """``rule`` compiled once, whatever set it joins: an engine rebuilds a timeframe's set
    on every rule change, and compiling every rule again made that ~20 µs a rule."""
    inputs: dict[tuple[str, int], int] = {}
    input_list: list[Input] = []
    specs: dict[IndicatorSpec, None] = {}
    parts: list[Code | None] = []
    depth = 1
    for node in (rule.where, rule.rank_by):
        if node is None:
            parts.append(None)
            continue
        e = _Emitter(rule.source or str(rule), limits, inputs, input_list, specs)
        e.emit(node, 0)
        depth = max(depth, _stack_depth(e.code))
        parts.append(tuple(e.code))
    return _Program(tuple(input_list), tuple(specs), (parts[0], parts[1]), depth)


class RuleResults:
    """What a :class:`RuleSet` evaluation produced: per rule, a value per symbol (or bar)."""

    __slots__ = ("_rank", "_values", "_where")

    def __init__(self, values: np.ndarray, where: list[int], rank: list[int]) -> None:
        self._values = values
        self._where = where
        self._rank = rank

    def condition(self, rule: int) -> np.ndarray:
        """1.0 where the rule holds, 0.0 where it does not, NaN where it is not ready."""
        return self._values[self._where[rule]]

    def match(self, rule: int) -> np.ndarray:
        return self.condition(rule) == 1.0

    def matches(self) -> np.ndarray:
        """``match`` of every rule at once: bool, (rules, symbols or bars)."""
        return self._values[self._where] == 1.0

    def programs(self) -> tuple[np.ndarray, np.ndarray]:
        """Every program's values (programs, symbols or bars) and each rule's row in
        them: ``condition(k)`` is ``values[rows[k]]``."""
        return self._values, np.asarray(self._where, dtype=np.int64)

    def ready(self, rule: int) -> np.ndarray:
        return ~np.isnan(self.condition(rule))

    def status(self, rule: int) -> np.ndarray:
        """MATCH (1), NO_MATCH (0) or NOT_READY (-1), as int8."""
        c = self.condition(rule)
        out = np.where(c == 1.0, MATCH, NO_MATCH).astype(np.int8)
        out[np.isnan(c)] = NOT_READY
        return out

    def score(self, rule: int) -> np.ndarray | None:
        """The rule's ``rank by`` value (NaN where unknown), or None if it has none."""
        p = self._rank[rule]
        return None if p < 0 else self._values[p]


class RuleSet:
    """Rules compiled together over one shared input table."""

    def __init__(self, rules: Sequence[str | Rule], limits: RuleLimits | None = None) -> None:
        self.limits = limits or RuleLimits()
        self.rules: list[Rule] = [
            r if isinstance(r, Rule) else parse_rule(r, self.limits) for r in rules
        ]
        inputs: dict[tuple[str, int], int] = {}
        self.inputs: list[Input] = []
        specs: dict[IndicatorSpec, None] = {}
        code: list[tuple[int, int, int, float]] = []
        starts = [0]
        self._where: list[int] = []
        self._rank: list[int] = []
        depth = 1
        for rule in self.rules:
            prog = _program(rule, self.limits)
            # the rule's inputs in the shared table (first use numbers them, as before)
            index = []
            for inp in prog.inputs:
                at = inputs.get((inp.column, inp.lag))
                if at is None:
                    at = inputs[(inp.column, inp.lag)] = len(self.inputs)
                    self.inputs.append(inp)
                index.append(at)
            specs.update(dict.fromkeys(prog.specs))
            depth = max(depth, prog.depth)
            for part, slots in zip(prog.parts, (self._where, self._rank), strict=True):
                if part is None:
                    slots.append(-1)
                    continue
                code.extend([(op, kind, index[i] if i >= 0 else i, c) for op, kind, i, c in part])
                slots.append(len(starts) - 1)
                starts.append(len(code))
        self.specs: list[IndicatorSpec] = list(specs)
        self.columns: list[str] = list(dict.fromkeys(i.column for i in self.inputs))
        self.max_lag = max((i.lag for i in self.inputs), default=0)
        #: bars a symbol must have seen before every input of every rule has a value
        self.history = max((i.history for i in self.inputs), default=1)
        self._ops = np.array([c[0] for c in code], dtype=np.int64)
        self._kinds = np.array([c[1] for c in code], dtype=np.int64)
        self._consts = np.array([c[3] for c in code], dtype=np.float64)
        self._inp = np.array([max(c[2], 0) for c in code], dtype=np.int64)
        self._starts = np.array(starts, dtype=np.int64)
        self._depth = depth
        self._live_offs = np.zeros(len(code), dtype=np.int64)
        col_index = {c: i for i, c in enumerate(self.columns)}
        self._input_col = np.array([col_index[i.column] for i in self.inputs], dtype=np.int64)
        self._input_lag = np.array([i.lag for i in self.inputs], dtype=np.int64)

    @property
    def n_programs(self) -> int:
        return len(self._starts) - 1

    def __len__(self) -> int:
        return len(self.rules)

    def evaluate_latest(self, values: np.ndarray) -> RuleResults:
        """Evaluate every rule for one bar of many symbols.

        ``values[i, s]`` is input ``self.inputs[i]`` (its column, ``lag`` bars before the
        bar evaluated) for symbol s, NaN where the symbol has no such value yet.
        """
        values = np.ascontiguousarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[0] != len(self.inputs):
            raise ValueError(
                f"values must be ({len(self.inputs)} inputs, symbols), got {values.shape}"
            )
        n = values.shape[1]
        return self._run(values, self._inp, self._live_offs, n)

    def evaluate_series(
        self, columns: Mapping[str, np.ndarray], n: int | None = None
    ) -> RuleResults:
        """Evaluate every rule on every bar of one symbol's series (``columns[c]`` per column).

        ``n`` (the number of bars) is needed only when the rules read no column at all.
        """
        missing = [c for c in self.columns if c not in columns]
        if missing:
            raise KeyError(f"missing column(s): {', '.join(missing)}")
        if n is None:
            n = len(columns[self.columns[0]]) if self.columns else 0
        pad = self.max_lag
        if self.columns:  # the lag padding is NaN; the rest is overwritten at once
            data = np.empty((len(self.columns), pad + n))
            data[:, :pad] = np.nan
            for i, c in enumerate(self.columns):
                data[i, pad:] = columns[c]
        else:
            data = np.full((1, pad + n), np.nan)
        rows = self._input_col[self._inp] if len(self.inputs) else self._inp
        offs = pad - self._input_lag[self._inp] if len(self.inputs) else self._inp
        return self._run(data, rows, offs, n)

    def series_columns(self, bars: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The columns these rules read, from a symbol's bars (ts, open … volume arrays)."""
        cols = {f: np.asarray(bars[f], dtype=np.float64) for f in FIELDS}
        for s in self.specs:
            cols.update(
                batch_outputs(s, bars["ts"], bars["open"], bars["high"], bars["low"],
                              bars["close"], bars["volume"])
            )  # fmt: skip
        return {c: cols[c] for c in self.columns}

    def _run(self, data: np.ndarray, rows: np.ndarray, offs: np.ndarray, n: int) -> RuleResults:
        stack = np.empty((self._depth + 1, min(n, vm.BLOCK)))
        out = np.empty((self.n_programs, n))
        vm.run_programs_nb(
            self._ops, self._kinds, self._consts, rows, offs, self._starts, data, n, stack, out
        )
        return RuleResults(out, self._where, self._rank)


def compile_rules(rules: Sequence[str | Rule], limits: RuleLimits | None = None) -> RuleSet:
    """Parse, check and compile ``rules`` together; raise RuleError for the first bad one."""
    return RuleSet(rules, limits)
