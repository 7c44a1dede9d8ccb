"""``technic-stream scan RULE``: submit a scan, show its progress, print the ranked table.

Progress and results are read from ``scan.progress`` and ``scan.results`` (positioned at
their ends before the request is sent, so nothing is missed). Ctrl-C sends a cancel and
prints what the scan found until then.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import TextIO

from aiokafka import AIOKafkaConsumer, TopicPartition

from technic_stream.config import Settings
from technic_stream.kafka import Producer
from technic_stream.messages import (
    ScanControl,
    ScanProgress,
    ScanRequest,
    ScanResult,
    decode,
    encode,
)
from technic_stream.topics import topic_name

__all__ = ["day_ms", "run_scan_cli", "scan_request"]


def day_ms(text: str) -> int:
    """``YYYY-MM-DD`` (UTC midnight) or epoch milliseconds."""
    if text.isdigit():
        return int(text)
    try:
        return int(datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC).timestamp() * 1000)
    except ValueError:
        raise ValueError(f"expected YYYY-MM-DD or epoch ms, got {text!r}") from None


def _bar(p: ScanProgress, width: int = 30) -> str:
    if p.stage == "queued":
        where = f"position {p.queue_position}" if p.queue_position is not None else "waiting"
        return f"{'queued':<16} {where} (other scans run first)"
    filled = int(width * p.percent / 100)
    eta = f"ETA {p.eta_ms / 1000:.1f}s" if p.eta_ms is not None else "ETA -"
    cur = f" {p.current_symbol}" if p.current_symbol else ""
    return (f"{p.stage:<16} [{'#' * filled}{'.' * (width - filled)}] {p.percent:5.1f}% "
            f"{p.done}/{p.total} {p.rate:,.0f} sym/s {eta} matches {p.matches}{cur}")  # fmt: skip


def _table(res: ScanResult, out: TextIO) -> None:
    if not res.matches:
        print("no matches", file=out)
        return
    print(f"{'#':>4}  {'symbol':<10} {'date (UTC)':<19} {'score':>14}", file=out)
    for i, m in enumerate(res.matches, 1):
        when = datetime.fromtimestamp(m.ts / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        score = "" if m.score is None else f"{m.score:,.4f}"
        print(f"{i:>4}  {m.symbol:<10} {when:<19} {score:>14}", file=out)


async def run_scan_cli(
    settings: Settings, req: ScanRequest, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    p = settings.topic_prefix
    topics = [topic_name(p, "scan.progress"), topic_name(p, "scan.results")]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False, fetch_max_wait_ms=50)  # fmt: skip
    await consumer.start()
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, interrupted.set)
    tty = err.isatty()
    try:
        tps = []
        for t in topics:
            parts = consumer.partitions_for_topic(t)
            if not parts:
                await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(t) or set()
            tps += [TopicPartition(t, x) for x in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)  # resolve now, before the request goes out
        async with Producer(settings) as producer:
            await producer.send_and_wait(topics[0].replace("scan.progress", "scan.requests"),
                                         encode(req), key=req.scan_id.encode())  # fmt: skip
            print(f"scan {req.scan_id} submitted (Ctrl-C cancels)", file=err, flush=True)
            last_stage = ""
            cancel_sent = False
            key = req.scan_id.encode()
            while True:
                if interrupted.is_set() and not cancel_sent:
                    ctl = ScanControl(scan_id=req.scan_id, owner=req.owner, action="cancel",
                                      ts=int(time.time() * 1000))  # fmt: skip
                    await producer.send_and_wait(topic_name(p, "scan.control"), encode(ctl),
                                                 key=key)  # fmt: skip
                    cancel_sent = True
                    print("\ncancelling ...", file=err, flush=True)
                batch = await consumer.getmany(timeout_ms=100)
                # progress before results: a fetch can hold both, and the final result ends
                # the command
                parts = sorted(batch.items(), key=lambda kv: kv[0].topic != topics[0])
                for _, records in parts:
                    for r in records:
                        if r.key != key:
                            continue
                        if r.topic == topics[0]:
                            prog = decode(r.value, ScanProgress)
                            line = _bar(prog)
                            if tty:
                                print(f"\r{line}", end="", file=err, flush=True)
                            elif prog.stage != last_stage:
                                print(line, file=err, flush=True)
                            last_stage = prog.stage
                            continue
                        res = decode(r.value, ScanResult)
                        if res.status == "partial":
                            continue
                        if tty:
                            print(file=err)
                        if res.status == "failed":
                            print(f"scan failed: {res.error}", file=err)
                            return 1
                        _table(res, out)
                        unknown = f"; unknown: {', '.join(res.unknown_symbols)}" if (
                            res.unknown_symbols) else ""  # fmt: skip
                        print(f"{res.status}: {res.total_matches:,} matches in "
                              f"{res.symbols_scanned:,} symbols{unknown}", file=err)  # fmt: skip
                        return 0 if res.status == "done" else 130
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        await consumer.stop()


def scan_request(a: argparse.Namespace) -> ScanRequest:
    """The request the command line describes (pydantic checks it)."""
    symbols = [s.strip() for s in a.symbols.split(",") if s.strip()] if a.symbols else None
    return ScanRequest(
        scan_id=a.id or f"cli-{uuid.uuid4().hex[:12]}",
        owner=a.owner,
        rule=a.rule,
        universe=None if symbols else a.universe,
        symbols=symbols,
        tf=a.tf,
        mode=a.mode,
        start=day_ms(a.start) if a.start else None,
        end=day_ms(a.end) if a.end else None,
        limit=a.limit,
        ts=int(time.time() * 1000),
    )
