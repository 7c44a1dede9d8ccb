"""A compiled indicator plan: where each indicator's state and outputs live.

One row of state per symbol: the scalar fields of every indicator first (that
block is what a corrected bar restores), then all ring buffers. The plan's
fingerprint versions serialised state: state only restores into the plan that
wrote it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np

from technic_stream.indicators.registry import IndicatorSpec, parse_indicators

__all__ = ["LAYOUT_VERSION", "IndicatorPlan"]

#: Bump when any kernel's state layout changes: old snapshots then refuse to load.
LAYOUT_VERSION = 5

_IPARAMS = 4
_FPARAMS = 4


class IndicatorPlan:
    """The specs of a plan and the arrays the kernel reads them from."""

    def __init__(self, specs: Iterable[IndicatorSpec]) -> None:
        unique: list[IndicatorSpec] = []
        for s in specs:
            if s not in unique:
                unique.append(s)
        if not unique:
            raise ValueError("a plan needs at least one indicator")
        self.specs: tuple[IndicatorSpec, ...] = tuple(unique)
        n = len(unique)
        self.codes = np.zeros(n, dtype=np.int64)
        self.iparams = np.zeros((n, _IPARAMS), dtype=np.int64)
        self.fparams = np.zeros((n, _FPARAMS), dtype=np.float64)
        self.soff = np.zeros(n, dtype=np.int64)
        self.roff = np.zeros(n, dtype=np.int64)
        self.ooff = np.zeros(n, dtype=np.int64)
        names: list[str] = []
        lookbacks: list[int] = []
        volume_scaled: list[bool] = []
        scalar_sizes = [s.definition.scalars(s.params) for s in unique]
        ring_sizes = [s.definition.ring(s.params) for s in unique]
        self.nscalar = int(sum(scalar_sizes))
        scalar_at = 0
        ring_at = self.nscalar
        for j, s in enumerate(unique):
            d = s.definition
            self.codes[j] = d.code
            ints = d.int_params(s.params)
            floats = d.float_params(s.params)
            self.iparams[j, : len(ints)] = ints
            self.fparams[j, : len(floats)] = floats
            self.soff[j] = scalar_at
            self.roff[j] = ring_at
            self.ooff[j] = len(names)
            scalar_at += scalar_sizes[j]
            ring_at += ring_sizes[j]
            names.extend(s.output_names)
            lookbacks.extend(d.lookbacks(s.params))
            volume_scaled.extend(d.volume_scaled or (False,) * len(d.outputs))
        self.width = int(ring_at)
        self.output_names: tuple[str, ...] = tuple(names)
        self.lookbacks = np.asarray(lookbacks, dtype=np.int64)
        self.volume_scaled = tuple(volume_scaled)
        self.output_index = {name: i for i, name in enumerate(names)}
        raw = f"v{LAYOUT_VERSION}:" + ";".join(s.key for s in unique)
        self.fingerprint = hashlib.sha256(raw.encode()).hexdigest()

    @classmethod
    def parse(cls, text: str) -> IndicatorPlan:
        return cls(parse_indicators(text))

    @property
    def n_outputs(self) -> int:
        return len(self.output_names)

    def outputs_of(self, spec: IndicatorSpec) -> Sequence[int]:
        j = self.specs.index(spec)
        start = int(self.ooff[j])
        return range(start, start + len(spec.output_names))

    def __repr__(self) -> str:
        return (
            f"IndicatorPlan({', '.join(str(s) for s in self.specs)}; "
            f"{self.n_outputs} outputs, {self.width} floats per symbol)"
        )
