"""Who is calling: API keys (hashed in MongoDB) and the short-lived JWTs they buy.

An API key reads ``tsk_{key_id}_{secret}``: ``key_id`` (12 hex digits) names the stored
document, ``secret`` (32 random bytes, URL-safe base64) is never stored — only its
SHA-256, compared in constant time. Keys are random and long, so a fast hash is the
right one (a password hash would only slow every exchange down). ``POST /v1/auth/token``
exchanges a key for an HS256 JWT (``sub`` = owner, ``scopes``, ``key``, ``exp``), which
WebSocket clients and REST calls present. Tokens from another issuer are accepted too
when their RS256 public key is configured.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from pymongo.asynchronous.database import AsyncDatabase

from technic_stream.config import Settings

__all__ = ["ApiKeys", "AuthError", "NewKey", "Principal", "Tokens"]

log = logging.getLogger(__name__)

_KEY_RE = re.compile(r"^tsk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
SCOPES = frozenset({"admin"})


class AuthError(Exception):
    """Authentication failed: ``reason`` says why (safe to show the caller)."""

    def __init__(self, reason: str, *, expired: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.expired = expired


_LEEWAY_S = 5
_VERIFIED_MAX = 50_000


@dataclass(frozen=True, slots=True)
class Principal:
    owner: str
    scopes: frozenset[str]
    key_id: str  # the API key behind the token (rate limits count per key); owner if none
    expires_at: float | None  # epoch seconds

    @property
    def admin(self) -> bool:
        return "admin" in self.scopes

    def may_read(self, owner: str) -> bool:
        return self.admin or self.owner == owner


@dataclass(frozen=True, slots=True)
class NewKey:
    key: str  # shown once
    key_id: str
    owner: str
    scopes: tuple[str, ...]


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKeys:
    """The ``api_keys`` collection: create, check, list, revoke."""

    def __init__(self, db: AsyncDatabase[Any], *, cache_s: float = 30.0) -> None:
        self._coll = db["api_keys"]
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._cache_s = cache_s
        # a key's lookup under way: the requests that miss the cache meanwhile wait for it
        # (a client that logs 100 users in at once asked MongoDB 100 times for one key)
        self._pending: dict[str, asyncio.Future[Principal]] = {}

    async def create(
        self, owner: str, *, scopes: tuple[str, ...] = (), name: str | None = None
    ) -> NewKey:
        unknown = set(scopes) - SCOPES
        if unknown:
            raise ValueError(f"unknown scopes: {', '.join(sorted(unknown))}")
        key_id = secrets.token_hex(6)
        secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
        await self._coll.insert_one(
            {
                "_id": key_id,
                "owner": owner,
                "scopes": list(scopes),
                "name": name,
                "hash": _hash(secret),
                "created_at": datetime.now(UTC),
                "revoked": False,
            }
        )
        return NewKey(f"tsk_{key_id}_{secret}", key_id, owner, tuple(scopes))

    async def check(self, key: str) -> Principal:
        """The principal an API key stands for; :class:`AuthError` if it is not valid."""
        m = _KEY_RE.match(key.strip())
        if not m:
            raise AuthError("malformed API key")
        key_id, secret = m.groups()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)  # (a waiter's cancel leaves the lookup be)
        lookup = asyncio.ensure_future(self._lookup(key, key_id, secret))
        self._pending[key] = lookup
        lookup.add_done_callback(lambda f: self._looked_up(key, f))
        return await asyncio.shield(lookup)

    def _looked_up(self, key: str, lookup: asyncio.Future[Principal]) -> None:
        self._pending.pop(key, None)
        if not lookup.cancelled():
            lookup.exception()  # retrieved here too: every waiter may have gone

    async def _lookup(self, key: str, key_id: str, secret: str) -> Principal:
        doc = await self._coll.find_one({"_id": key_id})
        if doc is None or not hmac.compare_digest(doc.get("hash", ""), _hash(secret)):
            raise AuthError("unknown API key")
        if doc.get("revoked"):
            raise AuthError("API key revoked")
        who = Principal(doc["owner"], frozenset(doc.get("scopes") or ()), key_id, None)
        self._cache[key] = (time.monotonic() + self._cache_s, who)
        if len(self._cache) > 10_000:
            self._cache.clear()
        return who

    async def list(self, owner: str | None = None) -> list[dict[str, Any]]:
        query = {} if owner is None else {"owner": owner}
        cursor = self._coll.find(query, {"hash": 0}).sort("created_at", 1)
        return [doc async for doc in cursor]

    async def revoke(self, key_id: str) -> bool:
        res = await self._coll.update_one({"_id": key_id}, {"$set": {"revoked": True}})
        self._cache.clear()
        return res.matched_count == 1


class Tokens:
    """Issues HS256 tokens and checks HS256 (our secret) or RS256 (a configured key) ones."""

    def __init__(self, settings: Settings) -> None:
        secret = settings.gateway_jwt_secret
        if secret is None:
            log.warning(
                "TECHNIC_GATEWAY_JWT_SECRET unset: tokens are signed with a random secret "
                "and only this process accepts them"
            )
            self._secret = secrets.token_bytes(32)
        else:
            self._secret = secret.get_secret_value().encode()
        self._public_key = settings.gateway_jwt_public_key
        self.issuer = settings.gateway_jwt_issuer
        self.ttl_s = settings.gateway_token_ttl_s
        # tokens already verified, until they expire: a signature check and claim parse
        # was ~15 % of a cheap request's time under load (bounded; cleared when full)
        self._verified: dict[str, Principal] = {}

    def issue(self, who: Principal, *, ttl_s: int | None = None) -> tuple[str, int]:
        """A token for ``who`` and its expiry (epoch seconds)."""
        now = int(time.time())
        exp = now + (ttl_s if ttl_s is not None else self.ttl_s)
        claims = {
            "sub": who.owner,
            "scopes": sorted(who.scopes),
            "key": who.key_id,
            "iat": now,
            "exp": exp,
            "iss": self.issuer,
            "aud": self.issuer,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._secret, algorithm="HS256"), exp

    def check(self, token: str) -> Principal:
        hit = self._verified.get(token)
        if hit is not None:
            if hit.expires_at is not None and hit.expires_at + _LEEWAY_S < time.time():
                del self._verified[token]
                raise AuthError("token expired", expired=True)
            return hit
        who = self._verify(token)
        if len(self._verified) >= _VERIFIED_MAX:
            self._verified.clear()
        self._verified[token] = who
        return who

    def _verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError(f"malformed token: {exc}") from None
        alg = header.get("alg")
        key: Any
        if alg == "HS256":
            key = self._secret
        elif alg == "RS256" and self._public_key:
            key = self._public_key
        else:
            raise AuthError(f"token algorithm {alg!r} is not accepted")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.issuer,
                issuer=self.issuer,
                options={"require": ["exp", "sub"]},
                leeway=_LEEWAY_S,
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired", expired=True) from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        scopes = claims.get("scopes") or []
        if isinstance(scopes, str):
            scopes = scopes.split()
        return Principal(
            str(claims["sub"]),
            frozenset(str(s) for s in scopes) & SCOPES,
            str(claims.get("key") or claims["sub"]),
            float(claims["exp"]),
        )
