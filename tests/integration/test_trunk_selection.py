"""Trunk selection end to end: the real `sbc` process with one outbound route over several
trunks, each trunk a SIPp ITSP on its own loopback address, and a SIPp PBX placing many short
calls through it. What each ITSP answered is read from SIPp's own counters (no per-message
traces: hundreds of calls)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from tests.support.sipp import SIPP
from tests.support.trunklab import REJECT_SCENARIO, SippTally, TrunkLab, TrunkSpec

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")

ITSP_A = "127.0.0.20"
ITSP_B = "127.0.0.22"  # 127.0.0.21 is the fake gateway of tests/integration/test_calls.py


def describe(pbx: SippTally, trunks: dict[str, SippTally], lab: TrunkLab) -> str:
    parts = [pbx.describe(), *(t.describe() for t in trunks.values())]
    return "\n".join(parts) + f"\nsbc log (tail):\n{lab.log_tail(60)}"


def first_targets(log: str) -> list[str]:
    """The trunk each call was sent to first, in the order the SBC took the calls."""
    return re.findall(r"event=call\.new .*\btarget=(\S+)", log)


def answered_by(log: str) -> Counter[str]:
    """Calls the SBC logged as ended after a 200, by the trunk that answered."""
    return Counter(re.findall(r"event=call\.ended .*\bstatus=200\b.*\btarget=(\S+)", log))


def assert_all_answered(pbx: SippTally, calls: int, context: str) -> None:
    assert pbx.returncode == 0, context
    assert (pbx.successful, pbx.failed) == (calls, 0), context


def test_weighted_route_splits_calls_by_weight(tmp_path: Path) -> None:
    # The acceptance: 400 calls over weights 3:1 land within 5 points of 75/25. The
    # SBC spreads calls by smooth weighted round robin, so the split is exact (300/100) as
    # long as every call reaches the selector in turn; the 5 points are the bound.
    calls = 400
    trunks = [
        TrunkSpec("a", ITSP_A, options="weight: 3"),
        TrunkSpec("b", ITSP_B, options="weight: 1"),
    ]
    with TrunkLab(tmp_path, trunks, strategy="weighted") as lab:
        pbx = lab.place_calls(calls, rate=100, hold_ms=100)
        tallies = lab.finish_trunks()
        context = describe(pbx, tallies, lab)
        assert_all_answered(pbx, calls, context)
        a, b = tallies["a"], tallies["b"]
        for tally in (a, b):
            assert tally.returncode == 0 and tally.failed == 0, context
        assert a.successful + b.successful == calls, context
        assert a.count("INVITE_Recv") + b.count("INVITE_Recv") == calls, context
        share = 100 * a.successful / calls
        print(
            f"weighted split: a={a.successful} b={b.successful} ({share:.1f}% / {100 - share:.1f}%)"
        )
        log = lab.log_text()
        # What the SBC says it did agrees with what the ITSPs counted: no call was tried on
        # more than one trunk, each was answered where it was first sent.
        first = Counter(first_targets(log))
        assert first == Counter(a=a.successful, b=b.successful), context
        assert answered_by(log) == first, context
        assert abs(share - 75) <= 5, f"a took {share:.1f}% of {calls} calls\n{context}"
        assert (a.successful, b.successful) == (300, 100), context  # smooth WRR: exact


def test_trunk_answering_503_passes_every_call_to_the_next(tmp_path: Path) -> None:
    # TRAPS 11: a 503 from the first trunk moves the call to the next one; the PBX sees only
    # the answer of the second. The first trunk gets each INVITE exactly once (no resend of
    # a transaction that got its final answer) and ACKs for all of them.
    calls = 50
    trunks = [TrunkSpec("a", ITSP_A, scenario=REJECT_SCENARIO), TrunkSpec("b", ITSP_B)]
    with TrunkLab(tmp_path, trunks, strategy="priority") as lab:
        pbx = lab.place_calls(calls, rate=50, hold_ms=100)
        tallies = lab.finish_trunks()
        context = describe(pbx, tallies, lab)
        assert_all_answered(pbx, calls, context)
        a, b = tallies["a"], tallies["b"]
        assert a.returncode == 0 and (a.successful, a.failed) == (calls, 0), context
        assert a.count("INVITE_Recv") == calls, context
        assert a.count("INVITE_Retrans") == 0, "a's INVITEs were sent more than once\n" + context
        assert a.count("503_Sent") == calls and a.count("ACK_Recv") == calls, context
        assert b.returncode == 0 and (b.successful, b.failed) == (calls, 0), context
        assert b.count("INVITE_Recv") == calls and b.count("BYE_Recv") == calls, context
        log = lab.log_text()
        failovers = log.count("event=call.failover")
        assert failovers == calls, f"{failovers} failovers logged for {calls} calls\n{context}"


def test_round_robin_route_alternates_between_trunks(tmp_path: Path) -> None:
    calls = 100
    trunks = [TrunkSpec("a", ITSP_A), TrunkSpec("b", ITSP_B)]
    with TrunkLab(tmp_path, trunks, strategy="round_robin") as lab:
        pbx = lab.place_calls(calls, rate=100, hold_ms=100)
        tallies = lab.finish_trunks()
        context = describe(pbx, tallies, lab)
        assert_all_answered(pbx, calls, context)
        a, b = tallies["a"], tallies["b"]
        assert a.failed == 0 and b.failed == 0, context
        assert a.successful + b.successful == calls, context
        assert abs(a.successful - b.successful) <= 1, context
        # Strictly alternating in the order the SBC took the calls, not merely balanced.
        order = first_targets(lab.log_text())
        assert len(order) == calls, context
        assert order == ["a", "b"] * (calls // 2), f"first targets: {order}\n{context}"
