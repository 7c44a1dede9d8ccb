"""A batch's alerts as JSON, many at a time.

An alert is built once per candidate (a rule holding on a bar), before the gate decides
whether it fires, since the gate appends it to the owner's channel in the same atomic
step as the decision. Building each as a dict for ``orjson.dumps`` — and its id with a
formatted string per field — was a good part of the engine's time at a high alert rate;
here one rule's candidates are rendered around the constant pieces of the rule's JSON,
every float of the candidates formatted by one orjson call, and the bytes assembled —
with each candidate's gate arguments framed around its alert — in one numba pass
(:meth:`AlertTemplate.render`). The bytes are the ones ``orjson.dumps`` gives for the
:class:`~technic_stream.messages.Alert` dict, field for field (a test holds them equal):
NaN and infinities are ``null``, as there.
"""

from __future__ import annotations

import hashlib
import re
from binascii import hexlify
from collections.abc import Sequence

import numpy as np
import orjson

from technic_stream.buffers import joined
from technic_stream.kernels.alerts import framed_alerts_nb
from technic_stream.kernels.digest import DIGEST_HEX, alert_ids_nb

__all__ = ["AlertTemplate", "alert_ids", "joined_alert_ids"]

_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_NO_SEQS = np.empty(0, dtype=np.int64)
_FEW = 8  # fewer ids than this are hashed one by one
_ESCAPED = re.compile(rb'["\\\x00-\x1f]')  # what a JSON string escapes (orjson: no more)
_NO_BYTES = np.empty(0, dtype=np.uint8)
_NO_STARTS = np.empty(0, dtype=np.int64)


def alert_ids(
    rule_id: str, tf: str, symbols: Sequence[str], ts: Sequence[int], seqs: Sequence[int] | None
) -> list[bytes]:
    """:func:`~technic_stream.messages.alert_id` of each (symbol, ts, seq), as ASCII hex;
    ``seqs`` None: every seq 0."""
    raw = joined_alert_ids(rule_id, tf, symbols, ts, seqs)
    return [raw[i : i + DIGEST_HEX] for i in range(0, len(raw), DIGEST_HEX)]


def joined_alert_ids(
    rule_id: str, tf: str, symbols: Sequence[str], ts: Sequence[int], seqs: Sequence[int] | None
) -> bytes:
    """:func:`alert_ids` end to end (``DIGEST_HEX`` bytes each). Many are hashed in one
    numba call (0.5 to 0.8 µs an id against ~1.6 through ``hashlib``); a few, one by one
    (the numba call's fixed cost is ~8 µs)."""
    n = len(symbols)
    if n < _FEW:
        return b"".join(_alert_ids_one_by_one(rule_id, tf, symbols, ts, seqs))
    joined = "".join(symbols).encode()
    lengths = _byte_lengths(symbols, joined)
    return alert_ids_nb(
        f"{rule_id}\x1f".encode(), f"\x1f{tf}\x1f".encode(), joined, lengths,
        np.asarray(ts, dtype=np.int64),
        _NO_SEQS if seqs is None else np.asarray(seqs, dtype=np.int64),
    ).tobytes()  # fmt: skip


def _byte_lengths(symbols: Sequence[str], joined: bytes) -> np.ndarray:
    """Each symbol's length in UTF-8; ``joined`` is all of them end to end, encoded."""
    n = len(symbols)
    if joined.isascii():  # a symbol's bytes are its characters
        return np.fromiter(map(len, symbols), dtype=np.int64, count=n)
    return np.fromiter((len(s.encode()) for s in symbols), dtype=np.int64, count=n)


def _alert_ids_one_by_one(
    rule_id: str, tf: str, symbols: Sequence[str], ts: Sequence[int], seqs: Sequence[int] | None
) -> list[bytes]:
    pre, mid = f"{rule_id}\x1f", f"\x1f{tf}\x1f"
    blake = hashlib.blake2b
    if seqs is None:
        seqs = [0] * len(symbols)
    return [
        hexlify(blake(
            (f"{pre}{s}{mid}{t}\x1f{q}" if q else f"{pre}{s}{mid}{t}").encode(), digest_size=16
        ).digest())
        for s, t, q in zip(symbols, ts, seqs, strict=True)
    ]  # fmt: skip


class AlertTemplate:
    """The alerts of one rule: ``type, v, alert_id, rule_id, owner, symbol, tf, ts,
    fired_at, close, values{names...}, message``, in that order."""

    def __init__(self, rule_id: str, owner: str, tf: str, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self._symbols: dict[str, bytes] = {}
        # the JSON as constant pieces around its fields: id, symbol, ts, (fired_at in
        # piece 3) close, the values, message
        d = orjson.dumps
        names_at = [b',"values":{' + d(self.names[0]) + b":"] if self.names else []
        names_at += [b"," + d(n) + b":" for n in self.names[1:]]
        self._head = [
            b'{"type":"alert","v":1,"alert_id":"',
            b'","rule_id":' + d(rule_id) + b',"owner":' + d(owner) + b',"symbol":',
            b',"tf":' + d(tf) + b',"ts":',
        ]
        self._tail = [*names_at, b'},"message":' if self.names else b',"values":{},"message":',
                      b"}"]  # fmt: skip

    def _quoted(self, symbols: Sequence[str]) -> list[bytes]:
        quoted = self._symbols
        if len(quoted) > 100_000:
            quoted.clear()
        syms = []
        for s in symbols:
            q = quoted.get(s)
            if q is None:
                q = quoted[s] = orjson.dumps(s)
            syms.append(q)
        return syms

    def render(
        self,
        ids: Sequence[bytes] | bytes,
        symbols: Sequence[str],
        ts: Sequence[int],
        fired_at: int,
        close: np.ndarray,
        values: np.ndarray,
        messages: Sequence[str | None] | None = None,
    ) -> tuple[bytes, list[bytes]]:
        """One alert per candidate (``values`` is candidates by names; ``messages`` the
        rendered text per candidate, None: none), as JSON, and the candidates as the
        gate's arguments: for each, its symbol, id and alert as RESP bulk strings, end to
        end (:attr:`~technic_stream.redis.alert_gate.Candidates.framed`). One numba pass
        (:func:`~technic_stream.kernels.alerts.framed_alerts_nb`) for all of them: 1.3 µs
        an alert by a ``%`` format each and 0.6 more for each candidate's framing were a
        good part of the engine's time at a high alert rate. ``ids`` may come joined
        (:func:`joined_alert_ids`)."""
        if isinstance(ids, bytes):
            id_bytes, n = ids, len(ids) // DIGEST_HEX
        else:
            id_bytes, n = b"".join(ids), len(ids)
        m = len(self.names)
        _check_shapes(n, m, symbols, ts, close, values)
        if n == 0:
            return b"", []
        if len(id_bytes) != n * DIGEST_HEX:
            raise ValueError(f"alert ids must be {DIGEST_HEX} bytes each")
        text = "".join(symbols).encode()
        raw = np.frombuffer(text, dtype=np.uint8)
        raw_at = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(_byte_lengths(symbols, text), out=raw_at[1:])
        if _ESCAPED.search(text) is None:  # each symbol's JSON is itself in quotes
            quoted, q_at = _NO_BYTES, _NO_STARTS
        else:
            quoted, q_at = joined(self._quoted(symbols))
        msgs, msg_at = joined(
            [b"null"] * n if messages is None
            else [b"null" if t is None else orjson.dumps(t) for t in messages]
        )  # fmt: skip
        nums = np.empty((n, 1 + m))
        nums[:, 0] = close
        nums[:, 1:] = values
        js = np.frombuffer(orjson.dumps(nums.ravel(), option=_NUMPY), dtype=np.uint8)
        pieces, piece_at = joined([*self._head, b',"fired_at":%d,"close":' % fired_at, *self._tail])
        out, at, size = framed_alerts_nb(
            pieces, piece_at, np.frombuffer(id_bytes, dtype=np.uint8), DIGEST_HEX, raw, raw_at,
            quoted, q_at, np.asarray(ts, dtype=np.int64), js, 1 + m, msgs, msg_at,
        )  # fmt: skip
        if out.shape[0] == 0:
            raise RuntimeError("orjson's dump of the alerts' floats was not a flat list")
        blob = out.tobytes()
        return blob, [blob[a : a + k] for a, k in zip(at.tolist(), size.tolist(), strict=True)]


def _check_shapes(
    n: int, m: int, symbols: Sequence[str], ts: Sequence[int], close: np.ndarray,
    values: np.ndarray,
) -> None:  # fmt: skip
    if values.shape != (n, m) or len(close) != n or len(symbols) != n or len(ts) != n:
        raise ValueError(f"{n} ids, {len(symbols)} symbols, {len(ts)} ts, {len(close)} "
                         f"closes and {values.shape} values for {m} names")  # fmt: skip
