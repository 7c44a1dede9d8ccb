"""Deployable bar builder: ``python -m consumers.bars`` (same as ``technic-stream bars``)."""

from __future__ import annotations

from technic_stream.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bars"]))
