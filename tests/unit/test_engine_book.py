"""The engine's per-timeframe book: batch-twin values, lags per bar, warm-up, snapshots."""

from __future__ import annotations

import numpy as np
import pytest

from technic_stream.engine.book import DEFAULT_INDICATORS, Book, pack_sections, unpack_sections
from technic_stream.indicators.registry import parse_indicators
from technic_stream.indicators.series import batch_outputs
from technic_stream.indicators.state import StateVersionError
from technic_stream.kernels import APPLIED, CORRECTED, SKIPPED


def walk(n: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n))
    volume = rng.integers(100, 10_000, n).astype(float)
    ts = 1_600_000_000_000 + np.arange(n, dtype=np.int64) * 60_000
    return ts, open_, high, low, close, volume


def interleave(series: dict[str, tuple[np.ndarray, ...]], seed: int = 0):
    """All bars of all symbols in one arrival order that keeps each symbol's order."""
    rng = np.random.default_rng(seed)
    order = np.concatenate([np.full(len(s[0]), i) for i, s in enumerate(series.values())])
    rng.shuffle(order)
    names = list(series)
    pos = dict.fromkeys(range(len(names)), 0)
    syms, cols = [], [[] for _ in range(6)]
    for i in order:
        j = pos[i]
        pos[i] += 1
        syms.append(names[i])
        for k in range(6):
            cols[k].append(series[names[i]][k][j])
    return syms, [np.asarray(c) for c in cols]


def feed(book: Book, syms, cols, inputs=None):
    rows = book.rows(syms, len(syms))
    return book.apply(rows, cols[0].astype(np.int64), *cols[1:], inputs=inputs)


SERIES = {f"S{i}": walk(300 + 7 * i, i) for i in range(5)}


def test_latest_values_equal_the_batch_twin_for_every_symbol():
    book = Book("1m", history=50)
    syms, cols = interleave(SERIES)
    # in several batches, as a consumer would see them
    for part in np.array_split(np.arange(len(syms)), 7):
        feed(book, [syms[i] for i in part], [c[part] for c in cols])
    for name, bars in SERIES.items():
        r = np.array([book.symbols[name]])
        got = dict(zip(book.output_names, book.latest(r)[0], strict=True))
        for spec in parse_indicators(DEFAULT_INDICATORS):
            for col, arr in batch_outputs(spec, *bars).items():
                np.testing.assert_array_equal(got[col], arr[-1], err_msg=f"{name} {col}")
        np.testing.assert_array_equal(book.last_bar(r)[0], [b[-1] for b in bars])


def test_inputs_are_gathered_as_of_each_bar_including_lags():
    book = Book("1m", "sma(5)", depth=3)
    syms, cols = interleave(SERIES, seed=3)
    inputs = book.inputs_for(["close", "sma_5", "close", "sma_5"], [0, 0, 2, 1])
    res = feed(book, syms, cols, inputs)
    assert (res.status == APPLIED).all()
    for name, bars in SERIES.items():
        mine = np.array([s == name for s in syms])
        close = bars[4]
        sma = batch_outputs(parse_indicators("sma(5)")[0], *bars)["sma_5"]
        np.testing.assert_array_equal(res.values[0, mine], close)
        np.testing.assert_array_equal(res.values[1, mine], sma)
        np.testing.assert_array_equal(
            res.values[2, mine], np.concatenate([[np.nan] * 2, close[:-2]])
        )
        np.testing.assert_array_equal(res.values[3, mine], np.concatenate([[np.nan], sma[:-1]]))


@pytest.mark.parametrize("chunk", [1, 7, 64, 100_000])
def test_a_batch_in_chunks_is_the_batch_bar_by_bar(monkeypatch, chunk):
    """However the book cuts a batch into kernel passes — two segments, lags, repeated
    and stale bars across the cuts — it does what applying the bars one at a time does."""
    import technic_stream.engine.book as book_module

    syms, cols = interleave({k: v for k, v in list(SERIES.items())[:3]}, seed=5)
    # corrections (a bar again, at once) and stale bars (one two bars back of its symbol)
    picks = set(np.random.default_rng(9).integers(0, len(syms), 60).tolist())
    order, seen = [], {}
    for i, sym in enumerate(syms):
        order.append(i)
        seen.setdefault(sym, []).append(i)
        if i in picks:
            order.append(i if i % 2 else seen[sym][max(0, len(seen[sym]) - 3)])
    syms, cols = [syms[i] for i in order], [c[order] * (1 + (i % 3) * 1e-3)
                                            for i, c in enumerate(cols)]  # fmt: skip
    cols[0] = cols[0].astype(np.int64).astype(float)

    def book():
        b = Book("1m", "sma(5), rsi(14)", depth=4)
        b.extend(parse_indicators("ema(3), bb(5,2)"))
        b.set_depth(4)
        return b

    one, whole = book(), book()
    inputs = one.inputs_for(["close", "sma_5", "ema_3", "bb_5_2.upper", "rsi_14"],
                            [0, 3, 1, 2, 0])  # fmt: skip
    monkeypatch.setattr(book_module, "APPLY_CHUNK", 100_000)
    each = [feed(one, [s], [c[i : i + 1] for c in cols], inputs) for i, s in enumerate(syms)]
    monkeypatch.setattr(book_module, "APPLY_CHUNK", chunk)
    got = feed(whole, syms, cols, inputs)
    np.testing.assert_array_equal(got.values, np.concatenate([e.values for e in each], axis=1))
    assert got.seq.tolist() == [int(e.seq[0]) for e in each]
    assert got.status.tolist() == [int(e.status[0]) for e in each]
    assert (got.applied, got.corrected, got.skipped) == tuple(
        sum(getattr(e, f) for e in each) for f in ("applied", "corrected", "skipped")
    )
    assert got.corrected and got.skipped  # (the picks made both kinds)
    rows = np.arange(len(one))
    np.testing.assert_array_equal(whole.latest(rows), one.latest(rows))
    np.testing.assert_array_equal(whole.lagv, one.lagv)


def test_a_correction_replaces_the_bar_and_counts_its_sequence():
    book = Book("1m", "sma(3)")
    ts, o, h, lo, c, v = walk(6, 1)
    feed(book, ["A"] * 5, [ts[:5], o[:5], h[:5], lo[:5], c[:5], v[:5]])
    fixed = [ts[4:5], o[4:5], h[4:5] * 1.01, lo[4:5], c[4:5] * 1.005, v[4:5]]
    inputs = book.inputs_for(["close", "close"], [0, 1])
    res = feed(
        book,
        ["A", "A", "A"],
        [np.concatenate([f, f, [x[3]]]) for f, x in zip(fixed, (ts, o, h, lo, c, v), strict=True)],
        inputs,
    )
    assert res.status.tolist() == [CORRECTED, CORRECTED, SKIPPED]
    assert res.seq.tolist() == [1, 2, -1]
    assert res.values[0, 0] == c[4] * 1.005 and res.values[1, 0] == c[3]
    assert np.isnan(res.values[:, 2]).all()
    expected = batch_outputs(parse_indicators("sma(3)")[0], ts[:5], o[:5], h[:5] * 1,
                             lo[:5], np.concatenate([c[:4], c[4:5] * 1.005]), v[:5])  # fmt: skip
    assert book.latest(np.array([0]))[0, 0] == expected["sma_3"][-1]
    assert book.bars_seen("A") == 5


def test_a_new_segment_is_warmed_from_history_and_matches_the_twin_over_that_window():
    book = Book("1m", "sma(3)", history=120, depth=2)
    syms, cols = interleave(SERIES, seed=5)
    half = len(syms) // 2
    feed(book, syms[:half], [c[:half] for c in cols])
    spec = parse_indicators("rsi(14)")[0]
    replayed = book.extend([spec, *parse_indicators("sma(3)")])  # sma(3) is there already
    assert replayed == sum(min(book.bars_seen(s), 120) for s in SERIES)
    assert len(book.segments) == 2
    inputs = book.inputs_for(["rsi_14", "rsi_14"], [0, 1])
    res = feed(book, syms[half:], [c[half:] for c in cols], inputs)
    for name, bars in SERIES.items():
        mine = [i for i, s in enumerate(syms[half:]) if s == name]
        seen_before = sum(1 for s in syms[:half] if s == name)
        start = max(0, seen_before - 120)  # the warm-up window: the last 120 bars
        window = tuple(b[start:] for b in bars)
        rsi = batch_outputs(spec, *window)["rsi_14"]
        np.testing.assert_array_equal(res.values[0, mine], rsi[seen_before - start :])
        np.testing.assert_array_equal(res.values[1, mine], rsi[seen_before - start - 1 : -1])
        assert book.ready(name)["rsi_14"]
    # the base segment was not disturbed by the addition
    for name, bars in SERIES.items():
        r = np.array([book.symbols[name]])
        sma = batch_outputs(parse_indicators("sma(3)")[0], *bars)["sma_3"]
        assert book.latest(r)[0, 0] == sma[-1]


def test_retain_drops_segments_no_rule_needs_and_keeps_the_base():
    book = Book("1m", "sma(3)")
    feed(book, ["A"] * 10, list(walk(10, 2)))
    book.extend(parse_indicators("rsi(5)"))
    book.extend(parse_indicators("ema(4)"))
    assert book.output_names == ["sma_3", "rsi_5", "ema_4"]
    assert book.retain(parse_indicators("ema(4)")) == 1
    assert book.output_names == ["sma_3", "ema_4"]
    inputs = book.inputs_for(["ema_4", "ema_4"], [0, 1])
    ts, o, h, lo, c, v = walk(12, 2)
    res = feed(book, ["A"] * 2, [x[10:] for x in (ts, o, h, lo, c, v)], inputs)
    ema = batch_outputs(parse_indicators("ema(4)")[0], ts, o, h, lo, c, v)["ema_4"]
    np.testing.assert_array_equal(res.values[0], ema[10:])
    np.testing.assert_array_equal(res.values[1], ema[9:11])


def test_deeper_lags_refill_bar_fields_from_history():
    book = Book("1m", "sma(3)", history=50, depth=2)
    ts, o, h, lo, c, v = walk(30, 4)
    feed(book, ["A"] * 29, [x[:29] for x in (ts, o, h, lo, c, v)])
    book.set_depth(6)
    inputs = book.inputs_for(["close", "sma_3", "sma_3", "sma_3"], [5, 1, 2, 3])
    res = feed(book, ["A"], [x[29:] for x in (ts, o, h, lo, c, v)], inputs)
    assert res.values[0, 0] == c[24]
    sma = batch_outputs(parse_indicators("sma(3)")[0], ts, o, h, lo, c, v)["sma_3"]
    assert res.values[1, 0] == sma[28]  # kept from the old ring (bars 27 and 28)
    assert res.values[2, 0] == sma[27]
    assert np.isnan(res.values[3, 0])  # older than the old ring: unknown, not invented


def test_snapshot_round_trip_continues_exactly():
    a = Book("5m", history=40, depth=3)
    syms, cols = interleave(SERIES, seed=9)
    cut = len(syms) // 3
    feed(a, syms[:cut], [c[:cut] for c in cols])
    a.extend(parse_indicators("cci(10), donchian(15)"))
    b = Book.from_bytes(a.to_bytes())
    assert b.columns == a.columns and b.names == a.names and b.tf == "5m"
    inputs = a.inputs_for(["cci_10", "close", "donchian_15.upper"], [0, 2, 1])
    ra = feed(a, syms[cut:], [c[cut:] for c in cols], inputs)
    rb = feed(b, syms[cut:], [c[cut:] for c in cols], inputs)
    np.testing.assert_array_equal(ra.values, rb.values)
    rows = np.arange(len(a))
    np.testing.assert_array_equal(a.latest(rows), b.latest(rows))


def test_broken_snapshots_are_refused():
    blob = Book("1m", "sma(3)").to_bytes()
    for bad in (blob[:10], b"XXXX" + blob[4:], blob + b"\0", blob[:-3]):
        with pytest.raises(StateVersionError):
            Book.from_bytes(bad)
    meta, blobs = unpack_sections(pack_sections({"a": 1}, [b"x", b""]))
    assert meta == {"a": 1} and blobs == [b"x", b""]


def test_coded_rows_are_the_rows_of_the_symbols_and_register_only_those_used():
    plain, coded = Book("1m", history=5), Book("1m", history=5)
    names = np.array(["B", "A", "C", "D"], dtype=object)
    for code in ([1, 0, 1], [3, 1, 3, 0], [1]):  # "C" never used: never registered
        code = np.array(code, dtype=np.int64)
        want = plain.rows(names[code].tolist(), len(code))
        assert coded.rows_coded(names, code).tolist() == want.tolist()
    assert coded.names == plain.names == ["A", "B", "D"]
