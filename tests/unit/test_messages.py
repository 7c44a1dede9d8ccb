import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from technic_stream.errors import MessageDecodeError
from technic_stream.messages import (
    MODELS,
    Alert,
    AlertRule,
    Bar,
    BarBatch,
    ScanControl,
    ScanProgress,
    ScanRequest,
    ScanResult,
    ScanTask,
    Trade,
    alert_id,
    decode,
    encode,
)

BAR = {
    "type": "bar",
    "v": 1,
    "symbol": "AAPL",
    "tf": "1m",
    "ts": 1_700_000_000_000,
    "open": 10.0,
    "high": 11.0,
    "low": 9.5,
    "close": 10.5,
    "volume": 1200.0,
}


def raw(**changes):
    doc = {**BAR, **changes}
    return orjson.dumps({k: v for k, v in doc.items() if v is not ...})


def samples():
    req = ScanRequest(scan_id="s1", owner="u1", rule="rsi(14) < 30", ts=1)
    return [
        Trade(symbol="MSFT", ts=1, price=1.5, size=100, trade_id="x"),
        Bar.model_validate(BAR),
        BarBatch(
            tf="1m",
            symbols=["AAPL", "MSFT"],
            ts=[1, 1],
            open=[10.0, 20.0],
            high=[11.0, 21.0],
            low=[9.5, 19.0],
            close=[10.5, 20.5],
            volume=[100.0, 0.0],
        ),
        req,
        ScanControl(scan_id="s1", owner="u1", action="cancel", ts=2),
        ScanTask(scan_id="s1", chunk=0, chunks=2, symbols=["AAPL"], request=req, ts=3),
        ScanProgress(
            scan_id="s1",
            owner="u1",
            stage="compute",
            done=5,
            total=10,
            percent=50.0,
            rate=100.0,
            eta_ms=50,
            current_symbol="IBM",
            ts=4,
        ),
        ScanResult(scan_id="s1", owner="u1", status="done", total_matches=0, ts=5),
        AlertRule(rule_id="r1", owner="u1", expr="close > 1", symbols=["AAPL"], ts=6),
        Alert(
            alert_id=alert_id("r1", "AAPL", "1d", 7),
            rule_id="r1",
            owner="u1",
            symbol="AAPL",
            tf="1d",
            ts=7,
            fired_at=8,
            close=1.0,
            values={"rsi_14": 25.0, "sma_200": None},
        ),
    ]


def test_every_model_has_a_sample():
    assert {type(m) for m in samples()} == set(MODELS)


@pytest.mark.parametrize("message", samples(), ids=lambda m: type(m).__name__)
def test_round_trip_is_exact(message):
    data = encode(message)
    doc = orjson.loads(data)
    assert doc["type"] == message.type and doc["v"] == 1
    assert decode(data) == message
    assert decode(data, type(message)) == message


def test_messages_are_immutable():
    bar = Bar.model_validate(BAR)
    with pytest.raises(Exception, match="frozen"):
        bar.close = 3.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"v": 1}', "unknown message type None"),
        (raw(type="quote"), "unknown message type 'quote'"),
        (raw(v=2), "unsupported version v=2"),
        (raw(high=9.0), "high 9.0 is below"),
        (raw(low=10.2), "low 10.2 is above"),
        (raw(open=0.0), "open: Input should be greater than 0"),
        (raw(close=-1.0), "close: Input should be greater than 0"),
        (raw(volume=-1.0), "volume: Input should be greater than or equal to 0"),
        (raw(tf="2h"), "tf: Input should be"),
        (raw(symbol="aapl"), "symbol: String should match pattern"),
        (raw(symbol="A" * 40), "symbol: String should match pattern"),
        (raw(ts="1700000000000"), "ts: Input should be a valid integer"),
        (raw(ts=1.5), "ts: Input should be a valid integer"),
        (raw(ts=-1), "ts: Input should be greater than or equal to 0"),
        (raw(ts=1_700_000_000_000_000), "ts: Input should be less than or equal to"),
        (raw(volume=...), "volume: Field required"),
        (raw(extra=1), "extra: Extra inputs are not permitted"),
        (
            b'{"type":"bar","v":1,"symbol":"A","tf":"1m","ts":1,"open":1e999,'
            b'"high":1,"low":1,"close":1,"volume":1}',
            "number is infinity",
        ),
    ],
)
def test_bad_input_is_rejected_with_a_one_line_reason(data, reason):
    with pytest.raises(MessageDecodeError) as info:
        decode(data)
    assert reason in info.value.reason
    assert "\n" not in info.value.reason


def test_size_limit_is_checked_before_parsing():
    data = raw(symbol="AAPL") + b" " * 2_000
    with pytest.raises(MessageDecodeError, match="exceeds the limit of 1024"):
        decode(data, max_bytes=1024)


def test_expected_type_is_enforced():
    with pytest.raises(MessageDecodeError, match="expected message type 'trade', got 'bar'"):
        decode(raw(), Trade)


def test_tombstone_is_not_a_message():
    with pytest.raises(MessageDecodeError, match="tombstone"):
        decode(None)  # type: ignore[arg-type]


def test_scan_request_scope_rules():
    base = {"scan_id": "s", "owner": "u", "rule": "close > 1", "ts": 1}
    with pytest.raises(ValueError, match="either universe or symbols"):
        ScanRequest(**base, universe="all", symbols=["AAPL"])
    with pytest.raises(ValueError, match="needs start"):
        ScanRequest(**base, mode="history")
    with pytest.raises(ValueError, match="history scans only"):
        ScanRequest(**base, start=1)
    with pytest.raises(ValueError, match="is after end"):
        ScanRequest(**base, mode="history", start=5, end=4)
    with pytest.raises(ValueError, match="String should have at most 4096"):
        ScanRequest(**{**base, "rule": "x" * 5000})


def test_scan_task_chunk_must_be_in_range():
    req = ScanRequest(scan_id="s", owner="u", rule="close > 1", ts=1)
    with pytest.raises(ValueError, match="chunk 2 is not below chunks 2"):
        ScanTask(scan_id="s", chunk=2, chunks=2, symbols=["A"], request=req, ts=1)
    with pytest.raises(ValueError, match="differs"):
        ScanTask(scan_id="other", chunk=0, chunks=1, symbols=["A"], request=req, ts=1)


def test_alert_id_is_deterministic_and_distinguishes_inputs():
    a = alert_id("r1", "AAPL", "1d", 100)
    assert a == alert_id("r1", "AAPL", "1d", 100)
    assert len(a) == 32 and int(a, 16) >= 0
    others = {
        alert_id("r2", "AAPL", "1d", 100),
        alert_id("r1", "MSFT", "1d", 100),
        alert_id("r1", "AAPL", "1m", 100),
        alert_id("r1", "AAPL", "1d", 101),
    }
    assert a not in others and len(others) == 4


prices = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False)


@given(o=prices, c=prices, up=st.floats(0, 1e6), down=st.floats(0, 1), vol=st.floats(0, 1e12))
def test_any_consistent_bar_round_trips(o, c, up, down, vol):
    high = max(o, c) + up
    low = min(o, c) * (1 - down * 0.999)
    bar = Bar(symbol="X", tf="1d", ts=0, open=o, high=high, low=low, close=c, volume=vol)
    back = decode(encode(bar), Bar)
    assert back == bar
    assert all(math.isfinite(x) for x in (back.open, back.high, back.low, back.close))


def test_bar_batch_round_trips_through_bars():
    bars = [Bar.model_validate(BAR), Bar.model_validate({**BAR, "symbol": "IBM", "ts": 5})]
    batch = BarBatch.from_bars(bars)
    assert len(batch) == 2 and batch.bars() == bars
    assert decode(encode(batch)) == batch


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"ts": [1]}, "ts has 1 rows, symbols has 2"),
        ({"high": [11.0, 19.5]}, "row 1: high 19.5 is below max(open, close, low)"),
        ({"low": [9.5, 20.6]}, "row 1: low 20.6 is above min(open, close)"),
        ({"symbols": ["AAPL", "bad symbol"]}, "symbols.1: String should match pattern"),
        ({"close": [10.5, -1.0]}, "close.1: Input should be greater than 0"),
        (
            {"symbols": [], "ts": [], "open": [], "high": [], "low": [], "close": [], "volume": []},
            "symbols: List should have at least 1 item",
        ),
    ],
)
def test_bar_batch_rejects_inconsistent_rows(change, reason):
    doc = {"type": "bar_batch", "v": 1, "tf": "1m", "symbols": ["AAPL", "MSFT"], "ts": [1, 1],
           "open": [10.0, 20.0], "high": [11.0, 21.0], "low": [9.5, 19.0],
           "close": [10.5, 20.5], "volume": [100.0, 0.0], **change}  # fmt: skip
    with pytest.raises(MessageDecodeError) as info:
        decode(orjson.dumps(doc))
    assert reason in str(info.value)
