"""Redis and the MongoDB-protocol server die under load and come back: the services ride
it out (readiness red, then green; nothing acknowledged lost, nothing duplicated).

Each test runs its own server of the kind it kills (the session's servers serve the other
tests), with persistence on, as a production server would have: Redis with an
append-only file synced on every write, nx-27017 on its SQLite files.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import sys
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from technic_stream.config import Settings
from technic_stream.engine.service import EngineService
from technic_stream.kafka import Producer
from technic_stream.local import free_port
from technic_stream.local.process import ServerProcess
from technic_stream.local.servers import find_redis_server, mongo_answers, redis_answers
from technic_stream.local.service import ServiceChild
from technic_stream.redis import redis_client
from technic_stream.storage import mongo_client
from technic_stream.storage.bars import BarArchive
from tests.integration.engine_helpers import decoded_hash, expected_values, market, send_bars
from tests.integration.gateway_helpers import new_key
from tests.integration.helpers import eventually, service_children, until_ready

pytestmark = pytest.mark.timeout(240)


def _redis(port: int, workdir: Path) -> ServerProcess:
    argv = [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes", "--appendfsync", "always", "--dir", str(workdir),
            "--daemonize", "no"]  # fmt: skip
    return ServerProcess("redis", argv, log_path=workdir / "redis.log",
                         probe=lambda: redis_answers("127.0.0.1", port), cwd=workdir)  # fmt: skip


def _mongo(port: int, workdir: Path) -> ServerProcess:
    code = "import sys; from nx_27017.nx_27017 import main; sys.exit(main())"
    data = workdir / "mongo-data"
    data.mkdir(exist_ok=True)
    argv = [sys.executable, "-c", code, "--data-dir", str(data), "--host", "127.0.0.1",
            "--port", str(port), "--log-file", str(workdir / "nx.log")]  # fmt: skip
    url = f"mongodb://127.0.0.1:{port}/"
    return ServerProcess("mongo", argv, log_path=workdir / "nx.out",
                         probe=lambda: mongo_answers(url), cwd=workdir)  # fmt: skip


def _kill(server: ServerProcess) -> None:
    """kill -9, no goodbye."""
    assert server.pid is not None
    os.kill(server.pid, signal.SIGKILL)
    server.stop()


async def _not_ready(child: ServiceChild) -> bool:
    return not await child.ready()


async def _sending(settings: Settings, series, steps: int, per_slice: int, pause: float) -> int:
    """The bars in time slices with pauses between (a steady load); how many."""
    sent = 0
    for lo in range(0, steps, per_slice):
        sent += await send_bars(settings, series, lo, min(steps, lo + per_slice))
        await asyncio.sleep(pause)
    return sent


async def test_redis_killed_under_load_and_back(settings, tmp_path):
    port = free_port()
    server = _redis(port, tmp_path)
    await asyncio.to_thread(server.start)
    s = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})
    gw_port = free_port()
    series = market(40, 160, seed=11)
    try:
        async with service_children(s, tmp_path, "engine", "scanner", "gateway",
                             TECHNIC_GATEWAY_PORT=str(gw_port)) as kids:  # fmt: skip
            key = await new_key(s, "faults")
            load = asyncio.create_task(_sending(s, series, 160, 8, 0.25))
            await eventually(kids["engine"].consumed, lambda n: n > 400, "the engine busy")
            _kill(server)
            for name in ("engine", "gateway"):  # readiness goes red
                await eventually(lambda n=name: _not_ready(kids[n]), bool, f"{name} not ready")
            # REST while Redis is away: 503 with Retry-After, not a 500
            async with (
                aiohttp.ClientSession(f"http://127.0.0.1:{gw_port}") as http,
                http.get("/v1/indicators/1m/S1", headers={"X-API-Key": key}) as r,
            ):
                assert r.status == 503 and r.headers["Retry-After"] == "1", await r.text()
            await asyncio.sleep(1.5)  # bars keep coming while Redis is away
            await asyncio.to_thread(server.start)  # the same port and append-only file
            for child in kids.values():  # ... and green again, no process lost
                await until_ready(child, 60)
            sent = await load
            assert sent == 40 * 160
            # nothing acknowledged lost: every symbol's values are those of all its bars
            redis = redis_client(s)
            try:
                last = int(series["S0"][0][-1])

                async def latest() -> list[bytes | None]:
                    keys = [f"{s.redis_prefix}ind:1m:{sym}" for sym in series]
                    return [await redis.hget(k, "ts") for k in keys]

                def applied(ts: list[bytes | None]) -> bool:
                    return all(t is not None and int(float(t)) == last for t in ts)

                await eventually(latest, applied, "every bar applied", 60)
                for sym, bars in series.items():
                    got = decoded_hash(await redis.hgetall(f"{s.redis_prefix}ind:1m:{sym}"))
                    for name, want in expected_values(bars).items():
                        assert (math.isnan(want) and math.isnan(got[name])) or math.isclose(
                            got[name], want, rel_tol=1e-9, abs_tol=1e-9
                        ), (sym, name, got[name], want)
            finally:
                await redis.aclose()
            # the engine rode it out in place (no restart), and said so in its metrics
            assert kids["engine"].proc is not None and kids["engine"].proc.returncode is None
            assert await kids["engine"].metric("technic_write_retries_total") > 0
            # the gateway and the scanner work again: a scan through the REST API completes
            async with aiohttp.ClientSession(f"http://127.0.0.1:{gw_port}") as http:
                hdr = {"X-API-Key": key}
                body = {"scan_id": "after-redis", "rule": "close > 0", "symbols": ["S1", "S2"],
                        "tf": "1m", "mode": "snapshot"}  # fmt: skip
                async with http.post("/v1/scans", json=body, headers=hdr) as r:
                    assert r.status == 202, await r.text()

                async def scan_status() -> str:
                    async with http.get("/v1/scans/after-redis", headers=hdr) as r:
                        return (await r.json())["status"]

                await eventually(scan_status, lambda st: st == "done", "the scan done", 60)
    finally:
        server.stop()


async def test_the_engine_waits_for_redis_where_a_batch_reads_the_wanted_channels(
    settings, tmp_path
):
    """With batches in flight, a batch's computation can reach the interest read while
    Redis is away (CI saw the engine crash on it): the read waits, readiness is red, and
    it answers once Redis is back."""
    port = free_port()
    server = _redis(port, tmp_path)
    await asyncio.to_thread(server.start)
    s = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0",
                                    "channel_publish": "subscribed"})  # fmt: skip
    redis = redis_client(s)
    try:
        async with Producer(s) as producer:
            engine = EngineService(s, producer, redis)
            _kill(server)
            read = asyncio.create_task(engine._refresh_interest())
            await asyncio.sleep(1.0)
            assert not read.done()  # waiting, not crashed
            with pytest.raises(RuntimeError, match="Redis writes failing"):
                await engine.redis_ready()
            await asyncio.to_thread(server.start)
            await asyncio.wait_for(read, 30)
            assert engine._wanted == set()
            await engine.redis_ready()
    finally:
        await redis.aclose()
        server.stop()


async def test_mongo_killed_under_load_and_back(settings, tmp_path):
    port = free_port()
    server = _mongo(port, tmp_path)
    await asyncio.to_thread(server.start)
    s = settings.model_copy(update={"mongo_url": f"mongodb://127.0.0.1:{port}/"})
    series = market(30, 120, seed=12)
    try:
        async with service_children(s, tmp_path, "archiver") as kids:
            archiver = kids["archiver"]
            load = asyncio.create_task(_sending(s, series, 120, 6, 0.25))
            await eventually(archiver.consumed, lambda n: n > 300, "the archiver busy")
            _kill(server)
            await eventually(lambda: _not_ready(archiver), bool, "archiver not ready")
            await asyncio.sleep(1.5)
            await asyncio.to_thread(server.start)  # the same files
            await until_ready(archiver, 60)
            assert await load == 30 * 120
            mongo = mongo_client(s)
            try:
                archive = BarArchive(mongo[s.mongo_db])

                async def stored() -> int:
                    got = await archive.read_many(list(series), "1m")
                    return sum(len(b["ts"]) for b in got.values())

                # no loss and no duplicates: exactly the bars sent, each once, in order
                await eventually(stored, lambda n: n >= 30 * 120, "every bar archived", 60)
                got = await archive.read_many(list(series), "1m")
                for sym, bars in series.items():
                    assert got[sym]["ts"].tolist() == bars[0].tolist(), sym
                    assert np.array_equal(got[sym]["close"], bars[4]), sym
            finally:
                await mongo.close()
            assert archiver.proc is not None and archiver.proc.returncode is None
            assert await archiver.metric("technic_write_retries_total") > 0
    finally:
        server.stop()
