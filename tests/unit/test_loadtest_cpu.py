"""The load test's CPU accounting of process trees (real child processes, Linux /proc)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from loadtest.cpu import CpuWindow, descendants

# a parent that only waits on a child that burns CPU until stdin closes
_BURN = "import sys\nwhile True:\n    sum(range(10_000))\n"
_PARENT = (
    "import subprocess, sys\n"
    f"child = subprocess.Popen([sys.executable, '-c', {_BURN!r}])\n"
    "sys.stdin.read()\n"
    "child.kill()\n"
)


def test_a_tree_is_charged_its_childrens_cpu_under_its_name_or_theirs():
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdin=subprocess.PIPE)
    idle = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not descendants(parent.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(descendants(parent.pid)) == 1
        whole = CpuWindow({"parent": parent.pid, "idle": idle.pid})
        split = CpuWindow({"parent": parent.pid}, split=("parent",))
        whole.start()
        split.start()
        time.sleep(1.0)
        got, apart = whole.stop(), split.stop()
    finally:
        for p in (parent, idle):
            p.communicate(b"", timeout=10)
    # the burning child counts in its parent's group; the idle process takes ~nothing
    assert got["parent"] > 20 and got["idle"] < got["parent"] / 5, got
    # split: the child under its program's name, the parent alone under the group's
    name = Path(sys.executable).name
    assert set(apart) == {"parent", name} and apart[name] > 20 >= apart["parent"], apart


def test_without_proc_it_reports_nothing(monkeypatch, tmp_path):
    import loadtest.cpu as cpu

    monkeypatch.setattr(cpu, "_PROC", tmp_path / "no-proc")
    window = CpuWindow({"me": 1})
    window.start()
    assert window.stop() == {}
    assert cpu.cpu_seconds(1) is None and cpu.descendants(1) == [] and cpu.label(1) == "?"
