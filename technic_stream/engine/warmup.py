"""The engine's kernels compiled (or loaded from numba's cache) before it joins its group.

numba compiles a kernel for each set of argument types it meets, the first time it meets
them. On a fresh machine or container (no cache) that was the engine's first batch: 38 s
here on a quick day, 70-90 s on a slow one, with the GIL held — the consumer owned its
partitions and processed nothing, heartbeats stalled, and the batch's bars waited. With a
cache, the first batch still spent a second loading every kernel.

:func:`warm_engine` runs the batch path of a throwaway :class:`EngineService` over made-up
bars *framed the way a fetch frames them* (a Kafka record batch read by the block framer,
so the kernels meet the same read-only buffers and layouts the real batches bring): single
bars, BarBatch messages and a mix, two partitions at once (the compute threads), rules of
every mode that fire (the candidates, alert ids and alert JSON), a rule added mid-stream
(indicators warmed from history, deeper lags), the Redis writes' encoding, the alerts'
record batches and a checkpoint's round trip. It touches no server and no metric of the
process. The engine runs it before it subscribes, so a fresh process takes partitions only
once it can process them at speed; ``technic-stream warm`` runs it alone (an image build
bakes the cache with it).

``tests/integration/test_engine_warmup.py`` holds it to that: in a fresh process, after the
warm-up, real batches through the broker meet no kernel signature it did not compile.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from numba.core.registry import CPUDispatcher

from technic_stream.config import Settings
from technic_stream.engine.partition import PartitionState
from technic_stream.engine.rules import ACTIVE, LiveRule
from technic_stream.engine.service import _STAGES, EngineService
from technic_stream.kafka import TopicPartition
from technic_stream.kafka.batches import framed_batches
from technic_stream.kafka.blocks import RecordChain, frame_fetch
from technic_stream.marketdata.decode import warm_decoder
from technic_stream.messages import AlertRule, Bar, BarBatch, encode

__all__ = ["WarmReport", "compiled_signatures", "warm_engine"]

_TF = "1m"
_MINUTE = 60_000
_SYMBOLS = 6
_BARS = 40  # per symbol and round: past the rules' longest look-back below


@dataclass(frozen=True, slots=True)
class WarmReport:
    seconds: float
    bars: int
    alerts: int
    signatures: int  # kernel specializations the process holds afterwards


def _rule(rule_id: str, expr: str, **kw: Any) -> AlertRule:
    return AlertRule(rule_id=rule_id, owner="warmup", expr=expr, tf=_TF, ts=1,
                     throttle_max=100_000, **kw)  # fmt: skip


# every mode, a symbol list, a message template, lags and crossings: the paths a batch's
# candidates take; each holds on most bars, so every path has candidates
_RULES = (
    _rule("warm-every", "close > 0 and rsi(14) >= 0", mode="every_time"),
    _rule(
        "warm-bar",
        "crosses_above(ema(5), ema(12)) or close[2] > 0",
        mode="once_per_bar",
        symbols=["W0", "W1", "W2"],
        message="{{symbol}} at {{close}}",
    ),
    _rule("warm-close", "volume > 0 rank by close desc", mode="once_per_bar_close"),
)
# added after the first rounds: a new indicator warmed from history, deeper lags
_LATER = _rule("warm-later", "close > sma(10)[5] and atr(7) > 0", mode="every_time")


def _walk(rng: np.random.Generator, n: int, start: float) -> np.ndarray:
    return start * np.exp(np.cumsum(rng.normal(0, 0.01, n)))


def _bars(round_: int) -> dict[str, list[Bar]]:
    """Made-up bars of each symbol for one round (a random walk; valid OHLC)."""
    rng = np.random.default_rng(round_)
    out: dict[str, list[Bar]] = {}
    t0 = 1_700_000_000_000 + round_ * _BARS * _MINUTE
    for s in range(_SYMBOLS):
        close = _walk(rng, _BARS, 50.0 + s)
        open_ = np.r_[close[0], close[:-1]]
        spread = np.abs(rng.normal(0, 0.2, _BARS))
        out[f"W{s}"] = [
            Bar(
                symbol=f"W{s}",
                tf=_TF,
                ts=t0 + j * _MINUTE,
                open=float(open_[j]),
                high=float(max(open_[j], close[j]) + spread[j]),
                low=float(min(open_[j], close[j]) - spread[j]),
                close=float(close[j]),
                volume=float(1_000 + j),
            )
            for j in range(_BARS)
        ]
    return out


def _values(bars: dict[str, list[Bar]], syms: Sequence[str], kind: str) -> list[bytes]:
    """The records' values: one Bar each, BarBatch messages (a bar's index at a time,
    every symbol), or both in turn."""
    out: list[bytes] = []
    for j in range(_BARS):
        rows = [bars[s][j] for s in syms]
        if kind == "bars" or (kind == "mixed" and j % 2):
            out += [encode(b) for b in rows]
        else:
            out.append(encode(BarBatch(
                tf=_TF, symbols=[b.symbol for b in rows], ts=[b.ts for b in rows],
                open=[b.open for b in rows], high=[b.high for b in rows],
                low=[b.low for b in rows], close=[b.close for b in rows],
                volume=[b.volume for b in rows],
            )))  # fmt: skip
    return out


def _fetched(tp: TopicPartition, values: Sequence[bytes]) -> RecordChain:
    """``values`` as a fetch brings them: one v2 record batch, read by the block framer."""
    builder = DefaultRecordBatchBuilder(2, 0, False, -1, -1, -1, 1 << 30)
    for i, v in enumerate(values):
        builder.append(i, timestamp=1_700_000_000_000, key=v[:8], value=v, headers=[])
    chain = frame_fetch(tp, bytes(builder.build()))
    if chain is None:
        raise RuntimeError("the block framer did not read the warm-up's record batch")
    return chain


def _armed(rule: LiveRule) -> None:
    if rule.status != ACTIVE:  # (a rule the grammar no longer takes warms nothing)
        raise RuntimeError(f"warm-up rule {rule.message.rule_id}: {rule.reason}")


def warm_engine(settings: Settings) -> WarmReport:
    """Compile (or load) the engine's kernels for the batches it will meet (see the
    module). Synchronous and CPU-bound: the engine runs it in a thread."""
    started = time.perf_counter()
    warm_decoder()
    engine = EngineService(settings, None, None, counted=False)  # type: ignore[arg-type]
    try:
        for r in _RULES:
            _armed(engine.rules.upsert(r))
        tps = [TopicPartition("warmup", p) for p in range(2)]
        halves = [[f"W{s}" for s in range(_SYMBOLS) if s % 2 == p] for p in range(2)]
        applied = alerts = 0
        for round_, kind in enumerate(("bars", "batches", "mixed", "bars")):
            if round_ == 2:  # a rule arrives mid-stream: the books refit and warm
                _armed(engine.rules.upsert(_LATER))
                engine._fit({_TF})
            bars = _bars(round_)
            parts: list[tuple[TopicPartition, Sequence[Any]]] = []
            for p, tp in enumerate(tps):
                parts.append((tp, _fetched(tp, _values(bars, halves[p], kind))))
            # one partition alone, then both at once (the compute threads)
            for chunk in (parts[:1], parts[1:]) if round_ == 0 else (parts,):
                touched, by_rule, bad = engine.compute(chunk, int(time.time() * 1000),
                                                       dict.fromkeys(_STAGES, 0.0))  # fmt: skip
                if bad:
                    raise RuntimeError(f"the warm-up's own records did not decode: {bad[0][1]}")
                for g in by_rule.values():
                    engine.gate.call(g.cands)
                    framed_batches([b"warmup"] * len(g.data), g.data,
                                   settings.kafka_max_batch_bytes)  # fmt: skip
                    alerts += len(g.data)
                engine._value_commands(touched)
            applied = engine.bars_applied
        for part in engine.parts.values():  # a checkpoint's round trip
            PartitionState.from_bytes(part.to_bytes(), engine.base,
                                      settings.engine_history_bars, engine.rules)  # fmt: skip
        if alerts == 0:
            raise RuntimeError("the warm-up's rules fired nothing: its alert paths are cold")
    finally:
        engine.close()
    return WarmReport(round(time.perf_counter() - started, 3), applied, alerts,
                      sum(len(s) for s in compiled_signatures().values()))  # fmt: skip


def compiled_signatures() -> dict[str, set[str]]:
    """Every kernel of the project loaded in this process → the argument types it has
    been compiled (or loaded) for."""
    out: dict[str, set[str]] = {}
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith("technic_stream"):
            continue
        for obj in list(vars(module).values()):
            if isinstance(obj, CPUDispatcher):
                key = f"{obj.py_func.__module__}.{obj.py_func.__qualname__}"
                out.setdefault(key, set()).update(str(s) for s in obj.signatures)
    return out
