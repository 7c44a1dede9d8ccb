"""Scans: whole-universe rule evaluation with progress, cancel and resume."""
