"""Live alert rules: the engine's registry, compiled per timeframe, and firing candidates.

Rules arrive as :class:`AlertRule` messages (a tombstone deletes). Each timeframe's
active rules are compiled together into one :class:`RuleSet` over one input table, so
an indicator used by several rules is read once; the set is rebuilt only when a rule of
that timeframe changes.

Modes (every ``md.bars`` message is a closed bar or a correction of one):

``once_per_bar_close``
    evaluated on a bar's first close only; corrections never fire.
``once_per_bar``
    fires at most once per bar: on its close, or on a correction that makes it true.
``every_time``
    fires on every print of a bar where it holds (close and each correction; the
    correction's sequence number goes into the alert id).
``once``
    fires once, then the rule's status becomes ``fired`` until it is edited.

Cooldown, expiry and the throttle are decided by the alert gate (shared by every
engine process, see :mod:`technic_stream.redis.alert_gate`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from technic_stream.indicators.registry import IndicatorSpec
from technic_stream.kernels.book import rule_hits_nb
from technic_stream.messages import AlertRule
from technic_stream.rules import Rule, RuleError, RuleLimits, RuleSet, parse_rule

__all__ = ["LiveRule", "LiveRules", "TimeframeRules", "hits"]

#: statuses a rule can have; only ``active`` rules are evaluated
ACTIVE, FIRED, PAUSED, EXPIRED, ERROR = "active", "fired", "paused", "expired", "error"


@dataclass(slots=True)
class LiveRule:
    message: AlertRule
    parsed: Rule | None
    symbols: frozenset[str] | None  # None: every symbol
    status: str = ACTIVE
    reason: str = ""
    columns: frozenset[str] = frozenset()  # what the rule reads (reported with its alerts)

    @property
    def rule_id(self) -> str:
        return self.message.rule_id

    def live(self, now_ms: int) -> bool:
        m = self.message
        if self.status != ACTIVE or not m.active or self.parsed is None:
            return False
        return m.expires_at is None or now_ms < m.expires_at


@dataclass(frozen=True, slots=True)
class TimeframeRules:
    """The active rules of one timeframe, compiled together."""

    rules: list[LiveRule]
    ruleset: RuleSet
    columns: list[str]  # per input of the rule set
    lags: list[int]
    _reported: dict[str, tuple[tuple[str, ...], np.ndarray]] = field(
        default_factory=dict, repr=False
    )
    on_close: np.ndarray = field(init=False, repr=False)  # per rule: once_per_bar_close
    by_id: np.ndarray = field(init=False, repr=False)  # rule positions sorted by rule id

    def __post_init__(self) -> None:
        modes = [r.message.mode == "once_per_bar_close" for r in self.rules]
        object.__setattr__(self, "on_close", np.array(modes, dtype=bool))
        ids = [r.rule_id for r in self.rules]
        object.__setattr__(self, "by_id", np.array(sorted(range(len(ids)), key=ids.__getitem__),
                                                   dtype=np.int64))  # fmt: skip

    @property
    def specs(self) -> list[IndicatorSpec]:
        return self.ruleset.specs

    @property
    def depth(self) -> int:
        """Values of each column the book must keep (lag 0 .. max lag)."""
        return self.ruleset.max_lag + 1

    def reported(self, rule: LiveRule) -> tuple[tuple[str, ...], np.ndarray]:
        """The columns an alert of ``rule`` reports (its lag-0 inputs) and their rows in
        the gathered input values."""
        got = self._reported.get(rule.rule_id)
        if got is None:
            inputs = enumerate(zip(self.columns, self.lags, strict=True))
            pairs = [(col, i) for i, (col, lag) in inputs if lag == 0 and col in rule.columns]
            names = tuple(c for c, _ in pairs)
            got = (names, np.array([i for _, i in pairs], dtype=np.int64))
            self._reported[rule.rule_id] = got
        return got


@dataclass
class LiveRules:
    """Every rule this engine knows, by id, and the compiled sets per timeframe."""

    limits: RuleLimits = field(default_factory=RuleLimits)
    rules: dict[str, LiveRule] = field(default_factory=dict)
    version: int = 0  # bumped on every change that can alter a compiled set
    _compiled: dict[str, TimeframeRules | None] = field(default_factory=dict)

    def upsert(self, message: AlertRule) -> LiveRule:
        """Add or replace a rule. A bad expression is kept with status ``error``."""
        old = self.rules.get(message.rule_id)
        if old is not None and old.message.ts > message.ts:
            return old  # an older version arriving late changes nothing
        try:
            parsed: Rule | None = parse_rule(message.expr, self.limits)
            status, reason = ACTIVE, ""
        except RuleError as exc:
            parsed, status, reason = None, ERROR, f"column {exc.col}: {exc.reason}"
        symbols = frozenset(message.symbols) if message.symbols is not None else None
        if message.universe not in (None, "all") and parsed is not None:
            parsed, status = None, ERROR
            reason = f"unknown universe {message.universe!r}; live rules take 'all' or symbols"
        columns = frozenset(RuleSet([parsed], self.limits).columns) if parsed else frozenset()
        rule = LiveRule(message, parsed, symbols, status, reason, columns)
        self.rules[message.rule_id] = rule
        self._changed(message.tf, old.message.tf if old else None)
        return rule

    def delete(self, rule_id: str) -> LiveRule | None:
        old = self.rules.pop(rule_id, None)
        if old is not None:
            self._changed(old.message.tf)
        return old

    def set_status(self, rule_id: str, status: str, reason: str = "") -> LiveRule | None:
        rule = self.rules.get(rule_id)
        if rule is not None and (rule.status, rule.reason) != (status, reason):
            rule.status, rule.reason = status, reason
            self._changed(rule.message.tf)
        return rule

    def _changed(self, *tfs: str | None) -> None:
        self.version += 1
        for tf in tfs:
            if tf is not None:
                self._compiled.pop(tf, None)

    def timeframes(self) -> set[str]:
        return {r.message.tf for r in self.rules.values() if r.parsed is not None}

    def for_tf(self, tf: str, now_ms: int | None = None) -> TimeframeRules | None:
        """The compiled active rules of ``tf`` (None when there are none)."""
        if tf in self._compiled:
            return self._compiled[tf]
        now = int(time.time() * 1000) if now_ms is None else now_ms
        live = [r for r in self.rules.values() if r.message.tf == tf and r.live(now)]
        live.sort(key=lambda r: r.rule_id)
        compiled = None
        if live:
            rs = RuleSet([r.parsed for r in live if r.parsed is not None], self.limits)
            compiled = TimeframeRules(
                live, rs, [i.column for i in rs.inputs], [i.lag for i in rs.inputs]
            )
        self._compiled[tf] = compiled
        return compiled

    def expire(self, now_ms: int) -> list[LiveRule]:
        """Rules whose expiry has passed; they stop being evaluated."""
        gone = [
            r
            for r in self.rules.values()
            if r.status == ACTIVE and r.message.expires_at is not None
            and now_ms >= r.message.expires_at
        ]  # fmt: skip
        for r in gone:
            self.set_status(r.rule_id, EXPIRED, "expired")
        return gone

    def needed_specs(self, tf: str) -> list[IndicatorSpec]:
        compiled = self.for_tf(tf)
        return compiled.specs if compiled is not None else []


def hits(
    compiled: TimeframeRules, values: np.ndarray, status: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Where rules hold, by mode, over a batch's bars: the bar indices and the rule
    positions (in ``compiled.rules``) of every (bar, rule) pair, in arrival order, then
    rule id. A rule's symbol list is not applied here (its caller has the symbols)."""
    if int(status.shape[0]) == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    out, rows = compiled.ruleset.evaluate_latest(values).programs()
    # once_per_bar_close rules see new bars only; the others every print of a bar
    return rule_hits_nb(out, rows, compiled.on_close, status, compiled.by_id)
