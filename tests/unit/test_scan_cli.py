"""The scan command's progress line."""

from __future__ import annotations

from technic_stream.messages import ScanProgress
from technic_stream.scan.cli import _bar


def progress(**kw) -> ScanProgress:
    base = {"scan_id": "s1", "owner": "alice", "done": 0, "total": 0, "percent": 0.0,
            "rate": 0.0, "ts": 1}  # fmt: skip
    return ScanProgress(**{**base, **kw})


def test_a_waiting_scan_shows_its_queue_position():
    assert _bar(progress(stage="queued", queue_position=3)).split() == [
        "queued", "position", "3", "(other", "scans", "run", "first)",
    ]  # fmt: skip


def test_a_running_scan_shows_bar_counts_rate_eta_matches_and_symbol():
    line = _bar(progress(stage="compute", done=250, total=1000, percent=25.0, rate=500.0,
                         eta_ms=1500, matches=7, current_symbol="MSFT"))  # fmt: skip
    assert line.startswith("compute") and "[" + "#" * 7 + "." * 23 + "]" in line
    assert "25.0% 250/1000 500 sym/s ETA 1.5s matches 7 MSFT" in line
