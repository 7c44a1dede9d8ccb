"""A local APNs endpoint speaking HTTP/2 (cleartext, prior knowledge — the client's
production path is the same over TLS): checks each request's provider token (ES256 JWT,
``kid`` and ``iss``) against the team's key, its ``apns-topic`` and push type, and answers
per device token as scripted with Apple's documented reasons."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from technic_stream.local import free_port

KEY_ID, TEAM_ID, TOPIC = "ABC123DEFG", "TEAM123456", "com.example.technic"

Answer = tuple[int, str | None]  # status, reason (None: 200)


class ApnsServer:
    def __init__(self, answer: Callable[[str, int], Answer | None] = lambda t, n: None) -> None:
        self.port = free_port()
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.key_pem = self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()  # fmt: skip
        self.answer = answer
        self.accepted: list[tuple[str, dict[str, Any], dict[str, str]]] = []  # token, body, hdrs
        self.attempts: dict[str, int] = {}
        self.refused_auth = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _check(self, headers: dict[str, str]) -> str | None:
        """None when the request may be served, else APNs's reason for refusing it."""
        auth = headers.get("authorization", "")
        if not auth.startswith("bearer "):
            return "MissingProviderToken"
        try:
            head = jwt.get_unverified_header(auth[7:])
            claims = jwt.decode(auth[7:], self._key.public_key(), algorithms=["ES256"])
        except jwt.PyJWTError:
            return "InvalidProviderToken"
        if head.get("kid") != KEY_ID or claims.get("iss") != TEAM_ID:
            return "InvalidProviderToken"
        if headers.get("apns-topic") != TOPIC:
            return "TopicDisallowed"
        if headers.get("apns-push-type") != "alert":
            return "InvalidPushType"
        return None

    def _respond(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        refused = self._check(headers)
        if refused is not None:
            self.refused_auth += 1
            return 403, orjson.dumps({"reason": refused})
        token = headers[":path"].rsplit("/", 1)[-1]
        n = self.attempts[token] = self.attempts.get(token, 0) + 1
        scripted = self.answer(token, n)
        if scripted is not None:
            return scripted[0], orjson.dumps({"reason": scripted[1]})
        self.accepted.append((token, orjson.loads(body), headers))
        return 200, b""

    async def start(self) -> None:
        server = self

        class Proto(asyncio.Protocol):
            def connection_made(self, transport: Any) -> None:
                self.t = transport
                self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
                self.conn.initiate_connection()
                self.t.write(self.conn.data_to_send())
                self.streams: dict[int, tuple[dict[str, str], bytearray]] = {}

            def data_received(self, data: bytes) -> None:
                for ev in self.conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        hdrs = {k.decode(): v.decode() for k, v in ev.headers}
                        self.streams[ev.stream_id] = (hdrs, bytearray())
                    elif isinstance(ev, h2.events.DataReceived):
                        self.streams[ev.stream_id][1].extend(ev.data)
                        self.conn.acknowledge_received_data(ev.flow_controlled_length,
                                                            ev.stream_id)  # fmt: skip
                    elif isinstance(ev, h2.events.StreamEnded):
                        hdrs, body = self.streams.pop(ev.stream_id)
                        status, out = server._respond(hdrs, bytes(body))
                        self.conn.send_headers(
                            ev.stream_id,
                            [(":status", str(status)), ("apns-id", hdrs.get("apns-id", ""))],
                            end_stream=not out,
                        )  # fmt: skip
                        if out:
                            self.conn.send_data(ev.stream_id, out, end_stream=True)
                self.t.write(self.conn.data_to_send())

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(Proto, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def __aenter__(self) -> ApnsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
