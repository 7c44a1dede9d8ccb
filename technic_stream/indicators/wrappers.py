"""One indicator over one series, for notebooks and tests (never the hot path).

>>> ema = Indicator("ema", 20)
>>> for bar in bars: ema.update(bar.open, bar.high, bar.low, bar.close, bar.volume)
>>> ema.initialized, ema.count, ema.value
"""

from __future__ import annotations

import math

import numpy as np

from technic_stream.indicators.plan import IndicatorPlan
from technic_stream.indicators.registry import IndicatorSpec, parse_indicators, spec
from technic_stream.indicators.state import IndicatorState
from technic_stream.kernels import CORRECTED, SKIPPED

__all__ = ["Indicator"]

_STATUS = {0: "applied", CORRECTED: "corrected", SKIPPED: "skipped"}


class Indicator:
    """The streaming kernel for one indicator and one symbol, one bar per call."""

    def __init__(self, name: str, *params: float) -> None:
        self.spec: IndicatorSpec = (
            parse_indicators(name)[0] if "(" in name and not params else spec(name, *params)
        )
        self._plan = IndicatorPlan([self.spec])
        self.reset()

    def reset(self) -> None:
        """Forget every bar."""
        self._state = IndicatorState(self._plan, capacity=1)
        self._row = np.array([self._state.row("_")], dtype=np.int64)
        self._next_ts = 0
        self.last_status = "none"

    def update(
        self,
        open_: float,
        high: float,
        low: float,
        close: float,
        volume: float = 0.0,
        ts: int | None = None,
    ) -> None:
        """Apply one bar. Without ``ts`` bars are taken as consecutive; with it, a bar
        with the last ``ts`` is a correction and an older one is skipped."""
        stamp = self._next_ts if ts is None else int(ts)
        result = self._state.apply(
            self._row, np.array([stamp], dtype=np.int64),
            np.array([open_], dtype=float), np.array([high], dtype=float),
            np.array([low], dtype=float), np.array([close], dtype=float),
            np.array([volume], dtype=float),
        )  # fmt: skip
        self.last_status = _STATUS[int(result.status[0])]
        if self.last_status == "applied":
            self._next_ts = stamp + 1

    @property
    def count(self) -> int:
        """Bars seen (a correction does not add one)."""
        return self._state.bars_seen("_")

    @property
    def initialized(self) -> bool:
        """True once every output has a value (TA-Lib's lookback has passed)."""
        return all(self._state.ready("_").values())

    @property
    def values(self) -> dict[str, float]:
        return self._state.values("_")

    @property
    def value(self) -> float:
        """The first (or only) output; NaN until ready."""
        return self._state.values("_")[self.spec.output_names[0]]

    def __repr__(self) -> str:
        name = str(self.spec).upper() if self.spec.params else self.spec.name.upper()
        if not self.initialized:
            return f"{name}: count={self.count}, not ready"
        shown = ", ".join(
            f"{k.rsplit('.', 1)[-1] if '.' in k else 'value'}={v:.6g}"
            for k, v in self.values.items()
            if not math.isnan(v)
        )
        return f"{name}: count={self.count}, {shown}"
