"""Apple Push Notification service over HTTP/2 with token (.p8, ES256 JWT) auth.

The provider token is a JWT signed with the team's .p8 key (``kid`` = key id, ``iss`` =
team id); Apple refuses one older than an hour and throttles clients that make new ones
more often than every 20 minutes, so it is made once and renewed after 50 minutes — or
at once when APNs answers ``ExpiredProviderToken``. A notification is ``POST
/3/device/{token}`` with ``apns-topic`` (the app's bundle id), ``apns-push-type: alert``
and an ``apns-id`` derived from the delivery's event id.

Answers (Apple's documented reasons), and what they mean here: ``BadDeviceToken``,
``DeviceTokenNotForTopic`` (400) and ``Unregistered`` (410) — deactivate the device;
``ExpiredProviderToken``/``InvalidProviderToken`` (403) — new token, retry;
``TooManyRequests`` (429), 500 and 503 — retry (no sooner than a ``Retry-After``); other
4xx — final. A cleartext URL is spoken as HTTP/2 with prior knowledge (local tests).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import jwt
import orjson

from technic_stream.notify.webhook import Attempt, _retry_after

__all__ = ["ApnsSender"]

_TOKEN_LIFE_S = 50 * 60
_GONE = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic", "Unregistered"})
_RENEW = frozenset({"ExpiredProviderToken", "InvalidProviderToken"})


class ApnsSender:
    def __init__(self, key_pem: str, key_id: str, team_id: str, topic: str, base_url: str,
                 timeout_s: float) -> None:  # fmt: skip
        self.key, self.key_id, self.team_id, self.topic = key_pem, key_id, team_id, topic
        cleartext = base_url.startswith("http://")
        self.client = httpx.AsyncClient(
            base_url=base_url, http2=True, http1=not cleartext, timeout=timeout_s,
        )  # fmt: skip
        self._token: tuple[str, float] | None = None
        self._lock = asyncio.Lock()

    def provider_token(self) -> str:
        now = time.time()
        if self._token is None or now - self._token[1] >= _TOKEN_LIFE_S:
            value = jwt.encode({"iss": self.team_id, "iat": int(now)}, self.key,
                               algorithm="ES256", headers={"kid": self.key_id})  # fmt: skip
            self._token = (value, now)
        return self._token[0]

    async def send(self, device: str, title: str, text: str, data: dict[str, str],
                   event_id: str) -> Attempt:  # fmt: skip
        payload: dict[str, Any] = {"aps": {"alert": {"title": title, "body": text},
                                           "sound": "default"}, **data}  # fmt: skip
        headers = {
            "authorization": f"bearer {self.provider_token()}",
            "apns-topic": self.topic,
            "apns-push-type": "alert",
            "apns-priority": "10",
            "apns-expiration": str(int(time.time()) + 3600),
            "apns-id": str(uuid.uuid5(uuid.NAMESPACE_URL, event_id)),
        }
        try:
            resp = await self.client.post(f"/3/device/{device}", content=orjson.dumps(payload),
                                          headers=headers)  # fmt: skip
        except httpx.TimeoutException:
            return Attempt(False, True, "timeout")
        except httpx.HTTPError as exc:
            return Attempt(False, True, f"{type(exc).__name__}: {exc}"[:200])
        if resp.status_code == 200:
            return Attempt(True, False, "200")
        reason = _reason(resp.content)
        status = f"{resp.status_code} {reason}".strip()
        if reason in _GONE or resp.status_code == 410:
            return Attempt(False, False, status, deactivate=True)
        if reason in _RENEW:
            self._token = None
            return Attempt(False, True, status)
        if resp.status_code in (429, 500, 503):
            return Attempt(False, True, status, _retry_after(resp.headers.get("retry-after")))
        return Attempt(False, resp.status_code >= 500, status)

    async def aclose(self) -> None:
        await self.client.aclose()


def _reason(body: bytes) -> str:
    try:
        return str(orjson.loads(body).get("reason") or "")
    except (orjson.JSONDecodeError, AttributeError):
        return ""
