"""``technic-stream`` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from technic_stream import __version__
from technic_stream.config import Settings, load_settings
from technic_stream.errors import ConfigError, TechnicStreamError

if TYPE_CHECKING:
    from technic_stream.marketdata.replay import ReplayConfig

__all__ = ["main"]

_REPO_SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="technic-stream",
        description="Real-time stock market scanner on Kafka, numba, Redis and WebSockets.",
    )
    p.add_argument("--version", action="version", version=f"technic-stream {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="start the local servers and every service; Ctrl-C stops")
    up.add_argument("--ops-port", type=int, help="port of /healthz /readyz /metrics")
    up.add_argument(
        "--no-replay",
        action="store_true",
        help="do not stream the sample data and the synthetic universe",
    )
    up.add_argument(
        "--check",
        action="store_true",
        help="start everything, exit 0 once a bar has reached Redis, a scan has completed "
        "and an alert has fired end to end (non-zero naming what failed)",
    )

    schemas = sub.add_parser("schemas", help="the published wire contract")
    ssub = schemas.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (
        ("export", "write schemas/*.schema.json and schemas/asyncapi.yaml"),
        ("check", "exit 1 if the files differ from the models"),
    ):
        sp = ssub.add_parser(name, help=text)
        sp.add_argument("--dir", type=Path, default=_REPO_SCHEMAS)

    topics = sub.add_parser("topics", help="Kafka topics of the configured broker")
    tsub = topics.add_subparsers(dest="action", required=True, metavar="ACTION")
    tsub.add_parser("create", help="create the missing topics (TECHNIC_PARTITIONS each)")
    tsub.add_parser("names", help="print the topic names for the configured prefix")

    ind = sub.add_parser(
        "indicators",
        help="run a CSV/Parquet of OHLCV bars through the streaming kernels",
        description="Writes the input columns plus one column per indicator output "
        "(empty where not ready). Columns by name, any case: symbol (optional), "
        "date/ts, open, high, low, close, volume.",
    )
    ind.add_argument("file", type=Path)
    ind.add_argument(
        "--indicators",
        default="ema(20), rsi(14), macd(12,26,9), bb(20,2), atr(14)",
        help='e.g. "ema(20),rsi(14),macd(12,26,9),bb(20,2)"',
    )
    ind.add_argument("--symbol", help="only this symbol's rows")
    ind.add_argument("--out", type=Path, help="output CSV (default: standard output)")

    rules = sub.add_parser("rules", help="check a rule, or see where it fires over a file of bars")
    rsub = rules.add_subparsers(dest="action", required=True, metavar="ACTION")
    rc = rsub.add_parser(
        "check",
        help="print the canonical form, indicators and history a rule needs (exit 2 if invalid)",
    )
    rc.add_argument("rule", help='e.g. "rsi(14) < 30 and close > sma(200)"')
    re_ = rsub.add_parser(
        "eval",
        help="evaluate a rule bar by bar over a CSV/Parquet of bars; adds match/reason/score",
        description="Same file format as 'technic-stream indicators'. Writes the input "
        "columns plus match (1/0, empty when not ready), reason (not_ready) and, with "
        "'rank by', score.",
    )
    re_.add_argument("file", type=Path)
    re_.add_argument("rule")
    re_.add_argument("--symbol", help="only this symbol's rows")
    re_.add_argument("--out", type=Path, help="output CSV (default: standard output)")

    syn = sub.add_parser(
        "synth",
        help="publish a seeded synthetic market to Kafka (bars, BarBatch or trades)",
        description="Geometric random walk per symbol with overnight gaps, a U-shaped intraday "
        "volume profile and trading halts; the same seed gives the same market.",
    )
    syn.add_argument("--symbols", type=int, default=500)
    syn.add_argument(
        "--steps", type=int, default=390, help="bar times to publish (390 = a day of 1m)"
    )
    syn.add_argument("--tf", default="1m", help="1s 1m 5m 15m 30m 1h 4h 1d")
    syn.add_argument("--format", choices=("bars", "batch", "trades"), default="bars")
    syn.add_argument(
        "--rate", type=float, default=0.0, help="bars/s (trades/s); 0 = as fast as possible"
    )
    syn.add_argument("--seed", type=int, default=7)
    syn.add_argument("--start", default="2026-01-05", help="first session day, YYYY-MM-DD")

    rep = sub.add_parser(
        "replay",
        help="send recorded bars (CSV/Parquet, default: the bundled sample) to Kafka",
        description="Bars go out in time order across symbols. Bad rows are reported with "
        "their line number and skipped. Columns are found by name (date/ts, open, high, low, "
        "close, volume, symbol/ticker, adj close) or mapped with --columns.",
    )
    _bar_file_options(rep)
    rep.add_argument(
        "--speed",
        type=float,
        default=0.0,
        help="N x real time (86400 = a day per second); 0 = as fast as possible",
    )
    rep.add_argument("--format", choices=("bars", "batch"), default="bars")

    bf = sub.add_parser(
        "backfill",
        help="load a bar file (default: the bundled sample) straight into the MongoDB archive",
        description="Same file options as replay. Idempotent: loading a file twice stores "
        "each bar once; a row for a bar already stored replaces it.",
    )
    _bar_file_options(bf)

    sub.add_parser(
        "archiver", help="run the archiver: md.bars, scan results and alerts into MongoDB"
    )

    sub.add_parser(
        "bars",
        help="run the bar builder: md.trades into 1s/1m bars and rollups on md.bars",
        description="Timeframes, grace and session come from TECHNIC_BAR_TIMEFRAMES, "
        "TECHNIC_BAR_GRACE_MS and TECHNIC_SESSION_TZ/OPEN/CLOSE.",
    )

    sub.add_parser(
        "engine",
        help="run the indicator engine: md.bars into indicators (Redis, channels) and alerts",
        description="Default indicators from TECHNIC_ENGINE_INDICATORS (live rules add more); "
        "checkpoints every TECHNIC_ENGINE_CHECKPOINT_INTERVAL_S or "
        "TECHNIC_ENGINE_CHECKPOINT_BARS; rules from the alerts.rules topic.",
    )

    sub.add_parser(
        "feed",
        help="stream Alpaca market data v2 (trades, minute bars, corrections) to Kafka",
        description="Needs TECHNIC_ALPACA_KEY and TECHNIC_ALPACA_SECRET; symbols from "
        "TECHNIC_ALPACA_TRADES and TECHNIC_ALPACA_BARS (comma-separated, or *); the endpoint "
        "from TECHNIC_ALPACA_URL (v2/iex or v2/sip). Reconnects with backoff on its own.",
    )

    sc = sub.add_parser(
        "scan",
        help="run a scan: live progress bar, then the ranked table (Ctrl-C cancels)",
        description='e.g. technic-stream scan "rsi(14) < 30 rank by volume desc" --mode '
        "history --start 2012-01-01. Needs a running scanner (technic-stream up).",
    )
    sc.add_argument("rule")
    sc.add_argument("--universe", default="all", help="all, or a stored watchlist")
    sc.add_argument("--symbols", help="comma-separated symbols instead of a universe")
    sc.add_argument("--tf", default="1d")
    sc.add_argument("--mode", choices=("snapshot", "history"), default="snapshot")
    sc.add_argument("--start", help="history from YYYY-MM-DD (or epoch ms)")
    sc.add_argument("--end", help="history until YYYY-MM-DD (or epoch ms)")
    sc.add_argument("--limit", type=int, default=20, help="rows of the ranked table")
    sc.add_argument("--owner", default="cli")
    sc.add_argument("--id", help="scan id (default: a new one)")

    sub.add_parser(
        "scanner",
        help="run the scan worker: scan.requests into progress, results and MongoDB",
        description="Chunks of TECHNIC_SCAN_CHUNK_SYMBOLS, TECHNIC_SCAN_CONCURRENCY scans at "
        "once; cancels from scan.control.",
    )

    sub.add_parser(
        "notifier",
        help="run the notifier: alerts.fired to the owners' webhooks, FCM and APNs devices",
        description="Signed POSTs (HMAC-SHA256); FCM HTTP v1 pushes when "
        "TECHNIC_NOTIFIER_FCM_CREDENTIALS is set, APNs when TECHNIC_NOTIFIER_APNS_KEY is; "
        "retries with backoff per target, the DLQ after TECHNIC_NOTIFIER_MAX_ATTEMPTS.",
    )

    sub.add_parser(
        "gateway",
        help="run the gateway: WebSocket fan-out (/v1/ws), REST API (/v1), auth and limits",
        description="Listens on TECHNIC_GATEWAY_HOST:TECHNIC_GATEWAY_PORT. Set "
        "TECHNIC_GATEWAY_JWT_SECRET when several gateways serve the same clients.",
    )

    keys = sub.add_parser("keys", help="API keys (stored hashed in MongoDB)")
    ksub = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    kc = ksub.add_parser("create", help="create a key and print it (shown only this once)")
    kc.add_argument("--owner", required=True, help="the user the key acts for")
    kc.add_argument("--admin", action="store_true", help="may read every owner's channels")
    kc.add_argument("--name", help="a note to recognise the key by")
    kl = ksub.add_parser("list", help="list keys (never their secrets)")
    kl.add_argument("--owner")
    kr = ksub.add_parser("revoke", help="revoke a key by its id")
    kr.add_argument("key_id")

    sub.add_parser(
        "warm",
        help="compile the engine's kernels and the indicators' batch kernels (scans, "
        "charts) into numba's cache and exit (no servers needed)",
        description="The engine does this itself before it joins its group; an image build "
        "runs it (with NUMBA_CACHE_DIR set) so that its containers start warm.",
    )

    sub.add_parser("config", help="print the effective configuration (secrets redacted)")
    return p


def _bar_file_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, nargs="?", help="CSV, CSV.gz or Parquet; default: sample")
    p.add_argument(
        "--columns", help='map fields to columns, e.g. "time=Date,close=Last,symbol=Ticker"'
    )
    p.add_argument("--symbol", help="the symbol, for a file without a symbol column")
    p.add_argument(
        "--adjust",
        choices=("none", "splits", "full"),
        default="none",
        help="from the Adj Close column: splits only, or splits and dividends",
    )
    p.add_argument("--tf", help="timeframe of the bars (default: from their spacing)")


def _replay_config(args: argparse.Namespace, **extra: object) -> ReplayConfig:
    from technic_stream.data.files import ColumnMap
    from technic_stream.marketdata.replay import ReplayConfig

    return ReplayConfig(
        path=args.file,
        columns=ColumnMap.parse(args.columns),
        symbol=args.symbol,
        adjust=args.adjust,
        tf=args.tf,
        **extra,  # type: ignore[arg-type]
    )


def _cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from technic_stream.marketdata.replay import run_replay

    config = _replay_config(args, speed=args.speed, fmt=args.format)
    report = asyncio.run(run_replay(settings, config))
    print(
        f"sent {report.bars:,} {report.tf} bars of {report.symbols} symbols in "
        f"{report.messages:,} messages to {report.topic} in {report.seconds:.1f}s; "
        f"{report.skipped:,} of {report.rows_read:,} rows skipped"
    )
    return 0


def _cmd_backfill(settings: Settings, args: argparse.Namespace) -> int:
    from technic_stream.marketdata.archiver import run_backfill

    config = _replay_config(args)
    if not settings.mongo_url:
        raise ConfigError("TECHNIC_MONGO_URL: required to backfill (or use 'up')")
    report = asyncio.run(run_backfill(settings, config))
    print(
        f"archived {report.bars:,} {report.tf} bars of {report.symbols} symbols "
        f"({report.buckets_written:,} buckets written) in {report.seconds:.1f}s; "
        f"{report.skipped:,} of {report.rows_read:,} rows skipped"
    )
    return 0


def _cmd_service(settings: Settings, name: str) -> int:
    from technic_stream.app.runtime import run
    from technic_stream.app.service import run_standalone
    from technic_stream.app.up import service_main
    from technic_stream.logs import configure_logging

    missing = [
        var
        for var, value in (
            ("TECHNIC_KAFKA_BOOTSTRAP", settings.kafka_bootstrap),
            ("TECHNIC_REDIS_URL", settings.redis_url),
            ("TECHNIC_MONGO_URL", settings.mongo_url),
        )
        if not value
    ]
    if missing:
        raise ConfigError(f"{', '.join(missing)}: required (or run everything with 'up')")
    configure_logging(settings.log_level, settings.log_format)
    return run(run_standalone(settings, name, service_main(name)))


def _cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from technic_stream.app.runtime import run
    from technic_stream.app.up import run_up
    from technic_stream.logs import configure_logging

    if args.ops_port is not None:
        settings = settings.model_copy(update={"ops_port": args.ops_port})
    configure_logging(settings.log_level, settings.log_format)
    if args.check and args.no_replay:
        print("technic-stream up: --check needs the demo data (drop --no-replay)", file=sys.stderr)
        return 2
    return run(run_up(settings, replay=not args.no_replay, check=args.check))


def _cmd_schemas(args: argparse.Namespace) -> int:
    from technic_stream.contract import stale_files, write_files

    if args.action == "export":
        for path in write_files(args.dir):
            print(path)
        return 0
    stale = stale_files(args.dir)
    if stale:
        print(
            f"schemas out of date in {args.dir}: {', '.join(stale)}\n"
            "run: technic-stream schemas export",
            file=sys.stderr,
        )
        return 1
    print(f"schemas in {args.dir} match the models")
    return 0


def _cmd_topics(settings: Settings, args: argparse.Namespace) -> int:
    from technic_stream.topics import all_topic_names

    if args.action == "names":
        print("\n".join(all_topic_names(settings.topic_prefix)))
        return 0
    if not settings.kafka_bootstrap:
        raise ConfigError("TECHNIC_KAFKA_BOOTSTRAP: required to create topics")
    from technic_stream.kafka import ensure_topics

    for name in asyncio.run(ensure_topics(settings)):
        print(name)
    return 0


def _cmd_indicators(args: argparse.Namespace) -> int:
    from technic_stream.indicators.cli import run_indicators

    if args.out is None:
        run_indicators(args.file, args.indicators, symbol=args.symbol, out=sys.stdout)
        return 0
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    with tmp.open("w", newline="") as fh:
        n = run_indicators(args.file, args.indicators, symbol=args.symbol, out=fh)
    tmp.replace(args.out)
    print(f"wrote {n} rows to {args.out}", file=sys.stderr)
    return 0


def _cmd_rules(args: argparse.Namespace) -> int:
    from technic_stream.rules import RuleError
    from technic_stream.rules.cli import check_rule, eval_rule, format_rule_error

    try:
        if args.action == "check":
            check_rule(args.rule, sys.stdout)
            return 0
        if args.out is None:
            eval_rule(args.file, args.rule, symbol=args.symbol, out=sys.stdout)
            return 0
        tmp = args.out.with_suffix(args.out.suffix + ".tmp")
        with tmp.open("w", newline="") as fh:
            n, matches = eval_rule(args.file, args.rule, symbol=args.symbol, out=fh)
        tmp.replace(args.out)
        print(f"wrote {n} rows to {args.out}; the rule matched on {matches}", file=sys.stderr)
        return 0
    except RuleError as exc:
        print(format_rule_error(exc), file=sys.stderr)
        return 2


def _cmd_synth(settings: Settings, args: argparse.Namespace) -> int:
    from technic_stream.marketdata.run import run_synth
    from technic_stream.marketdata.synth import SynthConfig

    config = SynthConfig(symbols=args.symbols, seed=args.seed, tf=args.tf, start=args.start)
    if args.steps < 1:
        raise ValueError("--steps must be at least 1")
    report = asyncio.run(
        run_synth(settings, config, steps=args.steps, fmt=args.format, rate=args.rate)
    )
    unit = "trades" if args.format == "trades" else "bars"
    count = report.trades if args.format == "trades" else report.bars
    print(
        f"sent {count:,} {unit} of {config.symbols:,} symbols in {report.messages:,} messages "
        f"to {report.topic} in {report.seconds:.1f}s ({count / max(report.seconds, 1e-9):,.0f} "
        f"{unit}/s)"
    )
    return 0


def _cmd_scan(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from pydantic import ValidationError

    from technic_stream.rules import RuleError, parse_rule
    from technic_stream.scan.cli import run_scan_cli, scan_request

    if not settings.kafka_bootstrap:
        raise ConfigError("TECHNIC_KAFKA_BOOTSTRAP: required (the scanner listens there)")
    try:
        parse_rule(args.rule)
    except RuleError as exc:
        print(f"technic-stream: invalid rule, {exc}\n{exc.caret()}", file=sys.stderr)
        return 2
    try:
        req = scan_request(args)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(x) for x in first["loc"]) or "request"
        print(f"technic-stream: {where}: {first['msg']}", file=sys.stderr)
        return 2
    return asyncio.run(run_scan_cli(settings, req))


def _cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from technic_stream.gateway.auth import ApiKeys
    from technic_stream.storage import mongo_client

    if not settings.mongo_url:
        raise ConfigError("TECHNIC_MONGO_URL: required to store keys")

    async def run() -> int:
        mongo = mongo_client(settings)
        try:
            keys = ApiKeys(mongo[settings.mongo_db])
            if args.action == "create":
                scopes = ("admin",) if args.admin else ()
                new = await keys.create(args.owner, scopes=scopes, name=args.name)
                print(new.key)
                print(f"key id {new.key_id}, owner {new.owner}; store the key now, it is "
                      "not shown again", file=sys.stderr)  # fmt: skip
            elif args.action == "list":
                for doc in await keys.list(args.owner):
                    state = "revoked" if doc.get("revoked") else "active"
                    scope_text = ",".join(doc.get("scopes") or []) or "-"
                    name = doc.get("name") or ""
                    print(f"{doc['_id']}  {doc['owner']:<20} {state:<8} {scope_text:<6} {name}")
            elif not await keys.revoke(args.key_id):
                print(f"technic-stream: no key {args.key_id}", file=sys.stderr)
                return 1
            return 0
        finally:
            await mongo.close()

    return asyncio.run(run())


def _cmd_warm(settings: Settings) -> int:
    import os
    import time

    from technic_stream.engine.warmup import warm_engine
    from technic_stream.indicators.series import warm_batch_twins

    report = warm_engine(settings)
    started = time.perf_counter()
    twins = warm_batch_twins()  # (the scanner's and the gateway's charts)
    where = os.environ.get("NUMBA_CACHE_DIR") or "next to the package's sources"
    print(
        f"engine kernels warm in {report.seconds:.1f} s ({report.signatures} compiled or "
        f"loaded; {report.bars} made-up bars, {report.alerts} alerts); batch kernels of "
        f"{twins} indicators (scans, charts) in {time.perf_counter() - started:.1f} s; "
        f"cache: {where}"
    )
    return 0


def _cmd_config(settings: Settings) -> int:
    from urllib.parse import urlsplit

    for field, value in settings.model_dump().items():
        if isinstance(value, str) and "://" in value:
            parts = urlsplit(value)
            if parts.password:
                value = value.replace(parts.password, "***")
        print(f"TECHNIC_{field.upper()}={'' if value is None else value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "schemas":
            return _cmd_schemas(args)
        if args.command == "indicators":
            return _cmd_indicators(args)
        if args.command == "rules":
            return _cmd_rules(args)
        settings = load_settings()
        if args.command == "up":
            return _cmd_up(settings, args)
        if args.command == "topics":
            return _cmd_topics(settings, args)
        if args.command == "config":
            return _cmd_config(settings)
        if args.command == "warm":
            return _cmd_warm(settings)
        if args.command == "synth":
            return _cmd_synth(settings, args)
        if args.command == "replay":
            return _cmd_replay(settings, args)
        if args.command == "backfill":
            return _cmd_backfill(settings, args)
        if args.command == "scan":
            return _cmd_scan(settings, args)
        if args.command == "keys":
            return _cmd_keys(settings, args)
        if args.command in ("archiver", "bars", "engine", "feed", "gateway", "notifier",
                            "scanner"):  # fmt: skip
            return _cmd_service(settings, args.command)
    except ValueError as exc:  # IndicatorError and friends: one clear line
        print(f"technic-stream: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"technic-stream: {exc}", file=sys.stderr)
        return 2
    except TechnicStreamError as exc:
        print(f"technic-stream: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unhandled command {args.command}")
