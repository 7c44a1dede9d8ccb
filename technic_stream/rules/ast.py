"""Rule syntax trees, their types and their canonical text.

Every node records the 1-based column it came from (not part of equality) and its
type: ``NUMBER`` or ``BOOL``. ``str(node)`` is the canonical form: lower-case names,
every indicator parameter spelled out, minimal parentheses, ``x[0]`` as ``x``, the
infix ``a crosses above b`` as ``crosses_above(a, b)``. Equal rules print equally,
so the canonical text is what rule ids and caches hash.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from technic_stream.indicators.registry import IndicatorSpec

__all__ = [
    "BOOL",
    "NUMBER",
    "Binary",
    "Call",
    "Field",
    "Indicator",
    "Lag",
    "Node",
    "Num",
    "Rule",
    "Unary",
    "fmt_number",
]

NUMBER = "number"
BOOL = "boolean"

FIELDS = ("open", "high", "low", "close", "volume")

#: Binding strength, loosest first; atoms bind tightest.
PREC_OR, PREC_AND, PREC_NOT, PREC_CMP, PREC_ADD, PREC_MUL, PREC_NEG, PREC_POSTFIX, PREC_ATOM = (
    range(1, 10)
)

ARITHMETIC = {"+": PREC_ADD, "-": PREC_ADD, "*": PREC_MUL, "/": PREC_MUL}
COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")
LOGICAL = {"or": PREC_OR, "and": PREC_AND}


def fmt_number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


@dataclass(frozen=True, slots=True)
class Node:
    col: int = field(compare=False, repr=False)

    @property
    def type(self) -> str:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    @property
    def prec(self) -> int:
        return PREC_ATOM

    @property
    def children(self) -> tuple[Node, ...]:
        return ()


@dataclass(frozen=True, slots=True)
class Num(Node):
    value: float

    @property
    def type(self) -> str:
        return NUMBER

    @property
    def prec(self) -> int:
        return PREC_NEG if self.value < 0 else PREC_ATOM

    def __str__(self) -> str:
        return fmt_number(self.value)


@dataclass(frozen=True, slots=True)
class Field(Node):
    name: str

    @property
    def type(self) -> str:
        return NUMBER

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Indicator(Node):
    """One output of one indicator; ``output`` is "" for single-output indicators."""

    spec: IndicatorSpec
    output: str

    @property
    def type(self) -> str:
        return NUMBER

    @property
    def column(self) -> str:
        """The output's column name, as the kernels and `technic-stream indicators` name it."""
        return f"{self.spec.key}.{self.output}" if self.output else self.spec.key

    @property
    def lookback(self) -> int:
        """Bars before this output's first value (TA-Lib's lookback)."""
        d = self.spec.definition
        index = d.outputs.index(self.output)
        return d.lookbacks(self.spec.params)[index]

    def __str__(self) -> str:
        text = str(self.spec).replace(", ", ",")
        return f"{text}.{self.output}" if self.output else text


@dataclass(frozen=True, slots=True)
class Unary(Node):
    op: str  # "-" or "not"
    x: Node

    @property
    def type(self) -> str:
        return BOOL if self.op == "not" else NUMBER

    @property
    def prec(self) -> int:
        return PREC_NOT if self.op == "not" else PREC_NEG

    @property
    def children(self) -> tuple[Node, ...]:
        return (self.x,)

    def __str__(self) -> str:
        inner = _wrap(self.x, self.prec)
        return f"not {inner}" if self.op == "not" else f"-{inner}"


@dataclass(frozen=True, slots=True)
class Binary(Node):
    op: str
    a: Node
    b: Node

    @property
    def type(self) -> str:
        return NUMBER if self.op in ARITHMETIC else BOOL

    @property
    def prec(self) -> int:
        if self.op in ARITHMETIC:
            return ARITHMETIC[self.op]
        return LOGICAL.get(self.op, PREC_CMP)

    @property
    def children(self) -> tuple[Node, ...]:
        return (self.a, self.b)

    def __str__(self) -> str:
        p = self.prec
        # left-associative: the right side needs parentheses at equal binding strength
        return f"{_wrap(self.a, p)} {self.op} {_wrap(self.b, p + 1)}"


@dataclass(frozen=True, slots=True)
class Lag(Node):
    """``x[n]``: the value of x n bars ago (n >= 1; x[0] is x itself)."""

    x: Node
    n: int

    @property
    def type(self) -> str:
        return self.x.type

    @property
    def prec(self) -> int:
        return PREC_POSTFIX

    @property
    def children(self) -> tuple[Node, ...]:
        return (self.x,)

    def __str__(self) -> str:
        return f"{_wrap(self.x, PREC_POSTFIX)}[{self.n}]"


@dataclass(frozen=True, slots=True)
class Call(Node):
    """A built-in function; window lengths are plain integers in ``n``."""

    name: str
    args: tuple[Node, ...]
    n: int = 0

    @property
    def type(self) -> str:
        return BOOL if self.name.startswith("crosses") or self.name == "within" else NUMBER

    @property
    def children(self) -> tuple[Node, ...]:
        return self.args

    def __str__(self) -> str:
        parts = [str(a) for a in self.args]
        if self.name in WINDOWED:
            parts.append(str(self.n))
        return f"{self.name}({', '.join(parts)})"


#: name → (argument types, takes a window length as its last argument)
FUNCTIONS: dict[str, tuple[tuple[str, ...], bool]] = {
    "crosses_above": ((NUMBER, NUMBER), False),
    "crosses_below": ((NUMBER, NUMBER), False),
    "crosses": ((NUMBER, NUMBER), False),
    "within": ((BOOL,), True),
    "highest": ((NUMBER,), True),
    "lowest": ((NUMBER,), True),
    "change_pct": ((NUMBER,), True),
    "abs": ((NUMBER,), False),
    "min": ((NUMBER, NUMBER), False),
    "max": ((NUMBER, NUMBER), False),
}
WINDOWED = frozenset(name for name, (_, windowed) in FUNCTIONS.items() if windowed)


def _wrap(node: Node, min_prec: int) -> str:
    text = str(node)
    return f"({text})" if node.prec < min_prec else text


@dataclass(frozen=True, slots=True)
class Rule:
    """A parsed, checked rule: a boolean condition and an optional ranking."""

    where: Node
    rank_by: Node | None = None
    descending: bool = True
    source: str = field(default="", compare=False, repr=False)
    # the tree's hash, taken once: compiled programs are cached by rule (see compiler)
    _hash: int = field(default=0, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.where, self.rank_by, self.descending)))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[Rule], tuple[Node, Node | None, bool, str]]:
        # rebuilt through __init__: string hashes differ from one process to the next
        return (Rule, (self.where, self.rank_by, self.descending, self.source))

    def __str__(self) -> str:
        text = str(self.where)
        if self.rank_by is not None:
            text += f" rank by {self.rank_by} {'desc' if self.descending else 'asc'}"
        return text

    @property
    def id(self) -> str:
        """A stable id: the first 16 hex digits of SHA-256 over the canonical text."""
        return hashlib.sha256(str(self).encode()).hexdigest()[:16]
