"""Webhook signing and how an attempt's answer is read (pure code, no servers)."""

from __future__ import annotations

import hashlib
import hmac
import time
from email.utils import formatdate

from hypothesis import given
from hypothesis import strategies as st

from technic_stream.notify.webhook import _classify, _retry_after, sign, verify


def test_signature_is_hmac_sha256_of_timestamp_dot_body():
    body = b'{"a":1}'
    want = hmac.new(b"k" * 16, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("k" * 16, 1_700_000_000, body) == "v1=" + want


@given(st.binary(max_size=300), st.text(min_size=16, max_size=40))
def test_verify_accepts_its_own_signature_and_refuses_any_change(body, secret):
    now = time.time()
    ts = int(now)
    sig = sign(secret, ts, body)
    assert verify(secret, str(ts), body, sig, now=now)
    assert not verify(secret, str(ts), body + b"x", sig, now=now)
    assert not verify(secret + "x", str(ts), body, sig, now=now)
    assert not verify(secret, str(ts + 1), body, sig, now=now)
    assert not verify(secret, str(ts), body, sig, now=now + 301)  # too old: a replay
    assert not verify(secret, "soon", body, sig, now=now)


def test_answers_decide_retry_or_not():
    assert _classify(200, None).ok and _classify(204, None).ok
    for status in (500, 502, 504, 408):
        a = _classify(status, None)
        assert not a.ok and a.retry and a.retry_after_s is None
    a = _classify(429, "7")
    assert a.retry and a.retry_after_s == 7.0
    assert _classify(503, None).retry
    for status in (400, 401, 403, 404, 410, 301):
        a = _classify(status, "3")
        assert not a.ok and not a.retry  # final: sending again would not help


def test_retry_after_as_seconds_or_an_http_date():
    assert _retry_after("120") == 120.0
    later = _retry_after(formatdate(time.time() + 60, usegmt=True))
    assert later is not None and 55 <= later <= 61
    assert _retry_after(formatdate(time.time() - 60, usegmt=True)) == 0.0
    assert _retry_after("soon") is None and _retry_after(None) is None


def test_fcm_error_codes_are_read_from_details_then_status():
    from technic_stream.notify.fcm import _error_code

    body = (b'{"error": {"code": 404, "status": "NOT_FOUND", "details": [{"@type": "x"}, '
            b'{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", '
            b'"errorCode": "UNREGISTERED"}]}}')  # fmt: skip
    assert _error_code(body) == "UNREGISTERED"
    assert _error_code(b'{"error": {"code": 503, "status": "UNAVAILABLE"}}') == "UNAVAILABLE"
    assert _error_code(b"<html>bad gateway</html>") == ""
    assert _error_code(b"[]") == ""
