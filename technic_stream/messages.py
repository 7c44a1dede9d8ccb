"""Wire messages: the published contract between our processes and other services.

Every payload is one JSON object with ``type`` (the message kind) and ``v`` (its
schema version). Times are integer epoch milliseconds UTC; a bar's ``ts`` is its
open time. Models are immutable and strict: a message that does not fit is
rejected with a one-line reason (see :func:`decode`), never coerced into shape.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from technic_stream.errors import MessageDecodeError

__all__ = [
    "MESSAGE_TYPES",
    "MODELS",
    "TIMEFRAMES",
    "TIMEFRAME_MS",
    "Alert",
    "AlertRule",
    "Bar",
    "BarBatch",
    "Message",
    "ScanControl",
    "ScanMatch",
    "ScanProgress",
    "ScanRequest",
    "ScanResult",
    "ScanTask",
    "Trade",
    "alert_id",
    "decode",
    "encode",
]

#: Latest representable time: 2200-01-01T00:00:00Z. Guards against seconds-or-ns mix-ups.
MAX_TS_MS = 7_258_118_400_000

#: Timeframes we know, with their nominal length (days and weeks follow sessions).
TIMEFRAME_MS: dict[str, int] = {
    "1s": 1_000,
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
    "1w": 604_800_000,
}
TIMEFRAMES: tuple[str, ...] = tuple(TIMEFRAME_MS)

Symbol = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Z0-9][A-Z0-9._/:^=-]{0,31}$"),
    Field(description="Upper-case ticker, 1-32 of A-Z 0-9 . _ / : ^ = -", examples=["AAPL"]),
]
Ident = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"),
    Field(description="Identifier, 1-64 of A-Z a-z 0-9 . _ : -"),
]
Timeframe = Literal["1s", "1m", "5m", "15m", "30m", "1h", "4h", "1d", "1w"]
EpochMs = Annotated[
    int, Field(strict=True, ge=0, le=MAX_TS_MS, description="epoch milliseconds UTC")
]
# strict: a number on the wire, never a string or a boolean coerced into one
Price = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
Quantity = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Count = Annotated[int, Field(strict=True, ge=0)]
RuleText = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
Values = Annotated[
    dict[Annotated[str, StringConstraints(max_length=64)], Finite | None],
    Field(max_length=256, description="named values; null where not ready"),
]


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=False)


class Trade(_Message):
    """One trade print."""

    type: Literal["trade"] = "trade"
    v: Literal[1] = 1
    symbol: Symbol
    ts: EpochMs
    price: Price
    size: Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
    trade_id: Annotated[str, StringConstraints(max_length=64)] | None = None


class Bar(_Message):
    """One OHLCV bar; ``ts`` is the open time. Same ``ts`` again = a correction."""

    type: Literal["bar"] = "bar"
    v: Literal[1] = 1
    symbol: Symbol
    tf: Timeframe
    ts: EpochMs
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Quantity

    @model_validator(mode="after")
    def _ohlc_consistent(self) -> Bar:
        if self.high < max(self.open, self.close, self.low):
            raise ValueError(
                f"high {self.high} is below max(open, close, low) "
                f"{max(self.open, self.close, self.low)}"
            )
        if self.low > min(self.open, self.close):
            raise ValueError(
                f"low {self.low} is above min(open, close) {min(self.open, self.close)}"
            )
        return self


#: Most rows one BarBatch may carry (keep a batch well under the message size limit).
MAX_BATCH_ROWS = 20_000


class BarBatch(_Message):
    """Many bars of one timeframe as columns, for high-volume producers.

    Row i is the bar (symbols[i], ts[i], open[i], …). Rows keep per-symbol arrival
    order, and a batch only holds symbols of the partition it is written to (grouped by
    the same key hash as Bar messages), so per-symbol ordering and ownership still hold.
    Every row obeys the same rules as a :class:`Bar`.
    """

    type: Literal["bar_batch"] = "bar_batch"
    v: Literal[1] = 1
    tf: Timeframe
    symbols: Annotated[list[Symbol], Field(min_length=1, max_length=MAX_BATCH_ROWS)]
    ts: Annotated[list[EpochMs], Field(min_length=1, max_length=MAX_BATCH_ROWS)]
    open: Annotated[list[Price], Field(min_length=1, max_length=MAX_BATCH_ROWS)]
    high: Annotated[list[Price], Field(min_length=1, max_length=MAX_BATCH_ROWS)]
    low: Annotated[list[Price], Field(min_length=1, max_length=MAX_BATCH_ROWS)]
    close: Annotated[list[Price], Field(min_length=1, max_length=MAX_BATCH_ROWS)]
    volume: Annotated[list[Quantity], Field(min_length=1, max_length=MAX_BATCH_ROWS)]

    @model_validator(mode="after")
    def _rows_consistent(self) -> BarBatch:
        n = len(self.symbols)
        for name in ("ts", "open", "high", "low", "close", "volume"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows, symbols has {n}")
        rows = zip(self.open, self.high, self.low, self.close, strict=True)
        for i, (o, h, lo, c) in enumerate(rows):
            if h < max(o, c, lo):
                raise ValueError(f"row {i}: high {h} is below max(open, close, low)")
            if lo > min(o, c):
                raise ValueError(f"row {i}: low {lo} is above min(open, close)")
        return self

    def __len__(self) -> int:
        return len(self.symbols)

    def bars(self) -> list[Bar]:
        """The rows as :class:`Bar` messages (for tools and tests, not the hot path)."""
        return [
            Bar.model_construct(
                symbol=s, tf=self.tf, ts=t, open=o, high=h, low=lo, close=c, volume=v
            )
            for s, t, o, h, lo, c, v in zip(
                self.symbols, self.ts, self.open, self.high, self.low, self.close, self.volume,
                strict=True,
            )
        ]  # fmt: skip

    @classmethod
    def from_bars(cls, bars: list[Bar]) -> BarBatch:
        """Columns from bars of one timeframe, in the given order."""
        if not bars:
            raise ValueError("a BarBatch needs at least one bar")
        tf = bars[0].tf
        if any(b.tf != tf for b in bars):
            raise ValueError("a BarBatch holds one timeframe")
        return cls(
            tf=tf,
            symbols=[b.symbol for b in bars],
            ts=[b.ts for b in bars],
            open=[b.open for b in bars],
            high=[b.high for b in bars],
            low=[b.low for b in bars],
            close=[b.close for b in bars],
            volume=[b.volume for b in bars],
        )


class ScanRequest(_Message):
    """Scan a universe with a rule (``"... rank by <expr> [asc|desc]"`` optional)."""

    type: Literal["scan_request"] = "scan_request"
    v: Literal[1] = 1
    scan_id: Ident
    owner: Ident
    rule: RuleText
    universe: Ident | None = Field(
        default=None, description="named universe ('all' or a watchlist); default 'all'"
    )
    symbols: Annotated[list[Symbol], Field(max_length=20_000)] | None = None
    tf: Timeframe = "1d"
    mode: Literal["snapshot", "history"] = "snapshot"
    start: EpochMs | None = None
    end: EpochMs | None = None
    limit: Annotated[int, Field(strict=True, ge=1, le=10_000)] = 100
    ts: EpochMs

    @model_validator(mode="after")
    def _scope_consistent(self) -> ScanRequest:
        if self.universe is not None and self.symbols is not None:
            raise ValueError("give either universe or symbols, not both")
        if self.mode == "history" and self.start is None:
            raise ValueError("a history scan needs start")
        if self.mode == "snapshot" and (self.start is not None or self.end is not None):
            raise ValueError("start/end apply to history scans only")
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}")
        return self


class ScanControl(_Message):
    """Control of a running scan."""

    type: Literal["scan_control"] = "scan_control"
    v: Literal[1] = 1
    scan_id: Ident
    owner: Ident
    action: Literal["cancel"]
    ts: EpochMs


class ScanTask(_Message):
    """One chunk of a sharded scan."""

    type: Literal["scan_task"] = "scan_task"
    v: Literal[1] = 1
    scan_id: Ident
    chunk: Count
    chunks: Annotated[int, Field(strict=True, ge=1, le=100_000)]
    symbols: Annotated[list[Symbol], Field(min_length=1, max_length=20_000)]
    request: ScanRequest
    ts: EpochMs

    @model_validator(mode="after")
    def _chunk_in_range(self) -> ScanTask:
        if self.chunk >= self.chunks:
            raise ValueError(f"chunk {self.chunk} is not below chunks {self.chunks}")
        if self.request.scan_id != self.scan_id:
            raise ValueError("request.scan_id differs from scan_id")
        return self


ScanStage = Literal[
    "queued",
    "resolve_universe",
    "load_data",
    "compute",
    "rank",
    "finalize",
    "done",
    "failed",
    "cancelled",
]


class ScanProgress(_Message):
    """Where a scan is: stage, counts, speed and estimated time left."""

    type: Literal["scan_progress"] = "scan_progress"
    v: Literal[1] = 1
    scan_id: Ident
    owner: Ident
    stage: ScanStage
    done: Count
    total: Count
    percent: Annotated[float, Field(strict=True, ge=0, le=100, allow_inf_nan=False)]
    rate: Annotated[
        float, Field(strict=True, ge=0, allow_inf_nan=False, description="symbols per second")
    ]
    eta_ms: Count | None = None
    current_symbol: Symbol | None = None
    cache_hits: Count = 0
    cache_misses: Count = 0
    matches: Count = 0
    queue_position: Count | None = None
    ts: EpochMs


class ScanMatch(_Message):
    """One matching symbol (and bar, for history scans)."""

    symbol: Symbol
    ts: EpochMs
    score: Finite | None = None
    values: Values = Field(default_factory=dict)


class ScanResult(_Message):
    """Results of a scan: partial per chunk, then the final ranked top N."""

    type: Literal["scan_result"] = "scan_result"
    v: Literal[1] = 1
    scan_id: Ident
    owner: Ident
    status: Literal["partial", "done", "failed", "cancelled"]
    chunk: Count | None = None
    matches: Annotated[list[ScanMatch], Field(max_length=100_000)] = Field(default_factory=list)
    total_matches: Count = 0
    symbols_scanned: Count = 0
    unknown_symbols: Annotated[
        list[Annotated[str, StringConstraints(max_length=64)]], Field(max_length=20_000)
    ] = Field(default_factory=list)
    error: Annotated[str, StringConstraints(max_length=2_000)] | None = None
    ts: EpochMs


AlertMode = Literal["once", "once_per_bar", "once_per_bar_close", "every_time"]
DeliveryChannel = Literal["ws", "push", "webhook"]


def _default_channels() -> list[DeliveryChannel]:
    return ["ws"]


class AlertRule(_Message):
    """A live alert rule. A tombstone (null value) on its key deletes it."""

    type: Literal["alert_rule"] = "alert_rule"
    v: Literal[1] = 1
    rule_id: Ident
    owner: Ident
    name: Annotated[str, StringConstraints(max_length=200)] | None = None
    expr: RuleText
    symbols: Annotated[list[Symbol], Field(max_length=20_000)] | None = None
    universe: Ident | None = None
    tf: Timeframe = "1d"
    mode: AlertMode = "once_per_bar_close"
    cooldown_s: Annotated[int, Field(strict=True, ge=0, le=31_536_000)] = 0
    expires_at: EpochMs | None = None
    channels: Annotated[list[DeliveryChannel], Field(min_length=1, max_length=3)] = Field(
        default_factory=_default_channels
    )
    message: Annotated[str, StringConstraints(max_length=1_000)] | None = None
    active: bool = True
    throttle_max: Annotated[int, Field(strict=True, ge=1, le=100_000)] = 15
    throttle_window_s: Annotated[int, Field(strict=True, ge=1, le=86_400)] = 180
    ts: EpochMs

    @model_validator(mode="after")
    def _scope_consistent(self) -> AlertRule:
        if self.universe is not None and self.symbols is not None:
            raise ValueError("give either universe or symbols, not both")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("channels repeat")
        return self


class Alert(_Message):
    """A rule fired for a symbol on a bar. ``alert_id`` is deterministic (see :func:`alert_id`)."""

    type: Literal["alert"] = "alert"
    v: Literal[1] = 1
    alert_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
    rule_id: Ident
    owner: Ident
    symbol: Symbol
    tf: Timeframe
    ts: EpochMs
    fired_at: EpochMs
    close: Price
    values: Values = Field(default_factory=dict)
    message: Annotated[str, StringConstraints(max_length=2_000)] | None = None


def alert_id(rule_id: str, symbol: str, tf: str, ts: int, seq: int = 0) -> str:
    """Deterministic id of the alert a rule fires on one bar (replays give the same id).

    ``seq`` numbers the prints of one bar (0: its close, n: its n-th correction); only
    ``every_time`` rules fire on more than one print of a bar.
    """
    raw = f"{rule_id}\x1f{symbol}\x1f{tf}\x1f{ts}".encode()
    if seq:
        raw += f"\x1f{seq}".encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


Message = (
    Trade
    | Bar
    | BarBatch
    | ScanRequest
    | ScanControl
    | ScanTask
    | ScanProgress
    | ScanResult
    | AlertRule
    | Alert
)

MODELS: tuple[type[_Message], ...] = (
    Trade,
    Bar,
    BarBatch,
    ScanRequest,
    ScanControl,
    ScanTask,
    ScanProgress,
    ScanResult,
    AlertRule,
    Alert,
)
#: ``type`` field value → model.
MESSAGE_TYPES: dict[str, type[_Message]] = {m.model_fields["type"].default: m for m in MODELS}

M = TypeVar("M", bound=_Message)


def encode(message: _Message) -> bytes:
    """Serialise a message to compact JSON bytes."""
    return orjson.dumps(message.model_dump(mode="json"))


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"]) or "message"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{loc}: {first['msg']}{more}"


def decode(data: bytes, expected: type[M] | None = None, *, max_bytes: int = 1_000_000) -> Any:
    """Parse and validate one message.

    With ``expected``, the message must be of that type. Raises
    :class:`MessageDecodeError` with a one-line reason on any problem.
    """
    if data is None:
        raise MessageDecodeError("null value (tombstone) where a message was expected")
    if len(data) > max_bytes:
        raise MessageDecodeError(f"message of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MessageDecodeError(f"invalid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise MessageDecodeError(f"expected a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    model = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise MessageDecodeError(f"unknown message type {kind!r}")
    if expected is not None and model is not expected:
        want = expected.model_fields["type"].default
        raise MessageDecodeError(f"expected message type {want!r}, got {kind!r}")
    version = obj.get("v")
    if version != model.model_fields["v"].default:
        raise MessageDecodeError(f"unsupported version v={version!r} of {kind!r}")
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise MessageDecodeError(_first_error(exc)) from exc
