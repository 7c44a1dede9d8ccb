"""`technic-stream up` as a real process: stack up, readiness, clean Ctrl-C, no orphans."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from technic_stream.local import free_port
from tests.conftest import ROOT
from tests.integration.gateway_helpers import new_key, running_gateway


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TECHNIC_")}
    env.update(
        {"TECHNIC_OPS_PORT": "0", "TECHNIC_GATEWAY_PORT": "0", "TECHNIC_LOG_FORMAT": "console",
         **extra}
    )  # fmt: skip
    return env


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _spawn_up(env: dict[str, str]):
    return asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "technic_stream",
        "up",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )


async def _start_up(env: dict[str, str]) -> tuple[asyncio.subprocess.Process, str]:
    proc = await _spawn_up(env)
    assert proc.stdout is not None
    text = ""

    async def until_ready() -> None:
        nonlocal text
        while "Press Ctrl-C to stop." not in text:
            line = await proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                raise AssertionError(f"up exited early: {text}")
            text += line.decode()

    await asyncio.wait_for(until_ready(), 60)
    return proc, text


async def _ready(text: str) -> dict[str, object]:
    ops = re.search(r"http://127\.0\.0\.1:\d+", text)
    assert ops, text
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{ops.group(0)}/healthz") as r:
            assert r.status == 200
        for _ in range(120):  # services join their consumer groups within seconds
            async with http.get(f"{ops.group(0)}/readyz") as r:
                body, status = await r.json(), r.status
            if status == 200:
                break
            await asyncio.sleep(0.25)
        assert status == 200, body
        async with http.get(f"{ops.group(0)}/metrics") as r:
            assert r.status == 200 and "python_info" in await r.text()
    return body


async def test_up_starts_the_stack_and_ctrl_c_stops_it_without_orphans():
    proc, text = await _start_up(_env())
    try:
        pids = [int(p) for p in re.findall(r"started here, pid (\d+)", text)]
        assert len(pids) == 3, text
        assert sorted(pids) == sorted(_children(proc.pid))
        assert all(_alive(p) for p in pids)
        assert "technic.md.bars" in text and "topics   10" in text
        body = await _ready(text)
        assert body["checks"] == dict.fromkeys(
            (
                "kafka",
                "redis",
                "mongo",
                "bars",
                "engine",
                "engine-redis",
                "archiver",
                "archiver-mongo",
                "scanner",
                "scanner-tasks",
                "notifier",
                "gateway",
            ),
            "ok",
        )
        assert "services bars, engine, archiver, scanner, notifier, gateway" in text
        dashboard = re.search(r"dashboard: (http://127\.0\.0\.1:\d+)/#key=(\S+)", text)
        assert dashboard, text
        async with aiohttp.ClientSession() as http:  # the page, served by the gateway
            async with http.get(dashboard.group(1) + "/") as r:
                assert r.status == 200 and "technic-stream" in await r.text()
            async with http.post(dashboard.group(1) + "/v1/auth/token",
                                 json={"api_key": dashboard.group(2)}) as r:  # fmt: skip
                assert (await r.json())["owner"] == "demo"
        await _try_the_examples(text)
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert "stopped cleanly" in out.decode()
    assert not [p for p in pids if _alive(p)], "orphan server processes left behind"


async def _try_the_examples(text: str) -> None:
    """Every example command ``up`` printed does what it says: each curl line's request
    (sent here: a machine need not have curl), each technic-stream line run with the
    printed exports."""
    lines = [line.strip() for line in text.splitlines()]
    curls = [shlex.split(line) for line in lines if line.startswith("curl ")]
    assert len(curls) == 2, text
    async with aiohttp.ClientSession() as http:
        for argv in curls:
            url = next(a for a in argv if a.startswith("http://"))
            headers = dict(argv[i + 1].split(": ", 1) for i, a in enumerate(argv) if a == "-H")
            data = next((argv[i + 1] for i, a in enumerate(argv) if a == "-d"), None)
            method = "POST" if data is not None else "GET"
            async with http.request(method, url, headers=headers, data=data) as r:
                body = await r.text()
                # (the indicators may not be computed yet: 404 says so; anything else fails)
                assert r.status in ((202,) if data is not None else (200, 404)), (url, body)
    at = next(i for i, line in enumerate(lines) if line.startswith("export "))
    env = _env(**dict(kv.split("=", 1) for kv in shlex.split(lines[at])[1:]))
    commands = [shlex.split(line) for line in lines[at + 1 :] if "technic-stream " in line]
    assert [c[1] for c in commands] == ["scan", "rules"], text
    for argv in commands:
        # (the command as printed is there: the venv's, from the directory up ran in)
        assert shutil.which(argv[0]) or os.access(ROOT / argv[0], os.X_OK), argv[0]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "technic_stream", *argv[1:], env=env, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 90)
        assert proc.returncode == 0, (argv, out.decode()[-2000:], err.decode()[-2000:])
        if argv[1] == "scan":
            assert "done:" in out.decode() + err.decode(), out.decode()


async def test_up_uses_configured_servers_and_starts_none(local_stack, unique):
    live = local_stack.settings
    env = _env(
        TECHNIC_KAFKA_BOOTSTRAP=live.kafka_bootstrap or "",
        TECHNIC_REDIS_URL=live.redis_url or "",
        TECHNIC_MONGO_URL=live.mongo_url or "",
        TECHNIC_TOPIC_PREFIX=f"t{unique}.",
    )
    proc, text = await _start_up(env)
    try:
        assert "started here" not in text
        assert text.count("external, configured") == 3
        assert live.kafka_bootstrap in text
        assert _children(proc.pid) == []
        await _ready(text)
        assert f"t{unique}.md.bars" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()


async def test_up_names_a_configured_server_that_does_not_answer():
    dead = f"127.0.0.1:{free_port()}"
    proc = await _spawn_up(_env(TECHNIC_KAFKA_BOOTSTRAP=dead))
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert f"kafka: configured server {dead} does not answer" in err.decode()
    assert "Traceback" not in err.decode()


async def test_bad_configuration_exits_2_naming_the_variable():
    proc = await _spawn_up(_env(TECHNIC_PARTITIONS="zero"))
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert "TECHNIC_PARTITIONS" in err.decode()


@pytest.mark.timeout(300)
async def test_up_check_proves_the_system_works_end_to_end():
    rc, text, err = await _run_cli_up("--check", within=180)
    assert rc == 0, text + err[-3_000:]
    assert "example alert rules for owner demo: 3" in text
    for step in ("bar → engine → Redis: AAPL 1d close", "scan: done in",
                 "alert → gateway WebSocket: "):  # fmt: skip
        assert f"check ok   {step}" in text, text
    assert "check passed" in text and "stopped cleanly" in text


async def test_the_check_names_each_step_that_fails(settings):
    """Only a gateway: no engine writes values, no scanner finishes the scan, no engine
    fires the rule — each step says so, and the caller exits non-zero on it."""
    import io

    from technic_stream.app.check import check_end_to_end

    key = await new_key(settings, "demo")
    out = io.StringIO()
    async with running_gateway(settings) as gw:
        steps = await check_end_to_end(gw.http, key, out, within=1.5)
    assert [(s.name, s.ok) for s in steps] == [
        ("bar → engine → Redis", False), ("scan", False), ("alert → gateway WebSocket", False)
    ]  # fmt: skip
    assert "no values of AAPL 1d in Redis within 2 s" in steps[0].detail
    assert "not scan check-" in steps[1].detail and "finished within" in steps[1].detail
    assert "no alert of rule check-" in steps[2].detail
    assert out.getvalue().count("check FAIL") == 3


async def test_check_without_the_demo_data_is_a_usage_error():
    rc, _, err = await _run_cli_up("--check", "--no-replay")
    assert rc == 2 and "--check needs the demo data" in err


async def _run_cli_up(*args: str, within: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "technic_stream", "up", *args, env=_env(), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), within)
    return proc.returncode or 0, out.decode(), err.decode()
