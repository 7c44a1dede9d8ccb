"""numba kernels: pure functions over arrays (no I/O, no logging).

``stream.apply_bars_nb`` applies a batch of bars for many symbols to their
state in one call; ``batch`` holds each indicator's whole-series twin.
"""

from technic_stream.kernels.stream import APPLIED, CORRECTED, SKIPPED, apply_bars_nb

__all__ = ["APPLIED", "CORRECTED", "SKIPPED", "apply_bars_nb"]
