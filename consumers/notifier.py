"""Deployable notifier: ``python -m consumers.notifier`` (= ``technic-stream notifier``)."""

from __future__ import annotations

from technic_stream.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["notifier"]))
