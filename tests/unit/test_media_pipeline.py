"""The packet path of one relayed stream (media.pipeline.StreamPipeline): SRTP per leg with
real libsrtp peers, telephone-event payload-type mapping, DTMF taken out toward a SIP INFO
side and played into the stream toward an RFC 4733 side, and the per-direction report.

The pipeline reads time.monotonic(); the `clock` fixture replaces it with a virtual clock so
arrival times, digit timeouts and injected timestamps are exact and no test sleeps."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pylibsrtp import Error, Policy, Session

import media.pipeline as pipeline_module
from media.dtmf import END_PACKETS, Scheduled, TelephoneEvent, parse_event
from media.pipeline import PipelineError, StreamPipeline
from media.plan import LegMedia, SrtpKeys
from media.rtp import RtpHeader, build_rtp, parse_rtp
from media.session import Leg

SUITE = "AES_CM_128_HMAC_SHA1_80"
PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "AEAD_AES_256_GCM": Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}
KEY_LENGTH = {
    "AES_CM_128_HMAC_SHA1_80": 30,
    "AES_CM_128_HMAC_SHA1_32": 30,
    "AEAD_AES_128_GCM": 28,
    "AEAD_AES_256_GCM": 44,
}
SSRC_A = 0x0A0A0A0A  # what leg A's peer sends with
SSRC_B = 0x0B0B0B0B
PCMU = 0
PAYLOAD = bytes(range(160))
FRAME = 160  # 20 ms of 8000 Hz audio, in timestamp units


def key(seed: int, length: int = 30) -> bytes:
    return bytes((seed + i) % 256 for i in range(length))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ------------------------------------------------------------------ virtual clock


class VirtualClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[VirtualClock]:
    virtual = VirtualClock()
    monkeypatch.setattr(pipeline_module, "monotonic", virtual)
    yield virtual


# ------------------------------------------------------------------ packets


def audio(sequence: int, timestamp: int, ssrc: int, payload: bytes = PAYLOAD) -> bytes:
    return build_rtp(PCMU, sequence, timestamp, ssrc, payload)


def event(
    sequence: int,
    timestamp: int,
    ssrc: int,
    code: int,
    duration: int,
    *,
    end: bool = False,
    pt: int = 101,
    marker: bool = False,
) -> bytes:
    payload = TelephoneEvent(code, end, 10, duration).pack()
    return build_rtp(pt, sequence, timestamp, ssrc, payload, marker=marker)


def digit_packets(
    code: int, first_sequence: int, timestamp: int, ssrc: int, pt: int = 101
) -> list[bytes]:
    """One 100 ms digit as RFC 4733 §2.5.1 sends it: M bit on the first packet, a duration
    update every 50 ms, the final packet three times with the E bit (§2.5.1.4)."""
    packets = [
        event(first_sequence, timestamp, ssrc, code, 400, pt=pt, marker=True),
        event(first_sequence + 1, timestamp, ssrc, code, 800, pt=pt),
    ]
    for repeat in range(END_PACKETS):
        packets.append(
            event(first_sequence + 2 + repeat, timestamp, ssrc, code, 800, end=True, pt=pt)
        )
    return packets


def sender_report(ssrc: int, packets: int, octets: int) -> bytes:
    """An RTCP SR without report blocks (RFC 3550 §6.4.1)."""
    return struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, 0xE0000000, 0, 12345, packets, octets)


def receiver_report(ssrc: int) -> bytes:
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)


def header(data: bytes) -> RtpHeader:
    return parse_rtp(data)


# ------------------------------------------------------------------ the far ends


@dataclass
class Peer:
    """The phone or trunk on an SRTP leg, on libsrtp directly: it encrypts with the key it
    announced (the leg's `inbound`) and decrypts with the one we announced (`outbound`)."""

    keys: SrtpKeys
    tx: Session
    rx: Session

    @classmethod
    def for_keys(cls, keys: SrtpKeys) -> Peer:
        profile = PROFILES[keys.suite]
        sends = base64.b64decode(keys.inbound)
        hears = base64.b64decode(keys.outbound)
        return cls(
            keys,
            Session(Policy(key=sends, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)),
            Session(Policy(key=hears, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile)),
        )


def srtp_keys(seed: int, suite: str = SUITE) -> SrtpKeys:
    length = KEY_LENGTH[suite]
    return SrtpKeys(suite, b64(key(seed, length)), b64(key(seed + 100, length)))


def digits_recorder() -> tuple[list[tuple[Leg, str, int]], StreamPipeline]:
    heard: list[tuple[Leg, str, int]] = []
    pipe = StreamPipeline(lambda leg, digit, ms: heard.append((leg, digit, ms)))
    return heard, pipe


def forward(pipe: StreamPipeline, leg: Leg, data: bytes) -> bytes:
    out = pipe.rtp[leg](data)
    assert out is not None, "the pipeline dropped a packet it should forward"
    return out


# ================================================================== plain forwarding


def test_plain_legs_forward_rtp_unchanged_both_ways(clock: VirtualClock) -> None:
    pipe = StreamPipeline()
    from_a, from_b = audio(1, 0, SSRC_A), audio(7, 1000, SSRC_B)
    assert pipe.rtp[Leg.A](from_a) == from_a
    assert pipe.rtp[Leg.B](from_b) == from_b


def test_plain_legs_forward_rtcp_unchanged_both_ways(clock: VirtualClock) -> None:
    pipe = StreamPipeline()
    sr, rr = sender_report(SSRC_A, 10, 1600), receiver_report(SSRC_B)
    assert pipe.rtcp[Leg.A](sr) == sr
    assert pipe.rtcp[Leg.B](rr) == rr


def test_plain_legs_forward_telephone_event_unchanged_when_numbers_agree(
    clock: VirtualClock,
) -> None:
    pipe = StreamPipeline()
    same = LegMedia(events_in=101, events_out=101)
    pipe.configure(Leg.A, same)
    pipe.configure(Leg.B, same)
    packet = event(1, 0, SSRC_A, 5, 400, marker=True)
    assert pipe.rtp[Leg.A](packet) == packet


def test_plain_legs_forward_what_is_not_rtp_unchanged(clock: VirtualClock) -> None:
    # The relay forwards bytes; the statistics count them as malformed.
    pipe = StreamPipeline()
    assert pipe.rtp[Leg.A](b"\x00\x01") == b"\x00\x01"
    assert pipe.report(0, clock()).from_a.malformed == 1


# ================================================================== SRTP <-> RTP


@pytest.mark.parametrize("suite", list(PROFILES))
def test_srtp_from_leg_a_comes_out_plain_toward_leg_b(clock: VirtualClock, suite: str) -> None:
    keys = srtp_keys(1, suite)
    peer = Peer.for_keys(keys)
    pipe = StreamPipeline()
    pipe.configure(Leg.A, LegMedia(srtp=keys))
    plain = audio(100, 16000, SSRC_A)
    protected = peer.tx.protect(plain)
    assert protected != plain
    assert forward(pipe, Leg.A, protected) == plain


@pytest.mark.parametrize("suite", list(PROFILES))
def test_plain_from_leg_b_goes_out_as_srtp_with_the_key_we_announced_to_a(
    clock: VirtualClock, suite: str
) -> None:
    keys = srtp_keys(2, suite)
    peer = Peer.for_keys(keys)
    pipe = StreamPipeline()
    pipe.configure(Leg.A, LegMedia(srtp=keys))
    plain = audio(500, 8000, SSRC_B)
    out = forward(pipe, Leg.B, plain)
    assert out != plain
    assert len(out) > len(plain)  # the authentication tag
    assert peer.rx.unprotect(out) == plain


def test_srtp_toward_a_is_not_encrypted_with_the_key_a_sends_with_rfc4568_6_1(
    clock: VirtualClock,
) -> None:
    # Each direction has its own key: a session keyed with leg A's own key cannot read
    # what we send to A (keys are never mirrored back, TRAPS #9).
    keys = srtp_keys(3)
    pipe = StreamPipeline()
    pipe.configure(Leg.A, LegMedia(srtp=keys))
    out = forward(pipe, Leg.B, audio(1, 0, SSRC_B))
    mirrored = Session(
        Policy(
            key=base64.b64decode(keys.inbound),
            ssrc_type=Policy.SSRC_ANY_INBOUND,
            srtp_profile=PROFILES[SUITE],
        )
    )
    with pytest.raises(Error, match="authentication"):
        mirrored.unprotect(out)


def test_srtcp_from_leg_a_comes_out_plain_and_is_read_for_the_report(
    clock: VirtualClock,
) -> None:
    keys = srtp_keys(4)
    peer = Peer.for_keys(keys)
    pipe = StreamPipeline()
    pipe.configure(Leg.A, LegMedia(srtp=keys))
    sr = sender_report(SSRC_A, packets=42, octets=6720)
    protected = peer.tx.protect_rtcp(sr)
    assert protected != sr
    assert pipe.rtcp[Leg.A](protected) == sr
    report = pipe.report(0, clock())
    assert report.from_a.rtcp_packets == 1
    assert report.from_a.sender_packets == 42
    assert report.from_a.sender_octets == 6720


def test_plain_rtcp_from_leg_b_goes_out_as_srtcp_for_leg_a(clock: VirtualClock) -> None:
    keys = srtp_keys(5)
    peer = Peer.for_keys(keys)
    pipe = StreamPipeline()
    pipe.configure(Leg.A, LegMedia(srtp=keys))
    rr = receiver_report(SSRC_B)
    out = pipe.rtcp[Leg.B](rr)
    assert out is not None and out != rr
    assert peer.rx.unprotect_rtcp(out) == rr


def test_tampered_srtp_is_dropped_and_counted_as_an_auth_failure(clock: VirtualClock) -> None:
    keys = srtp_keys(6)
    peer = Peer.for_keys(keys)
    pipe = StreamPipeline()
    pipe.configure(Leg.A, LegMedia(srtp=keys))
    protected = bytearray(peer.tx.protect(audio(1, 0, SSRC_A)))
    protected[20] ^= 0x01
    assert pipe.rtp[Leg.A](bytes(protected)) is None
    report = pipe.report(0, clock())
    assert report.srtp_a is not None
    assert report.srtp_a.suite == SUITE
    assert report.srtp_a.auth_failures == 1
    assert report.srtp_b is None  # leg B is plain RTP
    assert report.from_a.packets == 0  # a refused packet is no media received


def test_tampered_srtcp_is_dropped_and_counted(clock: VirtualClock) -> None:
    keys = srtp_keys(7)
    peer = Peer.for_keys(keys)
    pipe = StreamPipeline()
    pipe.configure(Leg.A, LegMedia(srtp=keys))
    protected = bytearray(peer.tx.protect_rtcp(sender_report(SSRC_A, 1, 160)))
    protected[10] ^= 0x80
    assert pipe.rtcp[Leg.A](bytes(protected)) is None
    report = pipe.report(0, clock())
    assert report.srtp_a is not None and report.srtp_a.auth_failures == 1
    assert report.from_a.rtcp_packets == 0


def test_plain_rtp_arriving_on_an_srtp_leg_is_dropped_not_forwarded(clock: VirtualClock) -> None:
    pipe = StreamPipeline()
    pipe.configure(Leg.A, LegMedia(srtp=srtp_keys(8)))
    assert pipe.rtp[Leg.A](audio(1, 0, SSRC_A)) is None
    report = pipe.report(0, clock())
    assert report.srtp_a is not None and report.srtp_a.auth_failures == 1


def test_a_replayed_srtp_packet_is_dropped_and_counted_rfc3711_3_3_2(
    clock: VirtualClock,
) -> None:
    keys = srtp_keys(9)
    peer = Peer.for_keys(keys)
    pipe = StreamPipeline()
    pipe.configure(Leg.A, LegMedia(srtp=keys))
    protected = peer.tx.protect(audio(1, 0, SSRC_A))
    assert pipe.rtp[Leg.A](protected) is not None
    assert pipe.rtp[Leg.A](protected) is None
    report = pipe.report(0, clock())
    assert report.srtp_a is not None
    assert (report.srtp_a.replays, report.srtp_a.auth_failures) == (1, 0)


def test_rekey_takes_the_new_keys_in_both_directions(clock: VirtualClock) -> None:
    old, new = srtp_keys(10), srtp_keys(20)
    old_peer, new_peer = Peer.for_keys(old), Peer.for_keys(new)
    pipe = StreamPipeline()
    pipe.configure(Leg.A, LegMedia(srtp=old))
    assert forward(pipe, Leg.A, old_peer.tx.protect(audio(1, 0, SSRC_A))) == audio(1, 0, SSRC_A)

    pipe.configure(Leg.A, LegMedia(srtp=new))  # a re-INVITE with fresh a=crypto on both sides

    plain = audio(2, FRAME, SSRC_A)
    assert forward(pipe, Leg.A, new_peer.tx.protect(plain)) == plain
    toward_a = forward(pipe, Leg.B, audio(1, 0, SSRC_B))
    assert new_peer.rx.unprotect(toward_a) == audio(1, 0, SSRC_B)
    # The old key no longer opens anything.
    assert pipe.rtp[Leg.A](old_peer.tx.protect(audio(3, 2 * FRAME, SSRC_A))) is None


def test_reconfigure_with_the_same_keys_keeps_the_replay_window_rfc3711_3_3_1(
    clock: VirtualClock,
) -> None:
    # A new libsrtp context for an unchanged key would restart the rollover counter and
    # forget what was received: a replay would pass again.
    keys = srtp_keys(11)
    peer = Peer.for_keys(keys)
    pipe = StreamPipeline()
    pipe.configure(Leg.A, LegMedia(srtp=keys))
    first = peer.tx.protect(audio(1, 0, SSRC_A))
    assert pipe.rtp[Leg.A](first) is not None

    pipe.configure(Leg.A, LegMedia(srtp=keys, ptime_ms=30.0))  # re-offer, same a=crypto

    assert pipe.rtp[Leg.A](first) is None  # still a replay
    assert forward(pipe, Leg.A, peer.tx.protect(audio(2, FRAME, SSRC_A))) == audio(2, FRAME, SSRC_A)


def test_reconfigure_from_srtp_to_plain_rtp_stops_encrypting(clock: VirtualClock) -> None:
    pipe = StreamPipeline()
    pipe.configure(Leg.A, LegMedia(srtp=srtp_keys(12)))
    pipe.configure(Leg.A, LegMedia())
    plain = audio(1, 0, SSRC_B)
    assert pipe.rtp[Leg.B](plain) == plain
    assert pipe.report(0, clock()).srtp_a is None


def test_both_legs_srtp_each_with_its_own_keys(clock: VirtualClock) -> None:
    keys_a, keys_b = srtp_keys(30), srtp_keys(60)
    peer_a, peer_b = Peer.for_keys(keys_a), Peer.for_keys(keys_b)
    pipe = StreamPipeline()
    pipe.configure(Leg.A, LegMedia(srtp=keys_a))
    pipe.configure(Leg.B, LegMedia(srtp=keys_b))

    plain_a = audio(1, 0, SSRC_A)
    sent_by_a = peer_a.tx.protect(plain_a)
    toward_b = forward(pipe, Leg.A, sent_by_a)
    assert toward_b != sent_by_a  # never the same bytes on both sides (TRAPS #9)
    assert peer_b.rx.unprotect(toward_b) == plain_a

    plain_b = audio(9, 900, SSRC_B)
    sent_by_b = peer_b.tx.protect(plain_b)
    toward_a = forward(pipe, Leg.B, sent_by_b)
    assert toward_a != sent_by_b
    assert peer_a.rx.unprotect(toward_a) == plain_b

    rtcp = peer_a.tx.protect_rtcp(sender_report(SSRC_A, 1, 160))
    out = pipe.rtcp[Leg.A](rtcp)
    assert out is not None and out != rtcp
    assert peer_b.rx.unprotect_rtcp(out) == sender_report(SSRC_A, 1, 160)


def test_both_legs_srtp_count_failures_per_leg(clock: VirtualClock) -> None:
    keys_a, keys_b = srtp_keys(31), srtp_keys(61)
    pipe = StreamPipeline()
    pipe.configure(Leg.A, LegMedia(srtp=keys_a))
    pipe.configure(Leg.B, LegMedia(srtp=keys_b))
    # Leg B's peer encrypts with leg A's key (a key copied across legs): B refuses it.
    copied = Peer.for_keys(SrtpKeys(SUITE, keys_a.inbound, keys_a.outbound))
    assert pipe.rtp[Leg.B](copied.tx.protect(audio(1, 0, SSRC_B))) is None
    report = pipe.report(0, clock())
    assert report.srtp_a is not None and report.srtp_b is not None
    assert report.srtp_a.auth_failures == 0
    assert report.srtp_b.auth_failures == 1


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        (SrtpKeys(SUITE, "not base64!", b64(key(1))), "base64"),
        (SrtpKeys(SUITE, b64(key(1, 16)), b64(key(2))), "16 bytes"),
        (SrtpKeys("AES_CM_256_HMAC_SHA1_80", b64(key(1)), b64(key(2))), "not supported"),
    ],
    ids=["bad-base64", "short-key", "unknown-suite"],
)
def test_unusable_keys_raise_pipeline_error_and_change_nothing(
    clock: VirtualClock, keys: SrtpKeys, problem: str
) -> None:
    pipe = StreamPipeline()
    with pytest.raises(PipelineError, match=problem):
        pipe.configure(Leg.A, LegMedia(srtp=keys))
    assert pipe.media[Leg.A] == LegMedia()
    plain = audio(1, 0, SSRC_B)
    assert pipe.rtp[Leg.B](plain) == plain


def test_pipeline_error_never_shows_the_key(clock: VirtualClock) -> None:
    secret = b64(key(77, 16))
    with pytest.raises(PipelineError) as raised:
        StreamPipeline().configure(Leg.A, LegMedia(srtp=SrtpKeys(SUITE, secret, secret)))
    assert secret not in str(raised.value)


# ================================================================== telephone-event numbers


def remap_pipeline() -> StreamPipeline:
    """Leg A numbers telephone-event 101, leg B 96 (TRAPS #10), both at 8000 Hz."""
    pipe = StreamPipeline()
    pipe.configure(Leg.A, LegMedia(events_in=101, events_out=101))
    pipe.configure(Leg.B, LegMedia(events_in=96, events_out=96))
    return pipe


def test_telephone_event_from_a_is_renumbered_to_what_b_expects(clock: VirtualClock) -> None:
    pipe = remap_pipeline()
    packet = event(10, 8000, SSRC_A, 5, 400, pt=101, marker=True)
    out = forward(pipe, Leg.A, packet)
    assert header(out).payload_type == 96
    assert header(out).marker  # the M bit marks the event's start (RFC 4733 §2.5.1.1)
    assert out[:1] == packet[:1] and out[2:] == packet[2:]  # only the payload type changed


def test_telephone_event_from_b_is_renumbered_to_what_a_expects(clock: VirtualClock) -> None:
    pipe = remap_pipeline()
    packet = event(10, 8000, SSRC_B, 11, 800, end=True, pt=96)
    out = forward(pipe, Leg.B, packet)
    assert header(out).payload_type == 101
    assert not header(out).marker
    assert out[2:] == packet[2:]
    assert parse_event(out[12:]) == TelephoneEvent(11, True, 10, 800)


def test_events_numbered_by_the_sdp_each_side_received_rfc3264_6_1(clock: VirtualClock) -> None:
    # A sends with 100 (our SDP to A said 100) and expects 101 (its own SDP said 101);
    # B sends with 97 and expects 96. A -> B: 100 -> 96; B -> A: 97 -> 101.
    pipe = StreamPipeline()
    pipe.configure(Leg.A, LegMedia(events_in=100, events_out=101))
    pipe.configure(Leg.B, LegMedia(events_in=97, events_out=96))
    assert header(forward(pipe, Leg.A, event(1, 0, SSRC_A, 1, 400, pt=100))).payload_type == 96
    assert header(forward(pipe, Leg.B, event(1, 0, SSRC_B, 1, 400, pt=97))).payload_type == 101


def test_audio_is_not_renumbered(clock: VirtualClock) -> None:
    pipe = remap_pipeline()
    packet = audio(1, 0, SSRC_A)
    assert forward(pipe, Leg.A, packet) == packet


def test_telephone_event_with_srtp_on_a_is_renumbered_after_decryption(
    clock: VirtualClock,
) -> None:
    keys = srtp_keys(40)
    peer = Peer.for_keys(keys)
    pipe = StreamPipeline()
    pipe.configure(Leg.A, LegMedia(events_in=101, events_out=101, srtp=keys))
    pipe.configure(Leg.B, LegMedia(events_in=96, events_out=96))
    packet = event(3, 0, SSRC_A, 9, 400, marker=True)
    out = forward(pipe, Leg.A, peer.tx.protect(packet))
    assert header(out).payload_type == 96 and header(out).marker
    assert out[2:] == packet[2:]


def test_no_renumbering_when_the_event_clock_rates_differ(clock: VirtualClock) -> None:
    # Durations and timestamps count clock ticks: a number rewrite alone would be wrong.
    pipe = StreamPipeline()
    pipe.configure(Leg.A, LegMedia(events_in=101, events_out=101))
    pipe.configure(
        Leg.B,
        LegMedia(codec="opus", clock_rate=48000, events_in=96, events_out=96, event_rate=48000),
    )
    packet = event(1, 0, SSRC_A, 5, 400, marker=True)
    assert forward(pipe, Leg.A, packet) == packet


def test_no_renumbering_when_the_other_side_has_no_telephone_event(clock: VirtualClock) -> None:
    pipe = StreamPipeline()
    pipe.configure(Leg.A, LegMedia(events_in=101, events_out=101))
    packet = event(1, 0, SSRC_A, 5, 400)
    assert forward(pipe, Leg.A, packet) == packet


# ================================================================== DTMF toward SIP INFO


def intercepting_pipeline(
    srtp: SrtpKeys | None = None,
) -> tuple[list[tuple[Leg, str, int]], StreamPipeline]:
    """A sends RFC 4733 on 101; B signals DTMF with SIP INFO."""
    heard, pipe = digits_recorder()
    pipe.configure(Leg.A, LegMedia(events_in=101, events_out=101, srtp=srtp))
    pipe.configure(Leg.B, LegMedia(dtmf="info"))
    return heard, pipe


def test_digit_from_a_is_taken_out_and_told_once_despite_three_end_packets_rfc4733_2_5_1_4(
    clock: VirtualClock,
) -> None:
    heard, pipe = intercepting_pipeline()
    for packet in digit_packets(5, 200, 16000, SSRC_A):
        clock.advance(0.05)
        assert pipe.rtp[Leg.A](packet) is None  # B did not negotiate telephone-event
    assert heard == [(Leg.A, "5", 100)]
    assert pipe.report(0, clock()).digits_heard == 1


def test_an_event_clock_no_digit_fits_in_leaves_dtmf_unconverted_not_the_call_broken(
    clock: VirtualClock,
) -> None:
    # A peer's SDP may say telephone-event/8 (8 Hz): no 50 ms packet interval fits in it.
    # Configuring must not fail (the rest of the leg's settings still apply); INFO digits
    # toward A are refused (the caller logs them as dropped).
    _, pipe = digits_recorder()
    pipe.configure(Leg.A, LegMedia(events_in=101, events_out=101, event_rate=8))
    pipe.configure(Leg.B, LegMedia(dtmf="info"))
    assert pipe.media[Leg.A].event_rate == 8
    with pytest.raises(PipelineError, match="telephone-event"):
        pipe.play(Leg.A, "5", 100, clock())


def test_audio_from_a_still_flows_while_digits_are_taken_out(clock: VirtualClock) -> None:
    heard, pipe = intercepting_pipeline()
    assert forward(pipe, Leg.A, audio(199, 15840, SSRC_A)) == audio(199, 15840, SSRC_A)
    for packet in digit_packets(0, 200, 16000, SSRC_A):
        pipe.rtp[Leg.A](packet)
    assert forward(pipe, Leg.A, audio(205, 16800, SSRC_A)) == audio(205, 16800, SSRC_A)
    assert heard == [(Leg.A, "0", 100)]


def test_two_presses_of_the_same_key_are_two_digits(clock: VirtualClock) -> None:
    heard, pipe = intercepting_pipeline()
    for packet in [*digit_packets(1, 10, 1000, SSRC_A), *digit_packets(1, 15, 3000, SSRC_A)]:
        clock.advance(0.05)
        pipe.rtp[Leg.A](packet)
    assert heard == [(Leg.A, "1", 100), (Leg.A, "1", 100)]


def test_encrypted_digits_from_a_are_decrypted_then_taken_out(clock: VirtualClock) -> None:
    keys = srtp_keys(50)
    peer = Peer.for_keys(keys)
    heard, pipe = intercepting_pipeline(srtp=keys)
    for packet in digit_packets(11, 1, 0, SSRC_A):  # '#'
        assert pipe.rtp[Leg.A](peer.tx.protect(packet)) is None
    assert heard == [(Leg.A, "#", 100)]


def test_digits_from_the_info_side_are_not_taken_out(clock: VirtualClock) -> None:
    heard, pipe = intercepting_pipeline()
    packet = event(1, 0, SSRC_B, 5, 400, end=True)
    assert forward(pipe, Leg.B, packet) == packet
    assert heard == []


def test_no_digit_is_told_before_its_end_packet(clock: VirtualClock) -> None:
    heard, pipe = intercepting_pipeline()
    for packet in digit_packets(3, 1, 0, SSRC_A)[:2]:
        clock.advance(0.05)
        pipe.rtp[Leg.A](packet)
    assert heard == []
    assert pipe.next_deadline() is not None


def test_a_digit_whose_end_packets_were_lost_ends_at_its_deadline_rfc4733_2_5_2_2(
    clock: VirtualClock,
) -> None:
    heard, pipe = intercepting_pipeline()
    assert pipe.next_deadline() is None
    for packet in digit_packets(7, 1, 0, SSRC_A)[:2]:  # start and one update; no end
        clock.advance(0.05)
        pipe.rtp[Leg.A](packet)
    deadline = pipe.next_deadline()
    assert deadline is not None and deadline > clock()

    pipe.on_timer(deadline - 0.001)  # early: nothing yet
    assert heard == []
    pipe.on_timer(deadline)
    assert heard == [(Leg.A, "7", 100)]  # the longest duration heard
    assert pipe.next_deadline() is None
    pipe.on_timer(deadline + 10.0)  # a stale timer does nothing
    assert heard == [(Leg.A, "7", 100)]


def test_late_end_packets_after_the_timeout_do_not_tell_the_digit_again(
    clock: VirtualClock,
) -> None:
    heard, pipe = intercepting_pipeline()
    packets = digit_packets(8, 1, 0, SSRC_A)
    for packet in packets[:2]:
        pipe.rtp[Leg.A](packet)
    pipe.on_timer(clock() + 10.0)
    for packet in packets[2:]:
        assert pipe.rtp[Leg.A](packet) is None
    assert heard == [(Leg.A, "8", 100)]


def test_digits_are_counted_without_a_handler(clock: VirtualClock) -> None:
    pipe = StreamPipeline()
    pipe.configure(Leg.A, LegMedia(events_in=101, events_out=101))
    pipe.configure(Leg.B, LegMedia(dtmf="info"))
    for packet in digit_packets(2, 1, 0, SSRC_A):
        pipe.rtp[Leg.A](packet)
    assert pipe.report(0, clock()).digits_heard == 1


def test_switching_b_back_to_rfc4733_forwards_digits_again(clock: VirtualClock) -> None:
    heard, pipe = intercepting_pipeline()
    pipe.configure(Leg.B, LegMedia(events_in=101, events_out=101))
    packet = event(1, 0, SSRC_A, 5, 400, end=True)
    assert forward(pipe, Leg.A, packet) == packet
    assert heard == []


# ================================================================== DTMF played toward a leg


def injecting_pipeline(
    srtp: SrtpKeys | None = None, events_out: int | None = 101
) -> StreamPipeline:
    """B signals DTMF with SIP INFO; A expects RFC 4733 (its own SDP numbered it 101)."""
    pipe = StreamPipeline()
    pipe.configure(Leg.A, LegMedia(events_in=101, events_out=events_out, srtp=srtp))
    pipe.configure(Leg.B, LegMedia(dtmf="info"))
    return pipe


def forward_audio_b_to_a(
    pipe: StreamPipeline, clock: VirtualClock, first: int, count: int, ts: int
) -> list[bytes]:
    out = []
    for i in range(count):
        out.append(forward(pipe, Leg.B, audio(first + i, ts + i * FRAME, SSRC_B)))
        clock.advance(0.02)
    return out


def test_play_schedules_a_digit_as_rfc4733_packets_toward_a_rfc4733_2_5_1(
    clock: VirtualClock,
) -> None:
    pipe = injecting_pipeline()
    forward_audio_b_to_a(pipe, clock, 1000, 3, 8000)
    scheduled = pipe.play(Leg.A, "7", 160, clock())

    assert all(isinstance(s, Scheduled) for s in scheduled)
    assert scheduled[0].send_at == clock()
    assert [s.send_at for s in scheduled] == sorted(s.send_at for s in scheduled)
    headers = [header(s.data) for s in scheduled]
    events = [parse_event(s.data[12:]) for s in scheduled]
    assert {h.payload_type for h in headers} == {101}
    assert {h.ssrc for h in headers} == {SSRC_B}  # part of the stream A already hears
    assert [h.marker for h in headers] == [True] + [False] * (len(headers) - 1)
    assert len({h.timestamp for h in headers}) == 1  # one event, one timestamp (§2.5.1.2)
    assert {e.event for e in events} == {7}
    assert [e.end for e in events[-END_PACKETS:]] == [True] * END_PACKETS
    assert not any(e.end for e in events[:-END_PACKETS])
    assert events[-1].duration == 1280  # 160 ms at 8000 Hz
    # The event starts where the audio stream stands now: 3 frames sent, 60 ms elapsed.
    assert headers[0].timestamp == 8000 + 2 * FRAME + FRAME
    assert pipe.report(0, clock()).digits_played == 1


def test_injected_packets_continue_the_sequence_and_later_audio_is_shifted_rfc3550_5_1(
    clock: VirtualClock,
) -> None:
    pipe = injecting_pipeline()
    before = forward_audio_b_to_a(pipe, clock, 1000, 3, 8000)
    assert [header(p).sequence for p in before] == [1000, 1001, 1002]

    scheduled = pipe.play(Leg.A, "7", 160, clock())
    sent: list[int] = []
    for item in scheduled[:3]:
        out = pipe.injected(Leg.A, item.data)
        assert out is not None
        sent.append(header(out).sequence)
    # Audio forwarded between event packets takes the next number, and so on.
    middle = forward(pipe, Leg.B, audio(1003, 8000 + 3 * FRAME, SSRC_B))
    sent.append(header(middle).sequence)
    for item in scheduled[3:]:
        out = pipe.injected(Leg.A, item.data)
        assert out is not None
        sent.append(header(out).sequence)
    after = forward(pipe, Leg.B, audio(1004, 8000 + 4 * FRAME, SSRC_B))
    sent.append(header(after).sequence)

    assert sent == list(range(1003, 1003 + len(scheduled) + 2))  # gap-free, in order
    assert after[4:] == audio(1004, 8000 + 4 * FRAME, SSRC_B)[4:]  # only the number moved


def test_the_shift_survives_a_reconfiguration_of_the_stream(clock: VirtualClock) -> None:
    pipe = injecting_pipeline()
    forward_audio_b_to_a(pipe, clock, 50, 1, 0)
    for item in pipe.play(Leg.A, "1", 40, clock()):
        pipe.injected(Leg.A, item.data)
    shifted = header(forward(pipe, Leg.B, audio(51, FRAME, SSRC_B))).sequence
    assert shifted > 51
    # A re-INVITE turns B to RFC 4733 as well: no more digits to play, but A has already
    # seen the shifted numbers, so they must go on.
    pipe.configure(Leg.B, LegMedia(events_in=101, events_out=101))
    assert header(forward(pipe, Leg.B, audio(52, 2 * FRAME, SSRC_B))).sequence == shifted + 1


def test_injected_packets_take_the_payload_type_a_expects_rfc3264_6_1(
    clock: VirtualClock,
) -> None:
    # Our SDP to A numbered telephone-event 101 (A sends with it); A's own SDP said 100.
    pipe = injecting_pipeline(events_out=100)
    forward_audio_b_to_a(pipe, clock, 1, 1, 0)
    scheduled = pipe.play(Leg.A, "9", 100, clock())
    assert {header(s.data).payload_type for s in scheduled} == {100}


def test_injected_packets_toward_an_srtp_leg_are_encrypted_with_its_key(
    clock: VirtualClock,
) -> None:
    keys = srtp_keys(70)
    peer = Peer.for_keys(keys)
    pipe = injecting_pipeline(srtp=keys)
    for packet in forward_audio_b_to_a(pipe, clock, 300, 2, 0):
        assert header(peer.rx.unprotect(packet)).ssrc == SSRC_B

    scheduled = pipe.play(Leg.A, "4", 100, clock())
    sequences = []
    for item in scheduled:
        out = pipe.injected(Leg.A, item.data)
        assert out is not None
        assert out[12:] != item.data[12:]  # the payload is encrypted
        plain = peer.rx.unprotect(out)
        assert plain[:2] == item.data[:2] and plain[4:] == item.data[4:]
        sequences.append(header(plain).sequence)
    assert sequences == list(range(302, 302 + len(scheduled)))
    later = peer.rx.unprotect(forward(pipe, Leg.B, audio(302, 2 * FRAME, SSRC_B)))
    assert header(later).sequence == 302 + len(scheduled)


def test_digits_played_back_to_back_do_not_overlap(clock: VirtualClock) -> None:
    pipe = injecting_pipeline()
    forward_audio_b_to_a(pipe, clock, 1, 1, 0)
    first = pipe.play(Leg.A, "1", 100, clock())
    second = pipe.play(Leg.A, "2", 100, clock())
    assert second[0].send_at > first[-1].send_at
    assert header(second[0].data).timestamp != header(first[0].data).timestamp
    assert pipe.report(0, clock()).digits_played == 2


def test_play_toward_a_leg_without_telephone_event_raises_pipeline_error(
    clock: VirtualClock,
) -> None:
    pipe = injecting_pipeline(events_out=None)
    with pytest.raises(PipelineError, match="telephone-event"):
        pipe.play(Leg.A, "1", 100, clock())
    assert pipe.report(0, clock()).digits_played == 0


def test_play_toward_the_info_side_raises_pipeline_error(clock: VirtualClock) -> None:
    pipe = injecting_pipeline()
    with pytest.raises(PipelineError):
        pipe.play(Leg.B, "1", 100, clock())


def test_play_when_both_sides_speak_rfc4733_raises_pipeline_error(clock: VirtualClock) -> None:
    # Digits then travel in the media on their own; nobody sends INFO to translate.
    with pytest.raises(PipelineError):
        remap_pipeline().play(Leg.A, "1", 100, clock())


@pytest.mark.parametrize(("digit", "duration"), [("X", 100), ("5", 0)])
def test_play_of_a_digit_that_cannot_be_played_raises_and_counts_nothing(
    clock: VirtualClock, digit: str, duration: int
) -> None:
    pipe = injecting_pipeline()
    with pytest.raises(ValueError):
        pipe.play(Leg.A, digit, duration, clock())
    assert pipe.report(0, clock()).digits_played == 0


def test_injected_toward_a_leg_with_nothing_to_inject_into_is_none(clock: VirtualClock) -> None:
    pipe = injecting_pipeline()
    assert pipe.injected(Leg.B, event(1, 0, SSRC_A, 1, 400)) is None


# ================================================================== report


def test_report_counts_packets_per_direction(clock: VirtualClock) -> None:
    pipe = StreamPipeline()
    for i in range(3):
        pipe.rtp[Leg.A](audio(10 + i, i * FRAME, SSRC_A))
        clock.advance(0.02)
    for i in range(2):
        pipe.rtp[Leg.B](audio(70 + i, i * FRAME, SSRC_B))
    pipe.rtcp[Leg.B](sender_report(SSRC_B, 2, 320))
    report = pipe.report(7, clock())
    assert report.stream == 7
    assert (report.from_a.packets, report.from_b.packets) == (3, 2)
    assert (report.from_a.ssrc, report.from_b.ssrc) == (SSRC_A, SSRC_B)
    assert report.from_a.bytes == 3 * (12 + len(PAYLOAD))
    assert (report.from_a.lost, report.from_b.lost) == (0, 0)
    assert (report.from_a.rtcp_packets, report.from_b.rtcp_packets) == (0, 1)
    assert report.from_a.duration_s == pytest.approx(0.06)
    assert (report.srtp_a, report.srtp_b) == (None, None)
    assert (report.digits_heard, report.digits_played) == (0, 0)


def test_report_counts_losses_seen_in_the_sequence(clock: VirtualClock) -> None:
    pipe = StreamPipeline()
    for sequence in (1, 2, 5, 6):
        pipe.rtp[Leg.A](audio(sequence, sequence * FRAME, SSRC_A))
    report = pipe.report(0, clock())
    assert (report.from_a.expected, report.from_a.lost) == (6, 2)


def test_report_counts_srtp_packets_after_decryption(clock: VirtualClock) -> None:
    keys = srtp_keys(80)
    peer = Peer.for_keys(keys)
    pipe = StreamPipeline()
    pipe.configure(Leg.A, LegMedia(srtp=keys))
    for i in range(4):
        pipe.rtp[Leg.A](peer.tx.protect(audio(i, i * FRAME, SSRC_A)))
    report = pipe.report(0, clock())
    assert report.from_a.packets == 4
    assert report.from_a.bytes == 4 * (12 + len(PAYLOAD))  # plain sizes, without the tag


def test_report_names_the_codec_configured(clock: VirtualClock) -> None:
    pipe = StreamPipeline()
    pipe.configure(Leg.A, LegMedia(codec="PCMA"))
    pipe.configure(Leg.B, LegMedia(codec="PCMA"))
    report = pipe.report(0, clock())
    assert (report.from_a.codec, report.from_b.codec) == ("PCMA", "PCMA")


def event_burst_jitter(pipe: StreamPipeline, clock: VirtualClock) -> float:
    """Jitter of A's direction after perfectly timed audio then one digit's packets, which
    all carry the event's start timestamp while arriving 50 ms apart (RFC 4733 §2.5.1.2)."""
    for i in range(10):
        pipe.rtp[Leg.A](audio(i, i * FRAME, SSRC_A))
        clock.advance(0.02)
    for packet in digit_packets(5, 10, 10 * FRAME, SSRC_A):
        pipe.rtp[Leg.A](packet)
        clock.advance(0.05)
    return pipe.report(0, clock()).from_a.jitter_ms


def test_telephone_event_packets_are_left_out_of_jitter_rfc3550_a_8(clock: VirtualClock) -> None:
    pipe = StreamPipeline()
    wideband = LegMedia(codec="G722", events_in=101, events_out=101)
    pipe.configure(Leg.A, wideband)
    pipe.configure(Leg.B, wideband)
    assert event_burst_jitter(pipe, clock) < 0.01


def test_telephone_event_packets_are_left_out_of_jitter_with_pcmu_too(
    clock: VirtualClock,
) -> None:
    pipe = StreamPipeline()
    pipe.configure(Leg.A, LegMedia(events_in=101, events_out=101))
    pipe.configure(Leg.B, LegMedia(events_in=101, events_out=101))
    assert event_burst_jitter(pipe, clock) < 0.01
