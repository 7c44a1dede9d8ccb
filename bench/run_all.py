"""Every benchmark in one go (≤ 15 minutes here), then the report: a block of
``bench/RESULTS.md`` and of ``README.md`` (between ``run_all`` markers) with the headline
table, each benchmark's own tables, and PNG plots in ``bench/results/``.

    bench/run_all            # (= .venv/bin/python bench/run_all.py; make bench)
    bench/run_all --only engine,gateway   # some of them (the report keeps the others' last)

Sizes are smaller than each benchmark's defaults so the whole run fits its budget; every
figure is still measured against its named peer in the same run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
_times = RESULTS / "seconds.json"
PY = sys.executable

#: name → (argv after the interpreter, timeout s)
STEPS: dict[str, tuple[list[str], int]] = {
    "kernels": (["bench/kernels.py", "--repeats", "3"], 300),
    "rules": (["bench/rules.py", "--repeats", "20"], 300),
    "ingest": (["bench/ingest.py", "--repeats", "2"], 300),
    "engine": (["bench/engine.py", "--steps", "1000", "--repeats", "2", "--latency-s", "8",
                "--json", "bench/results/engine.json"], 1200),
    **{f"engine-latency-{r}": (["bench/engine.py", "--skip-throughput", "--no-peer", "--rate",
                                str(r), "--latency-s", "8", "--json",
                                f"bench/results/engine-latency-{r}.json"], 300)
       for r in (2_500, 5_000, 20_000)},
    "gateway": (["bench/gateway.py", "--step-s", "3", "--json", "bench/results/gateway.json"],
                600),
    "scaleout": (["bench/scaleout.py", "--steps", "500"], 600),
    "scan": (["bench/scan.py", "--runs", "2", "--no-workers2"], 600),
    "notifier": (["bench/notifier.py"], 300),
    "loadtest": (["loadtest/run.py", "--seconds", "20", "--mix", "read", "--task-rate", "12",
                  "--scans", "100", "--out", "bench/results/loadtest-read"], 300),
    # (offers ~1,100 requests/s: the target's 1,000 and some; 30 s, so the users' log-in
    # at the start is a small part of the window)
    "loadtest-mixed": (["loadtest/run.py", "--seconds", "30", "--task-rate", "10", "--scans",
                        "0", "--out", "bench/results/loadtest-mixed"], 300),
}  # fmt: skip


#: a fixed pure-Python loop, timed in a fresh interpreter (the best of three)
_PROBE = (
    "import time\n"
    "best = 1e9\n"
    "for _ in range(3):\n"
    "    t = time.perf_counter(); s = 0\n"
    "    for i in range(3_000_000): s += i * i\n"
    "    best = min(best, time.perf_counter() - t)\n"
    "print(round(best * 1000))"
)


def speed_probe() -> int:
    """Milliseconds the same loop takes: the shared VMs these figures come from ran it
    in 200-750 ms (the machine of the day, and how busy its host was), and every figure
    of the run moves with it — so the report says how fast the machine was while it ran."""
    done = subprocess.run([PY, "-c", _PROBE], capture_output=True, text=True, timeout=60)
    return int(done.stdout.strip() or 0)


def run_step(name: str, argv: list[str], timeout: int) -> dict[str, Any]:
    started = time.monotonic()
    print(f"== {name}: {' '.join(argv)}", file=sys.stderr, flush=True)
    try:
        done = subprocess.run([PY, *argv], cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
        out, code = done.stdout, done.returncode
        err = done.stderr[-3_000:]
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        code, err = -1, f"timed out after {timeout} s"
    seconds = time.monotonic() - started
    print(f"   {name}: exit {code} in {seconds:.0f} s", file=sys.stderr, flush=True)
    return {"name": name, "code": code, "seconds": seconds, "stdout": out, "stderr": err}


# -- plots ---------------------------------------------------------------------------------


def plots() -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    engine = _load("engine.json")
    if engine and engine.get("throughput"):
        names = {"ours bars": "ours, JSON", "ours batch": "ours, BarBatch",
                 "quix": "Quix Streams\n+ talipp"}  # fmt: skip
        keys = [k for k in names if k in engine["throughput"]]
        vals = [_median([r["bars_s"] for r in engine["throughput"][k]]) for k in keys]
        fig, ax = plt.subplots(figsize=(6, 3.2))
        bars = ax.bar([names[k] for k in keys], vals, color=["#2962ff", "#00897b", "#9e9e9e"])
        ax.bar_label(bars, labels=[f"{v:,.0f}" for v in vals])
        ax.set_ylabel("bars/s (one process)")
        ax.set_title("Engine throughput, default indicators + 10 live rules")
        _save(fig, "engine_throughput.png", made)
    lat = {r: _load(f"engine-latency-{r}.json") for r in (2_500, 5_000, 20_000)}
    if engine:
        lat[int(engine["rate"])] = engine
    lat = {r: d for r, d in sorted(lat.items()) if d}
    if lat:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        for who, color in (
            ("ours", "#2962ff"),
            ("floor: raw aiokafka pass-through", "#9e9e9e"),
            ("broker: one hop, bars read as sent", "#ff9800"),
        ):
            pts = [(r, d["latency"][who]["p99"], d["latency"][who]["p50"])
                   for r, d in lat.items() if who in d["latency"]]  # fmt: skip
            if pts:
                label = {"ours": "ours", "floor: raw aiokafka pass-through": "pass-through floor"
                         }.get(who, "broker, one hop")  # fmt: skip
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color,
                        label=f"{label} p99")  # fmt: skip
                ax.plot([p[0] for p in pts], [p[2] for p in pts], "o--", color=color,
                        alpha=0.6, label=f"{label} p50")  # fmt: skip
        ax.set_xlabel("offered bars/s")
        ax.xaxis.set_major_formatter(_thousands())
        ax.set_ylabel("bar → alert ms")
        ax.set_yscale("log")
        ax.set_title("Engine latency vs load (8 s at each rate)")
        ax.legend(fontsize=8)
        _save(fig, "engine_latency.png", made)
    gw = _load("gateway.json")
    if gw:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
        for r, color in zip(gw, ("#2962ff", "#9e9e9e"), strict=False):
            xs = [st["rate"] for st in r["steps"]]
            a1.plot(xs, [st["delivered_per_s"] for st in r["steps"]], "o-", color=color,
                    label=r["name"])  # fmt: skip
            a2.plot(xs, [st["p99"] for st in r["steps"]], "o-", color=color, label=r["name"])
        a1.plot(xs, xs, ":", color="#bbb", label="offered")
        a1.set_xlabel("offered deliveries/s")
        a1.set_ylabel("received on time /s")
        a2.set_xlabel("offered deliveries/s")
        a2.set_ylabel("p99 ms")
        a2.set_yscale("log")
        a1.legend(fontsize=7)
        for a in (a1, a2):
            a.xaxis.set_major_formatter(_thousands())
        a1.yaxis.set_major_formatter(_thousands())
        fig.suptitle("Gateway fan-out (1,000 WebSocket clients)")
        _save(fig, "gateway.png", made)
    so = _load("scaleout.json")
    if so:
        steady = [r for r in so if not r["stopped_one_halfway"]]
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot([r["processes"] for r in steady], [r["bars_s"] for r in steady], "o-",
                color="#2962ff", label="measured")  # fmt: skip
        one = steady[0]["bars_s"]
        ax.plot([r["processes"] for r in steady], [one * r["processes"] for r in steady], ":",
                color="#bbb", label="linear")  # fmt: skip
        ax.set_xticks([r["processes"] for r in steady])
        ax.set_xlabel("engine processes (2 cores)")
        ax.set_ylabel("bars/s")
        ax.set_title("Engine scale-out (results exact in every run)")
        ax.legend(fontsize=8)
        _save(fig, "scaleout.png", made)
    return made


def _thousands() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda x, _: f"{x / 1000:g}k" if x >= 1000 else f"{x:g}")


def _save(fig: Any, name: str, made: list[str]) -> None:
    fig.tight_layout()
    fig.savefig(RESULTS / name, dpi=110)
    made.append(name)


def _load(name: str) -> Any:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


# -- headline -----------------------------------------------------------------------------


def headline(outputs: dict[str, str]) -> list[tuple[str, str, str]]:
    """(figure, value, target) rows from the runs' JSON and tables."""
    rows: list[tuple[str, str, str]] = []
    engine = _load("engine.json")
    if engine and engine.get("throughput"):
        t = engine["throughput"]
        ours = _median([r["bars_s"] for r in t.get("ours bars", [])] or [0])
        batch = _median([r["bars_s"] for r in t.get("ours batch", [])] or [0])
        quix = _median([r["bars_s"] for r in t.get("quix", [])] or [0])
        rows.append(("engine, JSON bars/s (one process)", f"{ours:,.0f}", "≥ 150,000"))
        rows.append(("engine, BarBatch bars/s", f"{batch:,.0f}", "≥ 500,000"))
        if quix:
            rows.append(("engine vs Quix Streams + talipp", f"{ours / quix:.1f}x", "≥ 5x"))
        lat = engine["latency"]
        if "ours" in lat:
            floor = lat.get("floor: raw aiokafka pass-through", {})
            hop = lat.get("broker: one hop, bars read as sent", {})
            rows.append((f"engine p99 bar→alert at {engine['rate']:,.0f} bars/s",
                         f"{lat['ours']['p99']:.0f} ms (pass-through floor "
                         f"{floor.get('p99', float('nan')):.0f} ms, the broker's one hop "
                         f"{hop.get('p99', float('nan')):.0f} ms)", "< 20 ms"))  # fmt: skip
    gw = _load("gateway.json")
    gw = [r for r in gw or [] if "x" not in r["name"].split()[-1]]  # (not the multi-gateway row)
    if len(gw) == 2:
        top = [max(st["delivered_per_s"] for st in r["steps"]) for r in gw]
        rows.append(("gateway deliveries/s (ours vs python-socketio)",
                     f"{top[0]:,.0f} vs {top[1]:,.0f} ({top[0] / top[1]:.1f}x)", "—"))  # fmt: skip
    so = _load("scaleout.json")
    if so:
        steady = {r["processes"]: r["bars_s"] for r in so if not r["stopped_one_halfway"]}
        exact = all(r["values_exact"] and r["alerts_exact"] for r in so)
        rows.append(("engine scale-out 1 → 2 → 3 processes",
                     " → ".join(f"{v:,.0f}" for v in steady.values())
                     + f" bars/s; exact: {'yes' if exact else 'NO'}", "—"))  # fmt: skip
    scan = outputs.get("scan", "")
    scan_rows = (
        ("scan, history cold (5,000 x 252)", r"history, cold \(MongoDB\) \| ([^|]+)", "≤ 10 s"),
        ("scan, history warm", r"history, warm \(Redis cache\) \| ([^|]+)", "≤ 1 s"),
        ("scan, snapshot of 10,000", r"snapshot, 10,000 symbols \| ([^|]+)", "≤ 100 ms"),
    )
    for label, pat, target in scan_rows:
        if m := re.search(pat, scan):
            rows.append((label, m.group(1).strip(), target))
    if m := re.search(r"technic-stream notifier[^|]*\| [^|]+\| ([\d.]+) \| ([\d.]+) \|",
                      outputs.get("notifier", "")):  # fmt: skip
        rows.append(("notifier p99 at 1,000 alerts/s", f"{float(m.group(2)):.0f} ms", "< 100 ms"))
    lt = _load("loadtest-read/summary.json")
    if lt:
        rows.append(("gateway REST, read path (one process)",
                     f"{lt['rest_rps']:,.0f} req/s, worst p99 {lt['worst_p99_ms']:.0f} ms",
                     "≥ 1,000 req/s, p99 < 100 ms"))  # fmt: skip
        b = lt["burst"]
        rows.append(("concurrent scans", f"{b['done']:.0f}/{b['submitted']:.0f} done in "
                     f"{b['seconds']:.1f} s", "100"))  # fmt: skip
    lm = _load("loadtest-mixed/summary.json")
    if lm:
        rows.append(
            (
                "gateway REST, mixed (rules CRUD, scans; one process)",
                f"{lm['rest_rps']:,.0f} req/s, worst p99 {lm['worst_p99_ms']:.0f} ms",
                "≥ 1,000 req/s, p99 < 100 ms",
            )
        )
    return rows


def replace_block(path: Path, marker: str, body: str) -> None:
    text = path.read_text()
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text,
                      flags=re.S)  # fmt: skip
    else:
        lines = text.split("\n\n", 2)  # after the title and the first paragraph
        text = "\n\n".join([*lines[:2], block, *lines[2:]])
    path.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated step names")
    ap.add_argument("--report-only", action="store_true", help="rewrite the report, run nothing")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    wanted = [] if args.report_only else args.only.split(",") if args.only else list(STEPS)
    saved = RESULTS / "outputs.json"
    outputs: dict[str, str] = json.loads(saved.read_text()) if saved.exists() else {}
    failed = []
    ran: dict[str, float] = {}
    probes = [speed_probe()]
    started = time.monotonic()
    for name in wanted:
        argv, timeout = STEPS[name]
        r = run_step(name, argv, timeout)
        ran[name] = r["seconds"]
        outputs[name] = r["stdout"]
        if r["code"] != 0:
            failed.append(name)
            outputs[name] += f"\n(exit {r['code']}: {r['stderr'][-500:]})\n"
    saved.write_text(json.dumps(outputs, indent=1))
    total = time.monotonic() - started
    probes.append(speed_probe())
    made = plots()
    today = datetime.date.today().isoformat()
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    rows = headline(outputs)
    table = ["| figure | value | target |", "|---|---|---|",
             *[f"| {a} | {b} | {c} |" for a, b, c in rows]]  # fmt: skip
    if wanted:
        timings = json.loads(_times.read_text()) if _times.exists() else {}
        timings.update({n: s for n, s in ran.items()})
        _times.write_text(json.dumps(timings))
    timings = json.loads(_times.read_text()) if _times.exists() else {}
    whole = sum(timings.values()) / 60
    part = (f" (the last update ran {len(wanted)} of them, {total / 60:.1f} minutes)"
            if 0 < len(wanted) < len(STEPS) else "")  # fmt: skip
    speed = (f" Machine speed probe (a fixed Python loop, lower is faster; 200-750 ms seen on "
             f"the VMs of these figures): "
             f"{probes[0]} ms before, {probes[-1]} ms after." if wanted else "")  # fmt: skip
    head = (f"**Latest `bench/run_all`** — {today}, {machine}; all {len(STEPS)} benchmarks take "
            f"{whole:.1f} minutes{part}.{speed} Reproduce: `make bench` (or `bench/run_all`)."
            "\n\n" + "\n".join(table))  # fmt: skip
    pics = "\n".join(f"![{p}](bench/results/{p})" for p in made)
    replace_block(ROOT / "README.md", "bench", head + "\n\n" + pics)
    body = [head, "", "\n".join(f"![{p}](results/{p})" for p in made), ""]
    for name in STEPS:
        if name in outputs:
            body += [f"### `{name}`", "", outputs[name].strip() or "(no output)", ""]
    replace_block(ROOT / "bench" / "RESULTS.md", "run_all", "\n".join(body))
    print(head)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
