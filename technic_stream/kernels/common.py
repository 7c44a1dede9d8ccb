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


@njit(cache=True, inline="always")
def is_zero_nb(x: float) -> bool:
    """TA-Lib's TA_IS_ZERO: |x| below 1e-8."""
    return -0.00000001 < x < 0.00000001


@njit(cache=True, inline="always")
def is_zero_or_neg_nb(x: float) -> bool:
    """TA-Lib's TA_IS_ZERO_OR_NEG."""
    return x < 0.00000001


@njit(cache=True, inline="always")
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
