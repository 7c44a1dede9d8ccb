"""Alerts rendered many at a time are the bytes of ``orjson.dumps`` of each alert's dict,
and their ids are :func:`alert_id`'s."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from technic_stream.engine.alerts import AlertTemplate, alert_ids, joined_alert_ids
from technic_stream.messages import Alert, alert_id

_symbols = st.text(st.sampled_from('ABCXYZ.-^%"\\é'), min_size=1, max_size=8)
_floats = st.floats(allow_nan=True, allow_infinity=True)
_LONG_RULE_ID = "".join(map(chr, range(0x100, 0x146)))  # 140 bytes, none repeating


def _dict(aid, rule_id, owner, sym, tf, ts, now, close, names, row, msg):
    return {
        "type": "alert", "v": 1, "alert_id": aid, "rule_id": rule_id, "owner": owner,
        "symbol": sym, "tf": tf, "ts": ts, "fired_at": now, "close": close,
        "values": dict(zip(names, row, strict=True)), "message": msg,
    }  # fmt: skip


@given(
    names=st.lists(st.text(st.sampled_from("abc_%\"1("), min_size=1, max_size=6),
                   max_size=5, unique=True),
    rows=st.lists(st.tuples(_symbols, st.integers(0, 2**62), st.floats(0, 1e12),
                            st.lists(_floats, min_size=5, max_size=5),
                            st.one_of(st.none(), st.text(max_size=10))), max_size=12),
    rule_id=st.sampled_from(["r1", "rule_%d", 'q"x']),
)  # fmt: skip
@example(
    names=["rsi_14", "ema_12"],
    rule_id="r1",
    rows=[
        ("AAPL", 1, 101.5, [math.nan, math.inf, -math.inf, -0.0, 5e-324], None),
        ("B", 2, 1e16, [0.1 + 0.2, 1e-7, 100.0, 1.7976931348623157e308, 1.0], "hi"),
    ],
)
def test_rendered_alerts_are_orjson_of_the_alert_dict(names, rows, rule_id):
    m = len(names)
    tpl = AlertTemplate(rule_id, "ann", "1m", names)
    syms = [r[0] for r in rows]
    ts = [r[1] for r in rows]
    ids = alert_ids(rule_id, "1m", syms, ts, None)
    close = np.array([r[2] for r in rows], dtype=np.float64)
    values = np.array([r[3][:m] for r in rows], dtype=np.float64).reshape(len(rows), m)
    msgs = [r[4] for r in rows]
    _, got = tpl.render(ids, syms, ts, 1_767_000_000_123, close, values, msgs)
    want = [
        orjson.dumps(_dict(a.decode(), rule_id, "ann", s, "1m", t, 1_767_000_000_123,
                           float(c), names, v.tolist(), msg))
        for a, s, t, c, v, msg in zip(ids, syms, ts, close, values, msgs, strict=True)
    ]  # fmt: skip
    assert got == want


def _framed(args: list[bytes]) -> bytes:
    return b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


@given(
    names=st.lists(st.text(st.sampled_from("abc_%\"1("), min_size=1, max_size=6),
                   max_size=5, unique=True),
    rows=st.lists(st.tuples(_symbols, st.integers(-(2**62), 2**62), _floats,
                            st.lists(_floats, min_size=5, max_size=5),
                            st.one_of(st.none(), st.text(max_size=10))), max_size=12),
    with_messages=st.booleans(),
)  # fmt: skip
@example(names=[], rows=[("AAPL", 0, 1.5, [0.0] * 5, None)], with_messages=False)
@example(names=["a"], rows=[('A"é', -7, math.nan, [math.inf] * 5, "x")], with_messages=True)
def test_rendered_alerts_come_framed_as_the_gates_arguments(names, rows, with_messages):
    """Each candidate's symbol, id and JSON as RESP bulk strings end to end, ids given
    as a list or joined — symbols to escape or not, ASCII or not, any ts, any float."""
    m = len(names)
    tpl = AlertTemplate("r1", "ann", "1m", names)
    syms = [r[0] for r in rows]
    ts = [r[1] for r in rows]
    ids = alert_ids("r1", "1m", syms, ts, None)
    close = np.array([r[2] for r in rows], dtype=np.float64)
    values = np.array([r[3][:m] for r in rows], dtype=np.float64).reshape(len(rows), m)
    msgs = [r[4] for r in rows] if with_messages else None
    blob, data = tpl.render(ids, syms, ts, 1_767_000_000_123, close, values, msgs)
    want = [
        orjson.dumps(_dict(a.decode(), "r1", "ann", s, "1m", t, 1_767_000_000_123, float(c),
                           names, v.tolist(), msg))
        for a, s, t, c, v, msg in zip(ids, syms, ts, close, values, msgs or [None] * len(rows),
                                      strict=True)
    ]  # fmt: skip
    assert data == want
    joined = joined_alert_ids("r1", "1m", syms, ts, None)
    assert joined == b"".join(ids)
    assert tpl.render(joined, syms, ts, 1_767_000_000_123, close, values, msgs) == (
        blob, data
    )  # fmt: skip
    assert blob == _framed([a for s, i, d in zip(syms, ids, want, strict=True)
                            for a in (s.encode(), i, d)])  # fmt: skip


def test_a_rendered_alert_is_a_valid_alert_message():
    tpl = AlertTemplate("r1", "ann", "1m", ["rsi_14"])
    ids = alert_ids("r1", "1m", ["AAPL"], [1_767_000_000_000], None)
    _, (data,) = tpl.render(ids, ["AAPL"], [1_767_000_000_000], 1_767_000_000_500,
                            np.array([187.25]), np.array([[28.5]]), None)  # fmt: skip
    alert = Alert.model_validate_json(data)
    assert alert.alert_id == ids[0].decode()
    assert (alert.values, alert.message, alert.close) == ({"rsi_14": 28.5}, None, 187.25)


@given(
    rows=st.lists(st.tuples(_symbols, st.integers(0, 2**62), st.integers(0, 50)), max_size=40),
    rule_id=st.sampled_from(["r9", _LONG_RULE_ID]),
)  # fmt: skip
@example(rows=[(f"S{i}", 1_767_000_000_000 + i, i % 3) for i in range(30)], rule_id=_LONG_RULE_ID)
def test_alert_ids_are_alert_id(rows, rule_id):
    """Few ids (hashed one by one) and many (in one numba call), ASCII symbols or not,
    a rule id longer than BLAKE2b's block."""
    syms, ts, seqs = ([r[i] for r in rows] for i in range(3))
    assert [a.decode() for a in alert_ids(rule_id, "5m", syms, ts, seqs)] == [
        alert_id(rule_id, s, "5m", t, q) for s, t, q in rows
    ]
    assert [a.decode() for a in alert_ids(rule_id, "5m", syms, ts, None)] == [
        alert_id(rule_id, s, "5m", t) for s, t, _ in rows
    ]


def test_a_shape_mismatch_is_refused():
    tpl = AlertTemplate("r1", "ann", "1m", ["a", "b"])
    with pytest.raises(ValueError, match="values for 2 names"):
        tpl.render([b"x"], ["A"], [1], 0, np.array([1.0]), np.zeros((1, 3)), None)
    with pytest.raises(ValueError, match="alert ids must be 32 bytes"):
        tpl.render([b"x"], ["A"], [1], 0, np.array([1.0]), np.zeros((1, 2)), None)
