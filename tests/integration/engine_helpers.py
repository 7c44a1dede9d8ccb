"""Shared by the engine's integration tests: bars, rules, a reference, and running it."""

from __future__ import annotations

import asyncio
import contextlib
import types
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import numpy as np
import orjson

from technic_stream.config import Settings
from technic_stream.engine.book import DEFAULT_INDICATORS
from technic_stream.engine.service import EngineService, engine_service
from technic_stream.indicators.registry import parse_indicators
from technic_stream.indicators.series import batch_outputs
from technic_stream.kafka import Producer
from technic_stream.messages import AlertRule, encode
from technic_stream.rules import RuleSet
from technic_stream.topics import topic_name
from tests.unit.test_engine_book import walk

TF = "1m"


def market(symbols: int, bars: int, seed: int = 0) -> dict[str, tuple[np.ndarray, ...]]:
    return {f"S{i}": walk(bars, seed * 1000 + i) for i in range(symbols)}


def bar_bytes(sym: str, bars: tuple[np.ndarray, ...], j: int, tf: str = TF) -> bytes:
    ts, o, h, lo, c, v = bars
    return orjson.dumps(
        {"type": "bar", "v": 1, "symbol": sym, "tf": tf, "ts": int(ts[j]), "open": float(o[j]),
         "high": float(h[j]), "low": float(lo[j]), "close": float(c[j]), "volume": float(v[j])}
    )  # fmt: skip


def interleaved(series: dict[str, tuple[np.ndarray, ...]], start: int, stop: int):
    """(symbol, bar index) in time order across symbols, bars start..stop-1."""
    return [(s, j) for j in range(start, stop) for s in series]


async def send_bars(settings: Settings, series, start: int, stop: int, extra=()) -> int:
    topic = topic_name(settings.topic_prefix, "md.bars")
    n = 0
    async with Producer(settings) as producer:
        for sym, j in interleaved(series, start, stop):
            await producer.send(topic, bar_bytes(sym, series[sym], j), key=sym.encode())
            n += 1
        for key, value in extra:
            await producer.send(topic, value, key=key)
            n += 1
        await producer.flush()
    return n


def rule(rule_id: str, expr: str, **kw: Any) -> AlertRule:
    """A rule; unthrottled unless the test says otherwise (tests count every firing)."""
    kw.setdefault("throttle_max", 100_000)
    return AlertRule(rule_id=rule_id, owner=kw.pop("owner", "ann"), expr=expr, tf=TF,
                     ts=kw.pop("ts", 1), **kw)  # fmt: skip


async def send_rules(settings: Settings, rules: Iterable[AlertRule | tuple[str, bytes | None]]):
    topic = topic_name(settings.topic_prefix, "alerts.rules")
    async with Producer(settings) as producer:
        for r in rules:
            if isinstance(r, AlertRule):
                await producer.send(topic, encode(r), key=r.rule_id.encode())
            else:
                await producer.send(topic, r[1], key=r[0].encode())
        await producer.flush()


def matches(expr: str, bars: tuple[np.ndarray, ...]) -> np.ndarray:
    """Reference: indices of the bars where the rule holds over the whole series."""
    rs = RuleSet([expr])
    names = ("ts", "open", "high", "low", "close", "volume")
    cols = rs.series_columns(dict(zip(names, bars, strict=True)))
    return np.flatnonzero(rs.evaluate_series(cols, n=len(bars[0])).match(0))


def expected_values(bars: tuple[np.ndarray, ...]) -> dict[str, float]:
    out: dict[str, float] = {}
    for spec in parse_indicators(DEFAULT_INDICATORS):
        for name, arr in batch_outputs(spec, *bars).items():
            out[name] = float(arr[-1])
    return out


@contextlib.asynccontextmanager
async def running_engine(settings: Settings) -> AsyncIterator[EngineService]:
    """The engine service in this process, as ``technic-stream engine`` runs it."""
    stop = asyncio.Event()
    box: list[EngineService] = []
    ops = types.SimpleNamespace(checks={})
    task = asyncio.create_task(engine_service(settings, stop, ops, started=box.append))  # type: ignore[arg-type]
    # (its start compiles the kernels where numba's cache is empty: a minute or more)
    await wait_for(lambda: bool(box) and box[0].consumer is not None, "engine start", task,
                   within=200)  # fmt: skip
    try:
        yield box[0]
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def wait_for(
    cond: Callable[[], bool], what: str, task: asyncio.Task | None = None, within: float = 60.0
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not cond():
        if task is not None and task.done():
            task.result()
            raise AssertionError(f"engine ended while waiting for {what}")
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def decoded_hash(raw: dict[bytes, bytes]) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in raw.items()}
