"""The ops port's readiness: not ready until the service has said what ready means."""

from __future__ import annotations

import aiohttp
from prometheus_client import Counter

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


async def test_metrics_can_be_asked_for_by_name():
    """``/metrics?name[]=…`` renders only those samples (the way prometheus_client's own
    handler filters); without it, the whole registry."""
    hits = Counter("technic_test_ops_hits", "Hits the ops test counts")
    hits.inc(3)
    async with OpsServer("127.0.0.1", 0) as ops, aiohttp.ClientSession() as http:
        async with http.get(f"{ops.url}/metrics") as r:
            everything = await r.text()
        query = "name[]=technic_test_ops_hits_total&name[]=process_cpu_seconds_total"
        async with http.get(f"{ops.url}/metrics?{query}") as r:
            assert r.status == 200
            some = await r.text()
    assert "technic_test_ops_hits_total 3.0" in everything and "python_info" in everything
    samples = [line.split(" ")[0] for line in some.splitlines() if not line.startswith("#")]
    assert "technic_test_ops_hits_total" in samples and "python_info" not in some
    assert set(samples) <= {"technic_test_ops_hits_total", "process_cpu_seconds_total"}
