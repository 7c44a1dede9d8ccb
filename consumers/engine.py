"""Deployable indicator engine: ``python -m consumers.engine`` (= ``technic-stream engine``)."""

from __future__ import annotations

from technic_stream.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["engine"]))
