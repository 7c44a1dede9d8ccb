"""The column decoder of ``md.bars`` gives the strict models' verdict on every record."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import orjson
import pytest
from aiokafka.structs import TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from technic_stream.errors import MessageDecodeError
from technic_stream.kafka.blocks import FetchBlocks, RecordChain, chain_of
from technic_stream.kernels.wire import (
    TIMEFRAME_NAMES,
    arrival_codes_nb,
    joined_symbols_nb,
    parse_bar_batches,
)
from technic_stream.marketdata.decode import decode_bar_records, decode_trade_records
from technic_stream.messages import MAX_BATCH_ROWS, Bar, BarBatch, Trade, decode
from tests.unit.test_messages import BAR
from tests.unit.test_record_blocks import batch, partition_records


@dataclass
class Rec:
    value: bytes | None
    topic: str = "t"
    partition: int = 0
    offset: int = 0
    key: bytes | None = None


def _model_ok(value: bytes | None) -> bool:
    try:
        decode(value)  # type: ignore[arg-type]
    except MessageDecodeError:
        return False
    return True


GOOD = BAR  # the valid bar of the model tests

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(-5, 50),
    st.sampled_from([0, 0.0, -1.0, 1e308, "1.5", True, None, 2**70]),
)
mutations = st.dictionaries(
    st.sampled_from(["symbol", "tf", "ts", "open", "high", "low", "close", "volume", "v", "x"]),
    st.one_of(
        numbers,
        st.sampled_from(["aapl", "", "A" * 40, "1d", "2m", "BRK.B", -1, 7_258_118_400_001]),
    ),
    max_size=3,
)


@given(mutations, st.booleans())
def test_single_bars_match_the_model(change, drop_one):
    obj = {**GOOD, **change}
    if drop_one and change:
        obj.pop(next(iter(change)))
    value = orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS) if _serialisable(obj) else b"{"
    rows, bad = decode_bar_records([Rec(value)])
    assert (len(rows) == 1) == _model_ok(value) == (not bad)
    if len(rows):
        bar = decode(value, Bar)
        assert rows.symbol[0] == bar.symbol and rows.ts[0] == bar.ts
        assert rows.high[0] == bar.high and rows.volume[0] == bar.volume


def _serialisable(obj: dict) -> bool:
    try:
        orjson.dumps(obj)
    except TypeError:
        return False
    return True


@given(
    st.lists(
        st.tuples(st.floats(1, 100), st.floats(0, 5), st.floats(0, 5), st.floats(0, 1e6)),
        min_size=1,
        max_size=20,
    ),
    st.one_of(st.none(), st.tuples(st.integers(0, 19), st.sampled_from(list(GOOD)[4:]), numbers)),
)
def test_batches_match_the_model(rows_in, corrupt):
    n = len(rows_in)
    batch = {
        "type": "bar_batch",
        "v": 1,
        "tf": "1d",
        "symbols": [f"S{i}" for i in range(n)],
        "ts": [1_000 * i for i in range(n)],
        "open": [r[0] for r in rows_in],
        "high": [r[0] + r[1] for r in rows_in],
        "low": [max(r[0] - r[2], 0.01) for r in rows_in],
        "close": [r[0] for r in rows_in],
        "volume": [r[3] for r in rows_in],
    }
    if corrupt is not None:
        i, field, value = corrupt
        if i < n:
            batch[field][i] = value
    value = orjson.dumps(batch) if _serialisable(batch) else b"[1"
    rows, bad = decode_bar_records([Rec(value)])
    ok = _model_ok(value)
    assert (not bad) == ok
    assert len(rows) == (n if ok else 0)
    if ok:
        model = decode(value, BarBatch)
        assert rows.symbol.tolist() == model.symbols and rows.low.tolist() == model.low


def test_good_records_keep_their_order_and_bad_ones_say_why():
    bars = [{**GOOD, "ts": GOOD["ts"] + i} for i in range(3)]
    recs = [
        Rec(orjson.dumps(bars[0]), offset=0),
        Rec(b"not json", offset=1),
        Rec(orjson.dumps({**bars[1], "low": 10.2}), offset=2),
        Rec(None, offset=3),
        Rec(orjson.dumps(bars[2]), offset=4),
        Rec(orjson.dumps({**GOOD, "type": "trade"}), offset=5),
    ]
    rows, bad = decode_bar_records(recs)
    assert rows.record.tolist() == [0, 4]
    assert rows.ts.tolist() == [GOOD["ts"], GOOD["ts"] + 2]
    reasons = {r.offset: why for r, why in bad}
    assert reasons[1].startswith("invalid JSON")
    assert reasons[2] == "low is above min(open, close)"
    assert "tombstone" in reasons[3]
    assert "'trade'" in reasons[5]


@pytest.mark.parametrize("size", [1_000_001])
def test_oversized_records_are_rejected_unread(size):
    rows, bad = decode_bar_records([Rec(b" " * size)], max_bytes=1_000_000)
    assert not len(rows) and "exceeds the limit" in bad[0][1]


GOOD_TRADE = {"type": "trade", "v": 1, "symbol": "AAPL", "ts": 1_700_000_000_000, "price": 10.5,
              "size": 100.0}  # fmt: skip
trade_mutations = st.dictionaries(
    st.sampled_from(["symbol", "ts", "price", "size", "v", "trade_id", "x", "type"]),
    st.one_of(numbers, st.sampled_from(["aapl", "t-1", "X" * 65, "trade", -1, None])),
    max_size=3,
)


@given(trade_mutations)
def test_trades_match_the_model(change):
    obj = {**GOOD_TRADE, **change}
    value = orjson.dumps(obj) if _serialisable(obj) else b"{"
    rows, bad = decode_trade_records([Rec(value)])
    assert (len(rows) == 1) == _model_ok(value) == (not bad)
    if len(rows):
        trade = decode(value, Trade)
        assert (rows.symbol[0], rows.ts[0], rows.price[0]) == (trade.symbol, trade.ts, trade.price)


def test_trades_from_the_future_are_rejected():
    late = {**GOOD_TRADE, "ts": GOOD_TRADE["ts"] + 1}
    rows, bad = decode_trade_records(
        [Rec(orjson.dumps(GOOD_TRADE)), Rec(orjson.dumps(late))], latest_ts=GOOD_TRADE["ts"]
    )
    assert rows.record.tolist() == [0] and "ahead of the wall clock" in bad[0][1]


# The numba parser of single bars (kernels/wire.py) ---------------------------------------

prices = st.one_of(
    st.floats(1e-6, 1e9),
    st.floats(1e-6, 1e9).map(lambda x: round(x, 4)),
    st.integers(1, 2**60),
)


def _number_text(x: float | int, style: int) -> str:
    """A price written the ways producers write them: repr, fixed, exponent, integer."""
    if isinstance(x, int):
        return str(x)
    return (repr(x), f"{x:.4f}", f"{x:e}", f"{x:.12E}", f"{x:.0f}")[style % 5]


@given(
    st.lists(st.tuples(prices, prices, st.integers(0, 4)), min_size=1, max_size=30),
    st.randoms(use_true_random=False),
    st.sampled_from(["", " ", "\n\t"]),
)
def test_the_wire_parser_reads_exactly_what_orjson_and_the_model_read(bars, rnd, ws):
    """Whatever the key order, white space and number style, each record decodes to the
    strict model's verdict and to orjson's values, bit for bit (a record the numba parser
    is not certain of goes the general way, which these checks hold it to as well)."""
    recs = []
    for i, (a, b, style) in enumerate(bars):
        lo, hi = sorted((a, b))
        fields = {
            "type": '"bar"', "v": "1", "symbol": f'"S{i % 7}.X"', "tf": '"5m"',
            "ts": str(1_700_000_000_000 + i), "open": _number_text(lo, style),
            "high": _number_text(hi, style), "low": _number_text(lo, style),
            "close": _number_text(hi, style + 1), "volume": _number_text(a, style + 2),
        }  # fmt: skip
        keys = list(fields)
        rnd.shuffle(keys)
        text = "{" + ",".join(f'{ws}"{k}"{ws}:{ws}{fields[k]}{ws}' for k in keys) + "}"
        recs.append(Rec(text.encode(), offset=i))
    rows, bad = decode_bar_records(recs)
    want = [(i, decode(r.value, Bar)) for i, r in enumerate(recs) if _model_ok(r.value)]
    assert [r for r, _ in bad] == [r for r in recs if not _model_ok(r.value)]
    assert rows.record.tolist() == [i for i, _ in want]
    _assert_coded(rows)
    for j, (_i, bar) in enumerate(want):
        assert (rows.symbol[j], rows.tf[j], rows.ts[j]) == (bar.symbol, bar.tf, bar.ts)
        for f in ("open", "high", "low", "close", "volume"):
            got, exp = getattr(rows, f)[j], float(getattr(bar, f))
            assert got.hex() == exp.hex(), (f, got, exp)


def _assert_coded(rows):
    """Where the decoder says the symbols' codes, they give the symbols, and the codes
    in use name the distinct symbols in order of first arrival."""
    if rows.names is None:
        return
    assert rows.names[rows.code].tolist() == rows.symbol.tolist()
    used = sorted(set(rows.code.tolist()))
    assert [rows.names[c] for c in used] == list(dict.fromkeys(rows.symbol.tolist()))


def test_single_bars_come_with_their_symbols_coded():
    recs = [Rec(orjson.dumps({**GOOD, "symbol": s, "ts": GOOD["ts"] + i}))
            for i, s in enumerate(["ZZ", "AA", "ZZ", "MM", "AA"])]  # fmt: skip
    rows, bad = decode_bar_records(recs)
    assert not bad and rows.names.tolist() == ["ZZ", "AA", "MM"]
    assert rows.code.tolist() == [0, 1, 0, 2, 1]
    part = rows.between(2, 5)
    assert part.names[part.code].tolist() == ["ZZ", "MM", "AA"]
    _assert_coded(rows.take(np.array([4, 1, 3])))


def test_a_mixed_batch_keeps_record_order_across_both_parsers():
    """Single bars (numba), a BarBatch and a 17-digit price (the general decoder) and a
    bad record in one batch: the rows stay in record order, the bad one says why."""
    batch = {"type": "bar_batch", "v": 1, "tf": "1m", "symbols": ["B1", "B2"],
             "ts": [GOOD["ts"], GOOD["ts"]], "open": [5.0, 6.0], "high": [5.0, 6.0],
             "low": [5.0, 6.0], "close": [5.0, 6.0], "volume": [1.0, 2.0]}  # fmt: skip
    recs = [
        Rec(orjson.dumps({**GOOD, "symbol": "A1"})),
        Rec(orjson.dumps(batch)),
        Rec(orjson.dumps({**GOOD, "symbol": "A2", "close": 10.300000000000002})),
        Rec(orjson.dumps({**GOOD, "symbol": "A3", "high": 1.0})),
        Rec(orjson.dumps({**GOOD, "symbol": "A4"})),
    ]
    rows, bad = decode_bar_records(recs)
    assert rows.symbol.tolist() == ["A1", "B1", "B2", "A2", "A4"]
    assert rows.record.tolist() == [0, 1, 1, 2, 4]
    assert rows.close[3] == 10.300000000000002
    assert [(r is recs[3], why) for r, why in bad] == [
        (True, "high is below max(open, close, low)")
    ]


@pytest.mark.parametrize("kind", ["bars", "batch", "both"])
def test_the_numba_parsers_columns_come_out_contiguous(kind):
    """Each field of the rows is one contiguous array (the kernels take them as they are;
    a strided field is copied once more for every bar)."""
    bars = [Rec(orjson.dumps({**GOOD, "symbol": f"S{i}"})) for i in range(3)]
    batch = Rec(orjson.dumps({"type": "bar_batch", "v": 1, "tf": "1m", "symbols": ["B1", "B2"],
                              "ts": [GOOD["ts"]] * 2, "open": [5.0, 6.0], "high": [5.0, 6.0],
                              "low": [5.0, 6.0], "close": [5.0, 6.0],
                              "volume": [1.0, 2.0]}))  # fmt: skip
    recs = {"bars": bars, "batch": [batch], "both": [bars[0], batch, *bars[1:]]}[kind]
    rows, bad = decode_bar_records(recs)
    assert not bad and len(rows) == {"bars": 3, "batch": 2, "both": 5}[kind]
    for field in ("ts", "open", "high", "low", "close", "volume"):
        assert getattr(rows, field).flags["C_CONTIGUOUS"], field


def test_a_batch_with_bad_rows_is_rejected_once_naming_its_first_bad_row():
    """Among good records of both kinds, a BarBatch whose rows 1 and 2 break numeric
    rules is rejected whole, once, with row 1's reason; the rows around it are kept."""

    def batch(syms: list[str], low: list[float]) -> bytes:
        n = len(syms)
        return orjson.dumps({"type": "bar_batch", "v": 1, "tf": "1m", "symbols": syms,
                             "ts": [GOOD["ts"]] * n, "open": [5.0] * n, "high": [6.0] * n,
                             "low": low, "close": [5.0] * n, "volume": [1.0] * n})  # fmt: skip

    recs = [
        Rec(batch(["B1", "B2"], [4.0, 4.0])),
        Rec(orjson.dumps({**GOOD, "symbol": "A1"})),
        Rec(batch(["C1", "C2", "C3"], [4.0, 5.5, -1.0])),
        Rec(batch(["D1"], [4.0])),
    ]
    rows, bad = decode_bar_records(recs)
    assert rows.symbol.tolist() == ["B1", "B2", "A1", "D1"]
    assert rows.record.tolist() == [0, 0, 1, 3]
    assert [(r is recs[2], why) for r, why in bad] == [
        (True, "row 1: low is above min(open, close)")
    ]


@pytest.mark.parametrize(
    "text",
    [
        b'{"type":"bar","v":1,"symbol":"A\\u0042","tf":"1m","ts":1,"open":1,"high":1,"low":1,'
        b'"close":1,"volume":1}',  # an escape: same ticker AB, read the general way
        b'{"type":"bar","v":1,"v":1,"symbol":"A","tf":"1m","ts":1,"open":1,"high":1,"low":1,'
        b'"close":1,"volume":1}',  # a repeated key
        b'{"type":"bar","v":1,"symbol":"A","tf":"1m","ts":1.0,"open":1,"high":1,"low":1,'
        b'"close":1,"volume":1}',  # ts a float
        b'{"type":"bar","v":1,"symbol":"A","tf":"1m","ts":01,"open":1,"high":1,"low":1,'
        b'"close":1,"volume":1}',  # not JSON
        b'{"type":"bar","v":1,"symbol":"a","tf":"1m","ts":1,"open":1,"high":1,"low":1,'
        b'"close":1,"volume":1}',  # lower-case ticker
        b'{"type":"bar","v":1,"symbol":"A","tf":"1m","ts":1,"open":1,"high":1,"low":1,'
        b'"close":1,"volume":1} x',  # trailing bytes
        b'{"type":"bar","v":1,"symbol":"A","tf":"1m","ts":1,"open":-0,"high":1,"low":1,'
        b'"close":1,"volume":-0}',  # an integer -0 is 0
    ],
)
def test_records_the_wire_parser_is_unsure_of_get_the_models_verdict(text):
    rows, bad = decode_bar_records([Rec(text)])
    assert (len(rows) == 1) == _model_ok(text) == (not bad)
    if len(rows):
        bar = decode(text, Bar)
        assert rows.symbol[0] == bar.symbol
        assert rows.volume[0].hex() == float(bar.volume).hex()


def test_the_wire_parser_knows_the_contracts_timeframes():
    from technic_stream.kernels.wire import TIMEFRAME_NAMES
    from technic_stream.messages import TIMEFRAMES

    assert TIMEFRAME_NAMES == TIMEFRAMES


def test_records_framed_from_a_fetch_decode_as_the_same_records_do():
    """The engine's records come as a RecordChain (framed from the fetch's bytes, across
    partitions): every column, row order and rejection is what the same records give
    as objects, and a rejected one is the record itself, key and offset included."""
    batch_msg = {"type": "bar_batch", "v": 1, "tf": "1m", "symbols": ["B1", "B2"],
                 "ts": [GOOD["ts"], GOOD["ts"]], "open": [5.0, 6.0], "high": [5.0, 6.0],
                 "low": [5.0, 6.0], "close": [5.0, 6.0], "volume": [1.0, 2.0]}  # fmt: skip
    values = [
        orjson.dumps({**GOOD, "symbol": "A1"}), orjson.dumps(batch_msg), None,
        orjson.dumps({**GOOD, "symbol": "A2", "close": 10.300000000000002}),
        orjson.dumps({**GOOD, "symbol": "A3", "high": 1.0}), b"{not json",
        *(orjson.dumps({**GOOD, "symbol": f"C{i}", "volume": 100.0 + i}) for i in range(40)),
    ]  # fmt: skip
    parts = []
    for p, chunk in enumerate((values[:20], values[20:])):
        data = batch(1_000 * p, [(b"k%d" % i, v, i) for i, v in enumerate(chunk)])
        items, _ = partition_records(data, 1_000 * p, FetchBlocks(7))
        parts.append(RecordChain(items))
    chain = chain_of(parts)
    assert chain is not None and len(chain) == len(values)
    as_objects = [r for part in parts for r in part]
    rows, bad = decode_bar_records(chain)
    want_rows, want_bad = decode_bar_records(as_objects)
    for col in ("record", "tf", "symbol", "ts", "open", "high", "low", "close", "volume"):
        assert getattr(rows, col).tolist() == getattr(want_rows, col).tolist(), col
    assert [(r, why) for r, why in bad] == [(r, why) for r, why in want_bad]
    assert sorted((r.offset, r.key) for r, _ in bad) == [(2, b"k2"), (4, b"k4"), (5, b"k5")]
    assert len(rows) == len(values) - 3 + 1  # the BarBatch holds two
    assert TopicPartition(bad[0][0].topic, bad[0][0].partition) == TopicPartition("t", 3)


# The numba parser of BarBatch messages ----------------------------------------------

_CORRUPTIONS = [
    None, "short", "empty", "bool", "null", "string", "ts float", "big int", "escape",
    "lower", "extra key", "no volume", "v 2", "type bar", "tf 2m", "nested", "17 digits",
    "bad row",
]  # fmt: skip


def _batch_text(rows, rnd, ws, style, corrupt):
    n = len(rows)
    cols = {
        "symbols": [f'"S{i % 5}"' for i in range(n)],
        "ts": [str(1_700_000_000_000 + i) for i in range(n)],
        "open": [], "high": [], "low": [], "close": [], "volume": [],
    }  # fmt: skip
    for a, b in rows:
        lo, hi = sorted((a, b))
        for f, x in (("open", lo), ("high", hi), ("low", lo), ("close", hi), ("volume", a)):
            cols[f].append(_number_text(x, style))
    fields = {"type": '"bar_batch"', "v": "1", "tf": '"1h"'}
    bad = {
        "short": ("close", lambda c: c[:-1]), "empty": ("open", lambda c: []),
        "bool": ("high", lambda c: ["true", *c[1:]]),
        "null": ("volume", lambda c: [*c[:-1], "null"]),
        "string": ("low", lambda c: ['"1"', *c[1:]]),
        "ts float": ("ts", lambda c: ["1.0", *c[1:]]),
        "big int": ("open", lambda c: [str(2**70), *c[1:]]),
        "escape": ("symbols", lambda c: ['"S\\u0030"', *c[1:]]),
        "lower": ("symbols", lambda c: ['"s0"', *c[1:]]),
        "nested": ("close", lambda c: ["[1]", *c[1:]]),
        "17 digits": ("close", lambda c: ["1.0000000000000002", *c[1:]]),
        "bad row": ("low", lambda c: [*c[:-1], "1e9"]),
    }  # fmt: skip
    if corrupt in bad:
        f, change = bad[corrupt]
        cols[f] = change(cols[f])
    for f, c in cols.items():
        fields[f] = "[" + ",".join(f"{ws}{x}{ws}" for x in c) + "]"
    if corrupt == "extra key":
        fields["note"] = '"x"'
    elif corrupt == "no volume":
        del fields["volume"]
    elif corrupt == "v 2":
        fields["v"] = "2"
    elif corrupt == "type bar":
        fields["type"] = '"bar"'
    elif corrupt == "tf 2m":
        fields["tf"] = '"2m"'
    keys = list(fields)
    rnd.shuffle(keys)
    return ("{" + ",".join(f'{ws}"{k}"{ws}:{ws}{fields[k]}{ws}' for k in keys) + "}").encode()


@given(
    st.lists(
        st.tuples(
            st.lists(st.tuples(prices, prices), min_size=1, max_size=8),
            st.integers(0, 4),
            st.sampled_from(_CORRUPTIONS),
        ),
        min_size=1, max_size=6,
    ),
    st.randoms(use_true_random=False),
    st.sampled_from(["", " ", "\n\t"]),
    st.booleans(),
)  # fmt: skip
def test_the_batch_parser_reads_exactly_what_orjson_and_the_model_read(batches, rnd, ws, single):
    """BarBatch records in any key order, white space and number style, some broken in
    one way, among single bars or alone: the rows are the model's, bit for bit, in record
    order, and each broken record gets the verdict the general decoder gives it."""
    recs = []
    for i, (rows, style, corrupt) in enumerate(batches):
        if single:
            recs.append(Rec(orjson.dumps({**GOOD, "symbol": f"B{i}"}), offset=len(recs)))
        recs.append(Rec(_batch_text(rows, rnd, ws, style, corrupt), offset=len(recs)))
    rows, bad = decode_bar_records(recs)
    general = [decode_bar_records([r]) for r in recs]  # each record alone
    bad.sort(key=lambda b: b[0].offset)  # (the shape's verdicts come before the numbers')
    assert [r for r, _ in bad] == [r for r in recs if not _model_ok(r.value)]
    assert [why for _, why in bad] == [why for _, b in general for _, why in b]
    want_sym, want_rec, want = [], [], {f: [] for f in ("ts", "open", "high", "low", "close",
                                                         "volume")}  # fmt: skip
    for i, r in enumerate(recs):
        if not _model_ok(r.value):
            continue
        m = decode(r.value)
        if isinstance(m, BarBatch):
            want_sym += m.symbols
            want_rec += [i] * len(m.symbols)
            for f in want:
                want[f] += [float(x) if f != "ts" else x for x in getattr(m, f)]
        else:
            want_sym.append(m.symbol)
            want_rec.append(i)
            for f in want:
                want[f].append(float(getattr(m, f)) if f != "ts" else m.ts)
    assert rows.record.tolist() == want_rec and rows.symbol.tolist() == want_sym
    assert rows.ts.tolist() == want["ts"]
    for f in ("open", "high", "low", "close", "volume"):
        assert [x.hex() for x in getattr(rows, f).tolist()] == [x.hex() for x in want[f]], f
    _assert_coded(rows)


def test_a_batch_over_the_row_limit_gets_the_general_decoders_reason():
    n = MAX_BATCH_ROWS + 1
    batch = {"type": "bar_batch", "v": 1, "tf": "1m", "symbols": ["A"] * n, "ts": [1] * n,
             **{f: [1.0] * n for f in ("open", "high", "low", "close", "volume")}}  # fmt: skip
    rows, bad = decode_bar_records([Rec(orjson.dumps(batch))])
    assert len(rows) == 0 and bad[0][1] == f"symbols: {n} rows exceed the limit of {MAX_BATCH_ROWS}"


@pytest.mark.parametrize("corrupt", _CORRUPTIONS)
def test_the_batch_parser_takes_what_it_is_sure_of_and_leaves_the_rest(corrupt):
    """Valid batches (in any key order and spacing; a bad row is the numeric checks'
    business) are read by the numba parser; anything else is left to the general one."""
    text = _batch_text([(1.5, 2.25), (3.0, 2.5)], random.Random(5), " ", 1, corrupt)
    buf = np.frombuffer(text, dtype=np.uint8)
    starts = np.array([0, len(text)], dtype=np.int64)
    ok, rec, ts, cols, tf, sym_at, _ = parse_bar_batches(buf, starts, np.array([0]), 10)
    assert ok.tolist() == [corrupt in (None, "bad row")]
    if ok[0]:
        assert rec.tolist() == [0, 0] and TIMEFRAME_NAMES[tf[0]] == "1h"
        assert cols[1].tolist() == [2.25, 3.0] and ts.tolist() == [1_700_000_000_000 + i
                                                                    for i in range(2)]  # fmt: skip
        assert [text[a:b] for a, b in sym_at.tolist()] == [b"S0", b"S1"]
    over = parse_bar_batches(buf, starts, np.array([0]), 1)[0]  # more rows than allowed
    assert not over[0]


def test_a_batch_column_of_lists_is_rejected_not_read_as_a_table():
    """NumPy makes ``[[1]]`` a 1x1 table of integers; it is no list of numbers (this
    record once crashed the decoder's numeric checks)."""
    text = _batch_text([(1.5, 2.25)], random.Random(5), "", 0, "nested")
    rows, bad = decode_bar_records([Rec(text)])
    assert len(rows) == 0 and bad[0][1] == "close: not a list of numbers"
    assert not _model_ok(text)


@given(st.lists(st.from_regex(r"[A-Z0-9][A-Z0-9._/:^=-]{0,31}", fullmatch=True), max_size=20),
       st.randoms(use_true_random=False))  # fmt: skip
def test_joined_symbols_are_the_picked_rows_symbols_in_order(symbols, rnd):
    raw = [s.encode() for s in symbols]
    buf = np.frombuffer(b"|".join(raw) or b"-", dtype=np.uint8)
    spans, at = [], 0
    for r in raw:
        spans.append((at, at + len(r)))
        at += len(r) + 1
    sym_at = np.array(spans, dtype=np.int64).reshape(-1, 2)
    picks = np.array(rnd.sample(range(len(raw)), len(raw)), dtype=np.int64)
    got = joined_symbols_nb(buf, sym_at, picks).tobytes().decode("ascii")
    assert (got.split("\n") if len(picks) else []) == [symbols[i] for i in picks]


@given(st.lists(st.integers(0, 2**64 - 1), max_size=40), st.integers(0, 3_000),
       st.randoms(use_true_random=False))  # fmt: skip
def test_arrival_codes_number_the_distinct_hashes_in_order_of_first_arrival(pool, n, rnd):
    """Whatever the hashes (colliding slots, more distinct ones than the first table holds),
    each row's code is its hash's rank by first arrival and ``first`` is where each code
    first came."""
    pool = pool + [rnd.getrandbits(64) for _ in range(rnd.choice((0, 1_500)))]
    hashes = np.array([rnd.choice(pool) for _ in range(n)] if pool else [], dtype=np.uint64)
    code, first = arrival_codes_nb(hashes)
    rank: dict[int, int] = {}
    where: list[int] = []
    for i, h in enumerate(hashes.tolist()):  # distinct, in arrival order
        if h not in rank:
            rank[h] = len(rank)
            where.append(i)
    assert code.tolist() == [rank[h] for h in hashes.tolist()]
    assert first.tolist() == where
