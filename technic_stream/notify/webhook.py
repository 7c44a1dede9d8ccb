"""Signed webhook deliveries.

Every POST carries the JSON body and three headers:

* ``X-Technic-Event-Id`` — ``{alert_id}:{target_id}``, the same on every attempt: a
  receiver that keeps the ids it has seen drops the rare second copy (a notifier that
  died between a receiver's 2xx and recording it sends the delivery again);
* ``X-Technic-Timestamp`` — seconds since the epoch when the attempt was signed;
* ``X-Technic-Signature`` — ``v1=`` + hex HMAC-SHA256 of ``{timestamp}.{body}`` under the
  webhook's secret. Receivers recompute it and should refuse old timestamps (replays).

An attempt's answer decides what happens next (:class:`Attempt`): 2xx delivered; 429
and 503 retried no sooner than their ``Retry-After``; other 5xx, 408, timeouts and
connection errors retried with backoff; any other 4xx is final (the receiver refused
it: sending again would not help).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import aiohttp

__all__ = ["Attempt", "WebhookSender", "sign", "verify"]

USER_AGENT = "technic-stream-notifier/1"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), b"%d." % timestamp + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, max_age_s: int = 300,
           now: float | None = None) -> bool:  # fmt: skip
    """What a receiver does: the signature matches and the timestamp is recent."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - ts) > max_age_s:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt's outcome: ``ok``; else ``retry`` (with the receiver's ``Retry-After``
    in seconds when it gave one) or final (``deactivate``: and the target with it);
    ``status`` the HTTP status or the error."""

    ok: bool
    retry: bool
    status: str
    retry_after_s: float | None = None
    deactivate: bool = False  # the target is gone for good (a push token unregistered)


class WebhookSender:
    """POSTs signed deliveries through one pooled aiohttp session."""

    def __init__(self, timeout_s: float, *, connections: int = 100) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
        self._session = aiohttp.ClientSession(
            connector=self._connector, timeout=self._timeout,
            headers={"User-Agent": USER_AGENT},
        )  # fmt: skip

    async def post(self, url: str, secret: str, event_id: str, body: bytes) -> Attempt:
        ts = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "X-Technic-Event-Id": event_id,
            "X-Technic-Timestamp": str(ts),
            "X-Technic-Signature": sign(secret, ts, body),
        }
        try:
            async with self._session.post(url, data=body, headers=headers,
                                          allow_redirects=False) as resp:  # fmt: skip
                await resp.read()
                return _classify(resp.status, resp.headers.get("Retry-After"))
        except TimeoutError:
            return Attempt(False, True, "timeout")
        except aiohttp.ClientError as exc:
            return Attempt(False, True, f"{type(exc).__name__}: {exc}"[:200])

    @property
    def session(self) -> aiohttp.ClientSession:
        return self._session

    async def aclose(self) -> None:
        await self._session.close()
        await asyncio.sleep(0)  # let the connector's transports close


def _classify(status: int, retry_after: str | None) -> Attempt:
    text = str(status)
    if 200 <= status < 300:
        return Attempt(True, False, text)
    if status in (429, 503):
        return Attempt(False, True, text, _retry_after(retry_after))
    if status >= 500 or status == 408:
        return Attempt(False, True, text)
    return Attempt(False, False, text)


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
