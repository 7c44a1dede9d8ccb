"""The dashboard in a real browser (Debian's Chromium, driven by Playwright) against a
running stack: engine, archiver, scanner and gateway as their own processes on the local
servers, fed with the real sample data. Screenshots go to ``artifacts/dashboard/``."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from technic_stream.config import Settings
from technic_stream.kafka import Producer
from technic_stream.local import free_port
from technic_stream.local.service import ServiceChild
from technic_stream.messages import Bar, encode
from technic_stream.redis import redis_client
from technic_stream.rules import RuleError, parse_rule
from technic_stream.storage import mongo_client
from technic_stream.topics import topic_name
from tests.conftest import ROOT
from tests.integration.helpers import eventually, until_ready

CHROMIUM = os.environ.get("TECHNIC_TEST_CHROMIUM", "/usr/bin/chromium")
SHOTS = ROOT / "artifacts" / "dashboard"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
    "--no-first-run", "--disable-component-update", "--disable-sync",
]  # fmt: skip

pytestmark = pytest.mark.timeout(300)


@dataclass
class Stack:
    settings: Settings
    url: str
    key: str
    gateway: ServiceChild
    children: list[ServiceChild]
    sample: list[str]  # the sample's symbols (archived, with engine values)

    async def restart_gateway(self, down_for: float, while_down: object = None) -> None:
        self.gateway.signal(15)
        async with asyncio.timeout(30):
            await self.gateway.wait()
        if while_down is not None:
            await while_down  # type: ignore[misc]
        await asyncio.sleep(down_for)
        self.gateway = ServiceChild(self.settings, "gateway", self.gateway.log_path,
                                    **self._gateway_env)  # fmt: skip
        await self.gateway.start()
        await until_ready(self.gateway)

    _gateway_env: dict[str, str] = None  # type: ignore[assignment]


@pytest.fixture(scope="module")
async def stack(local_stack, tmp_path_factory) -> AsyncIterator[Stack]:
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 (once, before anything starts)
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (make browser)")
    from technic_stream.gateway.auth import ApiKeys
    from technic_stream.kafka import ensure_topics
    from technic_stream.marketdata.replay import ReplayConfig, run_replay

    tag = f"d{int(time.time() * 1000) % 10**8}"
    settings = local_stack.settings.model_copy(update={
        "topic_prefix": f"{tag}.", "redis_prefix": f"{tag}:", "mongo_db": tag,
        "gateway_port": free_port(),
    })  # fmt: skip
    await ensure_topics(settings)
    logs = tmp_path_factory.mktemp("dashboard")
    gw_env = {"TECHNIC_GATEWAY_PORT": str(settings.gateway_port),
              "TECHNIC_GATEWAY_JWT_SECRET": "dashboard-test-" + "x" * 32}  # fmt: skip
    children = [ServiceChild(settings, name, logs / f"{name}.log") for name in
                ("engine", "archiver", "scanner")]  # fmt: skip
    gateway = ServiceChild(settings, "gateway", logs / "gateway.log", **gw_env)
    for child in [*children, gateway]:
        await child.start()
    try:
        for child in [*children, gateway]:
            await until_ready(child)
        mongo = mongo_client(settings)
        try:
            key = (await ApiKeys(mongo[settings.mongo_db]).create("trader", name="browser")).key
        finally:
            await mongo.close()
        replay = await run_replay(settings, ReplayConfig(adjust="splits", fmt="batch"),
                                  progress=None)  # fmt: skip
        redis = redis_client(settings)
        try:  # the engine has every sample symbol's latest values, the archiver its bars
            pattern = f"{settings.redis_prefix}ind:1d:*"
            enough = replay.symbols
            keys = await eventually(lambda: redis.keys(pattern), lambda k: len(k) >= enough,
                                    "engine values", 120)  # fmt: skip
            sample = sorted(k.decode().rsplit(":", 1)[1] for k in keys)
        finally:
            await redis.aclose()
        mongo = mongo_client(settings)
        try:
            await eventually(lambda: mongo[settings.mongo_db]["bars"].distinct("symbol"),
                             lambda s: len(s) >= len(sample), "archived sample", 120)  # fmt: skip
        finally:
            await mongo.close()
        st = Stack(settings, f"http://127.0.0.1:{settings.gateway_port}", key, gateway,
                   children, sample)  # fmt: skip
        st._gateway_env = gw_env
        yield st
        gateway = st.gateway  # (a test may have restarted it)
    finally:
        for child in [*children, gateway]:
            if child.proc is not None and child.proc.returncode is None:
                child.signal(15)
        for child in [*children, gateway]:
            if child.proc is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(30):
                        await child.wait()


@pytest.fixture(scope="module")
async def browser():
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def page(browser, stack, request):
    ctx = await browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = await ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    await pg.goto(stack.url + "/")
    await pg.fill("#api-key", stack.key)
    await pg.click("#signin-form button[type=submit]")
    await pg.wait_for_selector("#app:not([hidden])")
    await pg.wait_for_function("document.querySelector('#conn').dataset.state === 'connected'")
    try:
        yield pg
    finally:
        SHOTS.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):
            await pg.screenshot(path=str(SHOTS / f"{request.node.name}.png"), full_page=True)
        await ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


async def _text(page, selector: str) -> str:
    return (await page.text_content(selector)) or ""


async def test_sign_in_shows_the_owner_and_a_live_chart(page, stack):
    assert await _text(page, "#who") == "trader"
    symbol = stack.sample[0]
    await page.fill("#chart-symbol", symbol)
    await page.click("#chart-form button[type=submit]")
    await page.wait_for_function(
        f"document.querySelector('#chart').dataset.symbol === '{symbol}' && "
        "Number(document.querySelector('#chart').dataset.bars) > 100"
    )
    # drawn by lightweight-charts (its canvases come once the box has been laid out)
    await page.wait_for_selector("#chart canvas", state="attached", timeout=10_000)


async def test_the_chart_draws_bars_as_they_stream_in(page, stack):
    await page.fill("#chart-symbol", "ZZLIVE")  # nothing archived: live bars only
    await page.click("#chart-form button[type=submit]")
    await page.wait_for_function("document.querySelector('#chart').dataset.symbol === 'ZZLIVE'")
    assert "no archived 1d bars" in await _text(page, "#chart-error")
    # live once the gateway confirmed the bars channel: every bar after that is drawn
    await page.wait_for_function(
        "document.querySelector('#chart').dataset.live === 'bars.1d.ZZLIVE'"
    )
    assert (await _text(page, "#chart-info")).endswith("· live")
    start = 1_893_456_000_000
    await _send_bars(stack.settings, "ZZLIVE", start, 2, 0.2)
    await page.wait_for_function(
        f"document.querySelector('#chart').dataset.lastBar === '{start + 86_400_000}'"
    )


async def test_a_wrong_key_is_refused_with_a_message(browser, stack):
    ctx = await browser.new_context()
    pg = await ctx.new_page()
    try:
        await pg.goto(stack.url + "/")
        await pg.fill("#api-key", "tsk_not_a_key")
        await pg.click("#signin-form button[type=submit]")
        await pg.wait_for_function("document.querySelector('#signin-error').textContent !== ''")
        assert "refused" in await _text(pg, "#signin-error")
        assert await pg.locator("#app").is_hidden()
    finally:
        await ctx.close()


async def test_a_scan_fills_the_progress_bar_and_lists_the_expected_symbols(page, stack):
    # the reference: the engine's latest RSI of every sample symbol, read from Redis
    redis = redis_client(stack.settings)
    try:
        rsi = {s: float((await redis.hget(f"{stack.settings.redis_prefix}ind:1d:{s}", "rsi_14"))
                        or "nan") for s in stack.sample}  # fmt: skip
    finally:
        await redis.aclose()
    expected = sorted((v, s) for s, v in rsi.items() if not math.isnan(v) and v < 60)
    assert expected, f"no sample symbol has rsi_14 < 60: {rsi}"
    await page.fill("#scan-rule", "rsi(14) < 60 rank by rsi(14) asc")
    await page.select_option("#scan-mode", "snapshot")
    await page.click("#scan-run")
    await page.wait_for_function(
        "document.querySelector('#scan-progress').dataset.stage === 'done'", timeout=60_000
    )
    assert await page.get_attribute("#scan-bar", "data-percent") == "100"
    assert (await _text(page, "#scan-percent")).startswith("100.0")
    await page.wait_for_function("document.querySelector('#scan-summary').textContent !== ''")
    rows = await page.locator("#scan-results tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.symbol)"
    )
    assert rows == [s for _, s in expected]  # ranked by RSI, lowest first
    # sortable: a click on Symbol orders the table by symbol
    await page.click("#scan-results th[data-key=symbol]")
    rows = await page.locator("#scan-results tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.symbol)"
    )
    assert rows == sorted(s for _, s in expected)
    # and the scan is in the history
    await page.click("#scan-history summary")
    assert "rsi(14) < 60" in await _text(page, "#scan-history-list")


async def test_an_invalid_rule_shows_the_error_under_its_column(page, stack):
    bad = "rsi(14) < 30 and and close > 5"
    with pytest.raises(RuleError) as info:
        parse_rule(bad)
    col = info.value.col
    await page.fill("#scan-rule", bad)
    await page.click("#scan-run")
    await page.wait_for_selector("#scan-rule-error:not([hidden])")
    caret = (await _text(page, "#scan-rule-error .caret")).split("\n")
    assert caret[0] == bad
    assert caret[1] == " " * (col - 1) + "^"
    assert f"column {col}: {info.value.reason}" in await _text(page, "#scan-rule-error .reason")
    assert await page.get_attribute("#scan-rule-error", "data-column") == str(col)
    # typing again clears it
    await page.fill("#scan-rule", "rsi(14) < 30")
    assert await page.locator("#scan-rule-error").is_hidden()


async def _send_bars(settings: Settings, symbol: str, start: int, n: int, gap: float) -> None:
    async with Producer(settings) as producer:
        for i in range(n):
            ts = start + i * 86_400_000
            bar = Bar(symbol=symbol, tf="1d", ts=ts, open=100.0 + i, high=102.0 + i, low=99.0 + i,
                      close=101.0 + i, volume=1_000.0)  # fmt: skip
            await producer.send_and_wait(topic_name(settings.topic_prefix, "md.bars"),
                                         encode(bar), key=symbol.encode())  # fmt: skip
            await asyncio.sleep(gap)


async def _fired(settings: Settings, rule_id: str) -> set[str]:
    mongo = mongo_client(settings)
    try:
        docs = mongo[settings.mongo_db]["alerts"].find({"rule_id": rule_id}, {"_id": 1})
        return {d["_id"] async for d in docs}
    finally:
        await mongo.close()


async def _feed(page, rule_id: str) -> set[str]:
    ids = await page.locator(f"#feed li[data-rule='{rule_id}']").evaluate_all(
        "items => items.map(li => li.dataset.alert)"
    )
    return set(ids)


async def test_an_alert_fires_into_the_feed_and_survives_a_gateway_restart(page, stack):
    symbol = "ZZDASH"
    await page.fill("#rule-expr", "close > 0")
    await page.fill("#rule-name", "dash-test")
    await page.fill("#rule-symbols", symbol)
    await page.select_option("#rule-mode", "once_per_bar_close")
    await page.click("#rule-save")
    row = page.locator("#rules tbody tr", has_text="dash-test")
    await row.wait_for()
    rule_id = await row.get_attribute("data-rule")
    assert rule_id
    await page.fill("#chart-symbol", symbol)  # markers on the chart too
    start = 1_893_456_000_000  # 2030-01-01: after everything in the sample
    await asyncio.sleep(1.0)  # the engine follows the rules topic
    await _send_bars(stack.settings, symbol, start, 3, 0.3)
    await page.wait_for_function(
        f"document.querySelectorAll(\"#feed li[data-rule='{rule_id}']\").length >= 3",
        timeout=30_000,
    )
    await page.click("#chart-form button[type=submit]")
    await page.wait_for_function(
        "Number(document.querySelector('#chart').dataset.markers || 0) >= 1", timeout=30_000
    )
    await page.wait_for_function(  # the rule's status, from the engine's state
        f"document.querySelector(\"#rules tr[data-rule='{rule_id}'] .status\").textContent"
        " === 'fired'",
        timeout=10_000,
    )
    # the gateway goes away; alerts fire while it is down; it comes back
    await stack.restart_gateway(
        1.0, while_down=_send_bars(stack.settings, symbol, start + 3 * 86_400_000, 4, 0.1)
    )
    await page.wait_for_function(
        "document.querySelector('#conn').dataset.state === 'recovered'", timeout=60_000
    )
    fired = await eventually(lambda: _fired(stack.settings, rule_id), lambda f: len(f) >= 7,
                             "seven archived alerts")  # fmt: skip
    await page.wait_for_function(
        f"document.querySelectorAll(\"#feed li[data-rule='{rule_id}']\").length >= 7",
        timeout=30_000,
    )
    assert await _feed(page, rule_id) == fired  # every alert once, none lost
    assert "no message lost" in await _text(page, "#conn")
    # pause: the rule's status says so
    await page.locator(f"#rules tr[data-rule='{rule_id}'] button", has_text="Pause").click()
    await page.wait_for_function(
        f"document.querySelector(\"#rules tr[data-rule='{rule_id}'] .status\").textContent"
        " === 'paused'"
    )
