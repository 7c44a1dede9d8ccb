"""The state of one assigned ``md.bars`` partition: a book per timeframe, and what fired.

Everything here goes into the partition's checkpoint together with the offset of the
next record it has not applied, so a restored partition continues exactly where the
snapshot stopped — including which ``once_per_bar`` alerts were already sent for the
bar in progress.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from technic_stream.engine.book import Book, pack_sections, unpack_sections
from technic_stream.engine.rules import LiveRules
from technic_stream.indicators.registry import IndicatorSpec
from technic_stream.indicators.state import StateVersionError

__all__ = ["PartitionState"]


@dataclass
class PartitionState:
    base: Sequence[IndicatorSpec]
    history: int
    books: dict[str, Book] = field(default_factory=dict)
    #: rule id → symbol → ts of the last bar a once-per-bar alert went out for
    fired: dict[str, dict[str, int]] = field(default_factory=dict)
    next_offset: int | None = None  # next record to apply; None until the first batch
    saved_offset: int | None = None
    saved_at: float = 0.0
    bars_since_save: int = 0

    def book(self, tf: str, rules: LiveRules) -> Book:
        book = self.books.get(tf)
        if book is None:
            book = self.books[tf] = Book(tf, self.base, history=self.history)
            self.fit(book, rules)
        return book

    def fit(self, book: Book, rules: LiveRules) -> int:
        """Shape a book to the rules of its timeframe: add (warmed) and drop indicators,
        keep lags deep enough. Returns the bars replayed to warm new indicators."""
        compiled = rules.for_tf(book.tf)
        needed = compiled.specs if compiled is not None else []
        replayed = book.extend(needed)
        book.retain(needed)
        book.set_depth(max(2, compiled.depth if compiled is not None else 1))
        return replayed

    def already_fired(self, rule_id: str, symbol: str, ts: int) -> bool:
        return self.fired.get(rule_id, {}).get(symbol) == ts

    def mark_fired(self, rule_id: str, symbol: str, ts: int) -> None:
        self.fired.setdefault(rule_id, {})[symbol] = ts

    def forget_rule(self, rule_id: str) -> None:
        self.fired.pop(rule_id, None)

    @property
    def symbols(self) -> int:
        return sum(len(b) for b in self.books.values())

    def to_bytes(self) -> bytes:
        tfs = sorted(self.books)
        meta = {"tfs": tfs, "fired": self.fired}
        return pack_sections(meta, [self.books[tf].to_bytes() for tf in tfs])

    @classmethod
    def from_bytes(
        cls, data: bytes, base: Sequence[IndicatorSpec], history: int, rules: LiveRules
    ) -> PartitionState:
        meta, blobs = unpack_sections(data)
        tfs = list(meta["tfs"])
        if len(blobs) != len(tfs):
            raise StateVersionError("partition snapshot has the wrong number of books")
        state = cls(base, history)
        for tf, blob in zip(tfs, blobs, strict=True):
            book = Book.from_bytes(blob)
            if book.segments[0].plan.specs != tuple(base):
                raise StateVersionError(
                    "snapshot was written with other default indicators "
                    "(TECHNIC_ENGINE_INDICATORS changed)"
                )
            if book.history != history:
                raise StateVersionError("snapshot was written with another history depth")
            state.books[tf] = book
            state.fit(book, rules)
        state.fired = {r: {s: int(t) for s, t in m.items()} for r, m in meta["fired"].items()}
        return state
