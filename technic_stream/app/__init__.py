"""Composing processes: runtime, operations port, the embedded default stack."""
