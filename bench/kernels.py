"""Indicator kernels: ns per symbol-bar, ours against talipp and TA-Lib, in one run.

    .venv/bin/python bench/kernels.py [--symbols 1000] [--bars 1000] [--repeats 5]

Same seeded random-walk OHLCV for every contender. "Ours" applies one time step of
all symbols per kernel call (the engine's shape: a fetched batch spans many
symbols). talipp is pure Python, so it runs on a subsample and is reported per bar.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from importlib.metadata import version as _version
from pathlib import Path

import numpy as np
import talib
import talib.stream as tstream

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from technic_stream.indicators import IndicatorPlan, IndicatorState  # noqa: E402

FIVE = "ema(20), rsi(14), macd(12,26,9), bb(20,2), atr(14)"
FULL = (
    "sma(20), ema(20), wma(20), rsi(14), macd(12,26,9), bb(20,2), stddev(20), atr(14), "
    "natr(14), stoch(14,3,3), adx(14), obv, roc(10), mfi(14), cci(20), willr(14), vwap, "
    "donchian(252), avg_volume(20), relvol(20)"
)


def make_data(symbols: int, bars: int, seed: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, (bars, symbols)), axis=0))
    open_ = close * np.exp(rng.normal(0, 0.002, (bars, symbols)))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.003, (bars, symbols))))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.003, (bars, symbols))))
    volume = rng.integers(1_000, 1_000_000, (bars, symbols)).astype(float)
    ts = (1_700_000_000_000 + np.arange(bars) * 60_000)[:, None].repeat(symbols, axis=1)
    return {"ts": ts, "open": open_, "high": high, "low": low, "close": close, "volume": volume}


def time_ours(plan_text: str, d: dict[str, np.ndarray], repeats: int) -> list[float]:
    plan = IndicatorPlan.parse(plan_text)
    bars, symbols = d["close"].shape
    cols = {k: np.ascontiguousarray(v) for k, v in d.items()}
    out = np.empty((symbols, plan.n_outputs))
    runs = []
    for _ in range(repeats + 1):  # the first run warms caches and is dropped
        state = IndicatorState(plan, capacity=symbols)
        rows = state.rows([f"S{i}" for i in range(symbols)])
        t0 = time.perf_counter()
        for t in range(bars):
            state.apply(
                rows,
                cols["ts"][t],
                cols["open"][t],
                cols["high"][t],
                cols["low"][t],
                cols["close"][t],
                cols["volume"][t],
                out,
            )
        runs.append(time.perf_counter() - t0)
    return [r / (bars * symbols) * 1e9 for r in runs[1:]]


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} (runs {min(values):,.0f} to {max(values):,.0f})"


def time_talipp(d: dict[str, np.ndarray], symbols: int) -> float:
    from talipp.indicators import ATR, BB, EMA, MACD, RSI
    from talipp.ohlcv import OHLCV

    bars = d["close"].shape[0]
    t0 = time.perf_counter()
    for s in range(symbols):
        ind = [EMA(20), RSI(14), MACD(12, 26, 9), BB(20, 2.0)]
        atr = ATR(14)
        for t in range(bars):
            c = float(d["close"][t, s])
            for i in ind:
                i.add(c)
            atr.add(
                OHLCV(
                    float(d["open"][t, s]),
                    float(d["high"][t, s]),
                    float(d["low"][t, s]),
                    c,
                    float(d["volume"][t, s]),
                )
            )
    return (time.perf_counter() - t0) / (bars * symbols) * 1e9


def time_talib_stream(d: dict[str, np.ndarray], symbols: int, warm: int = 60) -> float:
    bars = d["close"].shape[0]
    c, h, lo = d["close"], d["high"], d["low"]
    handles = []
    for s in range(symbols):
        handles.append(
            (
                tstream.EMA(c[:warm, s].copy(), 20),
                tstream.RSI(c[:warm, s].copy(), 14),
                tstream.MACD(c[:warm, s].copy(), 12, 26, 9),
                tstream.BBANDS(c[:warm, s].copy(), 20, 2.0, 2.0, 0),
                tstream.ATR(h[:warm, s].copy(), lo[:warm, s].copy(), c[:warm, s].copy(), 14),
            )
        )
    t0 = time.perf_counter()
    for t in range(warm, bars):
        for s in range(symbols):
            e, r, m, b, a = handles[s]
            x = float(c[t, s])
            e.update(x)
            r.update(x)
            m.update(x)
            b.update(x)
            a.update(float(h[t, s]), float(lo[t, s]), x)
    return (time.perf_counter() - t0) / ((bars - warm) * symbols) * 1e9


def time_talib_batch(d: dict[str, np.ndarray], repeats: int) -> float:
    bars, symbols = d["close"].shape
    c = np.ascontiguousarray(d["close"].T)
    h = np.ascontiguousarray(d["high"].T)
    lo = np.ascontiguousarray(d["low"].T)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for s in range(symbols):
            talib.EMA(c[s], 20)
            talib.RSI(c[s], 14)
            talib.MACD(c[s], 12, 26, 9)
            talib.BBANDS(c[s], 20, 2.0, 2.0, 0)
            talib.ATR(h[s], lo[s], c[s], 14)
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs) / (bars * symbols) * 1e9


def cold_start_seconds() -> float:
    code = (
        "import time; t=time.perf_counter();"
        "import numpy as np;"
        "from technic_stream.indicators import IndicatorPlan, IndicatorState;"
        f"p=IndicatorPlan.parse({FULL!r}); s=IndicatorState(p); r=s.rows(['A']);"
        "o=np.ones(1); s.apply(r, np.array([1]), o, o, o, o, o);"
        "print(time.perf_counter()-t)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return float(out.stdout.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--symbols", type=int, default=1000)
    ap.add_argument("--bars", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--talipp-symbols", type=int, default=10)
    ap.add_argument("--stream-symbols", type=int, default=100)
    args = ap.parse_args()

    d = make_data(args.symbols, args.bars)
    cold = cold_start_seconds()
    five_runs = time_ours(FIVE, d, args.repeats)
    full_runs = time_ours(FULL, d, args.repeats)
    five = statistics.median(five_runs)
    tl_batch = time_talib_batch(d, args.repeats)
    tl_stream = time_talib_stream(d, args.stream_symbols)
    pp = time_talipp(d, args.talipp_symbols)

    print(
        f"# kernels — {platform.processor() or platform.machine()}, "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    print(
        f"data: {args.symbols} symbols x {args.bars} bars, seeded random walk; "
        f"ours: median of {args.repeats} runs after a warm-up run\n"
    )
    print("| contender | five-indicator set (ns / symbol-bar) | vs ours |")
    print("|---|---:|---:|")
    rows = [
        ("technic-stream streaming kernel, 1,000 symbols per call", five),
        (f"TA-Lib 0.8 stream handles (`talib.stream`, {args.stream_symbols} symbols)", tl_stream),
        (f"talipp {_version('talipp')} (pure Python, {args.talipp_symbols} symbols)", pp),
        ("TA-Lib 0.8 batch over whole series (not incremental)", tl_batch),
    ]
    for name, ns in rows:
        shown = _spread(five_runs) if ns is five else f"{ns:,.0f}"
        print(f"| {name} | {shown} | {ns / five:.1f}x |")
    print(
        f"\nfull set ({len(IndicatorPlan.parse(FULL).specs)} indicators, "
        f"{IndicatorPlan.parse(FULL).n_outputs} outputs, streaming kernel): "
        f"{_spread(full_runs)} ns / symbol-bar"
    )
    print(f"speed-up over TA-Lib stream handles (five-indicator set): {tl_stream / five:.1f}x")
    print(f"cold import + JIT warm-up of the full plan (numba cache on disk): {cold:.2f} s")


if __name__ == "__main__":
    main()
