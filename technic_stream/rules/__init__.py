"""The rule language: parse, check, plan and compile scan and alert rules."""

from technic_stream.rules.ast import Rule
from technic_stream.rules.compiler import (
    MATCH,
    NO_MATCH,
    NOT_READY,
    Input,
    RuleResults,
    RuleSet,
    compile_rules,
)
from technic_stream.rules.parser import RuleError, RuleLimits, parse_rule

__all__ = [
    "MATCH",
    "NOT_READY",
    "NO_MATCH",
    "Input",
    "Rule",
    "RuleError",
    "RuleLimits",
    "RuleResults",
    "RuleSet",
    "compile_rules",
    "parse_rule",
]
