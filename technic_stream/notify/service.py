"""The notifier process: ``alerts.fired`` → each owner's webhooks, once per alert and target.

Per fetched batch (records keyed by owner, so an owner's alerts arrive in order):

1. decode the alerts (bad ones to the DLQ with the reason);
2. find each owner's delivery targets (MongoDB ``webhooks`` and ``devices``, cached a few
   seconds) and the rule's channels (``alert_rules``): one delivery per alert and target,
   event id ``{alert_id}:{target_id}``;
3. drop deliveries the ledger has an outcome for (a redelivered batch), count the rest
   against the owner's rate (``notifier_owner_rate`` a minute; beyond it a delivery is
   recorded ``limited`` and the target gets one notice for the minute instead);
4. per target, in order: if this process can hold the target and it has no backlog,
   POST now; the first attempt that may succeed later (5xx, 429, timeout) sends it and
   everything after it for that target to the target's queue (see
   :mod:`technic_stream.notify.ledger`); a final refusal (other 4xx) goes to the DLQ;
5. return once every delivery of the batch has an outcome in the ledger (sent, failed,
   limited or queued): the consumer then commits. With ``notifier_digest_s`` the
   alerts are instead added to their bar's digest (an outcome too), which the retry
   loop sends when due: one message per target with all of the bar's alerts.

A retry loop drains the queues whose due time has come, one attempt at a time per
target, backing off exponentially with jitter (no sooner than a ``Retry-After``) until
the target answers or the delivery's attempts run out (``notifier_max_attempts``; then
the DLQ, with every attempt's time and answer). Devices get pushes through FCM when
``TECHNIC_NOTIFIER_FCM_CREDENTIALS`` names a service account key
(:mod:`technic_stream.notify.fcm`) and through APNs when ``TECHNIC_NOTIFIER_APNS_KEY``
names a .p8 key (:mod:`technic_stream.notify.apns`); a token the provider calls gone
deactivates its device. Devices whose provider is not configured are counted
``skipped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge, Histogram
from pymongo.asynchronous.database import AsyncDatabase

from technic_stream.app.ops import OpsServer
from technic_stream.app.runtime import settle_gc
from technic_stream.app.service import consumer_ready, run_consumer
from technic_stream.config import Settings
from technic_stream.errors import ConfigError, MessageDecodeError
from technic_stream.kafka import Batch, BatchConsumer, DeadLetterQueue, Producer
from technic_stream.kafka.dlq import dlq_headers
from technic_stream.messages import Alert, decode
from technic_stream.notify.apns import ApnsSender
from technic_stream.notify.fcm import FcmSender, load_credentials
from technic_stream.notify.ledger import Ledger
from technic_stream.notify.webhook import Attempt, WebhookSender
from technic_stream.redis import redis_client
from technic_stream.storage import mongo_client
from technic_stream.topics import group_name, topic_name

__all__ = ["NOTIFIER_GROUP", "Notifier", "notifier_service"]

log = logging.getLogger(__name__)

NOTIFIER_GROUP = "notifier"

DELIVERIES = Counter(
    "technic_notifier_deliveries",
    "Deliveries by channel and outcome (sent, failed, queued, limited, skipped, duplicate)",
    ["channel", "outcome"],
)
ATTEMPTS = Counter("technic_notifier_attempts", "Delivery attempts", ["channel", "result"])
LATENCY = Histogram(
    "technic_notifier_latency_seconds",
    "From an alert's firing to its delivery's 2xx",
    ["channel"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
BACKLOG = Gauge(
    "technic_notifier_backlog_targets", "Targets with deliveries waiting (breaker open)"
)

_TARGETS_TTL_S = 5.0
_RETRY_AFTER_MAX_S = 3_600.0  # a Retry-After beyond this is taken as this


@dataclass(frozen=True, slots=True)
class Target:
    target_id: str
    channel: str  # webhook | apns | fcm
    owner: str
    url: str = ""
    secret: str = ""
    token: str = ""  # a push device's token


class _Src:
    """Where a delivery came from, as the DLQ's headers name it."""

    def __init__(self, topic: str, partition: int, offset: int, key: bytes, value: bytes):
        self.topic, self.partition, self.offset = topic, partition, offset
        self.key, self.value = key, value


@dataclass
class Notifier:
    """Batch handler of the notifier group, and the retry loop."""

    settings: Settings
    producer: Producer
    redis: aioredis.Redis
    db: AsyncDatabase[Any]
    sender: WebhookSender
    fcm: FcmSender | None = None
    apns: ApnsSender | None = None
    _owners: dict[str, tuple[float, list[Target]]] = field(default_factory=dict)
    _rules: dict[str, tuple[float, list[str] | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s = self.settings
        self.topic = topic_name(s.topic_prefix, "alerts.fired")
        self.dlq_topic = topic_name(s.topic_prefix, "dlq")
        self.dlq = DeadLetterQueue(self.producer, self.dlq_topic)
        self.ledger = Ledger(self.redis, s.redis_prefix, s.notifier_ledger_ttl_s)
        self.slots = asyncio.Semaphore(s.notifier_concurrency)
        self.draining: set[str] = set()
        self.delivered = 0  # 2xx answers (tests, benchmarks)
        self._channels = {"webhook"} | ({"fcm"} if self.fcm else set()) | (
            {"apns"} if self.apns else set())  # fmt: skip

    # -- targets ---------------------------------------------------------------------------

    async def targets(self, owner: str) -> list[Target]:
        await self._load_targets({owner})
        return self._owners[owner][1]

    async def target(self, owner: str, target_id: str) -> Target | None:
        return next((t for t in await self.targets(owner) if t.target_id == target_id), None)

    async def channels(self, rule_id: str) -> list[str] | None:
        """The rule's channels (None: no stored rule — every target)."""
        now = time.monotonic()
        hit = self._rules.get(rule_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        doc = await self.db["alert_rules"].find_one({"_id": rule_id}, {"channels": 1})
        chans = None if doc is None else list(doc.get("channels") or ["ws"])
        self._rules[rule_id] = (now + _TARGETS_TTL_S, chans)
        return chans

    # -- batches ---------------------------------------------------------------------------

    async def on_batch(self, batch: Batch) -> None:
        alerts: list[tuple[Alert, Any]] = []
        for records in batch.values():
            for r in records:
                try:
                    alerts.append(
                        (decode(r.value, Alert, max_bytes=self.settings.max_message_bytes), r)
                    )
                except MessageDecodeError as exc:
                    await self.dlq.route(r, exc)
        if self.settings.notifier_digest_s > 0:  # held per bar, sent by the digest loop
            due = _now_ms() + int(self.settings.notifier_digest_s * 1000)
            for alert, r in alerts:
                member = f"{alert.owner}|{alert.tf}|{alert.ts}"
                if not await self.ledger.digest_add(member, alert.alert_id, r.value, due):
                    DELIVERIES.labels("digest", "duplicate").inc()
            await self.producer.flush()
            return
        await self._load_targets({a.owner for a, _ in alerts})
        plans: list[tuple[Target, dict[str, Any]]] = []
        for alert, r in alerts:
            plans.extend(await self._plan(alert, r))
        if plans:
            await self._deliver(plans)
        await self.producer.flush()

    async def _load_targets(self, owners: set[str]) -> None:
        """Fill the cache for ``owners`` whose entry is missing or old: one query per
        collection for all of them."""
        now = time.monotonic()
        stale = sorted(o for o in owners if (hit := self._owners.get(o)) is None or hit[0] <= now)
        if not stale:
            return
        found: dict[str, list[Target]] = {o: [] for o in stale}
        query = {"owner": {"$in": stale}, "active": {"$ne": False}}
        async for d in self.db["webhooks"].find(query):
            found[d["owner"]].append(Target(d["_id"], "webhook", d["owner"], d["url"], d["secret"]))
        async for d in self.db["devices"].find(query):
            found[d["owner"]].append(
                Target(d["_id"], str(d.get("platform", "push")), d["owner"], token=d["token"])
            )
        for owner, targets in found.items():
            self._owners[owner] = (now + _TARGETS_TTL_S, targets)

    async def _plan(self, alert: Alert, record: Any) -> list[tuple[Target, dict[str, Any]]]:
        out = []
        for t in await self.targets(alert.owner):
            if not await self._allows(alert.rule_id, t):
                continue
            if t.channel not in self._channels:
                DELIVERIES.labels(t.channel, "skipped").inc()  # its provider not configured
                continue
            eid = f"{alert.alert_id}:{t.target_id}"
            if t.channel == "webhook":
                body = orjson.dumps({
                    "type": "alert_delivery", "v": 1, "event_id": eid,
                    "alert": alert.model_dump(mode="json"), "text": _text(alert),
                }).decode()  # fmt: skip
            else:  # a push: title, text and the ids the app needs
                body = orjson.dumps({
                    "title": f"{alert.symbol}: {alert.rule_id}", "text": _text(alert),
                    "data": {"event_id": eid, "alert_id": alert.alert_id,
                             "rule_id": alert.rule_id, "symbol": alert.symbol,
                             "ts": str(alert.ts)},
                }).decode()  # fmt: skip
            out.append((t, {
                "eid": eid, "owner": alert.owner, "target": t.target_id, "n": 0,
                "fired_at": alert.fired_at, "body": body, "history": [],
                "src": [record.topic, record.partition, record.offset],
            }))  # fmt: skip
        return out

    async def _send_digest(self, member: str) -> None:
        """One message per target for the alerts of one bar of an owner's (those each
        target's channels allow); its event id names exactly the alerts it holds, so
        an alert that comes later goes out in a digest of its own."""
        items = await self.ledger.digest_items(member)
        alerts = []
        for raw in items:
            try:
                alerts.append(decode(raw, Alert, max_bytes=self.settings.max_message_bytes))
            except MessageDecodeError:  # (checked before it was added; never expected)
                log.warning("unreadable digest item dropped", extra={"digest": member})
        owner, tf, ts = member.split("|")
        plans: list[tuple[Target, dict[str, Any]]] = []
        for t in await self.targets(owner):
            if t.channel not in self._channels:
                DELIVERIES.labels(t.channel, "skipped").inc()
                continue
            mine = [a for a in alerts if await self._allows(a.rule_id, t)]
            if not mine:
                continue
            ids = sorted(a.alert_id for a in mine)
            digest_id = hashlib.blake2b("\n".join(ids).encode(), digest_size=16).hexdigest()
            eid = f"digest:{digest_id}:{t.target_id}"
            text = "; ".join(_text(a) for a in mine)[:1_000]
            if t.channel == "webhook":
                body = {"type": "alert_digest", "v": 1, "event_id": eid, "owner": owner,
                        "tf": tf, "ts": int(ts), "text": text,
                        "alerts": [a.model_dump(mode="json") for a in mine]}  # fmt: skip
            else:
                body = {"title": f"{len(mine)} alert{'s' if len(mine) > 1 else ''}, {tf} bar",
                        "text": text, "data": {"event_id": eid, "tf": tf, "ts": ts,
                                               "alert_ids": ",".join(ids)[:3_000]}}  # fmt: skip
            plans.append((t, {
                "eid": eid, "owner": owner, "target": t.target_id, "n": 0,
                "fired_at": min(a.fired_at for a in mine), "body": orjson.dumps(body).decode(),
                "history": [], "src": [self.topic, -1, -1],
            }))  # fmt: skip
        if plans:
            await self._deliver(plans)
        await self.producer.flush()
        next_due = _now_ms() + int(self.settings.notifier_digest_s * 1000)
        await self.ledger.digest_done(member, len(items), next_due)

    async def _allows(self, rule_id: str, t: Target) -> bool:
        chans = await self.channels(rule_id)
        return chans is None or ("webhook" if t.channel == "webhook" else "push") in chans

    async def _deliver(self, plans: list[tuple[Target, dict[str, Any]]]) -> None:
        known = await self.ledger.outcomes([rec["eid"] for _, rec in plans])
        fresh = [(t, rec) for (t, rec), k in zip(plans, known, strict=True) if k is None]
        for (t, _), k in zip(plans, known, strict=True):
            if k is not None:
                DELIVERIES.labels(t.channel, "duplicate").inc()
        fresh = await self._rate(fresh)
        by_target: dict[str, list[dict[str, Any]]] = defaultdict(list)
        targets: dict[str, Target] = {}
        for t, rec in fresh:
            by_target[t.target_id].append(rec)
            targets[t.target_id] = t
        free = await self.ledger.claim(list(by_target))
        try:
            await asyncio.gather(*(
                self._send_in_order(targets[tid], recs, direct=free[tid])
                for tid, recs in by_target.items()
            ))  # fmt: skip
        finally:
            await self.ledger.unlock(*(t for t, held in free.items() if held))

    async def _rate(self, plans: list[tuple[Target, dict[str, Any]]]
                    ) -> list[tuple[Target, dict[str, Any]]]:  # fmt: skip
        """Keep each owner within ``notifier_owner_rate`` deliveries a minute; the rest are
        recorded ``limited``, and each target concerned gets one notice for the minute."""
        limit = self.settings.notifier_owner_rate
        minute = int(time.time() // 60)
        per_owner: dict[str, list[tuple[Target, dict[str, Any]]]] = defaultdict(list)
        for t, rec in plans:
            per_owner[rec["owner"]].append((t, rec))
        kept: list[tuple[Target, dict[str, Any]]] = []
        admitted = await self.ledger.admit(
            minute, limit, {o: [r["eid"] for _, r in items] for o, items in per_owner.items()}
        )
        for owner, items in per_owner.items():
            flags = admitted[owner]
            kept.extend(item for item, f in zip(items, flags, strict=True) if f == "1")
            over = [item for item, f in zip(items, flags, strict=True) if f != "1"]
            noticed: set[str] = set()
            for t, rec in over:
                await self.ledger.record(rec["eid"], "limited")
                DELIVERIES.labels(t.channel, "limited").inc()
                if t.target_id in noticed:
                    continue
                noticed.add(t.target_id)
                eid = f"limit:{owner}:{minute}:{t.target_id}"
                if (await self.ledger.outcomes([eid]))[0] is None:
                    until = time.strftime("%H:%M", time.gmtime((minute + 1) * 60))
                    body = orjson.dumps({
                        "type": "notice", "v": 1, "event_id": eid, "owner": owner,
                        "text": f"More than {limit} alerts this minute: further alerts are "
                                f"held back until {until} UTC.",
                    })  # fmt: skip
                    kept.append((t, {**rec, "eid": eid, "body": body.decode(), "n": 0,
                                     "history": []}))  # fmt: skip
        return kept

    async def _send_in_order(self, t: Target, recs: list[dict[str, Any]], *, direct: bool) -> None:
        """Deliver ``recs`` to ``t`` one after another; from the first that must wait on,
        the rest join the target's queue behind it."""
        if not direct:
            await self._queue(t, recs, _now_ms())
            return
        for i, rec in enumerate(recs):
            async with self.slots:
                attempt = await self._attempt(t, rec)
            if attempt.ok:
                await self.ledger.record(rec["eid"], "sent", holding=t.target_id)
            elif attempt.retry and rec["n"] < self.settings.notifier_max_attempts:
                await self._queue(t, recs[i:], _now_ms() + self._backoff(rec, attempt))
                return
            else:
                await self._give_up(t, rec, attempt)
                await self.ledger.refresh(t.target_id)

    async def _queue(self, t: Target, recs: list[dict[str, Any]], due_ms: int) -> None:
        joined = await self.ledger.enqueue(t.target_id, recs, due_ms)
        DELIVERIES.labels(t.channel, "queued").inc(joined)

    async def _attempt(self, t: Target, rec: dict[str, Any]) -> Attempt:
        if t.channel == "fcm" and self.fcm is not None:
            push = orjson.loads(rec["body"])
            attempt = await self.fcm.send(t.token, push["title"], push["text"], push["data"])
        elif t.channel == "apns" and self.apns is not None:
            push = orjson.loads(rec["body"])
            attempt = await self.apns.send(t.token, push["title"], push["text"], push["data"],
                                           rec["eid"])  # fmt: skip
        else:
            attempt = await self.sender.post(t.url, t.secret, rec["eid"], rec["body"].encode())
        rec["n"] += 1
        rec["history"].append([_now_ms(), attempt.status])
        ATTEMPTS.labels(t.channel, "ok" if attempt.ok else "retry" if attempt.retry
                        else "refused").inc()  # fmt: skip
        if attempt.ok:
            self.delivered += 1
            DELIVERIES.labels(t.channel, "sent").inc()
            LATENCY.labels(t.channel).observe(max(0.0, time.time() - rec["fired_at"] / 1000))
        return attempt

    def _backoff(self, rec: dict[str, Any], attempt: Attempt) -> int:
        """Milliseconds to the next attempt: base * 2^(attempts-1) with jitter,
        capped, and no sooner than the receiver's ``Retry-After``."""
        s = self.settings
        cap = min(s.notifier_retry_max_s, s.notifier_retry_base_s * 2 ** (rec["n"] - 1))
        delay = random.uniform(cap / 2, cap)
        if attempt.retry_after_s is not None:  # the receiver's word beats our cap
            delay = max(delay, min(attempt.retry_after_s, _RETRY_AFTER_MAX_S))
        return int(delay * 1000)

    async def _give_up(self, t: Target, rec: dict[str, Any], attempt: Attempt) -> None:
        """A final refusal, or the attempts ran out: the outcome is ``failed`` and the
        delivery, with its history, goes to the DLQ — unless the provider said the device
        is gone: then the device is deactivated (no DLQ; that is a device's life)."""
        await self.ledger.record(rec["eid"], "failed")
        if attempt.deactivate:
            await self.db["devices"].update_one(
                {"_id": t.target_id},
                {"$set": {"active": False, "deactivated_reason": attempt.status,
                          "deactivated_at": datetime.now(UTC)}},
            )  # fmt: skip
            self._owners.pop(t.owner, None)
            DELIVERIES.labels(t.channel, "deactivated").inc()
            log.info("push device deactivated",
                     extra={"target": t.target_id, "reason": attempt.status})  # fmt: skip
            return
        DELIVERIES.labels(t.channel, "failed").inc()
        why = ("refused" if not attempt.retry else "gave up after") + (
            f" {rec['n']} attempt(s); last answer {attempt.status}")  # fmt: skip
        log.warning("delivery failed", extra={"event_id": rec["eid"], "reason": why})
        topic, partition, offset = rec.get("src") or (self.topic, -1, -1)
        src = _Src(topic, partition, offset, rec["eid"].encode(), orjson.dumps(rec))
        await self.producer.send(self.dlq_topic, src.value, key=src.key,
                                 headers=dlq_headers(src, DeliveryFailed(why)))  # fmt: skip

    # -- the retry loop --------------------------------------------------------------------

    async def retry_loop(self, stop: asyncio.Event, tick_s: float = 0.1) -> None:
        """Drain the queues that are due, one task per target, until ``stop``."""
        tasks: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                try:
                    BACKLOG.set(await self.ledger.backlog())
                    for target in await self.ledger.due(_now_ms()):
                        if target not in self.draining and await self.ledger.lock(target):
                            self.draining.add(target)
                            task = asyncio.create_task(self._drain(target))
                            tasks.add(task)
                            task.add_done_callback(tasks.discard)
                    for member in await self.ledger.digests_due(_now_ms()):
                        hold = f"dg|{member}"
                        if hold not in self.draining and await self.ledger.lock(hold):
                            self.draining.add(hold)
                            task = asyncio.create_task(self._digest(member, hold))
                            tasks.add(task)
                            task.add_done_callback(tasks.discard)
                except Exception as exc:  # Redis away: retried next tick
                    log.warning("notifier retry tick failed", extra={"error": str(exc)})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), tick_s)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _digest(self, member: str, hold: str) -> None:
        try:
            await self._send_digest(member)
        except Exception as exc:  # retried on a later tick (it stays due)
            log.warning("notifier digest failed", extra={"digest": member, "error": str(exc)})
        finally:
            self.draining.discard(hold)
            with contextlib.suppress(Exception):
                await self.ledger.unlock(hold)

    async def _drain(self, target_id: str) -> None:
        try:
            while True:
                rec = await self.ledger.head(target_id)
                if rec is None:
                    await self.ledger.idle(target_id)
                    return
                t = await self.target(rec["owner"], target_id)
                if t is None:  # the webhook was deleted or turned off meanwhile
                    await self._give_up(
                        Target(target_id, "webhook", rec["owner"]), rec,
                        Attempt(False, False, "target removed"),
                    )  # fmt: skip
                    await self.ledger.finish(target_id, rec["eid"], "failed")
                    continue
                async with self.slots:
                    attempt = await self._attempt(t, rec)
                await self.ledger.refresh(target_id)
                if attempt.ok:
                    left = await self.ledger.finish(target_id, rec["eid"], "sent")
                    if left == 0:
                        return
                elif attempt.retry and rec["n"] < self.settings.notifier_max_attempts:
                    DELIVERIES.labels(t.channel, "retried").inc()
                    due = _now_ms() + self._backoff(rec, attempt)
                    await self.ledger.reschedule(target_id, rec, due)
                    return
                else:
                    await self._give_up(t, rec, attempt)
                    await self.ledger.finish(target_id, rec["eid"], "failed")
        except Exception as exc:
            log.warning("notifier drain failed", extra={"target": target_id, "error": str(exc)})
        finally:
            self.draining.discard(target_id)
            with contextlib.suppress(Exception):
                await self.ledger.unlock(target_id)
            with contextlib.suppress(Exception):
                await self.producer.flush()

    async def on_assigned(self, partitions: set[Any]) -> None:
        return None

    async def on_revoked(self, partitions: set[Any]) -> None:
        await self.producer.flush()


class DeliveryFailed(Exception):
    """A delivery refused for good or out of attempts (the DLQ's ``error-class``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _apns(settings: Settings) -> ApnsSender | None:
    """The APNs client when its key is configured (and everything it needs with it)."""
    s = settings
    if not s.notifier_apns_key:
        return None
    missing = [f"TECHNIC_NOTIFIER_APNS_{n.upper()}" for n, v in (
        ("key_id", s.notifier_apns_key_id), ("team_id", s.notifier_apns_team_id),
        ("topic", s.notifier_apns_topic)) if not v]  # fmt: skip
    if missing:
        problem = f"TECHNIC_NOTIFIER_APNS_KEY is set; also set {', '.join(missing)}"
        raise ConfigError(problem, [problem])
    try:
        with open(s.notifier_apns_key) as f:
            key = f.read()
    except OSError as exc:
        problem = f"TECHNIC_NOTIFIER_APNS_KEY: {exc}"
        raise ConfigError(problem, [problem]) from exc
    assert s.notifier_apns_key_id and s.notifier_apns_team_id and s.notifier_apns_topic
    return ApnsSender(key, s.notifier_apns_key_id, s.notifier_apns_team_id,
                      s.notifier_apns_topic, s.notifier_apns_url, s.notifier_timeout_s)  # fmt: skip


def _now_ms() -> int:
    return int(time.time() * 1000)


def _text(alert: Alert) -> str:
    """The alert as one line: the rule's own message (its placeholders filled by the
    engine), else rule, symbol, timeframe and close."""
    if alert.message:
        return alert.message
    return f"{alert.rule_id}: {alert.symbol} ({alert.tf}) at {alert.close:g}"


async def notifier_service(
    settings: Settings,
    stop: asyncio.Event,
    ops: OpsServer,
    *,
    started: Callable[[Notifier], None] | None = None,
) -> None:
    """The notifier process: runs until ``stop``. ``started`` sees the handler (tests)."""
    redis = redis_client(settings)
    mongo = mongo_client(settings)
    sender = WebhookSender(settings.notifier_timeout_s, connections=settings.notifier_concurrency)
    fcm = None
    if settings.notifier_fcm_credentials:
        try:
            creds = load_credentials(settings.notifier_fcm_credentials)
        except (OSError, ValueError) as exc:
            await sender.aclose()
            await mongo.close()
            await redis.aclose()
            problem = f"TECHNIC_NOTIFIER_FCM_CREDENTIALS: {exc}"
            raise ConfigError(problem, [problem]) from exc
        fcm = FcmSender(creds, settings.notifier_fcm_url, sender.session)
    try:
        apns = _apns(settings)
    except ConfigError:
        await sender.aclose()
        await mongo.close()
        await redis.aclose()
        raise
    try:
        async with Producer(settings) as producer:
            handler = Notifier(settings, producer, redis, mongo[settings.mongo_db], sender, fcm,
                               apns)  # fmt: skip
            if started is not None:
                started(handler)
            group = group_name(settings.topic_prefix, NOTIFIER_GROUP)
            consumer = BatchConsumer(settings, [handler.topic], group, handler)
            ops.checks["notifier"] = consumer_ready(consumer)
            settle_gc()
            retries = asyncio.create_task(handler.retry_loop(stop), name="notifier-retries")
            try:
                await run_consumer(consumer, stop)
            finally:
                stop.set()
                await retries
    finally:
        if apns is not None:
            await apns.aclose()
        await sender.aclose()
        await mongo.close()
        await redis.aclose()
