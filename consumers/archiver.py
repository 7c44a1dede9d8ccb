"""Deployable archiver: ``python -m consumers.archiver`` (same as ``technic-stream archiver``)."""

from __future__ import annotations

from technic_stream.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["archiver"]))
