"""Where live rules hold over a batch: every (bar, rule) pair the modes let through, in
arrival order then rule id — the numba pass against the numpy form it replaced."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from technic_stream.engine.rules import LiveRules, hits
from technic_stream.kernels import APPLIED, CORRECTED, SKIPPED
from technic_stream.messages import AlertRule

_EXPRS = ["close > open", "volume > 100 and close < 5", "close[1] > close", "high - low > 2"]
_MODES = ["once_per_bar_close", "every_time", "once_per_bar", "once"]


def _reference(compiled, values, status):
    hit = compiled.ruleset.evaluate_latest(values).matches()
    printed = status != SKIPPED
    hit &= np.where(compiled.on_close[:, None], (status == APPLIED)[None, :], printed[None, :])
    order = compiled.by_id
    bars, ks = np.nonzero(hit[order].T)
    return bars, order[ks]


@given(
    rules=st.lists(st.tuples(st.sampled_from(_EXPRS), st.sampled_from(_MODES)), min_size=1,
                   max_size=6),
    ids=st.permutations(range(6)),
    n=st.integers(0, 60),
    seed=st.integers(0, 2**32 - 1),
)  # fmt: skip
def test_hits_are_the_pairs_the_modes_let_through(rules, ids, n, seed):
    live = LiveRules()
    for (expr, mode), i in zip(rules, ids, strict=False):
        live.upsert(AlertRule(rule_id=f"r{i}", owner="o", expr=expr, tf="1m", mode=mode, ts=1))
    compiled = live.for_tf("1m", now_ms=2)
    rng = np.random.default_rng(seed)
    values = rng.choice([np.nan, 0.0, 1.0, 3.0, 200.0], size=(len(compiled.columns), n))
    status = rng.choice(np.array([APPLIED, CORRECTED, SKIPPED], dtype=np.int8), size=n)
    got, want = hits(compiled, values, status), _reference(compiled, values, status)
    assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()
