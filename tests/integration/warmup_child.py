"""Run by ``test_engine_warmup.py`` in a fresh interpreter (numba's specializations are
per process): the engine's warm-up, then the engine itself over real batches from the
broker — single bars, BarBatch messages, a rule added mid-stream — and, as JSON on
stdout, every kernel signature those batches met that the warm-up had not compiled.

    python -m tests.integration.warmup_child '<settings as JSON>'
"""

from __future__ import annotations

import asyncio
import sys

import orjson

from technic_stream.config import Settings
from technic_stream.engine.warmup import compiled_signatures, warm_engine
from technic_stream.messages import BarBatch, encode
from tests.integration.engine_helpers import (
    TF,
    market,
    rule,
    running_engine,
    send_bars,
    send_rules,
    wait_for,
)


def _batches(series: dict, start: int, stop: int) -> list[tuple[bytes, bytes]]:
    """Bars start..stop-1 of every symbol as BarBatch messages, one per symbol."""
    out = []
    for sym, (ts, o, h, lo, c, v) in series.items():
        n = stop - start
        msg = BarBatch(
            tf=TF, symbols=[sym] * n, ts=ts[start:stop].tolist(), open=o[start:stop].tolist(),
            high=h[start:stop].tolist(), low=lo[start:stop].tolist(),
            close=c[start:stop].tolist(), volume=v[start:stop].tolist(),
        )  # fmt: skip
        out.append((sym.encode(), encode(msg)))
    return out


async def main(settings: Settings) -> dict[str, object]:
    report = warm_engine(settings)
    before = compiled_signatures()
    series = market(12, 90, seed=7)
    await send_rules(settings, [
        rule("w-rsi", "rsi(14) < 45 and close > sma(50)"),
        rule("w-cross", "crosses_above(ema(12), ema(26))", mode="once_per_bar"),
        rule("w-every", "close > 0", mode="every_time", symbols=["S1", "S2"]),
    ])  # fmt: skip
    async with running_engine(settings) as engine:
        n = await send_bars(settings, series, 0, 60)
        await wait_for(lambda: engine.bars_applied >= n, "single bars", within=120)
        await send_rules(settings, [rule("w-later", "close > highest(high, 20)[2]")])
        extra = _batches(series, 60, 90)
        m = await send_bars(settings, series, 0, 0, extra=extra)
        await wait_for(lambda: engine.bars_applied >= n + 30 * len(series), "bar batches",
                       within=120)  # fmt: skip
        alerts = engine.alerts_sent
    after = compiled_signatures()
    new = {k: sorted(v - before.get(k, set())) for k, v in after.items()}
    return {
        "warmup_seconds": report.seconds, "bars": n + m, "alerts": alerts,
        "unwarmed": {k: v for k, v in new.items() if v},
    }  # fmt: skip


if __name__ == "__main__":
    live = Settings.model_validate_json(sys.argv[1])
    sys.stdout.write(orjson.dumps(asyncio.run(main(live))).decode() + "\n")
