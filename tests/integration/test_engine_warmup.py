"""The engine's kernel warm-up (technic_stream.engine.warmup) against real batches."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from technic_stream.config import Settings
from technic_stream.engine import service
from technic_stream.engine.warmup import warm_engine
from tests.conftest import ROOT


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
