"""Deployable scan worker: ``python -m consumers.scanner`` (= ``technic-stream scanner``)."""

from __future__ import annotations

from technic_stream.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["scanner"]))
