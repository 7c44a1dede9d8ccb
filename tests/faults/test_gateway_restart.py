"""A gateway killed -9 and started again: clients reconnect and recover their channels
from the offsets they saw, missing nothing published while it was down."""

from __future__ import annotations

import contextlib
import signal

import aiohttp
import orjson
import pytest

from technic_stream.local import free_port
from technic_stream.local.service import ServiceChild
from tests.integration.gateway_helpers import channel_publisher, new_key, ws_client
from tests.integration.helpers import until_ready

pytestmark = pytest.mark.timeout(120)


async def test_clients_recover_their_channels_after_a_gateway_restart(settings, tmp_path):
    port = free_port()
    env = {"TECHNIC_GATEWAY_PORT": str(port), "TECHNIC_GATEWAY_JWT_SECRET": "f" * 40}
    key = await new_key(settings, "carol")
    channel = "alerts.carol"

    async def gateway() -> ServiceChild:
        child = ServiceChild(settings, "gateway", tmp_path / "gateway.log", **env)
        await child.start()
        await until_ready(child)
        return child

    def msg(i: int) -> tuple[str, bytes, None]:
        return channel, orjson.dumps({"type": "note", "n": i}), None

    gw = await gateway()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http, \
                channel_publisher(settings) as pub:  # fmt: skip
            async with http.post("/v1/auth/token", json={"api_key": key}) as r:
                token = (await r.json())["token"]
            async with ws_client(http, "/v1/ws", token) as c:
                assert (await c.subscribe(channel))["type"] == "subscribed"
                await pub.publish_many([msg(i) for i in range(5)])
                seen = [await c.until(lambda m: m["type"] == "pub") for _ in range(5)]
                assert [m["data"]["n"] for m in seen] == list(range(5))
                last = seen[-1]
                gw.signal(signal.SIGKILL)
                await gw.wait()
                with contextlib.suppress(ConnectionError, TimeoutError):
                    await c.recv(within=5)  # the socket drops
            await pub.publish_many([msg(i) for i in range(5, 10)])  # while it is down
            gw = await gateway()
            async with ws_client(http, "/v1/ws", token) as c:  # the same token still holds
                since = {"offset": last["offset"], "epoch": last["epoch"]}
                again = await c.subscribe(channel, since=since)
                assert again["type"] == "subscribed" and again["recovered"] is True
                assert again["epoch"] == last["epoch"]
                missed = [await c.until(lambda m: m["type"] == "pub") for _ in range(5)]
                assert [m["data"]["n"] for m in missed] == list(range(5, 10))
                assert [m["offset"] for m in missed] == list(
                    range(last["offset"] + 1, last["offset"] + 6)
                )
                await pub.publish_many([msg(10)])  # and live again
                live = await c.until(lambda m: m["type"] == "pub")
                assert live["data"]["n"] == 10
    finally:
        if gw.proc is not None and gw.proc.returncode is None:
            gw.signal(signal.SIGTERM)
            await gw.wait()
