"""The ops port's readiness: not ready until the service has said what ready means."""

from __future__ import annotations

import aiohttp

from technic_stream.app.ops import OpsServer


async def test_readyz_is_not_ready_before_any_check_is_registered_then_follows_them():
    async with OpsServer("127.0.0.1", 0) as ops, aiohttp.ClientSession() as http:
        async with http.get(f"{ops.url}/readyz") as r:
            assert r.status == 503
            assert (await r.json())["checks"] == {"starting": "no checks registered yet"}

        state = {"up": False}

        async def consumer() -> None:
            if not state["up"]:
                raise RuntimeError("no partitions assigned (yet)")

        ops.checks["consumer"] = consumer
        async with http.get(f"{ops.url}/readyz") as r:
            assert r.status == 503
            assert (await r.json())["checks"] == {
                "consumer": "RuntimeError: no partitions assigned (yet)"
            }
        state["up"] = True
        async with http.get(f"{ops.url}/readyz") as r:
            assert r.status == 200 and (await r.json())["status"] == "ready"
        async with http.get(f"{ops.url}/healthz") as r:
            assert r.status == 200  # alive all along
