import math

import numpy as np
import talib

from technic_stream.indicators import Indicator


def test_update_reset_initialized_count_and_repr(sample):
    d = sample["AAPL"]
    macd = Indicator("macd(12, 26, 9)")
    assert repr(macd) == "MACD(12, 26, 9): count=0, not ready"
    ref = talib.MACD(d.close[:60], 12, 26, 9)
    for i in range(60):
        macd.update(d.open[i], d.high[i], d.low[i], d.close[i], d.volume[i])
        assert macd.count == i + 1
        assert macd.initialized == (i >= 33)
        if i >= 33:
            assert math.isclose(macd.values["macd_12_26_9.signal"], ref[1][i], abs_tol=1e-9)
        else:
            assert math.isnan(macd.value)
    assert repr(macd).startswith("MACD(12, 26, 9): count=60, macd=")
    macd.reset()
    assert macd.count == 0 and not macd.initialized


def test_explicit_timestamps_correct_and_skip():
    ema = Indicator("ema", 3)
    for i, x in enumerate([10.0, 11.0, 12.0, 13.0]):
        ema.update(x, x, x, x, 1.0, ts=i)
    before = ema.value
    ema.update(20.0, 20.0, 20.0, 20.0, 1.0, ts=3)  # corrected last bar
    assert ema.last_status == "corrected" and ema.count == 4
    expected = talib.EMA(np.array([10.0, 11.0, 12.0, 20.0]), 3)[-1]
    assert ema.value == expected != before
    ema.update(1.0, 1.0, 1.0, 1.0, 1.0, ts=1)  # older than the last bar
    assert ema.last_status == "skipped" and ema.value == expected
