"""The bar archive: bars in MongoDB buckets, one document per symbol, timeframe and period.

A bucket holds its bars as parallel arrays (``ts``, ``open`` … ``volume``, sorted by
``ts``, one entry per bar time; stored as base64 of the little-endian arrays, ``enc:
"b64le64"``), so a history scan loads a symbol's year of daily bars or day of minute bars
in one document and turns it into NumPy arrays without a loop.

Writes are idempotent: rows are merged into the stored bucket by ``ts`` (a row for a
``ts`` already there replaces it — corrected bars replace), an unchanged bucket is not
written at all, and the write is a compare-and-set on the bucket's revision (``rev``),
so two writers of one bucket (the archiver and a backfill) never lose each other's
bars: the loser re-reads and merges again. Buckets read or written recently are kept
in a bounded cache, so the archiver usually writes without reading.
"""

from __future__ import annotations

import base64
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymongo import ASCENDING, DESCENDING, InsertOne, ReplaceOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from technic_stream.errors import TechnicStreamError
from technic_stream.messages import TIMEFRAME_MS

__all__ = ["BUCKET_SPAN", "BarArchive", "WriteStats", "bucket_starts"]

log = logging.getLogger(__name__)

FIELDS = ("open", "high", "low", "close", "volume")
_DAY = 86_400_000
#: Length of one bucket per intraday timeframe (aligned to the epoch); ``1d`` buckets are
#: calendar years and ``1w`` buckets calendar decades (UTC).
BUCKET_SPAN: dict[str, int] = {
    "1s": 3_600_000,  # an hour: ≤ 3,600 bars
    "1m": _DAY,  # a day: ≤ 1,440
    "5m": 7 * _DAY,  # ≤ 2,016
    "15m": 28 * _DAY,  # ≤ 2,688
    "30m": 56 * _DAY,
    "1h": 112 * _DAY,
    "4h": 448 * _DAY,
}
_MAX_ATTEMPTS = 8
#: how a bucket stores its arrays: little-endian int64 ``ts`` and float64 columns, base64
#: (a string, which every MongoDB-protocol server stores; the local one has no BSON
#: binary) — a year of daily bars is six strings instead of 1,512 BSON elements, which
#: both the server and the driver handle far faster
ENCODING = "b64le64"


class ArchiveError(TechnicStreamError):
    """The archive could not be written (after retries on conflicting writers)."""


def bucket_starts(tf: str, ts: np.ndarray) -> np.ndarray:
    """The start (epoch ms) of the bucket holding each ``ts``."""
    ts = np.asarray(ts, dtype=np.int64)
    if tf in BUCKET_SPAN:
        span = BUCKET_SPAN[tf]
        return ts - ts % span
    if tf not in TIMEFRAME_MS:
        raise ValueError(f"unknown timeframe {tf!r}")
    years = ts.astype("datetime64[ms]").astype("datetime64[Y]")
    if tf == "1w":
        y = years.astype(np.int64) + 1970
        years = (y - y % 10 - 1970).astype("datetime64[Y]")
    return years.astype("datetime64[ms]").astype(np.int64)


def bucket_id(symbol: str, tf: str, start: int) -> str:
    return f"{symbol}|{tf}|{start}"


@dataclass(slots=True)
class _Bucket:
    rev: int  # 0 = not stored yet
    ts: np.ndarray
    cols: dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class WriteStats:
    bars: int  # rows given
    buckets: int  # buckets touched
    written: int  # buckets inserted or replaced (the rest were unchanged)
    reads: int  # buckets read from MongoDB (cache misses)
    retries: int  # compare-and-set conflicts resolved


class BarArchive:
    """Reads and writes the ``bars`` collection."""

    def __init__(self, db: AsyncDatabase[Any], *, cache_buckets: int = 4_096) -> None:
        self.collection: AsyncCollection[Any] = db["bars"]
        self._meta: AsyncCollection[Any] = db["archive_meta"]
        self._cache: OrderedDict[str, _Bucket] = OrderedDict()
        self._cache_size = cache_buckets

    async def ensure_indexes(self) -> None:
        await self.collection.create_index(
            [("symbol", ASCENDING), ("tf", ASCENDING), ("start", ASCENDING)]
        )

    def forget(self, symbols: set[str] | None = None) -> None:
        """Drop cached buckets (of ``symbols``, or all): after losing their partitions."""
        if symbols is None:
            self._cache.clear()
            return
        for key in [k for k in self._cache if k.split("|", 1)[0] in symbols]:
            del self._cache[key]

    # Writing -----------------------------------------------------------------

    async def write(
        self,
        tf: str,
        symbol: Sequence[str] | np.ndarray,
        ts: np.ndarray,
        open: np.ndarray,
        high: np.ndarray,
        low: np.ndarray,
        close: np.ndarray,
        volume: np.ndarray,
    ) -> WriteStats:
        """Merge these bars of one timeframe into their buckets; later rows win on equal ts."""
        n = int(np.asarray(ts).shape[0])
        if n == 0:
            return WriteStats(0, 0, 0, 0, 0)
        sym = np.asarray(symbol, dtype=object)
        ts = np.asarray(ts, dtype=np.int64)
        values = {
            "open": np.asarray(open, dtype=np.float64),
            "high": np.asarray(high, dtype=np.float64),
            "low": np.asarray(low, dtype=np.float64),
            "close": np.asarray(close, dtype=np.float64),
            "volume": np.asarray(volume, dtype=np.float64),
        }
        starts = bucket_starts(tf, ts)
        names, code = np.unique(sym, return_inverse=True)
        order = np.lexsort((np.arange(n), starts, code))  # by symbol, bucket, arrival
        key_sorted = np.stack([code[order], starts[order]])
        cut = np.flatnonzero((np.diff(key_sorted, axis=1) != 0).any(axis=0)) + 1
        groups: dict[str, np.ndarray] = {}
        meta: dict[str, tuple[str, int]] = {}
        for rows in np.split(order, cut):
            s, b = str(names[code[rows[0]]]), int(starts[rows[0]])
            bid = bucket_id(s, tf, b)
            groups[bid] = rows
            meta[bid] = (s, b)
        reads = retries = written = 0
        pending = set(groups)
        for attempt in range(_MAX_ATTEMPTS):
            missing = [bid for bid in pending if bid not in self._cache]
            reads += len(missing)
            await self._load(missing)
            ops: list[InsertOne[Any] | ReplaceOne[Any]] = []
            merged: dict[str, _Bucket] = {}
            for bid in sorted(pending):
                old = self._cache.get(bid) or _Bucket(0, np.empty(0, np.int64), _empty_cols())
                new = _merge(old, ts[groups[bid]], {f: v[groups[bid]] for f, v in values.items()})
                if new is None:
                    continue  # already stored exactly so: nothing to write
                s, b = meta[bid]
                doc = _document(bid, s, tf, b, new)
                if old.rev == 0:
                    ops.append(InsertOne(doc))
                else:
                    ops.append(ReplaceOne({"_id": bid, "rev": old.rev}, doc))
                merged[bid] = new
            if not ops:
                return WriteStats(n, len(groups), written, reads, retries)
            applied = await self._bulk(ops)
            if applied:
                await self._bump(tf)
            if applied == len(ops):
                for bid, bucket in merged.items():
                    self._remember(bid, bucket)
                written += len(ops)
                return WriteStats(n, len(groups), written, reads, retries)
            # someone else wrote some of these buckets: re-read them all and merge again
            retries += 1
            written += applied
            for bid in merged:
                self._cache.pop(bid, None)
            pending = set(merged)
            log.info("bar bucket write conflict; merging again", extra={"attempt": attempt + 1})
        raise ArchiveError(f"bar buckets kept changing under us after {_MAX_ATTEMPTS} attempts")

    async def _bump(self, tf: str) -> None:
        await self._meta.update_one({"_id": tf}, {"$inc": {"gen": 1}}, upsert=True)

    async def generation(self, tf: str) -> int:
        """A number that changes whenever bars of ``tf`` are written: readers that cache
        what they read (the scanner) put it in their keys."""
        doc = await self._meta.find_one({"_id": tf})
        return int(doc["gen"]) if doc else 0

    async def _bulk(self, ops: list[Any]) -> int:
        """Apply ops unordered; return how many took effect (conflicts do not)."""
        try:
            result = await self.collection.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            details = exc.details
            real = [e for e in details.get("writeErrors", []) if e.get("code") != 11000]
            if real or details.get("writeConcernErrors"):
                raise
            return int(details.get("nInserted", 0)) + int(details.get("nMatched", 0))
        return int(result.inserted_count) + int(result.matched_count)

    async def _load(self, ids: list[str]) -> None:
        found: dict[str, _Bucket] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            async for doc in self.collection.find({"_id": {"$in": chunk}}):
                found[doc["_id"]] = _from_document(doc)
        for bid in ids:
            self._remember(bid, found.get(bid) or _Bucket(0, np.empty(0, np.int64), _empty_cols()))

    def _remember(self, bid: str, bucket: _Bucket) -> None:
        self._cache[bid] = bucket
        self._cache.move_to_end(bid)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    # Reading -----------------------------------------------------------------

    async def read(
        self, symbol: str, tf: str, start: int | None = None, end: int | None = None
    ) -> dict[str, np.ndarray]:
        """One symbol's bars with ``start <= ts <= end`` as arrays (ts, open … volume)."""
        return (await self.read_many([symbol], tf, start, end))[symbol]

    async def read_many(
        self, symbols: Sequence[str], tf: str, start: int | None = None, end: int | None = None
    ) -> dict[str, dict[str, np.ndarray]]:
        """:meth:`read` for many symbols in one query (one pass over the collection instead
        of one per symbol); symbols without bars map to empty arrays."""
        query: dict[str, Any] = {"tf": tf}
        query["symbol"] = symbols[0] if len(symbols) == 1 else {"$in": list(symbols)}
        bounds: dict[str, int] = {}
        if start is not None:
            bounds["$gte"] = int(bucket_starts(tf, np.array([start]))[0])
        if end is not None:
            bounds["$lte"] = int(end)
        if bounds:
            query["start"] = bounds
        parts: dict[str, list[_Bucket]] = {s: [] for s in symbols}
        async for doc in self.collection.find(query):
            parts.setdefault(doc["symbol"], []).append(_from_document(doc))
        return {sym: _join(buckets, start, end) for sym, buckets in parts.items()}

    async def last_ts(self, symbol: str, tf: str) -> int | None:
        """The time of the symbol's newest archived bar (None: it has none)."""
        doc = await self.collection.find_one(
            {"symbol": symbol, "tf": tf}, {"last": 1}, sort=[("start", DESCENDING)]
        )
        return None if doc is None else int(doc["last"])

    async def symbols(self, tf: str) -> list[str]:
        """Every symbol with bars of ``tf`` in the archive."""
        return sorted(await self.collection.distinct("symbol", {"tf": tf}))


def _join(buckets: list[_Bucket], start: int | None, end: int | None) -> dict[str, np.ndarray]:
    """One symbol's buckets as arrays in time order, cut to ``start <= ts <= end``."""
    if not buckets:
        return {"ts": np.empty(0, np.int64), **_empty_cols()}
    buckets.sort(key=lambda b: int(b.ts[0]) if len(b.ts) else 0)
    ts = np.concatenate([b.ts for b in buckets])
    keep = np.ones(ts.shape[0], dtype=bool)
    if start is not None:
        keep &= ts >= start
    if end is not None:
        keep &= ts <= end
    cols = {f: np.concatenate([b.cols[f] for b in buckets])[keep] for f in FIELDS}
    return {"ts": ts[keep], **cols}


def _empty_cols() -> dict[str, np.ndarray]:
    return {f: np.empty(0, np.float64) for f in FIELDS}


def _merge(old: _Bucket, ts: np.ndarray, cols: dict[str, np.ndarray]) -> _Bucket | None:
    """``old`` with these rows set (last row wins per ts), or None when nothing changes."""
    all_ts = np.concatenate([old.ts, ts])
    # the last occurrence of each ts: unique over the reversed array
    _, first_rev = np.unique(all_ts[::-1], return_index=True)
    pick = all_ts.shape[0] - 1 - first_rev  # sorted by ts, as np.unique sorts
    new_ts = all_ts[pick]
    new_cols = {f: np.concatenate([old.cols[f], cols[f]])[pick] for f in FIELDS}
    same_ts = new_ts.shape == old.ts.shape and np.array_equal(new_ts, old.ts)
    if same_ts and all(np.array_equal(new_cols[f], old.cols[f]) for f in FIELDS):
        return None
    return _Bucket(old.rev + 1, new_ts, new_cols)


def _document(bid: str, symbol: str, tf: str, start: int, b: _Bucket) -> dict[str, Any]:
    return {
        "_id": bid,
        "symbol": symbol,
        "tf": tf,
        "start": start,
        "n": int(b.ts.shape[0]),
        "first": int(b.ts[0]),
        "last": int(b.ts[-1]),
        "rev": b.rev,
        "updated_ms": int(time.time() * 1000),
        "enc": ENCODING,
        "ts": _b64(b.ts.astype("<i8")),
        **{f: _b64(b.cols[f].astype("<f8")) for f in FIELDS},
    }


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(a.tobytes()).decode("ascii")


def _from_document(doc: dict[str, Any]) -> _Bucket:
    if doc.get("enc") == ENCODING:
        ts = np.frombuffer(base64.b64decode(doc["ts"]), dtype="<i8").astype(np.int64, copy=False)
        cols = {f: np.frombuffer(base64.b64decode(doc[f]), dtype="<f8").astype(np.float64,
                                                                              copy=False)
                for f in FIELDS}  # fmt: skip
        return _Bucket(int(doc.get("rev", 1)), ts, cols)
    return _Bucket(  # buckets written before the binary encoding: BSON arrays
        int(doc.get("rev", 1)),
        np.asarray(doc.get("ts", []), dtype=np.int64),
        {f: np.asarray(doc.get(f, []), dtype=np.float64) for f in FIELDS},
    )
