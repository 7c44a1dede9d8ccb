"""The peer of ``bench/gateway.py``: python-socketio on aiohttp with its Redis manager.

    python bench/socketio_peer.py --port P --redis redis://...

A client emits ``join`` with a room name; the server puts it in the room and answers
``joined``. Messages published to Redis by ``AsyncRedisManager`` (``emit("pub", data,
room=...)`` from another process, or the same JSON on the ``socketio`` channel) reach
the room's clients — the documented way to fan out through Redis with python-socketio.
"""

from __future__ import annotations

import argparse

import socketio
from aiohttp import web

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None  # type: ignore[assignment]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--redis", required=True)
    args = ap.parse_args()
    mgr = socketio.AsyncRedisManager(args.redis)
    sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=mgr, cors_allowed_origins=[])

    @sio.on("join")  # type: ignore[misc]
    async def join(sid: str, room: str) -> None:
        await sio.enter_room(sid, room)
        await sio.emit("joined", room, to=sid)

    app = web.Application()
    sio.attach(app)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None,
                loop=uvloop.new_event_loop() if uvloop else None)  # fmt: skip


if __name__ == "__main__":
    main()
