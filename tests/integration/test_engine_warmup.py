"""The engine's kernel warm-up (technic_stream.engine.warmup) against real batches."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import types

import orjson
import pytest

from technic_stream.config import Settings
from technic_stream.engine import service, warmup
from technic_stream.engine.service import engine_service
from technic_stream.engine.warmup import warm_engine
from tests.conftest import ROOT
from tests.integration.engine_helpers import market, running_engine, send_bars, wait_for


@pytest.mark.timeout(420)  # a fresh checkout compiles every kernel here: about a minute
def test_after_the_warm_up_real_batches_compile_no_kernel(settings: Settings) -> None:
    # a fresh interpreter: numba's specializations are per process, and this one has met
    # many in other tests
    live = settings.model_copy(update={"engine_warmup": False})  # (the child warms itself)
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.warmup_child", live.model_dump_json()],
        cwd=ROOT, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    got = orjson.loads(done.stdout.strip().splitlines()[-1])
    assert got["bars"] == 12 * 60 + 12  # 60 single bars a symbol, then one batch a symbol
    assert got["alerts"] > 0  # the alert paths ran
    assert got["unwarmed"] == {}, "kernels the warm-up left cold: " + ", ".join(got["unwarmed"])


def test_the_warm_up_fires_its_own_rules_and_counts_nothing(settings: Settings) -> None:
    bars = service.BARS.labels("1m", "applied")._value.get()
    evals = service.RULE_EVALS._value.get()
    report = warm_engine(settings)
    assert report.bars > 0 and report.alerts > 0 and report.signatures > 0
    # the process's metrics are the real batches' alone
    assert service.BARS.labels("1m", "applied")._value.get() == bars
    assert service.RULE_EVALS._value.get() == evals


async def test_a_failed_warm_up_is_logged_and_the_engine_runs_on(settings, monkeypatch, caplog):
    def broken(_settings: Settings) -> None:
        raise RuntimeError("a kernel that does not compile")

    monkeypatch.setattr(warmup, "warm_engine", broken)
    live = settings.model_copy(update={"engine_warmup": True})
    series = market(3, 30, seed=3)
    async with running_engine(live) as engine:
        n = await send_bars(live, series, 0, 30)
        await wait_for(lambda: engine.bars_applied >= n, "bars after a failed warm-up")
    failed = [r for r in caplog.records if "warm-up failed" in r.getMessage()]
    assert failed and "a kernel that does not compile" in str(failed[0].exc_info[1])


async def test_a_stop_during_the_warm_up_ends_the_engine_without_waiting_for_it(
    settings, monkeypatch
):
    release = threading.Event()  # (the slow warm-up's thread is let go at the end)
    monkeypatch.setattr(warmup, "warm_engine", lambda _s: release.wait(60))
    stop = asyncio.Event()
    ops = types.SimpleNamespace(checks={})
    task = asyncio.create_task(engine_service(settings, stop, ops))  # type: ignore[arg-type]
    try:
        await asyncio.sleep(0.3)
        assert not task.done()
        with pytest.raises(RuntimeError, match="compiling the engine's kernels"):
            await ops.checks["engine"]()  # readiness says why it is not ready
        stop.set()
        await asyncio.wait_for(task, 5)  # not the warm-up's 60 s
    finally:
        release.set()


@pytest.mark.timeout(420)
def test_the_warm_command_warms_the_engine_and_the_batch_kernels(tmp_path) -> None:
    # (numba's own cache, as the suite uses it: a fresh directory would compile it all)
    done = subprocess.run([sys.executable, "-m", "technic_stream", "warm"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=400)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "engine kernels warm in" in done.stdout and "alerts" in done.stdout
    assert re.search(r"batch kernels of \d+ indicators", done.stdout), done.stdout
