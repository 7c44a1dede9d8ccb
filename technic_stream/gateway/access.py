"""Channel names and who may read them. Everything not listed here is denied.

===================== ============================== =================================
channel               readers                        default slow-consumer policy
===================== ============================== =================================
``bars.{tf}.{SYM}``   any authenticated client       ``conflate`` (latest bar)
``ind.{tf}.{SYM}``    any authenticated client       ``conflate`` (latest values)
``alerts.{owner}``    that owner, or scope ``admin`` ``disconnect`` (never drop)
``scan.{scan_id}``    the scan's owner, or ``admin`` ``disconnect``
===================== ============================== =================================
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from technic_stream.gateway.auth import Principal
from technic_stream.messages import TIMEFRAMES

__all__ = ["POLICIES", "AccessDenied", "ChannelAccess", "ChannelKind", "parse_channel"]

Policy = Literal["disconnect", "drop_oldest", "conflate"]
POLICIES: tuple[Policy, ...] = ("disconnect", "drop_oldest", "conflate")
ChannelKind = Literal["bars", "ind", "alerts", "scan"]

_SYMBOL = r"[A-Z0-9][A-Z0-9._/:^=-]{0,31}"
_IDENT = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}"
_TF = "|".join(TIMEFRAMES)
_CHANNEL = re.compile(
    rf"^(?:(?P<market>bars|ind)\.(?P<tf>{_TF})\.(?P<symbol>{_SYMBOL})"
    rf"|alerts\.(?P<owner>{_IDENT})|scan\.(?P<scan>{_IDENT}))$"
)


class AccessDenied(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Channel:
    name: str
    kind: ChannelKind
    subject: str  # symbol, owner or scan id

    @property
    def market(self) -> bool:
        return self.kind in ("bars", "ind")

    @property
    def default_policy(self) -> Policy:
        return "conflate" if self.market else "disconnect"


def parse_channel(name: object) -> Channel:
    if not isinstance(name, str) or not name:
        raise AccessDenied(4400, "channel must be a non-empty string")
    m = _CHANNEL.match(name)
    if m is None:
        raise AccessDenied(
            4404, f"unknown channel {name[:80]!r}: expected bars.{{tf}}.{{SYMBOL}}, "
            "ind.{tf}.{SYMBOL}, alerts.{owner} or scan.{scan_id}"
        )  # fmt: skip
    if m["market"]:
        return Channel(name, m["market"], m["symbol"])  # type: ignore[arg-type]
    if m["owner"]:
        return Channel(name, "alerts", m["owner"])
    return Channel(name, "scan", m["scan"])


#: looks up the owner of a scan (None: no such scan)
ScanOwner = Callable[[str], Awaitable[str | None]]


class ChannelAccess:
    def __init__(self, scan_owner: ScanOwner) -> None:
        self._scan_owner = scan_owner

    async def check(self, who: Principal, name: object) -> Channel:
        """The channel if ``who`` may read it; :class:`AccessDenied` (code, reason) if not."""
        ch = parse_channel(name)
        if ch.market:
            return ch
        if ch.kind == "alerts":
            if who.may_read(ch.subject):
                return ch
            raise AccessDenied(4403, f"{ch.name}: only its owner may subscribe")
        owner = await self._scan_owner(ch.subject)
        if owner is None:
            # the same answer as someone else's scan: ids must not be probed
            raise AccessDenied(4403, f"{ch.name}: no such scan of yours")
        if who.may_read(owner):
            return ch
        raise AccessDenied(4403, f"{ch.name}: no such scan of yours")
