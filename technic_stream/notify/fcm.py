"""Firebase Cloud Messaging, HTTP v1 API, with a service account's OAuth2 credentials.

The access token comes from the service account's ``token_uri`` with the JWT-bearer
grant (RFC 7523): an RS256 assertion signed with the account's private key, scope
``firebase.messaging``; it is cached until a minute before it expires, and dropped on a
401. A message goes to ``{base}/v1/projects/{project_id}/messages:send``.

The answers FCM documents, and what they mean here (:class:`PushAttempt`):
``UNREGISTERED`` (404) and ``SENDER_ID_MISMATCH`` (403) — the token is no use to us:
deactivate the device; ``QUOTA_EXCEEDED`` (429) and ``UNAVAILABLE`` (503) — retry no
sooner than ``Retry-After``; ``INTERNAL`` (500) and other 5xx — retry with backoff;
``INVALID_ARGUMENT`` (400) and other 4xx — final.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
import orjson

from technic_stream.notify.webhook import Attempt, _retry_after

__all__ = ["FcmSender", "load_credentials"]

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
_GONE = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})


def load_credentials(path: str) -> dict[str, Any]:
    """A service account's JSON key file (``client_email``, ``private_key``,
    ``token_uri``, ``project_id``); a clear error when it is not one."""
    with open(path, "rb") as f:
        creds = orjson.loads(f.read())
    missing = [k for k in ("client_email", "private_key", "token_uri", "project_id")
               if not creds.get(k)]  # fmt: skip
    if missing:
        raise ValueError(f"{path}: not a service account key (missing {', '.join(missing)})")
    return dict(creds)


@dataclass
class _Token:
    value: str
    expires: float


class FcmSender:
    def __init__(self, credentials: dict[str, Any], base_url: str,
                 session: aiohttp.ClientSession) -> None:  # fmt: skip
        self.creds = credentials
        self.url = f"{base_url.rstrip('/')}/v1/projects/{credentials['project_id']}/messages:send"
        self.session = session
        self._token: _Token | None = None
        self._refreshing = asyncio.Lock()

    async def _access_token(self) -> str:
        token = self._token
        if token is not None and token.expires - 60 > time.time():
            return token.value
        async with self._refreshing:  # one request for a new token, however many wait
            token = self._token
            if token is not None and token.expires - 60 > time.time():
                return token.value
            return await self._fetch_token()

    async def _fetch_token(self) -> str:
        now = time.time()
        assertion = jwt.encode(
            {"iss": self.creds["client_email"], "scope": SCOPE, "aud": self.creds["token_uri"],
             "iat": int(now), "exp": int(now) + 3600},
            self.creds["private_key"], algorithm="RS256",
            headers={"kid": self.creds.get("private_key_id")} if self.creds.get(
                "private_key_id") else None,
        )  # fmt: skip
        form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": assertion}  # fmt: skip
        async with self.session.post(self.creds["token_uri"], data=form) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise aiohttp.ClientResponseError(
                    resp.request_info, (), status=resp.status,
                    message=f"token endpoint: {body[:200]!r}",
                )  # fmt: skip
        got = orjson.loads(body)
        self._token = _Token(got["access_token"], now + float(got.get("expires_in", 3600)))
        return self._token.value

    async def send(self, token: str, title: str, text: str, data: dict[str, str]) -> Attempt:
        message = {"message": {"token": token, "notification": {"title": title, "body": text},
                               "data": data}}  # fmt: skip
        try:
            bearer = await self._access_token()
            async with self.session.post(
                self.url, data=orjson.dumps(message),
                headers={"Authorization": f"Bearer {bearer}",
                         "Content-Type": "application/json"},
            ) as resp:  # fmt: skip
                body = await resp.read()
                status, retry_after = resp.status, resp.headers.get("Retry-After")
        except aiohttp.ClientResponseError as exc:  # the token endpoint refused
            return Attempt(False, exc.status >= 500 or exc.status == 429, f"oauth {exc.status}")
        except TimeoutError:
            return Attempt(False, True, "timeout")
        except aiohttp.ClientError as exc:
            return Attempt(False, True, f"{type(exc).__name__}: {exc}"[:200])
        if 200 <= status < 300:
            return Attempt(True, False, str(status))
        code = _error_code(body)
        text_status = f"{status} {code}".strip()
        if status == 401:
            self._token = None  # expired or revoked: a new one next attempt
            return Attempt(False, True, text_status)
        if code in _GONE or status == 404:
            return Attempt(False, False, text_status, deactivate=True)
        if status in (429, 503):
            return Attempt(False, True, text_status, _retry_after(retry_after))
        return Attempt(False, status >= 500, text_status)


def _error_code(body: bytes) -> str:
    """FCM's error code: ``error.details[].errorCode``, else ``error.status``."""
    try:
        err = orjson.loads(body).get("error") or {}
    except (orjson.JSONDecodeError, AttributeError):
        return ""
    for detail in err.get("details") or []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            return str(detail["errorCode"])
    return str(err.get("status") or "")
