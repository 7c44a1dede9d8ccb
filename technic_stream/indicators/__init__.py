"""Indicator specs, compiled plans, multi-symbol state and thin Python wrappers."""

from technic_stream.indicators.plan import IndicatorPlan
from technic_stream.indicators.registry import (
    INDICATORS,
    IndicatorError,
    IndicatorSpec,
    parse_indicators,
    spec,
)
from technic_stream.indicators.state import BatchResult, IndicatorState, StateVersionError
from technic_stream.indicators.wrappers import Indicator

__all__ = [
    "INDICATORS",
    "BatchResult",
    "Indicator",
    "IndicatorError",
    "IndicatorPlan",
    "IndicatorSpec",
    "IndicatorState",
    "StateVersionError",
    "parse_indicators",
    "spec",
]
