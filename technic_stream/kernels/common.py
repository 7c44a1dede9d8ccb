"""Shared numba helpers and the indicator codes the kernels dispatch on."""

from __future__ import annotations

import math

from numba import njit

__all__ = [
    "ADX",
    "ATR",
    "BB",
    "CCI",
    "DONCHIAN",
    "EMA",
    "MACD",
    "MFI",
    "NATR",
    "OBV",
    "RELVOL",
    "ROC",
    "RSI",
    "SMA",
    "STDDEV",
    "STOCH",
    "VWAP",
    "WILLR",
    "WMA",
    "is_zero_nb",
    "is_zero_or_neg_nb",
    "is_zero_scaled_nb",
    "true_range_nb",
]

SMA = 1
EMA = 2
WMA = 3
RSI = 4
MACD = 5
BB = 6
STDDEV = 7
ATR = 8
NATR = 9
STOCH = 10
ADX = 11
OBV = 12
ROC = 13
MFI = 14
CCI = 15
WILLR = 16
VWAP = 17
DONCHIAN = 18
RELVOL = 19

#: Input series selector for the kernels that take one (SMA).
SRC_CLOSE = 0
SRC_VOLUME = 1


#: numba fastmath flags of every kernel: none. Strict IEEE arithmetic keeps the
#: streaming kernels and their batch twins bit-identical on every CPU. (TA-Lib's wheel
#: is compiled with FMA contraction on some expressions; allowing contraction here made
#: EMA bit-exact with it but WMA not, and would tie results to the CPU, so we accept
#: differences of a few ulps against TA-Lib instead.)
FASTMATH = False

#: TA-Lib's TA_EPSILON (C library 0.6 and later, as bundled with TA-Lib 0.8 for Python).
TA_EPSILON = 1e-14


@njit(cache=True, inline="always", fastmath=FASTMATH)
def is_zero_nb(x: float) -> bool:
    """TA-Lib's TA_IS_ZERO: |x| below TA_EPSILON."""
    return -TA_EPSILON < x < TA_EPSILON


@njit(cache=True, inline="always", fastmath=FASTMATH)
def is_zero_or_neg_nb(x: float) -> bool:
    """TA-Lib's TA_IS_ZERO_OR_NEG."""
    return x < TA_EPSILON


@njit(cache=True, inline="always", fastmath=FASTMATH)
def is_zero_scaled_nb(x: float, scale: float) -> bool:
    """TA-Lib's TA_IS_ZERO_SCALED: |x| within TA_EPSILON of the operands' magnitude."""
    return math.fabs(x) <= TA_EPSILON * scale


@njit(cache=True, inline="always", fastmath=FASTMATH)
def true_range_nb(high: float, low: float, prev_close: float) -> float:
    """TA-Lib's TRANGE, same comparison order."""
    greatest = high - low
    t = math.fabs(prev_close - high)
    if t > greatest:
        greatest = t
    t = math.fabs(low - prev_close)
    if t > greatest:
        greatest = t
    return greatest
