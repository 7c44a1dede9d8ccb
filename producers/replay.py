"""Deployable replay: ``python -m producers.replay [FILE] [options]``."""

from __future__ import annotations

import sys

from technic_stream.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["replay", *sys.argv[1:]]))
