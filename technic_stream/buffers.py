"""Byte strings end to end, as the numba kernels take them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["joined"]


def joined(parts: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """``parts`` end to end as uint8, and their ``len(parts) + 1`` starts (part i is
    ``buf[at[i]:at[i + 1]]``)."""
    at = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, parts), dtype=np.int64, count=len(parts)), out=at[1:])
    return np.frombuffer(b"".join(parts), dtype=np.uint8), at
