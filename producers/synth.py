"""Deployable synthetic market: ``python -m producers.synth [options]``."""

from __future__ import annotations

import sys

from technic_stream.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["synth", *sys.argv[1:]]))
