"""Parse and check a rule: text → :class:`Rule`, or a :class:`RuleError` with its column.

A hand-written precedence-climbing parser. Untrusted text never reaches ``eval``; every
limit is checked before the work it bounds (length before lexing, nesting before
descending, nodes as they are built), so a 1 MB or 5,000-deep input fails in
microseconds with a clear error rather than a RecursionError or MemoryError.

Grammar (names case-insensitive)::

    rule       := or_expr [ "rank" "by" or_expr [ "asc" | "desc" ] ]
    or_expr    := and_expr { "or" and_expr }
    and_expr   := not_expr { "and" not_expr }
    not_expr   := "not" not_expr | comparison
    comparison := sum [ ( "<" | "<=" | ">" | ">=" | "==" | "!=" ) sum
                      | "crosses" [ "above" | "below" ] sum ]
    sum        := product { ( "+" | "-" ) product }
    product    := unary { ( "*" | "/" ) unary }
    unary      := "-" unary | postfix
    postfix    := primary { "[" INT "]" }
    primary    := NUMBER | field | indicator [ "(" params ")" ] [ "." output ]
                | function "(" args ")" | "(" or_expr ")"
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

from technic_stream.errors import TechnicStreamError
from technic_stream.indicators.registry import INDICATORS, IndicatorError, spec
from technic_stream.rules.ast import (
    BOOL,
    COMPARISONS,
    FIELDS,
    FUNCTIONS,
    NUMBER,
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

__all__ = ["RuleError", "RuleLimits", "parse_rule"]

KEYWORDS = ("and", "or", "not", "rank", "by", "asc", "desc", "crosses", "above", "below")


class RuleError(TechnicStreamError):
    """A rule that cannot be accepted: where (1-based column) and why, in one line."""

    def __init__(self, text: str, col: int, reason: str) -> None:
        self.text = text
        self.col = col
        self.reason = reason
        super().__init__(f"column {col}: {reason}")

    def caret(self, width: int = 100) -> str:
        """The rule (a window of it, if long) with a caret under the offending column."""
        text = self.text.replace("\n", " ").replace("\t", " ")
        start = max(0, self.col - 1 - width // 2) if len(text) > width else 0
        window = text[start : start + width]
        prefix = "…" if start > 0 else ""
        pad = len(prefix) + self.col - 1 - start
        return f"{prefix}{window}\n{' ' * pad}^"

    def to_dict(self) -> dict[str, object]:
        return {"column": self.col, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class RuleLimits:
    """Bounds on what a rule may ask for; every one is checked before the work it bounds."""

    max_length: int = 2_000
    max_depth: int = 32  # nesting of parentheses, calls and unary operators
    max_height: int = 64  # height of the syntax tree (long 'and' chains count too)
    max_nodes: int = 400
    max_lookback: int = 500  # n in x[n], and how far back any input is read
    max_window: int = 500  # n in within / highest / lowest / change_pct
    max_history: int = 1_000  # bars back any input is read, lookbacks and windows together
    max_program: int = 20_000  # instructions after windows are expanded


_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|==|!=|[-+*/()\[\],.<>=])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "num", "id", "op", "end"
    text: str
    col: int


def _lex(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    n = len(text)
    while pos < n:
        m = _TOKEN.match(text, pos)
        if m is None:
            ch = text[pos]
            raise RuleError(text, pos + 1, f"unexpected character {ch!r}")
        kind = m.lastgroup or ""
        if kind != "space":
            value = m.group()
            if kind == "id":
                value = value.lower()
            tokens.append(Token(kind, value, pos + 1))
        pos = m.end()
    tokens.append(Token("end", "", n + 1))
    return tokens


def _suggest(name: str, candidates: list[str]) -> str:
    hint = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f"; did you mean {hint[0]!r}?" if hint else ""


class _Parser:
    def __init__(self, text: str, limits: RuleLimits) -> None:
        self.text = text
        self.limits = limits
        self.tokens = _lex(text)
        self.i = 0
        self.depth = 0
        self.nodes = 0
        self.heights: dict[int, int] = {}
        self.starts: dict[int, int] = {}  # id(node) -> column where its text starts

    # -- helpers ---------------------------------------------------------------------------

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def error(self, col: int, reason: str) -> RuleError:
        return RuleError(self.text, col, reason)

    def advance(self) -> Token:
        t = self.tokens[self.i]
        self.i += 1
        return t

    def at(self, text: str) -> bool:
        t = self.tok
        return t.kind in ("op", "id") and t.text == text

    def expect(self, text: str, what: str) -> Token:
        if not self.at(text):
            raise self.error(self.tok.col, f"expected {text!r} {what}, found {self._found()}")
        return self.advance()

    def _found(self) -> str:
        t = self.tok
        return "the end of the rule" if t.kind == "end" else repr(t.text)

    def node(self, node: Node) -> Node:
        self.nodes += 1
        if self.nodes > self.limits.max_nodes:
            raise self.error(node.col, f"rule too large: more than {self.limits.max_nodes} nodes")
        height = 1 + max((self.heights.get(id(c), 1) for c in node.children), default=0)
        if height > self.limits.max_height:
            raise self.error(
                node.col,
                f"nested too deeply: the rule's tree is over {self.limits.max_height} levels",
            )
        self.heights[id(node)] = height
        self.starts[id(node)] = min([node.col, *(self.start(c) for c in node.children)])
        return node

    def start(self, node: Node) -> int:
        return self.starts.get(id(node), node.col)

    def enter(self, col: int) -> None:
        self.depth += 1
        if self.depth > self.limits.max_depth:
            raise self.error(col, f"nested too deeply: more than {self.limits.max_depth} levels")

    def need(self, node: Node, type_: str, what: str) -> Node:
        if node.type != type_:
            article = "a number" if type_ == NUMBER else "a condition (true/false)"
            got = "a number" if node.type == NUMBER else "a condition"
            raise self.error(self.start(node), f"{what} needs {article}, but this is {got}")
        return node

    # -- grammar ---------------------------------------------------------------------------

    def rule(self) -> Rule:
        where = self.or_expr()
        self.need(where, BOOL, "a rule")
        rank_by = None
        descending = True
        if self.at("rank"):
            self.advance()
            self.expect("by", "after 'rank'")
            rank_by = self.need(self.or_expr(), NUMBER, "'rank by'")
            if self.at("asc") or self.at("desc"):
                descending = self.advance().text == "desc"
        if self.tok.kind != "end":
            raise self.error(self.tok.col, f"unexpected {self._found()} after a complete rule")
        return Rule(where, rank_by, descending, self.text)

    def binary_chain(self, ops: tuple[str, ...], sub: Callable[[], Node], type_: str) -> Node:
        left = sub()
        while self.tok.kind in ("op", "id") and self.tok.text in ops:
            t = self.advance()
            right = sub()
            self.need(left, type_, f"{t.text!r}")
            self.need(right, type_, f"{t.text!r}")
            left = self.node(Binary(t.col, t.text, left, right))
        return left

    def or_expr(self) -> Node:
        return self.binary_chain(("or",), self.and_expr, BOOL)

    def and_expr(self) -> Node:
        return self.binary_chain(("and",), self.not_expr, BOOL)

    def not_expr(self) -> Node:
        if self.at("not"):
            t = self.advance()
            self.enter(t.col)
            x = self.need(self.not_expr(), BOOL, "'not'")
            self.depth -= 1
            return self.node(Unary(t.col, "not", x))
        return self.comparison()

    def comparison(self) -> Node:
        left = self.sum()
        t = self.tok
        if t.kind == "op" and t.text == "=":
            raise self.error(t.col, "'=' is not an operator; use '==' to compare")
        if t.kind == "op" and t.text in COMPARISONS:
            self.advance()
            right = self.sum()
            self.need(left, NUMBER, f"{t.text!r}")
            self.need(right, NUMBER, f"{t.text!r}")
            node = self.node(Binary(t.col, t.text, left, right))
            nxt = self.tok
            if nxt.kind == "op" and nxt.text in COMPARISONS:
                raise self.error(nxt.col, "comparisons cannot be chained; join them with 'and'")
            return node
        if self.at("crosses"):
            self.advance()
            name = "crosses"
            if self.at("above") or self.at("below"):
                name = f"crosses_{self.advance().text}"
            right = self.sum()
            self.need(left, NUMBER, f"{name!r}")
            self.need(right, NUMBER, f"{name!r}")
            return self.node(Call(t.col, name, (left, right)))
        return left

    def sum(self) -> Node:
        return self.binary_chain(("+", "-"), self.product, NUMBER)

    def product(self) -> Node:
        return self.binary_chain(("*", "/"), self.unary, NUMBER)

    def unary(self) -> Node:
        if self.at("-"):
            t = self.advance()
            self.enter(t.col)
            x = self.need(self.unary(), NUMBER, "'-'")
            self.depth -= 1
            if isinstance(x, Num):
                return Num(t.col, -x.value)
            return self.node(Unary(t.col, "-", x))
        if self.at("+"):
            raise self.error(self.tok.col, "unary '+' is not needed; remove it")
        return self.postfix()

    def postfix(self) -> Node:
        x = self.primary()
        while self.at("["):
            t = self.advance()
            n = self.integer("a lookback", 0, self.limits.max_lookback)
            self.expect("]", "to close the lookback")
            if n > 0:
                if isinstance(x, Lag):  # x[a][b] is x[a + b]
                    x = Lag(x.col, x.x, x.n + n)
                    self.heights[id(x)] = self.heights.get(id(x.x), 1) + 1
                    if x.n > self.limits.max_lookback:
                        raise self.error(
                            t.col, f"lookback {x.n} is over the limit of {self.limits.max_lookback}"
                        )
                else:
                    x = self.node(Lag(t.col, x, n))
        return x

    def integer(self, what: str, lo: int, hi: int) -> int:
        t = self.tok
        if t.kind != "num":
            raise self.error(t.col, f"{what} must be a whole number, found {self._found()}")
        self.advance()
        value = float(t.text)
        if not value.is_integer():
            raise self.error(t.col, f"{what} must be a whole number, got {t.text}")
        if not lo <= value <= hi:
            raise self.error(t.col, f"{what} must be between {lo} and {hi}, got {t.text}")
        return int(value)

    def primary(self) -> Node:
        t = self.tok
        if t.kind == "num":
            self.advance()
            value = float(t.text)
            if value != value or value in (float("inf"), float("-inf")):
                raise self.error(t.col, f"number {t.text} is out of range")
            return self.node(Num(t.col, value))
        if t.kind == "op" and t.text == "(":
            self.advance()
            self.enter(t.col)
            x = self.or_expr()
            self.depth -= 1
            self.expect(")", f"to close the '(' at column {t.col}")
            self.starts[id(x)] = t.col
            return x
        if t.kind == "id":
            self.advance()
            name = t.text
            if name in FIELDS:
                return self.node(Field(t.col, name))
            if name in FUNCTIONS:
                return self.function(t)
            if name in INDICATORS:
                return self.indicator(t)
            if name in KEYWORDS:
                raise self.error(t.col, f"expected a value, found the keyword {name!r}")
            known = [*FIELDS, *FUNCTIONS, *INDICATORS]
            raise self.error(t.col, f"unknown name {name!r}{_suggest(name, known)}")
        if t.kind == "end":
            raise self.error(t.col, "the rule ends where a value was expected")
        raise self.error(t.col, f"expected a value, found {t.text!r}")

    def indicator(self, t: Token) -> Node:
        name = t.text
        params: list[float] = []
        if self.at("("):
            self.advance()
            while not self.at(")"):
                neg = self.at("-")
                if neg:
                    self.advance()
                p = self.tok
                if p.kind != "num":
                    raise self.error(
                        p.col, f"{name}: parameters are numbers, found {self._found()}"
                    )
                self.advance()
                params.append(-float(p.text) if neg else float(p.text))
                if not self.at(")"):
                    self.expect(",", f"between {name}'s parameters")
            self.advance()
        try:
            s = spec(name, *params)
        except IndicatorError as exc:
            raise self.error(t.col, str(exc)) from None
        outputs = s.definition.outputs
        if self.at("."):
            self.advance()
            o = self.tok
            if o.kind != "id":
                raise self.error(o.col, f"expected an output name after '.', found {self._found()}")
            self.advance()
            if o.text not in outputs or outputs == ("",):
                if outputs == ("",):
                    raise self.error(o.col, f"{name} has a single output; remove '.{o.text}'")
                choices = ", ".join(outputs)
                hint = _suggest(o.text, list(outputs))
                raise self.error(
                    o.col, f"{name} has no output {o.text!r}{hint} (outputs: {choices})"
                )
            return self.node(Indicator(t.col, s, o.text))
        if name in outputs:  # macd(…) is its line, adx(…) the ADX itself
            return self.node(Indicator(t.col, s, name))
        if outputs != ("",):
            shown = str(s).replace(", ", ",")
            choices = ", ".join(f"{shown}.{o}" for o in outputs)
            raise self.error(t.col, f"{name} has several outputs; pick one: {choices}")
        return self.node(Indicator(t.col, s, ""))

    def function(self, t: Token) -> Node:
        name = t.text
        types, windowed = FUNCTIONS[name]
        if not self.at("("):
            raise self.error(self.tok.col, f"{name} is a function; call it as {_signature(name)}")
        self.advance()
        self.enter(t.col)
        args: list[Node] = []
        for i, type_ in enumerate(types):
            if i:
                self.expect_arg_sep(name)
            args.append(self.need(self.or_expr(), type_, f"argument {i + 1} of {name}"))
        n = 0
        if windowed:
            self.expect_arg_sep(name)
            n = self.integer(f"the window of {name}", 1, self.limits.max_window)
        if not self.at(")"):
            if self.at(","):
                raise self.error(self.tok.col, f"{name} takes {_arity(name)}: {_signature(name)}")
            self.expect(")", f"to close {name}(")
        self.advance()
        self.depth -= 1
        return self.node(Call(t.col, name, tuple(args), n))

    def expect_arg_sep(self, name: str) -> None:
        if not self.at(","):
            raise self.error(
                self.tok.col,
                f"{name} takes {_arity(name)}: {_signature(name)}; found {self._found()}",
            )
        self.advance()


def _arity(name: str) -> str:
    types, windowed = FUNCTIONS[name]
    count = len(types) + int(windowed)
    return f"{count} argument{'s' if count > 1 else ''}"


def _signature(name: str) -> str:
    types, windowed = FUNCTIONS[name]
    names = {NUMBER: "x", BOOL: "condition"}
    args = [names[t] for t in types]
    if len(args) == 2:
        args = ["a", "b"]
    if windowed:
        args.append("n")
    return f"{name}({', '.join(args)})"


def parse_rule(text: str, limits: RuleLimits | None = None) -> Rule:
    """Parse and type-check ``text``; raise :class:`RuleError` (column, reason) if it is bad."""
    limits = limits or RuleLimits()
    if not isinstance(text, str):
        raise RuleError("", 1, f"a rule is text, not {type(text).__name__}")
    if len(text) > limits.max_length:
        raise RuleError(
            text[: limits.max_length + 1],
            limits.max_length + 1,
            f"rule too long: {len(text):,} characters, the limit is {limits.max_length:,}",
        )
    if not text.strip():
        raise RuleError(text, 1, "the rule is empty")
    got = _parsed(text, limits)
    if isinstance(got, Rule):
        return got
    raise RuleError(*got)  # a new error each time (a raised one carries its traceback)


@functools.lru_cache(maxsize=4_096)
def _parsed(text: str, limits: RuleLimits) -> Rule | tuple[str, int, str]:
    """The rule ``text`` parses to, or its error's (text, column, reason). Parsing is pure
    and a :class:`Rule` immutable, so one parse serves every caller: the gateway checks a
    rule, then every engine and scan worker compiles it, mostly the same few texts again
    (a parse is ~100 µs; bounded: texts up to ``max_length``, 4,096 kept)."""
    try:
        return _Parser(text, limits).rule()
    except RuleError as exc:
        return (exc.text, exc.col, exc.reason)
