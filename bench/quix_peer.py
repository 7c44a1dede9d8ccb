"""The peer of ``bench/engine.py``: a Quix Streams application computing indicators with
talipp, one JSON bar per message, emitting an alert message when a rule holds.

    python bench/quix_peer.py --broker 127.0.0.1:9092 --input T --output T2 --group G \
        --expect 500000 [--set full|ema_rsi]

``full`` mirrors the engine's default set (SMA 20/50/200, EMA 9/21, RSI 14, MACD 12/26/9,
BB 20/2, ATR 14, ADX 14, OBV, relative volume 20) and evaluates two of the engine's ten
rules by hand (``rsi(14) < 30 and close > sma(200)``, ``close < bb(20,2).lower``);
``ema_rsi`` keeps EMA 21 and RSI 14 only (the rule ``rsi(14) < 30``). Per-symbol state is
a plain dict in the process (Quix's RocksDB state store would only add cost: this
favours the peer). Prints one JSON line: bars, alerts, and the perf-counter seconds from
the first bar processed to the ``--expect``-th, after which the application stops.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from quixstreams import Application
from talipp.indicators import ADX, ATR, BB, EMA, MACD, OBV, RSI, SMA
from talipp.ohlcv import OHLCV


class Full:
    __slots__ = ("adx", "atr", "bb", "ema9", "ema21", "macd", "obv", "rsi", "sma20", "sma50",
                 "sma200", "vol20")  # fmt: skip

    def __init__(self) -> None:
        self.sma20, self.sma50, self.sma200 = SMA(20), SMA(50), SMA(200)
        self.ema9, self.ema21, self.rsi = EMA(9), EMA(21), RSI(14)
        self.macd, self.bb = MACD(12, 26, 9), BB(20, 2.0)
        self.atr, self.adx, self.obv, self.vol20 = ATR(14), ADX(14, 14), OBV(), SMA(20)

    def add(self, bar: dict[str, Any]) -> str | None:
        c = bar["close"]
        for ind in (self.sma20, self.sma50, self.sma200, self.ema9, self.ema21, self.rsi,
                    self.macd, self.bb):  # fmt: skip
            ind.add(c)
        ohlcv = OHLCV(bar["open"], bar["high"], bar["low"], c, bar["volume"])
        for ind in (self.atr, self.adx, self.obv):
            ind.add(ohlcv)
        avg = self.vol20[-1] if len(self.vol20) else None
        _relvol = bar["volume"] / avg if avg else None  # (vs the 20 bars before)
        self.vol20.add(bar["volume"])
        rsi, sma200, bb = self.rsi[-1], self.sma200[-1], self.bb[-1]
        if rsi is not None and sma200 is not None and rsi < 30 and c > sma200:
            return "rsi_dip_uptrend"
        if bb is not None and c < bb.lb:
            return "bb_break"
        return None


class EmaRsi:
    __slots__ = ("ema", "rsi")

    def __init__(self) -> None:
        self.ema, self.rsi = EMA(21), RSI(14)

    def add(self, bar: dict[str, Any]) -> str | None:
        self.ema.add(bar["close"])
        self.rsi.add(bar["close"])
        rsi = self.rsi[-1]
        return "rsi_dip" if rsi is not None and rsi < 30 else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--broker", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--set", choices=("full", "ema_rsi"), default="full")
    args = ap.parse_args()
    kind = Full if args.set == "full" else EmaRsi

    app = Application(
        broker_address=args.broker, consumer_group=args.group, auto_offset_reset="earliest",
        use_changelog_topics=False, loglevel="WARNING", auto_create_topics=True,
        on_message_processed=lambda *_: processed(),
    )  # fmt: skip
    state: dict[str, Full | EmaRsi] = {}
    clock: dict[str, float] = {}
    counts = {"bars": 0, "alerts": 0}

    def on_bar(bar: dict[str, Any]) -> dict[str, Any] | None:
        if "first" not in clock:
            clock["first"] = time.perf_counter()
        sym = bar["symbol"]
        st = state.get(sym)
        if st is None:
            st = state[sym] = kind()
        fired = st.add(bar)
        if fired is None:
            return None
        counts["alerts"] += 1
        return {"rule_id": fired, "symbol": sym, "tf": bar["tf"], "ts": bar["ts"],
                "close": bar["close"]}  # fmt: skip

    def processed() -> None:
        counts["bars"] += 1
        if counts["bars"] == args.expect:
            clock["last"] = time.perf_counter()
            app.stop()

    sdf = app.dataframe(app.topic(args.input, value_deserializer="json"))
    sdf = sdf.apply(on_bar).filter(lambda alert: alert is not None)
    sdf.to_topic(app.topic(args.output, value_serializer="json"))
    app.run()
    seconds = clock.get("last", time.perf_counter()) - clock.get("first", 0.0)
    print(json.dumps({**counts, "seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()
