"""DTMF across the SBC with real peers (SIPp for SIP, a Python RTP endpoint for media): a PBX
that signals digits with SIP INFO against a carrier that sends and expects RFC 4733
telephone-events (TRAPS 10), and the per-stream quality line logged when the call ends."""

from __future__ import annotations

import re
import struct
import time
from pathlib import Path

import pytest

from tests.support.calls import ITSP_HOST, PBX_HOST, CallLab, RunningPair, sdp_media
from tests.support.rtp import RtpEndpoint, RtpPacket
from tests.support.sipp import SIPP

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")

EVENT_PT = 101  # the carrier's telephone-event number (call_out_itsp.xml)
_EVENT = struct.Struct("!BBH")  # RFC 4733 §2.3: event, E/R/volume, duration


def _is_invite(message: object) -> bool:
    return getattr(message, "method", "") == "INVITE" and getattr(message, "is_request", False)


def _relay(pair: RunningPair) -> tuple[tuple[str, int], tuple[str, int]]:
    """The relay's address toward the PBX (from its 200) and toward the carrier (INVITE)."""
    answer = pair.wait_for_message(
        "pbx", lambda m: m.direction == "received" and m.status == 200 and m.method == "INVITE"
    )
    invite = pair.wait_for_message("itsp", lambda m: m.direction == "received" and _is_invite(m))
    to_pbx, to_itsp = sdp_media(answer.body)[0], sdp_media(invite.body)[0]
    return (to_pbx.host, to_pbx.port), (to_itsp.host, to_itsp.port)


def _events(endpoint: RtpEndpoint, timeout: float) -> list[RtpPacket]:
    """Telephone-event packets arriving at `endpoint` until three with the E bit (RFC 4733
    §2.5.1.4: the end is sent three times) or `timeout`."""
    found: list[RtpPacket] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        received = endpoint.recv(0.2)
        if received is None or received.packet.payload_type != EVENT_PT:
            continue
        found.append(received.packet)
        if sum(1 for p in found if p.payload[1] & 0x80) >= 3:
            break
    return found


def _play_digit(endpoint: RtpEndpoint, to: tuple[str, int], event: int) -> None:
    """A carrier pressing a key: audio first (the relay latches on it), then one event of
    five updates 20 ms apart and three end packets, one RTP timestamp for all."""
    for _ in range(3):
        endpoint.send(to, bytes(160))
    timestamp, sequence = 480_000, 4000
    packets = [(False, 160 * (i + 1)) for i in range(5)] + [(True, 960)] * 3
    for index, (end, duration) in enumerate(packets):
        payload = _EVENT.pack(event, (0x80 if end else 0) | 10, duration)
        packet = RtpPacket(
            EVENT_PT, sequence + index, timestamp, endpoint.ssrc, payload, index == 0
        )
        endpoint.sock.sendto(packet.to_bytes(), to)
        time.sleep(0.02)  # the pacing of real events, not synchronisation


def test_info_digits_become_rfc4733_events_and_carrier_events_become_info(
    tmp_path: Path,
) -> None:
    lab = CallLab(tmp_path, pbx_extra="dtmf: info")
    with (
        lab,
        RtpEndpoint(PBX_HOST, lab.pbx_rtp, ssrc=0x11110001) as pbx,
        RtpEndpoint(ITSP_HOST, lab.itsp_rtp, ssrc=0x22220002) as itsp,
        lab.outbound("call_dtmf_info_pbx.xml", "call_out_itsp.xml", pbx_args=("-d", "300")) as pair,
    ):
        to_pbx, to_itsp = _relay(pair)
        invite = pair.wait_for_message(
            "itsp", lambda m: m.direction == "received" and _is_invite(m)
        )
        # The PBX offered no telephone-event; the carrier is offered one all the same.
        assert "telephone-event/8000" in invite.body, invite.body
        # INFO Signal=5 Duration=160 from the PBX: RFC 4733 events toward the carrier.
        events = _events(itsp, timeout=3.0)
        assert events, "no telephone-event reached the carrier"
        assert {p.payload[0] for p in events} == {5}
        assert len({p.timestamp for p in events}) == 1  # one event, one timestamp (§2.5.1.2)
        assert events[0].marker and not any(p.marker for p in events[1:])
        ends = [p for p in events if p.payload[1] & 0x80]
        assert len(ends) == 3 and {_EVENT.unpack(p.payload)[2] for p in ends} == {1280}
        sequences = [p.sequence for p in events]
        assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
        # The carrier presses 9: the PBX gets an INFO, and no event packet in its RTP.
        _play_digit(itsp, to_itsp, 9)
        info = pair.wait_for_message(
            "pbx", lambda m: m.direction == "received" and m.method == "INFO" and m.is_request
        )
        assert info.header("Content-Type") == "application/dtmf-relay"
        assert re.search(r"Signal=9\b", info.body), info.body
        audio = [r.packet for r in pbx.drain()]
        assert audio and all(p.payload_type == 0 for p in audio), "events leaked to the PBX"
        assert to_pbx[0] != to_itsp[0]
        outcome = pair.wait()
    assert outcome.ok, outcome.describe()


def test_call_end_logs_the_quality_of_each_direction(tmp_path: Path) -> None:
    lab = CallLab(tmp_path)
    with (
        lab,
        RtpEndpoint(PBX_HOST, lab.pbx_rtp, ssrc=0x11110001) as pbx,
        RtpEndpoint(ITSP_HOST, lab.itsp_rtp, ssrc=0x22220002) as itsp,
        lab.outbound("call_out_pbx.xml", "call_out_itsp.xml", pbx_args=("-d", "1500")) as pair,
    ):
        to_pbx, to_itsp = _relay(pair)
        # 50 packets from the carrier, sequence 7020 never sent: one lost of 50 expected.
        for index in range(50):
            if index != 20:
                packet = RtpPacket(0, 7000 + index, 160 * index, itsp.ssrc, bytes(160))
                itsp.sock.sendto(packet.to_bytes(), to_itsp)
        for _ in range(10):
            pbx.send(to_pbx, bytes(160))
        outcome = pair.wait()
        assert lab.sbc is not None
        line = lab.sbc.wait_for_log(r"event=media\.quality .*source=b ")
    assert outcome.ok, outcome.describe()
    assert "packets=49" in line and "lost=1 " in line and "codec=PCMU" in line, line
    assert re.search(r" mos=\d\.\d+", line), line
