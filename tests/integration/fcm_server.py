"""A local FCM HTTP v1 endpoint and OAuth2 token endpoint, speaking the documented
protocol: the token endpoint takes the JWT-bearer grant and checks the assertion's
RS256 signature, audience and scope against the service account; the send endpoint
checks the bearer token it issued and answers per device token as scripted."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

import jwt
import orjson
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from technic_stream.notify.fcm import SCOPE
from tests.integration.local_http import LocalHttpServer

PROJECT = "technic-test"


def _error(status: int, code: str, fcm_code: str | None = None) -> web.Response:
    details = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": fcm_code}] if fcm_code else []  # fmt: skip
    return web.json_response(
        {"error": {"code": status, "message": code.lower(), "status": code, "details": details}},
        status=status,
    )


class FcmServer(LocalHttpServer):
    def __init__(self, answer: Callable[[str, int], web.Response | None] = lambda t, n: None):
        super().__init__()
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_key = key.public_key()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()  # fmt: skip
        self.credentials = {
            "type": "service_account", "project_id": PROJECT, "private_key_id": "k1",
            "private_key": pem, "client_email": "notifier@technic-test.iam.gserviceaccount.com",
            "token_uri": f"http://127.0.0.1:{self.port}/token",
        }  # fmt: skip
        self.answer = answer  # (device token, its attempt number) → a response, or None: 200
        self.tokens: set[str] = set()
        self.token_requests = 0
        self.messages: list[dict[str, Any]] = []  # accepted
        self.attempts: dict[str, int] = {}
        self.unauthorized = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.token_requests += 1
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        try:
            claims = jwt.decode(str(form.get("assertion")), self.public_key, algorithms=["RS256"],
                                audience=self.credentials["token_uri"])  # fmt: skip
        except jwt.PyJWTError as exc:
            return web.json_response({"error": "invalid_grant", "detail": str(exc)}, status=400)
        if claims.get("iss") != self.credentials["client_email"] or claims.get("scope") != SCOPE:
            return web.json_response({"error": "invalid_scope"}, status=400)
        token = "ya29." + secrets.token_urlsafe(24)
        self.tokens.add(token)
        return web.json_response({"access_token": token, "expires_in": 3599,
                                  "token_type": "Bearer"})  # fmt: skip

    async def _send(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            self.unauthorized += 1
            return _error(401, "UNAUTHENTICATED")
        if request.match_info["project"] != PROJECT:
            return _error(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH")
        body = orjson.loads(await request.read())
        message = body.get("message") or {}
        token = message.get("token", "")
        n = self.attempts[token] = self.attempts.get(token, 0) + 1
        scripted = self.answer(token, n)
        if scripted is not None:
            return scripted
        self.messages.append(message)
        return web.json_response({"name": f"projects/{PROJECT}/messages/{time.time_ns()}"})

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/token", self._token)
        app.router.add_post("/v1/projects/{project}/messages:send", self._send)
