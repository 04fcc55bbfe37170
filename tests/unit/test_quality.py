"""media.quality: RFC 3550 receive statistics and jitter, RTCP parsing, round trips through the
relay and the simplified E-model, driven with a virtual clock (no sockets, no sleeps)."""

from __future__ import annotations

import random
import struct
from dataclasses import FrozenInstanceError

import pytest

from media.quality import (
    CODECS,
    MAX_MISORDER,
    LegQuality,
    QualityReport,
    SenderInfo,
    SenderReportLog,
    StreamQuality,
    codec_profile,
    delay_impairment,
    effective_equipment_impairment,
    mos_from_r,
    one_way_delay_ms,
    parse_rtcp_compound,
    quality_estimate,
    r_factor,
)
from media.rtp import build_rtp

PAYLOAD = b"\xd5" * 160  # 20 ms of G.711
PACKET_SIZE = 12 + len(PAYLOAD)
SSRC_A = 0x0A0A0A0A
SSRC_B = 0x0B0B0B0B


class VirtualClock:
    """Seconds, moved only by the test."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class Sender:
    """An RTP source: each packet carries the next sequence number and 20 ms more timestamp."""

    def __init__(self, ssrc: int = SSRC_A, seq: int = 0, ts: int = 0, step: int = 160) -> None:
        self.ssrc = ssrc
        self.seq = seq
        self.ts = ts
        self.step = step

    def next(self, payload_type: int = 0) -> bytes:
        packet = build_rtp(payload_type, self.seq, self.ts, self.ssrc, PAYLOAD)
        self.skip()
        return packet

    def skip(self, count: int = 1) -> None:
        self.seq = (self.seq + count) & 0xFFFF
        self.ts = (self.ts + count * self.step) & 0xFFFFFFFF


def rtp(seq: int, ts: int = 0, ssrc: int = SSRC_A, payload_type: int = 0) -> bytes:
    return build_rtp(payload_type, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, PAYLOAD)


def feed_sequence(leg: LegQuality, seqs: list[int], clock: VirtualClock) -> None:
    for seq in seqs:
        leg.on_rtp(rtp(seq, seq * 160), clock.advance(0.02))


# ---------------------------------------------------------------------------- RTCP builders


def rtcp_header(count: int, packet_type: int, body: bytes) -> bytes:
    assert len(body) % 4 == 0  # test-data sanity, not input checking
    return struct.pack("!BBH", 0x80 | count, packet_type, len(body) // 4) + body


def report_block(
    ssrc: int,
    fraction: int = 0,
    cumulative: int = 0,
    highest: int = 0,
    jitter: int = 0,
    lsr: int = 0,
    dlsr: int = 0,
) -> bytes:
    word = fraction << 24 | (cumulative & 0xFFFFFF)
    return struct.pack("!IIIIII", ssrc, word, highest, jitter, lsr, dlsr)


def sender_report(
    ssrc: int,
    ntp: int,
    rtp_ts: int = 0,
    packets: int = 0,
    octets: int = 0,
    blocks: tuple[bytes, ...] = (),
) -> bytes:
    body = struct.pack("!IIIIII", ssrc, ntp >> 32, ntp & 0xFFFFFFFF, rtp_ts, packets, octets)
    return rtcp_header(len(blocks), 200, body + b"".join(blocks))


def receiver_report(ssrc: int, blocks: tuple[bytes, ...] = ()) -> bytes:
    return rtcp_header(len(blocks), 201, struct.pack("!I", ssrc) + b"".join(blocks))


def sdes(ssrc: int, cname: bytes = b"alice@192.0.2.1") -> bytes:
    chunk = struct.pack("!I", ssrc) + bytes([1, len(cname)]) + cname + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)
    return rtcp_header(1, 202, chunk)


def bye(ssrc: int) -> bytes:
    return rtcp_header(1, 203, struct.pack("!I", ssrc))


def app(ssrc: int) -> bytes:
    return rtcp_header(0, 204, struct.pack("!I", ssrc) + b"NAME" + b"\x01\x02\x03\x04")


def xr(ssrc: int) -> bytes:
    return rtcp_header(0, 207, struct.pack("!I", ssrc) + struct.pack("!BBH", 4, 0, 2) + bytes(8))


# NTP time 3,900,000,123.25 s; LSR, the middle 32 bits, is the low 16 bits of the seconds
# followed by the high 16 bits of the fraction.
NTP = (3_900_000_123 << 32) | 0x40000000
NTP_LSR = ((3_900_000_123 & 0xFFFF) << 16) | 0x4000


# ---------------------------------------------------------------------------- sequence, loss


def test_in_order_stream_counts_everything_and_loses_nothing() -> None:
    clock, leg, sender = VirtualClock(), LegQuality(8000), Sender()
    for _ in range(50):
        leg.on_rtp(sender.next(), clock.advance(0.02))
    assert leg.packets == 50
    assert leg.bytes == 50 * PACKET_SIZE
    assert leg.expected == 50
    assert leg.lost == 0
    assert leg.loss_fraction == 0.0
    assert (leg.duplicates, leg.reordered, leg.malformed, leg.ssrc_changes) == (0, 0, 0, 0)
    assert leg.ssrc == SSRC_A


def test_gaps_are_counted_as_loss() -> None:
    clock, leg = VirtualClock(), LegQuality(8000)
    feed_sequence(leg, [seq for seq in range(100) if seq not in (10, 11, 50)], clock)
    assert leg.packets == 97
    assert leg.expected == 100
    assert leg.lost == 3
    assert leg.loss_fraction == pytest.approx(0.03)


def test_trailing_loss_is_invisible_until_a_later_packet() -> None:
    # §A.3 expects up to the highest sequence received: what never arrived after it is unknown.
    clock, leg = VirtualClock(), LegQuality(8000)
    feed_sequence(leg, [0, 1, 2], clock)
    assert leg.lost == 0
    feed_sequence(leg, [6], clock)
    assert (leg.expected, leg.lost) == (7, 3)


def test_reordered_packet_fills_its_gap() -> None:
    clock, leg = VirtualClock(), LegQuality(8000)
    feed_sequence(leg, [0, 1, 3, 2, 4], clock)
    assert leg.reordered == 1
    assert leg.duplicates == 0
    assert (leg.expected, leg.lost) == (5, 0)


def test_duplicates_make_cumulative_loss_negative_and_fraction_clamped() -> None:
    clock, leg = VirtualClock(), LegQuality(8000)
    # 2 repeats the newest packet; 1 comes again after 3 (a late duplicate).
    feed_sequence(leg, [0, 1, 2, 2, 3, 1], clock)
    assert leg.duplicates == 2
    assert leg.reordered == 0
    assert leg.expected == 4
    assert leg.lost == -2
    assert leg.loss_fraction == 0.0


def test_a_late_packet_beyond_the_window_is_a_jump_not_a_duplicate() -> None:
    clock, leg = VirtualClock(), LegQuality(8000)
    feed_sequence(leg, list(range(MAX_MISORDER + 5)), clock)
    feed_sequence(leg, [0], clock)  # far behind: A.1 treats it as a possible restart
    assert (leg.duplicates, leg.reordered, leg.resyncs) == (0, 0, 0)
    assert leg.packets == MAX_MISORDER + 6
    assert leg.lost == 0  # not counted as received


def test_sequence_wrap_extends_the_sequence_number() -> None:
    clock, leg = VirtualClock(), LegQuality(8000)
    feed_sequence(leg, [65530, 65531, 65532, 65533, 65534, 65535, 0, 1, 2, 3, 4, 5], clock)
    assert leg.cycles == 65536
    assert leg.extended_max_seq == 65536 + 5
    assert (leg.expected, leg.lost) == (12, 0)


def test_loss_and_reordering_across_the_wrap() -> None:
    clock, leg = VirtualClock(), LegQuality(8000)
    # 65535 arrives after 0 (late across the wrap), 1 and 2 are lost.
    feed_sequence(leg, [65533, 65534, 0, 65535, 3, 4], clock)
    assert leg.reordered == 1
    assert leg.cycles == 65536
    assert (leg.expected, leg.lost) == (8, 2)


def test_ssrc_change_starts_over_but_keeps_totals() -> None:
    clock, leg = VirtualClock(), LegQuality(8000)
    first, second = Sender(SSRC_A, seq=100), Sender(SSRC_B, seq=40000, ts=999_999)
    for index in range(10):
        # Every other packet of the first source is 2 ms late: it has jitter.
        packet, now = first.next(), clock.advance(0.02)
        if index != 4:  # one lost in the first source
            leg.on_rtp(packet, now + (0.002 if index % 2 else 0.0))
    jitter_before = leg.jitter
    assert jitter_before > 1.0
    for _ in range(10):
        leg.on_rtp(second.next(), clock.advance(0.02))
    assert leg.ssrc == SSRC_B
    assert leg.ssrc_changes == 1
    assert leg.base_seq == 40000
    assert leg.packets == 19
    assert leg.expected == 10 + 10
    assert leg.lost == 1
    assert leg.resyncs == 0
    # The new source's jitter starts from 0 and its unrelated timestamps cause no spike;
    # the maximum over the call is kept.
    assert leg.jitter == pytest.approx(0.0, abs=1e-6)
    assert leg.max_jitter == pytest.approx(jitter_before)


def test_one_stray_packet_far_away_is_ignored() -> None:
    clock, leg = VirtualClock(), LegQuality(8000)
    feed_sequence(leg, list(range(10)) + [30000] + list(range(10, 20)), clock)
    assert leg.resyncs == 0
    assert leg.packets == 21
    assert (leg.expected, leg.lost) == (20, 0)
    assert leg.max_seq == 19


def test_two_sequential_packets_after_a_jump_restart_the_sequence() -> None:
    clock, leg = VirtualClock(), LegQuality(8000)
    feed_sequence(leg, list(range(10)) + [30000, 30001, 30002, 30004], clock)
    assert leg.resyncs == 1
    assert leg.base_seq == 30001
    # Before: 10 expected, 10 received. After: 30001..30004 expected (4), 3 received. The
    # first packet of the new numbering (30000) is neither, as in §A.1.
    assert leg.expected == 14
    assert leg.lost == 1
    assert leg.packets == 14


# ---------------------------------------------------------------------------- jitter


def test_perfectly_paced_stream_has_no_jitter() -> None:
    clock, leg, sender = VirtualClock(), LegQuality(8000), Sender(ts=123_456)
    for _ in range(500):
        leg.on_rtp(sender.next(), clock.advance(0.02))
    assert leg.jitter == pytest.approx(0.0, abs=1e-6)
    assert leg.jitter_ms == pytest.approx(0.0, abs=1e-6)
    assert leg.max_jitter_ms == pytest.approx(0.0, abs=1e-6)


def test_alternating_delay_follows_the_a8_recurrence() -> None:
    # Every other packet is 5 ms late: |D| = 5 ms = 40 units at 8 kHz for each pair.
    # J1 = 0 + (40 - 0)/16 = 2.5; J2 = 2.5 + 37.5/16 = 4.84375;
    # J3 = 4.84375 + 35.15625/16 = 7.041015625; J4 = 7.041015625 + 32.958984375/16
    # = 9.100952148...
    expected = [0.0, 2.5, 4.84375, 7.041015625, 9.1009521484375]
    leg, sender = LegQuality(8000), Sender()
    seen = []
    for index in range(5):
        leg.on_rtp(sender.next(), 1000.0 + index * 0.02 + (0.005 if index % 2 else 0.0))
        seen.append(leg.jitter)
    assert seen == pytest.approx(expected, abs=1e-6)
    assert leg.jitter_ms == pytest.approx(9.1009521484375 / 8, abs=1e-6)
    # It converges on |D| itself: 5 ms.
    for index in range(5, 400):
        leg.on_rtp(sender.next(), 1000.0 + index * 0.02 + (0.005 if index % 2 else 0.0))
    assert leg.jitter_ms == pytest.approx(5.0, abs=1e-3)
    assert leg.max_jitter_ms == pytest.approx(leg.jitter_ms, abs=1e-3)


def test_jitter_uses_the_stream_clock_rate() -> None:
    # The same 5 ms alternation at 48 kHz: |D| = 240 units, still 5 ms.
    leg, sender = LegQuality(48000, codec="opus"), Sender(step=960)
    for index in range(400):
        leg.on_rtp(sender.next(), 50.0 + index * 0.02 + (0.005 if index % 2 else 0.0))
    assert leg.jitter == pytest.approx(240.0, abs=0.05)
    assert leg.jitter_ms == pytest.approx(5.0, abs=1e-3)


def test_rtp_timestamp_wrap_does_not_disturb_jitter() -> None:
    clock, leg, sender = VirtualClock(), LegQuality(8000), Sender(ts=0xFFFFFFFF - 800)
    for _ in range(20):
        leg.on_rtp(sender.next(), clock.advance(0.02))
    assert sender.ts < 0xFFFF  # the timestamp did wrap
    assert leg.max_jitter == pytest.approx(0.0, abs=1e-6)


def dtmf_in_audio(leg: LegQuality, event_pt: int) -> None:
    """Paced audio with a telephone-event burst whose packets keep the event's start
    timestamp (RFC 4733 §2.5.1.2) while time moves on, then audio again."""
    clock, sender = VirtualClock(), Sender()
    for _ in range(10):
        leg.on_rtp(sender.next(), clock.advance(0.02))
    start = sender.ts
    for _ in range(8):
        leg.on_rtp(rtp(sender.seq, start, payload_type=event_pt), clock.advance(0.02))
        sender.skip()
    for _ in range(10):
        leg.on_rtp(sender.next(), clock.advance(0.02))


def test_telephone_events_do_not_disturb_jitter() -> None:
    leg = LegQuality(8000, event_payload_types=(101,))
    dtmf_in_audio(leg, 101)
    assert leg.packets == 28
    assert leg.lost == 0
    assert leg.max_jitter == pytest.approx(0.0, abs=1e-6)


def test_undeclared_event_payload_type_would_have_shown_as_jitter() -> None:
    # The control for the test above: the same packets, 101 not declared as events.
    leg = LegQuality(8000)
    dtmf_in_audio(leg, 101)
    assert leg.max_jitter > 10.0


def test_comfort_noise_is_left_out_of_jitter_without_being_declared() -> None:
    leg = LegQuality(8000)
    dtmf_in_audio(leg, 13)
    assert leg.max_jitter == pytest.approx(0.0, abs=1e-6)


def test_stream_starting_with_an_event_packet_measures_jitter_from_the_first_audio() -> None:
    leg, clock = LegQuality(8000, event_payload_types=(101,)), VirtualClock()
    leg.on_rtp(rtp(0, 5_000_000, payload_type=101), clock.advance(0.02))
    sender = Sender(seq=1, ts=160)
    for _ in range(10):
        leg.on_rtp(sender.next(), clock.advance(0.02))
    assert leg.max_jitter == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------------------- malformed RTP


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80",
        b"\x80\x00\x00\x01\x00",
        bytes(11),
        b"\x00" + bytes(20),  # version 0
        b"\x40" + bytes(20),  # version 1
        b"\x83" + bytes(20),  # 3 CSRCs announced, 2 present
        b"\xa0" + bytes(19) + b"\x00",  # padding of 0 octets
        b"\xa0" + bytes(19) + b"\x40",  # padding longer than the payload
    ],
)
def test_malformed_rtp_is_counted_not_raised(data: bytes) -> None:
    leg = LegQuality(8000)
    leg.on_rtp(data, 1.0)
    assert leg.malformed == 1
    assert leg.packets == 0
    assert leg.ssrc is None


def test_csrcs_and_padding_that_fit_are_accepted() -> None:
    leg = LegQuality(8000)
    with_csrcs = b"\x82\x00\x00\x01" + bytes(4) + struct.pack("!I", SSRC_A) + bytes(8) + PAYLOAD
    padded = b"\xa0\x00\x00\x02" + bytes(4) + struct.pack("!I", SSRC_A) + PAYLOAD + b"\x00\x00\x03"
    leg.on_rtp(with_csrcs, 1.0)
    leg.on_rtp(padded, 1.02)
    assert (leg.packets, leg.malformed, leg.lost) == (2, 0, 0)


def test_random_garbage_never_raises() -> None:
    rng = random.Random(3550)
    leg = LegQuality(8000)
    for _ in range(3000):
        size = rng.randrange(0, 80)
        leg.on_rtp(bytes(rng.randrange(256) for _ in range(size)), rng.uniform(0, 100))
        leg.on_rtcp(bytes(rng.randrange(256) for _ in range(size)), rng.uniform(0, 100))
    # Every datagram ended up somewhere: RTP, malformed RTP, or RTCP (muxed range).
    assert leg.packets + leg.malformed + leg.rtcp_packets == 6000
    assert leg.rtcp_malformed > 0


def test_rtcp_muxed_on_the_rtp_port_goes_to_rtcp() -> None:
    leg = LegQuality(8000)
    feed_sequence(leg, [0, 1, 2], VirtualClock())
    leg.on_rtp(receiver_report(SSRC_A) + sdes(SSRC_A), 5.0)
    leg.on_rtp(receiver_report(SSRC_A), 5.1)  # reduced-size RTCP (RFC 5506): 8 bytes
    assert leg.rtcp_packets == 2
    assert leg.rtcp_malformed == 0
    assert (leg.packets, leg.malformed, leg.ssrc, leg.ssrc_changes) == (3, 0, SSRC_A, 0)


# ---------------------------------------------------------------------------- RTCP parsing


def test_parse_sr_rr_sdes_compound() -> None:
    data = (
        sender_report(
            SSRC_A,
            NTP,
            rtp_ts=123_456,
            packets=500,
            octets=80_000,
            blocks=(report_block(SSRC_B, 25, -3, 70_000, 88, 0x11112222, 0x00018000),),
        )
        + receiver_report(SSRC_A, (report_block(0x0C0C0C0C, 255, 0x7FFFFF, 5, 1, 0, 0),))
        + sdes(SSRC_A)
    )
    compound = parse_rtcp_compound(data)
    assert compound.malformed is False
    assert compound.skipped == 1
    sr, rr = compound.reports
    assert sr.ssrc == SSRC_A
    assert sr.sender == SenderInfo(NTP, 123_456, 500, 80_000)
    assert sr.sender.lsr == NTP_LSR
    (block,) = sr.blocks
    assert block.ssrc == SSRC_B
    assert block.fraction_lost == 25
    assert block.loss_fraction == pytest.approx(25 / 256)
    assert block.cumulative_lost == -3  # signed 24 bits
    assert block.highest_sequence == 70_000
    assert block.jitter == 88
    assert (block.lsr, block.dlsr) == (0x11112222, 0x00018000)
    assert rr.sender is None
    assert rr.ssrc == SSRC_A
    assert rr.blocks[0].cumulative_lost == 0x7FFFFF
    assert rr.blocks[0].fraction_lost == 255


def test_bye_app_xr_and_unknown_types_are_skipped_by_length() -> None:
    unknown = rtcp_header(0, 210, struct.pack("!I", SSRC_A) + bytes(12))
    data = receiver_report(SSRC_A) + sdes(SSRC_A) + app(SSRC_A) + xr(SSRC_A) + unknown
    data += bye(SSRC_A)
    compound = parse_rtcp_compound(data)
    assert compound.malformed is False
    assert compound.skipped == 5
    assert len(compound.reports) == 1


def test_report_extension_after_the_blocks_is_ignored() -> None:
    body = struct.pack("!I", SSRC_A) + report_block(SSRC_B, jitter=7) + b"EXT!" * 2
    compound = parse_rtcp_compound(rtcp_header(1, 201, body))
    assert compound.malformed is False
    assert compound.reports[0].blocks[0].jitter == 7


@pytest.mark.parametrize(
    ("data", "reports"),
    [
        (b"", 0),
        (b"\x80\xc8", 0),  # shorter than a header
        (b"\x00\xc9\x00\x01" + bytes(4), 0),  # version 0
        (b"\x80\x10\x00\x01" + bytes(4), 0),  # packet type outside 192-223
        (b"\x80\xc9\x00\x09" + bytes(4), 0),  # length beyond the datagram
        (b"\x81\xc9\x00\x01" + bytes(4), 0),  # one block announced, none present
        (b"\x80\xc8\x00\x01" + bytes(4), 0),  # SR without sender info
        (receiver_report(SSRC_A) + b"\x81\xca", 1),  # truncated after a good RR
        (receiver_report(SSRC_A) + sdes(SSRC_A)[:-4], 1),  # truncated SDES
    ],
)
def test_malformed_rtcp_is_reported_not_raised(data: bytes, reports: int) -> None:
    compound = parse_rtcp_compound(data)
    assert compound.malformed is True
    assert len(compound.reports) == reports
    leg = LegQuality(8000)
    leg.on_rtcp(data, 1.0)
    assert (leg.rtcp_packets, leg.rtcp_malformed) == (1, 1)


def test_reports_before_a_bad_packet_are_kept() -> None:
    leg = LegQuality(8000)
    good = receiver_report(SSRC_B, (report_block(SSRC_A, fraction=64, jitter=80),))
    leg.on_rtcp(good + b"\x81\xc9\x00\x01" + bytes(4), 1.0)
    assert leg.rtcp_malformed == 1
    block = leg.report_about(SSRC_A)
    assert block is not None and block.fraction_lost == 64


# ---------------------------------------------------------------------------- round trips


def test_rtt_from_a_forwarded_sr_and_the_rr_that_echoes_it() -> None:
    clock, stream = VirtualClock(10.0), StreamQuality(8000)
    # A sends an SR; the relay forwards it to B.
    stream.a.on_rtcp(sender_report(SSRC_A, NTP) + sdes(SSRC_A), clock.now)
    # B holds it 0.5 s (DLSR) and its RR reaches the relay 0.62 s after the SR passed:
    # 0.12 s were spent on the wire relay -> B -> relay.
    rr = receiver_report(SSRC_B, (report_block(SSRC_A, lsr=NTP_LSR, dlsr=32768),))
    stream.b.on_rtcp(rr + sdes(SSRC_B), clock.advance(0.62))
    assert stream.b.rtt == pytest.approx(0.12)
    assert stream.a.rtt is None  # nothing measured toward A
    to_b, to_a = stream.snapshot(clock.now)
    assert to_b.rtt_ms == pytest.approx(120.0)
    assert to_a.rtt_ms is None


def test_rtt_both_ways_and_mean_over_the_call() -> None:
    clock, stream = VirtualClock(), StreamQuality(8000)
    ntp_b = (3_900_000_200 << 32) | 0x80000000
    lsr_b = ((3_900_000_200 & 0xFFFF) << 16) | 0x8000
    stream.b.on_rtcp(sender_report(SSRC_B, ntp_b), clock.now)
    # A's RR echoes B's SR 0.25 s later with DLSR 0.2 s: 50 ms relay <-> A.
    rr_a = receiver_report(SSRC_A, (report_block(SSRC_B, lsr=lsr_b, dlsr=13107),))
    stream.a.on_rtcp(rr_a, clock.advance(0.25))
    assert stream.a.rtt == pytest.approx(0.05, abs=1e-4)
    # Two samples toward B: 100 ms then 140 ms.
    stream.a.on_rtcp(sender_report(SSRC_A, NTP), clock.advance(1.0))
    rr_b = receiver_report(SSRC_B, (report_block(SSRC_A, lsr=NTP_LSR, dlsr=0),))
    stream.b.on_rtcp(rr_b, clock.advance(0.1))
    second_ntp = NTP + (5 << 32)
    stream.a.on_rtcp(sender_report(SSRC_A, second_ntp), clock.advance(5.0))
    second_lsr = SenderInfo(second_ntp, 0, 0, 0).lsr
    rr_b2 = receiver_report(SSRC_B, (report_block(SSRC_A, lsr=second_lsr, dlsr=0),))
    stream.b.on_rtcp(rr_b2, clock.advance(0.14))
    assert stream.b.rtt_samples == 2
    assert stream.b.rtt == pytest.approx(0.12)
    assert stream.b.rtt_last == pytest.approx(0.14)
    assert stream.b.rtt_max == pytest.approx(0.14)
    to_b, to_a = stream.snapshot(clock.now)
    assert to_b.rtt_ms == pytest.approx(120.0)
    assert to_a.rtt_ms == pytest.approx(50.0, abs=0.1)


@pytest.mark.parametrize(
    ("lsr", "dlsr"),
    [
        (0, 0),  # LSR 0: the receiver had no SR
        (0xDEADBEEF, 0),  # an SR the relay never forwarded
        (NTP_LSR, 65536 * 2),  # DLSR longer than the whole exchange: negative
    ],
)
def test_rtt_ignores_reports_it_cannot_use(lsr: int, dlsr: int) -> None:
    stream = StreamQuality(8000)
    stream.a.on_rtcp(sender_report(SSRC_A, NTP), 10.0)
    stream.b.on_rtcp(receiver_report(SSRC_B, (report_block(SSRC_A, lsr=lsr, dlsr=dlsr),)), 10.5)
    assert stream.b.rtt is None
    assert stream.b.rtt_samples == 0


def test_an_sr_from_a_is_not_matched_against_rrs_from_a() -> None:
    # The relay forwarded A's SR toward B: an RR from A echoing it is not a round trip to A.
    stream = StreamQuality(8000)
    stream.a.on_rtcp(sender_report(SSRC_A, NTP), 10.0)
    stream.a.on_rtcp(receiver_report(SSRC_A, (report_block(SSRC_B, lsr=NTP_LSR),)), 10.3)
    assert stream.a.rtt is None


def test_sender_report_log_is_bounded() -> None:
    log = SenderReportLog(limit=3)
    for key in (1, 2, 3, 4):
        log.record(key, float(key))
    log.record(0, 9.0)  # never kept
    assert len(log) == 3
    assert log.round_trip(1, 0, 10.0) is None  # evicted
    assert log.round_trip(4, 65536, 10.0) == pytest.approx(5.0)


# ---------------------------------------------------------------------------- remote reports


def test_remote_report_about_this_direction_appears_in_its_snapshot() -> None:
    clock, stream = VirtualClock(), StreamQuality(8000)
    sender = Sender(SSRC_A)
    for _ in range(100):
        stream.a.on_rtp(sender.next(), clock.advance(0.02))
    blocks = (
        report_block(0x0C0C0C0C, fraction=200, jitter=8000),  # another source: not ours
        report_block(SSRC_A, fraction=64, cumulative=7, highest=99, jitter=160),
    )
    stream.b.on_rtcp(receiver_report(SSRC_B, blocks) + sdes(SSRC_B), clock.advance(0.01))
    to_b, to_a = stream.snapshot(clock.now)
    assert to_b.remote_loss_fraction == pytest.approx(0.25)
    assert to_b.remote_cumulative_lost == 7
    assert to_b.remote_jitter_ms == pytest.approx(20.0)  # 160 units at 8 kHz
    assert to_a.remote_loss_fraction is None
    assert to_a.remote_jitter_ms is None


def test_sender_info_is_reported_for_its_direction() -> None:
    stream = StreamQuality(8000)
    stream.a.on_rtcp(sender_report(SSRC_A, NTP, packets=321, octets=54_321), 1.0)
    to_b, to_a = stream.snapshot(2.0)
    assert (to_b.sender_packets, to_b.sender_octets) == (321, 54_321)
    assert to_a.sender_packets is None


# ---------------------------------------------------------------------------- E-model


def test_g711_without_loss_or_delay() -> None:
    g711 = codec_profile("PCMU")
    assert r_factor(0.0, 0.0, g711) == pytest.approx(93.2)
    # 1 + 0.035*93.2 + 93.2*33.2*6.8*7e-6 = 1 + 3.262 + 0.147285824
    assert mos_from_r(93.2) == pytest.approx(4.409285824)


def test_g729_codec_impairment() -> None:
    assert r_factor(0.0, 0.0, codec_profile("G729")) == pytest.approx(82.2)
    # 1 + 2.877 + 82.2*22.2*17.8*7e-6
    assert mos_from_r(82.2) == pytest.approx(4.104375064)


def test_effective_equipment_impairment_with_loss() -> None:
    # G.711 with PLC at 2 %: 95 * 2 / (2 + 25.1)
    assert effective_equipment_impairment(2.0, 0.0, 25.1) == pytest.approx(7.011070111)
    assert r_factor(0.0, 2.0, CODECS["PCMA"]) == pytest.approx(93.2 - 7.011070111)
    # G.729A at 1 %: 11 + 84 * 1 / 20
    assert effective_equipment_impairment(1.0, 11.0, 19.0) == pytest.approx(15.2)
    # Bursty loss weighs more: BurstR 2 at 2 %: 95 * 2 / (1 + 25.1)
    assert effective_equipment_impairment(2.0, 0.0, 25.1, 2.0) == pytest.approx(7.279693487)
    assert effective_equipment_impairment(0.0, 5.0, 10.0) == 5.0


def test_delay_impairment_below_and_above_the_knee() -> None:
    assert delay_impairment(0.0) == 0.0
    assert delay_impairment(-5.0) == 0.0
    assert delay_impairment(100.0) == pytest.approx(2.4)
    # 0.024 * 200 + 0.11 * (200 - 177.3)
    assert delay_impairment(200.0) == pytest.approx(7.297)


def test_mos_bounds() -> None:
    assert mos_from_r(-10.0) == 1.0
    assert mos_from_r(0.0) == 1.0
    assert mos_from_r(5.0) == 1.0  # the polynomial gives 0.992 here
    assert mos_from_r(50.0) == pytest.approx(2.575)
    assert mos_from_r(100.0) == 4.5
    assert mos_from_r(120.0) == 4.5
    assert r_factor(2000.0, 100.0, codec_profile("G729")) == 0.0


def test_one_way_delay_and_quality_estimate() -> None:
    g729 = codec_profile("g729")
    # 100/2 + 2*10 + 20 + 5 look-ahead
    assert one_way_delay_ms(100.0, 10.0, g729, 20.0) == pytest.approx(95.0)
    r, mos = quality_estimate(0.01, 10.0, 100.0, g729, 20.0)
    # 93.2 - 0.024*95 - (11 + 84/20) = 93.2 - 2.28 - 15.2
    assert r == pytest.approx(75.72)
    assert mos == pytest.approx(mos_from_r(75.72))
    # G.711 at 20 ms ptime and nothing else: Id = 0.024 * 20
    r, _ = quality_estimate(0.0, 0.0, 0.0, codec_profile("PCMU"))
    assert r == pytest.approx(93.2 - 0.48)


def test_codec_profiles() -> None:
    for name in ("PCMU", "PCMA", "G722", "G729", "iLBC", "GSM", "AMR", "opus"):
        profile = codec_profile(name)
        assert 0.0 <= profile.ie < 95.0 and profile.bpl > 0.0
        assert profile.source
    assert codec_profile("opus").source.startswith("approximation")
    assert codec_profile("pcma") is CODECS["PCMA"]
    unknown = codec_profile("X-FANCY")
    assert unknown.name == "X-FANCY"
    assert (unknown.ie, unknown.bpl) == (0.0, 25.1)
    assert "unknown" in unknown.source


# ---------------------------------------------------------------------------- reports


def test_snapshot_of_a_silent_leg() -> None:
    report = LegQuality(8000, label="pbx").snapshot(5.0)
    assert report.source == "pbx"
    assert (report.packets, report.expected, report.lost) == (0, 0, 0)
    assert report.loss_fraction == 0.0
    assert report.duration_s is None
    assert report.r_factor is None and report.mos is None
    assert report.rtt_ms is None


def test_snapshot_reports_the_stream_and_its_score() -> None:
    clock = VirtualClock(100.0)
    stream = StreamQuality(8000, codec="PCMA", labels=("pbx", "trunk"))
    sender = Sender(SSRC_A)
    for index in range(100):
        packet, now = sender.next(), clock.advance(0.02)
        if index % 25 != 7:  # 4 of 100 lost: 7, 32, 57, 82
            stream.a.on_rtp(packet, now)
    to_trunk, to_pbx = stream.snapshot(clock.advance(0.5))
    assert isinstance(to_trunk, QualityReport)
    assert to_trunk.source == "pbx"
    assert to_trunk.codec == "PCMA"
    assert to_trunk.ssrc == SSRC_A
    assert (to_trunk.packets, to_trunk.expected, to_trunk.lost) == (96, 100, 4)
    assert to_trunk.loss_fraction == pytest.approx(0.04)
    assert to_trunk.bytes == 96 * PACKET_SIZE
    assert to_trunk.duration_s == pytest.approx(102.5 - 100.02)  # first packet to snapshot
    assert to_trunk.jitter_ms == pytest.approx(0.0, abs=1e-6)
    # 4 % lost, no jitter or RTT: the delay is the 20 ms ptime alone.
    loss_percent = 4.0
    expected_r = 93.2 - 0.48 - 95 * loss_percent / (loss_percent + 25.1)
    assert to_trunk.r_factor == pytest.approx(expected_r)
    assert to_trunk.mos == pytest.approx(mos_from_r(expected_r))
    assert to_pbx.packets == 0 and to_pbx.mos is None
    with pytest.raises(FrozenInstanceError):
        to_trunk.packets = 0  # type: ignore[misc]


def test_score_takes_the_worse_of_relay_and_receiver_loss() -> None:
    clock, stream = VirtualClock(), StreamQuality(8000)
    sender = Sender(SSRC_A)
    for _ in range(50):
        stream.a.on_rtp(sender.next(), clock.advance(0.02))
    clean, _ = stream.snapshot(clock.now)
    # B says it lost a quarter (the relay -> B hop): the listener at B hears that.
    stream.b.on_rtcp(receiver_report(SSRC_B, (report_block(SSRC_A, fraction=64),)), clock.now)
    lossy, _ = stream.snapshot(clock.now)
    assert clean.r_factor == pytest.approx(93.2 - 0.48)
    assert lossy.r_factor == pytest.approx(93.2 - 0.48 - 95 * 25 / (25 + 25.1))


def test_to_dict_has_every_field_in_plain_types() -> None:
    clock, stream = VirtualClock(), StreamQuality(8000)
    feed_sequence(stream.b, [0, 1, 2, 4], clock)
    _, report = stream.snapshot(clock.now)
    data = report.to_dict()
    assert list(data) == list(QualityReport.__dataclass_fields__)
    assert data["lost"] == 1
    assert data["source"] == "b"
    assert data["rtt_ms"] is None
    assert all(isinstance(value, (int, float, str, type(None))) for value in data.values())


def test_invalid_clock_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="clock rate"):
        LegQuality(0)
