"""``technic-stream rules check|eval``: see what a rule means and where it fires."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TextIO

import numpy as np

from technic_stream.indicators.cli import BarFileError, read_bars
from technic_stream.rules.compiler import MATCH, NOT_READY, RuleSet
from technic_stream.rules.parser import RuleError, parse_rule

__all__ = ["check_rule", "eval_rule", "format_rule_error"]


def format_rule_error(exc: RuleError) -> str:
    """``error at column 12: reason`` and the rule with a caret under column 12."""
    caret = "\n".join(f"  {line}" for line in exc.caret().splitlines())
    return f"rule error at column {exc.col}: {exc.reason}\n{caret}"


def check_rule(text: str, out: TextIO) -> None:
    """Print the canonical form, the rule id, the indicators and the history it needs."""
    rule = parse_rule(text)
    rules = RuleSet([rule])
    print(f"rule:       {rule}", file=out)
    print(f"id:         {rule.id}", file=out)
    needs = ", ".join(str(s).replace(", ", ",") for s in rules.specs) or "none (bar fields only)"
    print(f"indicators: {needs}", file=out)
    print(f"columns:    {', '.join(rules.columns) or 'none'}", file=out)
    print(
        f"history:    {rules.history} bar(s) before every input has a value "
        f"(reads up to {rules.max_lag} bar(s) back)",
        file=out,
    )


def eval_rule(path: Path, text: str, *, symbol: str | None, out: TextIO) -> tuple[int, int]:
    """Write the file's columns plus ``match`` (1, 0, or empty when not ready), a
    ``reason`` (``not_ready``) and ``score`` with ``rank by``; return (rows, matches).

    Each symbol in the file is evaluated over its own bars, in file order.
    """
    rule = parse_rule(text)
    rules = RuleSet([rule])
    header, rows, bars = read_bars(path)
    symbols = bars["symbol"]
    wanted = sorted(set(symbols.tolist())) if symbol is None else [symbol]
    if symbol is not None and not (symbols == symbol).any():
        found = sorted(set(symbols.tolist()))
        raise BarFileError(f"{path}: no rows for symbol {symbol!r}; found {', '.join(found)}")
    status = np.full(len(rows), NOT_READY, dtype=np.int8)
    score = np.full(len(rows), np.nan)
    keep = np.zeros(len(rows), dtype=bool)
    for sym in wanted:
        idx = np.flatnonzero(symbols == sym)
        order = idx  # arrival order, as the engine would see the bars
        series = {k: v[order] for k, v in bars.items() if k != "symbol"}
        result = rules.evaluate_series(rules.series_columns(series), n=len(order))
        status[order] = result.status(0)
        s = result.score(0)
        if s is not None:
            score[order] = s
        keep[order] = True
    writer = csv.writer(out)
    extra = ["match", "reason"] + (["score"] if rule.rank_by is not None else [])
    writer.writerow([*header, *extra])
    matches = 0
    for i in np.flatnonzero(keep):
        st = status[i]
        matches += int(st == MATCH)
        cells = ["" if st == NOT_READY else str(int(st)), "not_ready" if st == NOT_READY else ""]
        if rule.rank_by is not None:
            cells.append("" if math.isnan(score[i]) else repr(float(score[i])))
        writer.writerow([rows[i][h] for h in header] + cells)
    return int(keep.sum()), matches
