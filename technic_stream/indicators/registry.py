"""The indicator catalogue: names, parameters, outputs, state sizes and readiness.

``parse_indicators("ema(20), macd(12,26,9)")`` turns user text into specs; every
mistake (unknown name, wrong arity, out-of-range parameter) is an
:class:`IndicatorError` that says what is wrong and, for names, what was meant.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from technic_stream.errors import TechnicStreamError
from technic_stream.kernels import common as k

__all__ = [
    "INDICATORS",
    "IndicatorDef",
    "IndicatorError",
    "IndicatorSpec",
    "ParamSpec",
    "parse_indicators",
    "spec",
]

MAX_PERIOD = 10_000


class IndicatorError(TechnicStreamError, ValueError):
    """An indicator name or parameter list that cannot be used."""


@dataclass(frozen=True, slots=True)
class ParamSpec:
    name: str
    default: float
    lo: float
    hi: float
    integer: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class IndicatorDef:
    """How one indicator is computed, laid out and named."""

    name: str
    code: int
    params: tuple[ParamSpec, ...]
    outputs: tuple[str, ...]  # ("",) for a single unnamed output
    scalars: Callable[[tuple[float, ...]], int]
    ring: Callable[[tuple[float, ...]], int]
    lookbacks: Callable[[tuple[float, ...]], tuple[int, ...]]
    volume_scaled: tuple[bool, ...] | None = None  # outputs in volume units (relative tolerance)
    description: str = ""
    source: int = k.SRC_CLOSE

    def int_params(self, values: tuple[float, ...]) -> list[int]:
        """Parameters as the kernel's int row (VWAP's minutes become milliseconds)."""
        if self.code == k.VWAP:
            return [int(values[0]) * 60_000, int(values[1]) * 60_000]
        ints = [int(v) for v, p in zip(values, self.params, strict=True) if p.integer]
        if self.code == k.SMA:
            ints.append(self.source)
        return ints

    def float_params(self, values: tuple[float, ...]) -> list[float]:
        """The kernel's float row. EMA and MACD get their smoothing factors 2 / (n + 1)
        precomputed (the same IEEE value the kernel would compute on every bar)."""
        if self.code == k.EMA:
            return [2.0 / (values[0] + 1.0)]
        if self.code == k.MACD:
            fast, slow, sig = values
            if slow < fast:
                fast, slow = slow, fast
            return [2.0 / (fast + 1.0), 2.0 / (slow + 1.0), 2.0 / (sig + 1.0)]
        if self.code in (k.BB, k.STDDEV):
            return [float(values[1]), 1.0 / values[0]]  # nbdev, 1 / period
        return [float(v) for v, p in zip(values, self.params, strict=True) if not p.integer]


def _const(n: int) -> Callable[[tuple[float, ...]], int]:
    return lambda _p: n


def _p(i: int) -> Callable[[tuple[float, ...]], int]:
    return lambda p: int(p[i])


def _period(default: int, lo: int = 2) -> ParamSpec:
    return ParamSpec("period", default, lo, MAX_PERIOD)


_DEFS: list[IndicatorDef] = [
    IndicatorDef(
        name="sma",
        code=k.SMA,
        params=(_period(20),),
        outputs=("",),
        scalars=_const(1),
        ring=lambda p: int(p[0]) + 1,
        lookbacks=lambda p: (int(p[0]) - 1,),
        description="simple moving average of close",
    ),
    IndicatorDef(
        name="ema",
        code=k.EMA,
        params=(_period(20),),
        outputs=("",),
        scalars=_const(2),
        ring=_const(0),
        lookbacks=lambda p: (int(p[0]) - 1,),
        description="exponential moving average of close, seeded with the SMA",
    ),
    IndicatorDef(
        name="wma",
        code=k.WMA,
        params=(_period(20),),
        outputs=("",),
        scalars=_const(3),
        ring=lambda p: int(p[0]) + 1,
        lookbacks=lambda p: (int(p[0]) - 1,),
        description="linearly weighted moving average of close",
    ),
    IndicatorDef(
        name="rsi",
        code=k.RSI,
        params=(_period(14),),
        outputs=("",),
        scalars=_const(3),
        ring=_const(0),
        lookbacks=lambda p: (int(p[0]),),
        description="relative strength index (Wilder)",
    ),
    IndicatorDef(
        name="macd",
        code=k.MACD,
        params=(
            ParamSpec("fast", 12, 2, MAX_PERIOD),
            ParamSpec("slow", 26, 2, MAX_PERIOD),
            ParamSpec("signal", 9, 1, MAX_PERIOD),
        ),
        outputs=("macd", "signal", "hist"),
        scalars=_const(6),
        ring=_const(0),
        lookbacks=lambda p: (max(int(p[0]), int(p[1])) + int(p[2]) - 2,) * 3,
        description="MACD line, signal line and histogram",
    ),
    IndicatorDef(
        name="bb",
        code=k.BB,
        params=(_period(20), ParamSpec("nbdev", 2.0, 0.01, 100.0, integer=False)),
        outputs=("mid", "upper", "lower", "pctb", "bandwidth"),
        scalars=_const(4),
        ring=lambda p: int(p[0]) + 1,
        lookbacks=lambda p: (int(p[0]) - 1,) * 5,
        description="Bollinger Bands: middle, upper, lower, %b and bandwidth",
    ),
    IndicatorDef(
        name="stddev",
        code=k.STDDEV,
        params=(_period(20), ParamSpec("nbdev", 1.0, 0.01, 100.0, integer=False)),
        outputs=("",),
        scalars=_const(3),
        ring=lambda p: int(p[0]) + 1,
        lookbacks=lambda p: (int(p[0]) - 1,),
        description="rolling population standard deviation of close",
    ),
    IndicatorDef(
        name="atr",
        code=k.ATR,
        params=(_period(14, lo=1),),
        outputs=("",),
        scalars=_const(3),
        ring=_const(0),
        lookbacks=lambda p: (int(p[0]),),
        description="average true range (Wilder)",
    ),
    IndicatorDef(
        name="natr",
        code=k.NATR,
        params=(_period(14, lo=1),),
        outputs=("",),
        scalars=_const(3),
        ring=_const(0),
        lookbacks=lambda p: (int(p[0]),),
        description="ATR as a percentage of close",
    ),
    IndicatorDef(
        name="stoch",
        code=k.STOCH,
        params=(
            ParamSpec("fastk", 14, 1, MAX_PERIOD),
            ParamSpec("slowk", 3, 1, MAX_PERIOD),
            ParamSpec("slowd", 3, 1, MAX_PERIOD),
        ),
        outputs=("k", "d"),
        scalars=_const(4),
        ring=lambda p: 4 * int(p[0]) + (int(p[1]) + 1) + (int(p[2]) + 1),
        lookbacks=lambda p: (int(p[0]) + int(p[1]) + int(p[2]) - 3,) * 2,
        description="slow stochastic %K and %D (SMA smoothing)",
    ),
    IndicatorDef(
        name="adx",
        code=k.ADX,
        params=(_period(14),),
        outputs=("adx", "plus_di", "minus_di"),
        scalars=_const(8),
        ring=_const(0),
        lookbacks=lambda p: (2 * int(p[0]) - 1, int(p[0]), int(p[0])),
        description="average directional index with +DI and -DI",
    ),
    IndicatorDef(
        name="obv",
        code=k.OBV,
        params=(),
        outputs=("",),
        scalars=_const(2),
        ring=_const(0),
        lookbacks=lambda p: (0,),
        volume_scaled=(True,),
        description="on-balance volume",
    ),
    IndicatorDef(
        name="roc",
        code=k.ROC,
        params=(_period(10, lo=1),),
        outputs=("",),
        scalars=_const(0),
        ring=lambda p: int(p[0]) + 1,
        lookbacks=lambda p: (int(p[0]),),
        description="rate of change in percent",
    ),
    IndicatorDef(
        name="mfi",
        code=k.MFI,
        params=(_period(14),),
        outputs=("",),
        scalars=_const(4),
        ring=lambda p: 2 * (int(p[0]) + 1),
        lookbacks=lambda p: (int(p[0]),),
        description="money flow index",
    ),
    IndicatorDef(
        name="cci",
        code=k.CCI,
        params=(_period(20),),
        outputs=("",),
        scalars=_const(0),
        ring=lambda p: int(p[0]),
        lookbacks=lambda p: (int(p[0]) - 1,),
        description="commodity channel index",
    ),
    IndicatorDef(
        name="willr",
        code=k.WILLR,
        params=(_period(14),),
        outputs=("",),
        scalars=_const(2),
        ring=lambda p: 4 * int(p[0]),
        lookbacks=lambda p: (int(p[0]) - 1,),
        description="Williams %R",
    ),
    IndicatorDef(
        name="vwap",
        code=k.VWAP,
        params=(
            ParamSpec("session_minutes", 1440, 1, 10_080),
            ParamSpec("offset_minutes", 0, -10_080, 10_080),
        ),
        outputs=("",),
        scalars=_const(3),
        ring=_const(0),
        lookbacks=lambda p: (0,),
        description="volume-weighted average price of the typical price, reset each session",
    ),
    IndicatorDef(
        name="donchian",
        code=k.DONCHIAN,
        params=(_period(20, lo=1),),
        outputs=("upper", "lower", "mid"),
        scalars=_const(2),
        ring=lambda p: 4 * int(p[0]),
        lookbacks=lambda p: (int(p[0]) - 1,) * 3,
        description="Donchian channel: highest high, lowest low, their midpoint",
    ),
    IndicatorDef(
        name="avg_volume",
        code=k.SMA,
        params=(_period(20),),
        outputs=("",),
        scalars=_const(1),
        ring=lambda p: int(p[0]) + 1,
        lookbacks=lambda p: (int(p[0]) - 1,),
        volume_scaled=(True,),
        source=k.SRC_VOLUME,
        description="simple moving average of volume",
    ),
    IndicatorDef(
        name="relvol",
        code=k.RELVOL,
        params=(_period(20, lo=1),),
        outputs=("",),
        scalars=_const(2),
        ring=lambda p: int(p[0]) + 1,
        lookbacks=lambda p: (int(p[0]),),
        description="volume over the average volume of the previous n bars",
    ),
]

INDICATORS: dict[str, IndicatorDef] = {d.name: d for d in _DEFS}


def _fmt(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value)).replace(".", "p").replace("-", "m")


@dataclass(frozen=True, slots=True)
class IndicatorSpec:
    """One configured indicator: a name from the catalogue and its parameter values."""

    name: str
    params: tuple[float, ...]
    #: ``ema_20``, ``macd_12_26_9``, ``bb_20_2``, ``obv`` (computed once: scans ask per symbol)
    key: str = field(init=False, repr=False, compare=False)
    output_names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = "_".join([self.name, *(_fmt(v) for v in self.params)])
        outs = INDICATORS[self.name].outputs if self.name in INDICATORS else ("",)
        names = (key,) if outs == ("",) else tuple(f"{key}.{o}" for o in outs)
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "output_names", names)

    @property
    def definition(self) -> IndicatorDef:
        return INDICATORS[self.name]

    def __str__(self) -> str:
        if not self.params:
            return self.name
        return f"{self.name}({', '.join(_fmt(v).replace('p', '.') for v in self.params)})"


def spec(name: str, *params: float) -> IndicatorSpec:
    """Validate and build a spec; missing trailing parameters take their defaults."""
    lname = name.strip().lower()
    definition = INDICATORS.get(lname)
    if definition is None:
        hint = difflib.get_close_matches(lname, INDICATORS, n=1)
        more = f"; did you mean {hint[0]!r}?" if hint else f"; known: {', '.join(INDICATORS)}"
        raise IndicatorError(f"unknown indicator {name!r}{more}")
    if len(params) > len(definition.params):
        sig = ", ".join(p.name for p in definition.params) or "no parameters"
        raise IndicatorError(
            f"{lname} takes at most {len(definition.params)} parameters ({sig}), got {len(params)}"
        )
    values: list[float] = []
    for i, p in enumerate(definition.params):
        value = float(params[i]) if i < len(params) else float(p.default)
        if not math.isfinite(value):
            raise IndicatorError(f"{lname}: {p.name} must be a finite number")
        if p.integer and not value.is_integer():
            raise IndicatorError(f"{lname}: {p.name} must be a whole number, got {params[i]}")
        if not p.lo <= value <= p.hi:
            raise IndicatorError(
                f"{lname}: {p.name} must be between {_fmt(p.lo)} and {_fmt(p.hi)}, "
                f"got {_fmt(value)}"
            )
        values.append(value)
    return IndicatorSpec(lname, tuple(values))


_CALL = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$", re.S)


def parse_indicators(text: str) -> list[IndicatorSpec]:
    """``"ema(20), rsi(14), macd(12,26,9), bb(20,2), obv"`` → specs (duplicates kept once)."""
    items: list[str] = []
    depth = 0
    current = ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise IndicatorError(f"unbalanced ')' in {text!r}")
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += ch
    if depth != 0:
        raise IndicatorError(f"unbalanced '(' in {text!r}")
    items.append(current)
    specs: list[IndicatorSpec] = []
    for item in items:
        if not item.strip():
            raise IndicatorError(f"empty indicator in {text!r}")
        m = _CALL.match(item)
        if m is None:
            raise IndicatorError(f"cannot read {item.strip()!r}: expected name or name(p1, p2)")
        args: list[float] = []
        if m.group(2) is not None and m.group(2).strip():
            for raw in m.group(2).split(","):
                try:
                    args.append(float(raw))
                except ValueError:
                    raise IndicatorError(
                        f"{m.group(1)}: parameter {raw.strip()!r} is not a number"
                    ) from None
        s = spec(m.group(1), *args)
        if s not in specs:
            specs.append(s)
    return specs
