"""Tokens: HS256 issued here, RS256 from another issuer, and what is refused."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from technic_stream.gateway.access import AccessDenied, parse_channel
from technic_stream.gateway.auth import AuthError, Principal, Tokens
from tests.conftest import make_settings


def _rsa() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


def test_issued_tokens_round_trip_and_expire():
    tokens = Tokens(make_settings(gateway_jwt_secret=SecretStr("s" * 40)))
    token, exp = tokens.issue(Principal("alice", frozenset({"admin"}), "k1", None), ttl_s=60)
    who = tokens.check(token)
    assert (who.owner, who.admin, who.key_id, who.expires_at) == ("alice", True, "k1", exp)
    old, _ = tokens.issue(Principal("alice", frozenset(), "k1", None), ttl_s=-60)
    with pytest.raises(AuthError) as err:
        tokens.check(old)
    assert err.value.expired
    other = Tokens(make_settings(gateway_jwt_secret=SecretStr("t" * 40)))
    with pytest.raises(AuthError, match="invalid token"):
        other.check(token)  # another secret


def test_a_verified_token_is_remembered_until_it_expires(monkeypatch):
    tokens = Tokens(make_settings(gateway_jwt_secret=SecretStr("s" * 40)))
    token, exp = tokens.issue(Principal("bob", frozenset(), "k2", None), ttl_s=30)
    first = tokens.check(token)
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: pytest.fail("verified twice"))
    assert tokens.check(token) is first  # from memory, not verified again
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 30 + 6)  # past expiry and leeway
    with pytest.raises(AuthError) as err:
        tokens.check(token)
    assert err.value.expired and exp < time.time()


def test_rs256_tokens_of_a_configured_issuer_are_accepted_and_others_refused():
    private, public = _rsa()
    tokens = Tokens(make_settings(gateway_jwt_public_key=public))
    claims = {"sub": "bob", "scopes": "admin other", "exp": int(time.time()) + 60,
              "iss": "technic-stream", "aud": "technic-stream"}  # fmt: skip
    who = tokens.check(jwt.encode(claims, private, algorithm="RS256"))
    assert who.owner == "bob" and who.scopes == frozenset({"admin"})  # unknown scopes dropped
    with pytest.raises(AuthError, match="invalid token"):
        tokens.check(jwt.encode({**claims, "aud": "someone-else"}, private, algorithm="RS256"))
    bare = Tokens(make_settings())  # no public key configured: RS256 is not accepted
    with pytest.raises(AuthError, match="not accepted"):
        bare.check(jwt.encode(claims, private, algorithm="RS256"))
    with pytest.raises(AuthError, match="not accepted"):
        tokens.check(jwt.encode(claims, None, algorithm="none"))


@pytest.mark.parametrize(
    ("name", "kind", "subject"),
    [("bars.1m.AAPL", "bars", "AAPL"), ("ind.1d.BRK.B", "ind", "BRK.B"),
     ("alerts.alice", "alerts", "alice"), ("scan.s-1", "scan", "s-1")],
)  # fmt: skip
def test_channel_names(name, kind, subject):
    ch = parse_channel(name)
    assert (ch.kind, ch.subject) == (kind, subject)


@pytest.mark.parametrize("name", ["", "bars.1m.aapl", "ind.2m.AAPL", "alerts.", "x.y", 5, None])
def test_unknown_channels_are_refused(name):
    with pytest.raises(AccessDenied):
        parse_channel(name)
