"""End-to-end calls through the real `sbc` process: a SIPp PBX (127.0.0.10) on the internal
side and a SIPp ITSP (127.0.0.20) on the external side, in both directions, with busy, CANCEL,
CANCEL/200 crossings, hold/resume, early media, 100rel, codec filtering, video, a silent ITSP
and RTP through the relay. The last tests run the scenario pairs without the SBC to prove the
scenarios themselves."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.calls import (
    ITSP_HOST,
    OUTBOUND_NUMBER,
    PBX_HOST,
    SBC_EXTERNAL,
    SBC_INTERNAL,
    CallLab,
    CallOutcome,
    MediaAddress,
    RunningPair,
    SippRun,
    TracedMessage,
    sdp_media,
)
from tests.support.dns import FakeDns
from tests.support.gateway import FakeGateway
from tests.support.net import free_port
from tests.support.process import SbcProcess
from tests.support.rtp import RtpEndpoint, send_until_received
from tests.support.sipp import SIPP

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")

DNS_HOST = "127.0.0.53"  # a local DNS server for SRV tests
GATEWAY_HOST = "127.0.0.21"  # a second carrier gateway for trunk tests
T1 = 0.05  # s: Timer B (64*T1 = 3.2 s) ends the silent-ITSP call quickly
# H264 lets the video test's m=video through the trunk's codec filter.
TRUNK_CODECS = ("PCMU", "PCMA", "telephone-event", "H264")
# The race scenarios must drop (not abort on) a stray response SIPp sees while sending.
RELAXED = ("-default_behaviors", "all,-abortunexp")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallLab]:
    with CallLab(
        tmp_path_factory.mktemp("calls"), sip={"t1": T1}, trunk_codecs=TRUNK_CODECS
    ) as started:
        yield started


# ---------------------------------------------------------------------------- helpers


def is_invite(message: TracedMessage) -> bool:
    return message.is_request and message.method == "INVITE"


def first_received_invite(run: SippRun) -> TracedMessage:
    invites = run.received_requests("INVITE")
    assert invites, f"{run.role} received no INVITE\n{run.describe()}"
    return invites[0]


def final_invite_answer(run: SippRun) -> TracedMessage:
    answers = [m for m in run.received_responses("INVITE") if m.status and m.status >= 200]
    assert answers, f"{run.role} received no final answer to its INVITE\n{run.describe()}"
    return answers[0]


def only_media_at(body: str, host: str) -> list[MediaAddress]:
    """The m= sections of `body`, after checking every address in it (c= and o=) is `host`."""
    media = sdp_media(body)
    assert media, f"no m= line in:\n{body}"
    for section in media:
        assert section.host == host, f"{section.kind} stream at {section.host}, not {host}:\n{body}"
        assert section.port > 0, f"{section.kind} stream rejected (port 0):\n{body}"
    for line in body.splitlines():
        if line.startswith(("c=", "o=")):
            assert line.split()[-1].split("/")[0] == host, f"{line!r} is not at {host}"
    return media


def distinct(messages: list[TracedMessage]) -> list[TracedMessage]:
    """One message per CSeq: with T1 = 50 ms a busy machine may see retransmissions."""
    seen: dict[str, TracedMessage] = {}
    for message in messages:
        seen.setdefault(message.header("CSeq") or "", message)
    return list(seen.values())


def assert_ok(outcome: CallOutcome) -> None:
    assert outcome.ok, outcome.describe()


# ---------------------------------------------------------------------------- basic calls


def test_outbound_call_relayed_with_each_side_seeing_only_the_sbc(lab: CallLab) -> None:
    outcome = lab.run_outbound("call_out_pbx.xml", "call_out_itsp.xml", pbx_args=("-d", "200"))
    assert_ok(outcome)
    invite = first_received_invite(outcome.itsp)
    assert invite.first_line.startswith(f"INVITE sip:{OUTBOUND_NUMBER}@"), invite.first_line
    offer = only_media_at(invite.body, SBC_EXTERNAL)
    assert [m.kind for m in offer] == ["audio"]
    assert "9" not in offer[0].formats and "G722" not in invite.body  # the trunk's filter
    answer = only_media_at(final_invite_answer(outcome.pbx).body, SBC_INTERNAL)
    assert answer[0].formats[0] == "0"
    assert outcome.itsp.received_requests("ACK"), outcome.describe()
    assert outcome.itsp.received_requests("BYE"), outcome.describe()
    assert outcome.pbx.received_responses("BYE", 200), outcome.describe()


def test_outbound_call_hung_up_by_the_itsp(lab: CallLab) -> None:
    outcome = lab.run_outbound(
        "call_itspbye_pbx.xml", "call_itspbye_itsp.xml", itsp_args=("-d", "200")
    )
    assert_ok(outcome)
    assert len(outcome.pbx.received_requests("BYE")) >= 1, outcome.describe()
    assert outcome.itsp.received_responses("BYE", 200), outcome.describe()


def test_inbound_call_to_a_did_answered_by_the_pbx(lab: CallLab) -> None:
    outcome = lab.run_inbound("call_in_itsp.xml", "call_in_pbx.xml", itsp_args=("-d", "200"))
    assert_ok(outcome)
    invite = first_received_invite(outcome.pbx)
    assert "15557654321" in invite.first_line, invite.first_line
    only_media_at(invite.body, SBC_INTERNAL)
    only_media_at(final_invite_answer(outcome.itsp).body, SBC_EXTERNAL)
    assert outcome.pbx.received_requests("BYE"), outcome.describe()


# ---------------------------------------------------------------------------- failures


def test_busy_itsp_486_reaches_the_pbx_and_both_legs_are_acked(lab: CallLab) -> None:
    outcome = lab.run_outbound("call_busy_pbx.xml", "call_busy_itsp.xml")
    assert_ok(outcome)
    assert final_invite_answer(outcome.pbx).status == 486
    assert outcome.itsp.received_requests("ACK"), "the SBC did not ACK the ITSP's 486"
    # 486 is an answer, not a trunk failure (TRAPS 11): one INVITE only reached the ITSP.
    assert len({m.header("Call-ID") for m in outcome.itsp.received_requests("INVITE")}) == 1


def test_cancel_while_ringing_reaches_the_itsp(lab: CallLab) -> None:
    outcome = lab.run_outbound(
        "call_cancel_pbx.xml", "call_cancel_itsp.xml", pbx_args=("-d", "300")
    )
    assert_ok(outcome)
    assert outcome.pbx.received_responses("CANCEL", 200), outcome.describe()
    assert final_invite_answer(outcome.pbx).status == 487
    assert outcome.itsp.received_requests("CANCEL"), outcome.describe()
    assert outcome.itsp.received_requests("ACK"), "the SBC did not ACK the ITSP's 487"


def _assert_no_call_left_up(outcome: CallOutcome) -> None:
    """Whatever won the race, a 200 for an INVITE was followed by ACK and BYE on that leg."""
    if outcome.itsp.sent_responses("INVITE", 200):
        assert outcome.itsp.received_requests("ACK"), (
            "ITSP's 200 never ACKed\n" + outcome.describe()
        )
        assert outcome.itsp.received_requests("BYE"), "ITSP's call left up\n" + outcome.describe()
    if outcome.pbx.received_responses("INVITE", 200):
        pbx_bye = outcome.pbx.received_requests("BYE") or [
            m for m in outcome.pbx.sent if m.is_request and m.method == "BYE"
        ]
        assert pbx_bye, "the PBX leg was answered and never ended\n" + outcome.describe()
    else:
        assert final_invite_answer(outcome.pbx).status == 487, outcome.describe()


def test_itsp_answer_crossing_the_cancel_is_acked_and_ended(lab: CallLab) -> None:
    # The ITSP answers the CANCEL 200 and then the INVITE 200 instead of 487.
    outcome = lab.run_outbound(
        "call_race_pbx.xml", "call_race_itsp.xml", pbx_args=("-d", "200", *RELAXED)
    )
    assert_ok(outcome)
    assert outcome.itsp.received_requests("CANCEL"), outcome.describe()
    _assert_no_call_left_up(outcome)


def test_pbx_cancel_crossing_the_relayed_answer_leaves_no_call_up(lab: CallLab) -> None:
    outcome = lab.run_outbound("call_race_late_pbx.xml", "call_out_itsp.xml", pbx_args=RELAXED)
    assert_ok(outcome)
    cancel_answers = outcome.pbx.received_responses("CANCEL")
    assert all(m.status in (200, 481) for m in cancel_answers), outcome.describe()
    _assert_no_call_left_up(outcome)


def test_silent_itsp_gives_the_pbx_408_after_timer_b(lab: CallLab) -> None:
    timer_b_ms = int(64 * T1 * 1000)
    outcome = lab.run_outbound(
        "call_silent_pbx.xml", "call_silent_itsp.xml", itsp_args=("-d", str(timer_b_ms + 1500))
    )
    assert outcome.pbx.ok, outcome.describe()
    assert final_invite_answer(outcome.pbx).status == 408
    invites = outcome.itsp.received_requests("INVITE")
    assert invites, outcome.describe()
    # No provisional came back, so no CANCEL may follow (RFC 3261 §9.1).
    assert not outcome.itsp.received_requests("CANCEL"), outcome.describe()


# ---------------------------------------------------------------------------- SDP


def test_hold_and_resume_directions_are_relayed(lab: CallLab) -> None:
    outcome = lab.run_outbound("call_hold_pbx.xml", "call_hold_itsp.xml")
    assert_ok(outcome)
    invites = distinct(outcome.itsp.received_requests("INVITE"))
    offers = [only_media_at(m.body, SBC_EXTERNAL) for m in invites]
    assert [o[0].direction for o in offers] == ["sendrecv", "sendonly", "sendrecv"]
    answers = [
        only_media_at(m.body, SBC_INTERNAL)
        for m in distinct(outcome.pbx.received_responses("INVITE", 200))
        if m.body
    ]
    assert [a[0].direction for a in answers[-2:]] == ["recvonly", "sendrecv"], outcome.describe()
    # Each new offer toward the ITSP carries a higher o= version (RFC 3264 §8).
    versions = [
        int(line.split()[2])
        for m in invites
        for line in m.body.splitlines()
        if line.startswith("o=")
    ]
    assert versions == sorted(versions) and len(set(versions)) == 3, versions


def test_early_media_183_names_only_the_sbc(lab: CallLab) -> None:
    outcome = lab.run_outbound("call_early_pbx.xml", "call_early_itsp.xml", pbx_args=("-d", "100"))
    assert_ok(outcome)
    early = outcome.pbx.received_responses("INVITE", 183)
    assert early and early[0].body, outcome.describe()
    media = only_media_at(early[0].body, SBC_INTERNAL)
    final = only_media_at(final_invite_answer(outcome.pbx).body, SBC_INTERNAL)
    assert media[0].port == final[0].port, "early and final media on different relay ports"


def test_reliable_183_is_pracked_toward_the_itsp(lab: CallLab) -> None:
    # RELAXED: on a busy machine the PBX resends its PRACK (T1 = 50 ms) and rightly gets the
    # 200 again (RFC 3261 §17.2.2) while it pauses; SIPp would abort on that duplicate.
    outcome = lab.run_outbound(
        "call_prack_pbx.xml", "call_prack_itsp.xml", pbx_args=("-d", "100", *RELAXED)
    )
    assert_ok(outcome)
    invite = first_received_invite(outcome.itsp)
    pracks = outcome.itsp.received_requests("PRACK")
    assert pracks, outcome.describe()
    invite_cseq = (invite.header("CSeq") or "").split()[0]
    assert pracks[0].header("RAck") == f"1 {invite_cseq} INVITE"
    early = outcome.pbx.received_responses("INVITE", 183)
    assert early, outcome.describe()
    only_media_at(early[0].body, SBC_INTERNAL)
    pbx_pracks = [m for m in outcome.pbx.sent if m.is_request and m.method == "PRACK"]
    if "100rel" in (early[0].header("Require") or ""):
        assert pbx_pracks and early[0].header("RSeq"), outcome.describe()
    else:
        assert not pbx_pracks


def test_codec_not_allowed_by_the_trunk_never_reaches_the_itsp(lab: CallLab) -> None:
    outcome = lab.run_outbound("call_codecs_pbx.xml", "call_out_itsp.xml", pbx_args=("-d", "100"))
    assert_ok(outcome)
    invite = first_received_invite(outcome.itsp)
    offer = only_media_at(invite.body, SBC_EXTERNAL)
    assert offer[0].formats == ("0", "101"), invite.body
    assert "G722" not in invite.body and "rtpmap:9 " not in invite.body


# ---------------------------------------------------------------------------- mid-call


def test_refused_reinvite_is_relayed_and_the_call_survives(lab: CallLab) -> None:
    # TRAPS 2: the ITSP's 488 reaches the PBX, nobody hangs up, and the call goes on (an
    # INFO with a DTMF body still crosses) until the PBX's own BYE.
    outcome = lab.run_outbound("call_reject_pbx.xml", "call_reject_itsp.xml")
    assert_ok(outcome)
    assert outcome.pbx.received_responses("INVITE", 488), outcome.describe()
    reinvites = distinct(outcome.itsp.received_requests("INVITE"))
    assert len(reinvites) == 2 and "PCMA" in reinvites[1].body, outcome.describe()
    info = outcome.itsp.received_requests("INFO")
    assert info and info[0].header("Content-Type") == "application/dtmf-relay"
    assert "Signal=5" in info[0].body
    assert len(outcome.itsp.received_requests("BYE")) == 1
    assert not outcome.pbx.received_requests("BYE"), "the SBC hung up on a refused re-INVITE"


def test_refer_from_the_trunk_is_declined_by_policy(lab: CallLab) -> None:
    # The default trunk policy is refer: reject (RFC 3515 transfer is not relayed): 603, and
    # the PBX scenario (which expects only the ITSP's BYE) never sees a REFER.
    outcome = lab.run_outbound("call_itspbye_pbx.xml", "call_refer_itsp.xml")
    assert_ok(outcome)
    assert outcome.itsp.received_responses("REFER", 603), outcome.describe()
    assert not outcome.pbx.received_requests("REFER")


def test_late_offer_answer_in_ack_reaches_the_itsp(lab: CallLab) -> None:
    # RFC 3261 §13.2.1: INVITE without SDP, the ITSP offers in its 200, the PBX answers in
    # its ACK, and the ITSP's ACK carries that answer rewritten to the relay.
    outcome = lab.run_outbound("call_late_pbx.xml", "call_late_itsp.xml", pbx_args=("-d", "100"))
    assert_ok(outcome)
    assert not first_received_invite(outcome.itsp).body
    only_media_at(final_invite_answer(outcome.pbx).body, SBC_INTERNAL)
    acks = outcome.itsp.received_requests("ACK")
    assert acks, outcome.describe()
    only_media_at(acks[0].body, SBC_EXTERNAL)


def test_itsp_that_vanishes_mid_call_is_torn_down_with_a_reason(lab: CallLab) -> None:
    # The ITSP stops answering: the re-INVITE times out (Timer B, 64*T1), the PBX gets 408
    # and then a BYE with an RFC 3326 Reason; the call does not linger.
    outcome = lab.run_outbound(
        "call_vanish_pbx.xml", "call_vanish_itsp.xml", timeout=15.0, callee_grace=8.0
    )
    assert outcome.pbx.ok, outcome.describe()
    assert outcome.pbx.received_responses("INVITE", 408), outcome.describe()
    byes = outcome.pbx.received_requests("BYE")
    assert byes and "cause=408" in (byes[0].header("Reason") or ""), outcome.describe()
    assert outcome.itsp.received_requests("BYE"), "the ITSP leg was not ended"


# ---------------------------------------------------------------------------- media


def _relay_addresses(pair: RunningPair) -> tuple[list[MediaAddress], list[MediaAddress]]:
    """(relay toward the PBX from the 200 it got, relay toward the ITSP from its INVITE)."""
    answer = pair.wait_for_message(
        "pbx", lambda m: m.direction == "received" and m.status == 200 and m.method == "INVITE"
    )
    invite = pair.wait_for_message("itsp", lambda m: m.direction == "received" and is_invite(m))
    return sdp_media(answer.body), sdp_media(invite.body)


def _check_stream(
    pbx: RtpEndpoint, itsp: RtpEndpoint, toward_pbx: MediaAddress, toward_itsp: MediaAddress
) -> None:
    outbound = bytes(range(160))
    sent, got = send_until_received(pbx, itsp, (toward_pbx.host, toward_pbx.port), outbound)
    assert got.packet.payload == sent.payload and got.packet.payload_type == sent.payload_type
    # Symmetric RTP: the relay sends from the address and port it advertised on that side.
    assert got.source == (toward_itsp.host, toward_itsp.port), got.source
    inbound = bytes(reversed(range(160)))
    sent, got = send_until_received(itsp, pbx, (toward_itsp.host, toward_itsp.port), inbound)
    assert got.packet.payload == sent.payload
    assert got.source == (toward_pbx.host, toward_pbx.port), got.source


def test_rtp_flows_both_ways_through_the_relay(lab: CallLab) -> None:
    with (
        RtpEndpoint(PBX_HOST, lab.pbx_rtp, ssrc=0x11110001) as pbx,
        RtpEndpoint(ITSP_HOST, lab.itsp_rtp, ssrc=0x22220002) as itsp,
        lab.outbound("call_out_pbx.xml", "call_out_itsp.xml", pbx_args=("-d", "3000")) as pair,
    ):
        toward_pbx, toward_itsp = _relay_addresses(pair)
        assert toward_pbx[0].host == SBC_INTERNAL and toward_itsp[0].host == SBC_EXTERNAL
        _check_stream(pbx, itsp, toward_pbx[0], toward_itsp[0])
        outcome = pair.wait()
    assert_ok(outcome)


def test_audio_and_video_both_relayed(lab: CallLab) -> None:
    with (
        RtpEndpoint(PBX_HOST, lab.pbx_rtp) as pbx_audio,
        RtpEndpoint(PBX_HOST, lab.pbx_video, payload_type=96) as pbx_video,
        RtpEndpoint(ITSP_HOST, lab.itsp_rtp) as itsp_audio,
        RtpEndpoint(ITSP_HOST, lab.itsp_video, payload_type=96) as itsp_video,
        lab.outbound("call_video_pbx.xml", "call_video_itsp.xml", pbx_args=("-d", "3000")) as pair,
    ):
        toward_pbx, toward_itsp = _relay_addresses(pair)
        assert [m.kind for m in toward_itsp] == ["audio", "video"]
        assert [m.kind for m in toward_pbx] == ["audio", "video"]
        for side, host in ((toward_pbx, SBC_INTERNAL), (toward_itsp, SBC_EXTERNAL)):
            assert all(m.host == host and m.port > 0 for m in side), side
            assert side[0].port != side[1].port
        _check_stream(pbx_audio, itsp_audio, toward_pbx[0], toward_itsp[0])
        _check_stream(pbx_video, itsp_video, toward_pbx[1], toward_itsp[1])
        outcome = pair.wait()
    assert_ok(outcome)


# ---------------------------------------------------------------------------- scenario self-check

# Pairs whose flow is the same end to end without the SBC in between.
DIRECT_PAIRS = [
    ("out", "call_out_pbx.xml", "call_out_itsp.xml", ()),
    ("out", "call_itspbye_pbx.xml", "call_itspbye_itsp.xml", ()),
    ("in", "call_in_itsp.xml", "call_in_pbx.xml", ()),
    ("out", "call_busy_pbx.xml", "call_busy_itsp.xml", ()),
    ("out", "call_cancel_pbx.xml", "call_cancel_itsp.xml", ("-d", "200")),
    ("out", "call_race_pbx.xml", "call_race_itsp.xml", ("-d", "100", *RELAXED)),
    ("out", "call_hold_pbx.xml", "call_hold_itsp.xml", ()),
    ("out", "call_early_pbx.xml", "call_early_itsp.xml", ()),
    ("out", "call_prack_pbx.xml", "call_prack_itsp.xml", ()),
    ("out", "call_codecs_pbx.xml", "call_out_itsp.xml", ()),
    ("out", "call_video_pbx.xml", "call_video_itsp.xml", ()),
    ("out", "call_reject_pbx.xml", "call_reject_itsp.xml", ()),
    ("out", "call_late_pbx.xml", "call_late_itsp.xml", ()),
]


@pytest.mark.parametrize(
    ("direction", "caller", "callee", "args"),
    DIRECT_PAIRS,
    ids=[pair[1].removesuffix(".xml") for pair in DIRECT_PAIRS],
)
def test_scenario_pair_works_without_the_sbc(
    tmp_path: Path, direction: str, caller: str, callee: str, args: tuple[str, ...]
) -> None:
    direct = CallLab(tmp_path, direct=True).start()
    if direction == "out":
        outcome = direct.run_outbound(caller, callee, pbx_args=args)
    else:
        outcome = direct.run_inbound(caller, callee, itsp_args=args)
    assert_ok(outcome)


def test_rtp_helper_reaches_the_peer_directly(tmp_path: Path) -> None:
    direct = CallLab(tmp_path, direct=True).start()
    with (
        RtpEndpoint(PBX_HOST, direct.pbx_rtp) as pbx,
        RtpEndpoint(ITSP_HOST, direct.itsp_rtp) as itsp,
        direct.outbound("call_out_pbx.xml", "call_out_itsp.xml", pbx_args=("-d", "1000")) as pair,
    ):
        toward_pbx, toward_itsp = _relay_addresses(pair)
        # Without the SBC each SDP names the other party itself.
        assert (toward_pbx[0].host, toward_pbx[0].port) == (ITSP_HOST, direct.itsp_rtp)
        assert (toward_itsp[0].host, toward_itsp[0].port) == (PBX_HOST, direct.pbx_rtp)
        _check_stream(pbx, itsp, toward_pbx[0], toward_itsp[0])
        outcome = pair.wait()
    assert_ok(outcome)


# ---------------------------------------------------------------------------- leftovers


def _stats(sbc: SbcProcess) -> dict[str, int]:
    start = len(sbc.log_lines())
    os.kill(sbc.pid, signal.SIGUSR1)
    line = sbc.wait_for_log(r"event=sbc\.stats ", start=start)
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)(?=\s|$)", line)}


def test_nothing_of_the_calls_is_left_once_their_transactions_expire(lab: CallLab) -> None:
    # Runs after every call scenario above on the same SBC (busy, CANCEL races, vanished
    # peers...): once 64*T1 has passed, no call, dialog, transaction or media port remains.
    assert lab.sbc is not None
    outcome = lab.run_outbound("call_out_pbx.xml", "call_out_itsp.xml", pbx_args=("-d", "100"))
    assert_ok(outcome)
    keys = ("calls", "call_dialogs", "call_transactions", "transactions", "media_sessions")
    deadline = time.monotonic() + 64 * T1 + 10
    stats = _stats(lab.sbc)
    while any(stats[key] for key in (*keys, "media_ports_in_use")):
        # Transactions end on their own timers (K, J, L, M: up to 64*T1); nothing announces
        # it from outside, so the stats are read again until they are zero or time is up.
        assert time.monotonic() < deadline, f"still alive after 64*T1: {stats}"
        time.sleep(0.5)
        stats = _stats(lab.sbc)
    assert stats["calls"] == 0


# ---------------------------------------------------------------------------- shutdown


def test_stopping_the_sbc_ends_live_calls_on_both_legs(tmp_path: Path) -> None:
    # Neither the PBX nor the carrier may be left holding a call nobody relays: on SIGTERM
    # the SBC sends BYE with a Reason on both legs before it exits.
    with CallLab(tmp_path, sip={"t1": T1}) as own_lab:
        with own_lab.outbound(
            "call_itspbye_pbx.xml", "call_out_itsp.xml", itsp_args=("-d", "200")
        ) as pair:
            pair.wait_for_message(
                "pbx",
                lambda m: m.direction == "received" and m.status == 200 and m.method == "INVITE",
            )
            pair.wait_for_message("itsp", lambda m: m.direction == "received" and m.method == "ACK")
            assert own_lab.sbc is not None
            own_lab.sbc.stop()
            outcome = pair.wait()
    assert_ok(outcome)
    for side in (outcome.pbx, outcome.itsp):
        byes = side.received_requests("BYE")
        assert byes and "cause=503" in (byes[0].header("Reason") or ""), outcome.describe()


def test_call_without_media_is_ended_by_the_media_timeout(tmp_path: Path) -> None:
    # Neither side sends RTP: after media.timeout the SBC ends the call on both legs with a
    # Reason, so a dead call does not hold ports (or a carrier's billing) forever.
    with CallLab(tmp_path, sip={"t1": T1}, media={"timeout": 1}) as own_lab:
        outcome = own_lab.run_outbound(
            "call_itspbye_pbx.xml", "call_out_itsp.xml", itsp_args=("-d", "200"), timeout=15.0
        )
    assert_ok(outcome)
    for side in (outcome.pbx, outcome.itsp):
        byes = side.received_requests("BYE")
        assert byes and "Media timeout" in (byes[0].header("Reason") or ""), outcome.describe()


# ---------------------------------------------------------------------------- trunks


def test_trunk_challenge_answered_and_the_pbx_never_sees_it(tmp_path: Path) -> None:
    # RFC 3261 §22.2: the ITSP answers the INVITE 401; the SBC sends it again with
    # Authorization (SIPp verifies it with verifyauth), same Call-ID, CSeq one up.
    lab = CallLab(
        tmp_path, sip={"t1": T1}, itsp_trunk="credentials: {username: alice, password: s3cret}"
    )
    with lab:
        outcome = lab.run_outbound("call_out_pbx.xml", "call_auth_itsp.xml", pbx_args=("-d", "100"))
    assert_ok(outcome)
    invites = distinct(outcome.itsp.received_requests("INVITE"))
    assert len(invites) == 2, outcome.describe()
    assert invites[0].header("Call-ID") == invites[1].header("Call-ID")
    cseqs = [int((m.header("CSeq") or "0").split()[0]) for m in invites]
    assert cseqs[1] == cseqs[0] + 1
    assert "Digest" in (invites[1].header("Authorization") or "")
    assert not outcome.pbx.received_responses("INVITE", 401), "the challenge leaked to the PBX"
    digest = (invites[1].header("Authorization") or "").split('response="')[1].split('"')[0]
    assert "s3cret" not in lab.log_text() and digest not in lab.log_text()


def test_silent_first_trunk_fails_over_to_the_next_within_its_setup_time(tmp_path: Path) -> None:
    # TRAPS 11: no answer from the first trunk within setup_timeout moves the same call (one
    # INVITE from the PBX) on to the next trunk; the PBX just sees its call answered.
    dead = '{name: dead, interface: external, proxy: "sip:127.0.0.21:5999", setup_timeout: 0.5}'
    with CallLab(tmp_path, sip={"t1": T1}, trunks_before=[dead]) as lab:
        outcome = lab.run_outbound("call_out_pbx.xml", "call_out_itsp.xml", pbx_args=("-d", "100"))
        log = lab.log_text()
    assert_ok(outcome)
    assert len([m for m in outcome.pbx.sent if m.is_request and m.method == "INVITE"]) == 1
    assert "event=call.failover" in log and "to=itsp" in log, log[-3000:]
    assert 'why="setup timeout"' in log, "moved on by Timer B, not by the setup timeout"
    assert final_invite_answer(outcome.pbx).status == 200


def test_probes_take_a_failing_trunk_out_of_routing_and_back(tmp_path: Path) -> None:
    # The first trunk's gateway answers OPTIONS 503 (down after 2 probes): calls go straight
    # to the second trunk; once its probes are answered 200 again it is back in front.
    gateway_port = free_port(GATEWAY_HOST)
    flaky = (
        f'{{name: flaky, interface: external, proxy: "sip:{GATEWAY_HOST}:{gateway_port}", '
        "probe: {interval: 0.2, up_after: 2, down_after: 2}}"
    )
    with (
        FakeGateway(GATEWAY_HOST, gateway_port, options_status=503) as gateway,
        CallLab(tmp_path, sip={"t1": T1}, trunks_before=[flaky]) as lab,
    ):
        assert lab.sbc is not None
        lab.sbc.wait_for_log(r"event=trunk\.health .*trunk=flaky .*state=down")
        outcome = lab.run_outbound("call_out_pbx.xml", "call_out_itsp.xml", pbx_args=("-d", "100"))
        assert_ok(outcome)
        assert gateway.count("INVITE") == 0, "a trunk marked down still got the call"
        start = len(lab.sbc.log_lines())
        gateway.options_status = 200
        lab.sbc.wait_for_log(r"event=trunk\.health .*trunk=flaky .*state=up", start=start)
        outcome = lab.run_outbound("call_out_pbx.xml", "call_out_itsp.xml", pbx_args=("-d", "100"))
        assert_ok(outcome)  # its 503 moves the call on: the PBX still sees a success
        # (one INVITE, or its retransmissions: T1 is 50 ms here)
        assert gateway.count("INVITE") >= 1, "the trunk back up was not tried first"


def test_trunk_registers_with_digest_honours_the_granted_expiry_and_unregisters(
    tmp_path: Path,
) -> None:
    creds = "credentials: {username: alice, password: s3cret}, registrations: [{user: alice}]"
    lab = CallLab(tmp_path, sip={"t1": T1}, itsp_trunk=creds)
    registrar = lab.serve_itsp("registrar_uas.xml", timeout=20.0)
    try:
        with lab:
            assert lab.sbc is not None
            line = lab.sbc.wait_for_log(r"event=trunk\.registration .*state=registered")
            # TRAPS 7: the 120 s the registrar granted, not the 3600 s asked for.
            granted = int(re.search(r"expires_in=(\d+)", line).group(1))  # type: ignore[union-attr]
            assert 110 <= granted <= 120, line
        run = registrar.finish("itsp", 10.0)
    finally:
        registrar.kill()
    assert run.ok, run.describe()
    registers = distinct(run.received_requests("REGISTER"))
    assert len(registers) == 3, run.describe()
    assert "Digest" in (registers[1].header("Authorization") or "")
    assert registers[0].header("Call-ID") == registers[2].header("Call-ID")  # §10.2.4
    assert "s3cret" not in lab.log_text()


# ---------------------------------------------------------------------------- PBX auth

# SIPp answers MD5 only, and only the first challenge: offer just MD5 to it.
PBX_AUTH = 'auth: {realm: sbc.test, users: {"201": pw-201}, algorithms: [MD5]}'


def test_pbx_user_not_from_a_trusted_source_calls_after_digest(tmp_path: Path) -> None:
    # RFC 3261 §22.3: the SBC challenges with 407; the right credentials make the call an
    # ordinary outbound call, and the ITSP sees neither the challenge nor the credentials.
    lab = CallLab(tmp_path, sip={"t1": T1}, pbx_extra=PBX_AUTH, pbx_trusted="127.0.0.99/32")
    with lab:
        outcome = lab.run_outbound(
            "call_digest_pbx.xml", "call_out_itsp.xml", pbx_args=("-au", "201", "-ap", "pw-201")
        )
        log = lab.log_text()
    assert_ok(outcome)
    assert outcome.pbx.received_responses("INVITE", 407), outcome.describe()
    invite = first_received_invite(outcome.itsp)
    assert invite.header("Proxy-Authorization") is None
    assert "event=auth.accepted" in log and "pw-201" not in log


def test_pbx_user_with_a_wrong_password_gets_403_and_is_counted(tmp_path: Path) -> None:
    lab = CallLab(tmp_path, sip={"t1": T1}, pbx_extra=PBX_AUTH, pbx_trusted="127.0.0.99/32")
    with lab:
        assert lab.sbc is not None
        pair = lab.start_outbound(
            "call_badpass_pbx.xml", "call_out_itsp.xml", pbx_args=("-au", "201", "-ap", "guess")
        )
        try:
            pbx = pair.finish("pbx", 10.0)
        finally:
            pair.kill()
        line = lab.sbc.wait_for_log(r"event=auth\.refused ")
    assert pbx.ok, pbx.describe()
    assert "failures=1" in line and "user=201" in line, line
    assert "guess" not in lab.log_text()


def test_registration_follows_423_min_expires_and_backs_off_on_503(tmp_path: Path) -> None:
    creds = "credentials: {username: alice, password: s3cret}, registrations: [{user: alice}]"
    lab = CallLab(tmp_path, sip={"t1": T1}, itsp_trunk=creds)
    registrar = lab.serve_itsp("registrar_423_uas.xml", timeout=20.0)
    try:
        with lab:
            assert lab.sbc is not None
            line = lab.sbc.wait_for_log(r"event=trunk\.registration .*state=backoff")
            assert "last_status=503" in line, line
            # Retry-After: 600 is a floor; jitter may only add to it (no retry storm).
            wait = float(re.search(r"next_attempt_in=([\d.]+)", line).group(1))  # type: ignore[union-attr]
            assert 600 <= wait <= 600 * 1.25, line
            run = registrar.finish("itsp", 10.0)  # ends after 1.5 s without a retry
        registers = distinct(run.received_requests("REGISTER"))
    finally:
        registrar.kill()
    assert run.ok, run.describe()
    assert len(registers) == 2 and "7200" in (registers[1].header("Expires") or ""), registers


def test_a_trunk_that_stops_answering_mid_run_is_left_and_taken_back(tmp_path: Path) -> None:
    # Up and probed; then it goes dark (OPTIONS time out after 64*T1): marked down, calls go
    # straight to the next trunk; it answers again: marked up and tried first again.
    port = free_port(GATEWAY_HOST)
    dark = (
        f'{{name: dark, interface: external, proxy: "sip:{GATEWAY_HOST}:{port}", '
        "probe: {interval: 0.3, up_after: 1, down_after: 1}}"
    )
    with (
        FakeGateway(GATEWAY_HOST, port) as gateway,
        CallLab(tmp_path, sip={"t1": T1}, trunks_before=[dark]) as lab,
    ):
        assert lab.sbc is not None
        outcome = lab.run_outbound("call_out_pbx.xml", "call_out_itsp.xml", pbx_args=("-d", "100"))
        assert_ok(outcome)  # its INVITE 503 fails over: the trunk was up and tried first
        tried_while_up = gateway.count("INVITE")
        assert tried_while_up >= 1
        start = len(lab.sbc.log_lines())
        gateway.silent = True
        lab.sbc.wait_for_log(r"event=trunk\.health .*trunk=dark .*state=down", start=start)
        outcome = lab.run_outbound("call_out_pbx.xml", "call_out_itsp.xml", pbx_args=("-d", "100"))
        assert_ok(outcome)
        assert gateway.count("INVITE") == tried_while_up, "a trunk marked down got the call"
        start = len(lab.sbc.log_lines())
        gateway.silent = False
        lab.sbc.wait_for_log(r"event=trunk\.health .*trunk=dark .*state=up", start=start)
        outcome = lab.run_outbound("call_out_pbx.xml", "call_out_itsp.xml", pbx_args=("-d", "100"))
        assert_ok(outcome)
        assert gateway.count("INVITE") > tried_while_up, "the trunk back up was not tried"


def test_a_silent_trunk_is_marked_down_by_probes_and_calls_skip_it(tmp_path: Path) -> None:
    # Nothing answers at the first trunk's address: its OPTIONS time out (64*T1), it is
    # marked down, and the next call goes straight to the second trunk, no failover needed.
    silent = (
        f'{{name: silent, interface: external, proxy: "sip:{GATEWAY_HOST}:'
        f'{free_port(GATEWAY_HOST)}", probe: {{interval: 0.5, down_after: 1}}}}'
    )
    with CallLab(tmp_path, sip={"t1": T1}, trunks_before=[silent]) as lab:
        assert lab.sbc is not None
        lab.sbc.wait_for_log(r"event=trunk\.health .*trunk=silent .*state=down", timeout=15.0)
        outcome = lab.run_outbound("call_out_pbx.xml", "call_out_itsp.xml", pbx_args=("-d", "100"))
        log = lab.log_text()
    assert_ok(outcome)
    assert "event=call.failover" not in log, "the down trunk was still tried first"


def test_trunk_named_by_dns_srv_is_reached_at_the_srv_target(tmp_path: Path) -> None:
    # RFC 3263 §4.2: "sip:itsp.test" without a port: the SBC looks up _sip._udp.itsp.test
    # (a local DNS server here) and sends the INVITE to the SRV target's address and port.
    dns_port = free_port(DNS_HOST)
    lab = CallLab(
        tmp_path,
        sip={"t1": T1},
        trunks_before=['{name: by-srv, interface: external, proxy: "sip:itsp.test"}'],
        extra_yaml=f"dns: {{nameservers: ['{DNS_HOST}:{dns_port}']}}\n",
    )
    records = {
        ("_sip._udp.itsp.test.", "SRV"): [f"10 0 {lab.itsp_port} gw.itsp.test."],
        ("gw.itsp.test.", "A"): [ITSP_HOST],
    }
    with FakeDns(DNS_HOST, dns_port, records), lab:
        outcome = lab.run_outbound("call_out_pbx.xml", "call_out_itsp.xml", pbx_args=("-d", "100"))
        log = lab.log_text()
    assert_ok(outcome)
    assert f"gateways={ITSP_HOST}:{lab.itsp_port}" in log, log[:3000]
    assert "target=by-srv" in log and "event=call.failover" not in log
    assert "@itsp.test" in first_received_invite(outcome.itsp).first_line  # the name stays


def test_trunk_name_is_resolved_again_and_calls_follow_the_new_gateway(tmp_path: Path) -> None:
    # At start the name points at an address where nothing answers; the carrier then moves
    # the name to the live gateway and the next re-resolution (dns.refresh) follows it.
    dns_port = free_port(DNS_HOST)
    lab = CallLab(
        tmp_path,
        sip={"t1": T1},
        trunks_before=['{name: moving, interface: external, proxy: "sip:gw.itsp.test:%d"}'],
        extra_yaml=f"dns: {{nameservers: ['{DNS_HOST}:{dns_port}'], refresh: 0.3}}\n",
    )
    lab.trunks_before = (lab.trunks_before[0] % lab.itsp_port,)
    records = {("gw.itsp.test.", "A"): [GATEWAY_HOST]}
    with FakeDns(DNS_HOST, dns_port, records), lab:
        assert lab.sbc is not None
        lab.sbc.wait_for_log(rf"event=trunk\.resolved .*gateways={GATEWAY_HOST}:")
        start = len(lab.sbc.log_lines())
        records[("gw.itsp.test.", "A")] = [ITSP_HOST]
        lab.sbc.wait_for_log(rf"event=trunk\.resolved .*gateways={ITSP_HOST}:", start=start)
        outcome = lab.run_outbound("call_out_pbx.xml", "call_out_itsp.xml", pbx_args=("-d", "100"))
        log = lab.log_text()
    assert_ok(outcome)
    assert "event=call.failover" not in log  # straight to the moved gateway


def test_each_gateway_of_a_trunk_is_probed_and_calls_skip_a_down_one(tmp_path: Path) -> None:
    # RFC 3263 §4.2: the SRV name gives two gateways; the first answers OPTIONS 503 and is
    # taken out alone: the trunk stays up, and its calls go to the second address first.
    dns_port, first_port = free_port(DNS_HOST), free_port(GATEWAY_HOST)
    second_port = free_port(GATEWAY_HOST, avoid=[first_port])
    lab = CallLab(
        tmp_path,
        sip={"t1": T1},
        trunks_before=[
            '{name: pair, interface: external, proxy: "sip:pair.test",'
            " probe: {interval: 0.2, up_after: 1, down_after: 1}}"
        ],
        extra_yaml=f"dns: {{nameservers: ['{DNS_HOST}:{dns_port}']}}\n",
    )
    records = {
        ("_sip._udp.pair.test.", "SRV"): [
            f"10 0 {first_port} one.pair.test.",
            f"20 0 {second_port} two.pair.test.",
        ],
        ("one.pair.test.", "A"): [GATEWAY_HOST],
        ("two.pair.test.", "A"): [GATEWAY_HOST],
    }
    with (
        FakeDns(DNS_HOST, dns_port, records),
        FakeGateway(GATEWAY_HOST, first_port, options_status=503) as first,
        FakeGateway(GATEWAY_HOST, second_port) as second,
        lab,
    ):
        assert lab.sbc is not None
        lab.sbc.wait_for_log(
            rf"event=trunk\.health .*trunk=pair .*gateway={GATEWAY_HOST}:{first_port} .*state=down"
        )
        outcome = lab.run_outbound("call_out_pbx.xml", "call_out_itsp.xml", pbx_args=("-d", "100"))
        states = _trunk_states(lab, f"pair {GATEWAY_HOST}:{second_port}")
    assert_ok(outcome)  # the second gateway's 503 moves the call on to the ITSP trunk
    assert first.count("INVITE") == 0, "a gateway probed down still got the call"
    assert second.count("INVITE") >= 1, "the live gateway of the trunk was not tried"
    assert states.get("pair") == "up", states
    assert states.get(f"pair {GATEWAY_HOST}:{first_port}") == "down", states


def test_probes_and_registration_follow_a_gateway_moved_by_dns(tmp_path: Path) -> None:
    dns_port, old_port = free_port(DNS_HOST), free_port(GATEWAY_HOST)
    new_port = free_port(GATEWAY_HOST, avoid=[old_port])
    lab = CallLab(
        tmp_path,
        sip={"t1": T1},
        trunks_before=[
            '{name: moving, interface: external, proxy: "sip:moving.test",'
            " probe: {interval: 0.2}, credentials: {username: alice, password: s3cret},"
            " registrations: [{user: alice, expires: 600}]}"
        ],
        extra_yaml=f"dns: {{nameservers: ['{DNS_HOST}:{dns_port}'], refresh: 0.3}}\n",
    )
    records = {
        ("_sip._udp.moving.test.", "SRV"): [f"10 0 {old_port} gw.moving.test."],
        ("gw.moving.test.", "A"): [GATEWAY_HOST],
    }
    with (
        FakeDns(DNS_HOST, dns_port, records),
        FakeGateway(GATEWAY_HOST, old_port, register_status=200) as old,
        FakeGateway(GATEWAY_HOST, new_port, register_status=200) as new,
        lab,
    ):
        assert lab.sbc is not None
        lab.sbc.wait_for_log(r"event=trunk\.registration .*trunk=moving .*state=registered")
        start = len(lab.sbc.log_lines())
        records[("_sip._udp.moving.test.", "SRV")] = [f"10 0 {new_port} gw.moving.test."]
        lab.sbc.wait_for_log(rf"event=trunk\.registrar_moved .*gateway={GATEWAY_HOST}:{new_port}")
        lab.sbc.wait_for_log(r"event=trunk\.probe_removed .*trunk=moving", start=start)
        lab.sbc.wait_for_log(
            r"event=trunk\.registration .*trunk=moving .*state=registered", start=start
        )
        probes_after_move = old.count("OPTIONS")
        # Probes now reach the new address; at 0.2 s intervals a few must have come.
        deadline = time.monotonic() + 5.0
        while new.count("OPTIONS") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert new.count("REGISTER") >= 1, "the registration did not move to the new gateway"
    assert new.count("OPTIONS") >= 3, "probes did not follow the move"
    assert old.count("OPTIONS") <= probes_after_move + 1, "the old address is still probed"


def _trunk_states(lab: CallLab, last: str) -> dict[str, str]:
    """What `kill -USR1` reports: one sbc.trunk_state line per trunk, per address of a
    trunk with several, per registration; `last` names the line to wait for."""
    assert lab.sbc is not None
    start = len(lab.sbc.log_lines())
    os.kill(lab.sbc.pid, signal.SIGUSR1)
    lab.sbc.wait_for_log(rf'event=sbc\.trunk_state trunk="?{re.escape(last)}"? ', start=start)
    states: dict[str, str] = {}
    for line in lab.sbc.log_lines()[start:]:
        found = re.search(r'event=sbc\.trunk_state trunk=("[^"]*"|\S+) state=(\S+)', line)
        if found:
            states[found.group(1).strip('"')] = found.group(2)
    return states
