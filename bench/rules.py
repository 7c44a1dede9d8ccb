"""Rules: 10 typical rules over 10,000 symbols for the latest bar, ours against peers.

    .venv/bin/python bench/rules.py [--symbols 10000] [--repeats 50]

Every contender gets the same input: each rule input (an indicator output or bar
field at a lag) as a float64 vector over the symbols, ~2 % of them not ready (NaN),
the way the engine gathers them. Peers, in the same run:

- hand-written NumPy for the same ten rules (what one would code per rule without a
  rule language; plain booleans, so NaN silently becomes "false" rather than not_ready).
  It makes one NumPy call per operator, so its cost is mostly per-call overhead — the
  same overhead a Python-level interpreter of the rules would pay per node.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from technic_stream.rules import RuleSet  # noqa: E402

RULES = [
    "rsi(14) < 30 and close > sma(200)",
    "ema(12) crosses above ema(26)",
    "volume > 2 * avg_volume(20)",
    "close > highest(high, 252)[1]",
    "macd(12,26,9).hist > 0 and macd(12,26,9).hist[1] <= 0",
    "close < bb(20,2).lower",
    "adx(14) > 25 and adx(14).plus_di > adx(14).minus_di",
    "change_pct(close, 5) > 10",
    "stoch(14,3,3).k crosses below 80",
    "relvol(20) > 3 and close > open rank by relvol(20)",
]


def make_inputs(rules: RuleSet, symbols: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = np.empty((len(rules.inputs), symbols))
    for k, inp in enumerate(rules.inputs):
        scale = 1e6 if "volume" in inp.column else 50.0
        values[k] = rng.normal(scale, scale * 0.3, symbols)
    values[:, rng.random(symbols) < 0.02] = np.nan
    return values


def numpy_rules(x: dict[tuple[str, int], np.ndarray]) -> list[np.ndarray]:
    """The same ten rules written by hand in NumPy."""
    g = x.__getitem__
    return [
        (g(("rsi_14", 0)) < 30) & (g(("close", 0)) > g(("sma_200", 0))),
        (g(("ema_12", 1)) <= g(("ema_26", 1))) & (g(("ema_12", 0)) > g(("ema_26", 0))),
        g(("volume", 0)) > 2 * g(("avg_volume_20", 0)),
        g(("close", 0)) > g(("donchian_252.upper", 1)),
        (g(("macd_12_26_9.hist", 0)) > 0) & (g(("macd_12_26_9.hist", 1)) <= 0),
        g(("close", 0)) < g(("bb_20_2.lower", 0)),
        (g(("adx_14.adx", 0)) > 25) & (g(("adx_14.plus_di", 0)) > g(("adx_14.minus_di", 0))),
        (g(("close", 0)) - g(("close", 5))) / g(("close", 5)) * 100 > 10,
        (g(("stoch_14_3_3.k", 1)) >= 80) & (g(("stoch_14_3_3.k", 0)) < 80),
        (g(("relvol_20", 0)) > 3) & (g(("close", 0)) > g(("open", 0))),
    ]


def time_calls(fn: Callable[[], object], repeats: int) -> list[float]:
    fn()  # warm-up (JIT, caches)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--symbols", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()

    t0 = time.perf_counter()
    rules = RuleSet(RULES)
    compile_ms = (time.perf_counter() - t0) * 1e3
    values = make_inputs(rules, args.symbols)
    ours = time_calls(lambda: rules.evaluate_latest(values), args.repeats)

    named = {(i.column, i.lag): values[k] for k, i in enumerate(rules.inputs)}
    with np.errstate(invalid="ignore"):
        peer = time_calls(lambda: numpy_rules(named), args.repeats)

    # the same answers where every input is known (NumPy has no not_ready)
    result = rules.evaluate_latest(values)
    known = ~np.isnan(values).any(axis=0)
    for r, want in enumerate(numpy_rules(named)):
        assert np.array_equal(result.match(r)[known], want[known]), RULES[r]

    n = args.symbols * len(RULES)
    med = statistics.median(ours)
    med_np = statistics.median(peer)
    print(
        f"# rules — {platform.processor() or platform.machine()}, "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    print(
        f"{len(RULES)} rules, {args.symbols:,} symbols, latest bar, {len(rules.inputs)} shared "
        f"inputs, {rules._ops.size} instructions; median of {args.repeats} calls after a warm-up\n"
    )
    print("| contender | all rules, one bar (ms) | ns / symbol-rule | vs ours |")
    print("|---|---:|---:|---:|")
    print(
        f"| technic-stream rule machine (one numba call for all rules) | {med * 1e3:.3f} "
        f"(runs {min(ours) * 1e3:.3f} to {max(ours) * 1e3:.3f}) | {med / n * 1e9:.1f} | 1.0x |"
    )
    print(
        f"| hand-written NumPy, same rules (no not_ready) | {med_np * 1e3:.3f} | "
        f"{med_np / n * 1e9:.1f} | {med_np / med:.1f}x |"
    )
    print(f"\nparse + check + compile of the {len(RULES)} rules: {compile_ms:.1f} ms")
    print(f"target (issue #4): <= 1 ms for all rules — {'met' if med <= 1e-3 else 'NOT met'}")


if __name__ == "__main__":
    main()
