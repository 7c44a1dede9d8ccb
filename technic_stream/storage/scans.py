"""How a scan request is kept in the ``scans`` collection.

A request may name tens of thousands of symbols. The ``scans`` document keeps the
first :data:`INLINE_SYMBOLS` of them and their count; the whole list goes to
``scan_symbols`` (``_id``: scan id). On the MongoDB-protocol server every read or update
of a document costs in proportion to its size, and the ``scans`` document is read and
updated several times per scan (a 10,000-symbol request made each of those 6-20 ms).
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from technic_stream.messages import ScanRequest

__all__ = ["INLINE_SYMBOLS", "request_doc", "store_symbols"]

INLINE_SYMBOLS = 1_000


def request_doc(req: ScanRequest) -> tuple[dict[str, Any], list[str] | None]:
    """The request as stored in ``scans.request``, and the full symbol list when the
    document holds only its start (store it with :func:`store_symbols`)."""
    doc = req.model_dump(mode="json", exclude={"type", "v"})
    symbols = doc.get("symbols")
    if symbols is None or len(symbols) <= INLINE_SYMBOLS:
        return doc, None
    doc["symbols"] = symbols[:INLINE_SYMBOLS]
    doc["symbols_count"] = len(symbols)
    doc["symbols_stored_in"] = "scan_symbols"
    return doc, symbols


async def store_symbols(db: AsyncDatabase[Any], scan_id: str, symbols: list[str]) -> None:
    await db["scan_symbols"].replace_one(
        {"_id": scan_id}, {"_id": scan_id, "symbols": symbols}, upsert=True
    )
