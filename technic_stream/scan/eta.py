"""Rate and time left of a scan, from how its done-count grew.

The first chunk pays for warming up (compiling, the archive's first reads, a load that
nothing overlaps), so the rate is measured from the end of the first chunk on. Chunks of
a pipelined scan finish in bursts (a chunk whose load overlapped the previous compute
finishes right after it), so by default the whole run since then is the window: a
shorter one (``window`` < 1, a fraction of the run, at least ``min_window_s``) follows a
changing pace sooner but swings with every burst — on the benchmark's cold scans the
error at 50 % was ~21 % with the recent ¾ against ~10 % with the whole run. Before two
chunks have finished, the run since computing started is all there is.

A pipelined scan's last chunk is quicker than the steady step: nothing loads after it,
so it costs only its own compute and store (``busy``). While chunks are loading behind
the compute (step longer than busy), the estimate takes that difference off once. On
the benchmark's cold scans (steps ~250 ms: the next chunk's load; compute and store ~180
ms beside that load, ~50 ms alone, as the last chunk is) the error at 50 % had been ~10 %
in the median, always an overestimate.
"""

from __future__ import annotations

__all__ = ["Eta"]


class Eta:
    def __init__(self, total: int = 0, *, window: float = 1.0, min_window_s: float = 1.0) -> None:
        self.total = total
        self.window = window
        self.min_window_s = min_window_s
        self._started: tuple[float, float] | None = None  # (time, done) when computing began
        self._samples: list[tuple[float, float]] = []  # (time, done) whenever done grew
        self._busy: list[tuple[float, int]] = []  # (seconds, symbols) of chunks' compute

    def start(self, now: float, done: float) -> None:
        """Computing begins (``done`` may be non-zero: a resumed scan)."""
        if self._started is None:
            self._started = (now, done)
            self._samples.append((now, done))

    def observe(self, now: float, done: float) -> None:
        if self._samples and done > self._samples[-1][1]:
            self._samples.append((now, done))

    def busy(self, seconds: float, symbols: int) -> None:
        """A chunk of ``symbols`` took ``seconds`` from having its data to being stored."""
        if symbols > 0:
            self._busy.append((seconds, symbols))

    def _last_step_saving(self, rate: float) -> float:
        """Seconds the last chunk takes less than a steady step: the load that no longer
        hides behind a compute (0 where computing is the slower stage). A chunk computed
        beside the next one's load takes longer than alone (the two share the process and
        the archive's server), so the last one is expected at the quickest pace seen."""
        if not self._busy or rate <= 0:
            return 0.0
        per_symbol = min(b[0] / b[1] for b in self._busy)
        symbols = sum(b[1] for b in self._busy) / len(self._busy)
        return max(0.0, symbols / rate - per_symbol * symbols)

    def estimate(self, now: float) -> tuple[float, int | None]:
        """Symbols per second and milliseconds left (None: too early to say)."""
        samples = self._samples
        if not samples:
            return 0.0, None
        t_last, d_last = samples[-1]
        left_symbols = max(0, self.total - d_last)
        if len(samples) >= 3:  # two chunks after the start: measure after the first
            span = max(self.min_window_s, (t_last - samples[1][0]) * self.window)
            t0, d0 = next(x for x in samples[1:] if x[0] >= t_last - span)
            if t0 >= t_last:
                t0, d0 = samples[-2]
            if t_last > t0 and d_last > d0:
                rate = (d_last - d0) / (t_last - t0)
                saving = self._last_step_saving(rate) if left_symbols else 0.0
                left_s = left_symbols / rate - (now - t_last) - saving
                return rate, max(0, round(left_s * 1000))
        t0, d0 = samples[0]
        if now > t0 and d_last > d0:
            rate = (d_last - d0) / (now - t0)
            return rate, round(left_symbols / rate * 1000)
        return 0.0, None
