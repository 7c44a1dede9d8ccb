"""The alert gate's packed script call: the same RESP command as its arguments packed
one by one (the slow form it replaced), for any candidates."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from technic_stream.redis.alert_gate import _GATE, AlertGate, Candidates, GateRule
from technic_stream.redis.channels import ChannelPublisher
from technic_stream.redis.resp import Script, pack

_text = st.binary(min_size=0, max_size=40)


def _slow(gate: AlertGate, pub: ChannelPublisher | None, c: Candidates) -> bytes:
    r = c.rule
    base = gate.rule_key(r.rule_id)
    keys: list = [base, f"{base}:fires", f"{base}:last"]
    args: list = [r.version, r.mode, r.cooldown_s * 1000, r.expires_at or 0, r.throttle_max,
                  r.throttle_window_s * 1000, gate.decision_ttl_s]  # fmt: skip
    if pub is not None and r.channel is not None:
        keys += pub.keys(r.channel)[:2]
        args += [r.channel, *pub.append_args()[:2], None]  # the epoch: compared apart
    else:
        keys += ["", ""]
        args += ["", 0, 0, ""]
    keys.append(f"{base}:decided")
    for s, a, d in zip(c.symbols, c.alert_ids, c.data, strict=True):
        args += [s, a, d]
    return keys, args


def _split(packed: bytes) -> list[bytes]:
    """A RESP array of bulk strings back into its arguments."""
    head, _, rest = packed.partition(b"\r\n")
    assert head[:1] == b"*"
    out = []
    for _ in range(int(head[1:])):
        size, _, rest = rest.partition(b"\r\n")
        assert size[:1] == b"$"
        n = int(size[1:])
        out.append(rest[:n])
        assert rest[n : n + 2] == b"\r\n"
        rest = rest[n + 2 :]
    assert rest == b""
    return out


@pytest.mark.parametrize("with_channel", [True, False])
@given(
    cands=st.lists(st.tuples(_text, _text, _text), max_size=20),
    expires=st.one_of(st.none(), st.integers(0, 2**62)),
)
def test_the_packed_call_is_the_argument_by_argument_command(with_channel, cands, expires):
    pub = ChannelPublisher(None, "p:") if with_channel else None  # type: ignore[arg-type]
    gate = AlertGate(None, "p:", publisher=pub)  # type: ignore[arg-type]
    c = Candidates(GateRule("r1", 7, "every_time", 30, expires, 15, 180, "alerts.ann"),
                   [s for s, _, _ in cands], [a for _, a, _ in cands],
                   [d for _, _, d in cands])  # fmt: skip
    keys, args = _slow(gate, pub, c)
    got = _split(gate.call(c))
    want = _split(pack([Script(_GATE).call(keys, [a if a is not None else b"" for a in args])]))
    assert len(got) == len(want)
    epoch = 3 + len(keys) + 10  # the channel's new epoch is random per call
    if with_channel:
        assert len(got[epoch]) == 12
        got[epoch] = want[epoch] = b""
    assert got == want


@given(cands=st.lists(st.tuples(_text, _text, _text), max_size=12), cut=st.integers(0, 12))
def test_framed_candidates_follow_the_listed_ones_in_the_call(cands, cut):
    """Candidates framed already (the engine's) make the same command as the same ones
    listed, after any listed ones."""
    pub = ChannelPublisher(None, "p:")  # type: ignore[arg-type]
    gate = AlertGate(None, "p:", publisher=pub)  # type: ignore[arg-type]
    rule = GateRule("r1", 7, "every_time", 30, None, 15, 180, "alerts.ann")
    listed = Candidates(rule, *([c[k] for c in cands] for k in range(3)))
    head, tail = cands[:cut], cands[cut:]
    framed = Candidates(rule, *([c[k] for c in head] for k in range(3)))
    for j in range(0, len(tail), 3):  # blobs of up to three candidates
        framed.framed.append(b"".join(b"$%d\r\n%b\r\n" % (len(a), a)
                                      for c in tail[j : j + 3] for a in c))  # fmt: skip
    framed.n_framed = len(tail)
    assert len(framed) == len(listed) == len(cands)
    got, want = _split(gate.call(framed)), _split(gate.call(listed))
    epoch = 3 + 6 + 10  # (random per call)
    got[epoch] = want[epoch] = b""
    assert got == want


def test_candidates_of_unequal_lengths_are_refused():
    gate = AlertGate(None, "p:")  # type: ignore[arg-type]
    c = Candidates(GateRule("r1", 1, "once", 0, None, 1, 1), [b"A"], [b"x", b"y"], [b"{}"])
    with pytest.raises(ValueError, match="1 symbols, 2 alert ids"):
        gate.call(c)
