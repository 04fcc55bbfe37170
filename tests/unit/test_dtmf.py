"""RFC 4733 telephone-events (media.dtmf) on a virtual clock: payload codec, the receiver's
digits (end retransmissions, lost ends, repeated starts, long events), the generator's
schedule, sequence numbering around injected packets, and payload-type mapping."""

from __future__ import annotations

import pytest

from media.dtmf import (
    END_PACKETS,
    MAX_DURATION,
    ClockRateMismatch,
    DigitEnded,
    DigitStarted,
    DtmfError,
    DtmfEvent,
    EventFormat,
    OutboundRtp,
    Scheduled,
    StreamPosition,
    TelephoneEvent,
    TelephoneEventGenerator,
    TelephoneEventReceiver,
    event_char,
    event_code,
    parse_event,
    remap_payload_type,
    telephone_event_map,
)
from media.rtp import build_rtp, parse_rtp
from sbc.sdp.model import RtpMap

PT = 101
SSRC = 0x1234ABCD
STEP = 0.0625  # virtual seconds between fed packets; a binary fraction keeps sums exact


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def packet(
    timestamp: int,
    duration: int,
    *,
    event: int = 5,
    end: bool = False,
    marker: bool = False,
    sequence: int = 1,
    ssrc: int = SSRC,
    volume: int = 10,
) -> bytes:
    payload = TelephoneEvent(event, end, volume, duration).pack()
    return build_rtp(PT, sequence, timestamp, ssrc, payload, marker=marker)


def feed(
    receiver: TelephoneEventReceiver, clock: Clock, packets: list[bytes], step: float = STEP
) -> list[DtmfEvent]:
    events: list[DtmfEvent] = []
    for data in packets:
        events += receiver.on_packet(data, clock.now)
        clock.advance(step)
    return events


def digit_packets(
    timestamp: int, durations: list[int], *, event: int = 5, ends: int = 3
) -> list[bytes]:
    """A well-behaved sender: M on the first, updates, then the final duration `ends` times."""
    packets = [
        packet(timestamp, d, event=event, marker=i == 0) for i, d in enumerate(durations[:-1])
    ]
    packets += [packet(timestamp, durations[-1], event=event, end=True)] * ends
    return packets


def fields(data: bytes) -> tuple[int, bool, int, int, int, TelephoneEvent]:
    """(payload type, marker, sequence, timestamp, ssrc, event) of a packet."""
    header = parse_rtp(data)
    event = parse_event(data[header.size :])
    return header.payload_type, header.marker, header.sequence, header.timestamp, header.ssrc, event


# ---------------------------------------------------------------- payload


def test_payload_layout_follows_rfc4733_section_2_3() -> None:
    data = TelephoneEvent(event=11, end=True, volume=10, duration=0x0320).pack()
    assert data == bytes([11, 0x80 | 10, 0x03, 0x20])
    assert parse_event(data) == TelephoneEvent(11, True, 10, 0x0320)
    reserved = parse_event(bytes([3, 0x40 | 63, 0xFF, 0xFF]))
    assert reserved == TelephoneEvent(3, False, 63, 0xFFFF, reserved=True)


@pytest.mark.parametrize(
    ("event", "volume", "duration", "problem"),
    [(256, 10, 0, "8 bits"), (1, 64, 0, "volume"), (1, 10, 0x10000, "duration")],
)
def test_payload_out_of_range_is_refused(
    event: int, volume: int, duration: int, problem: str
) -> None:
    with pytest.raises(DtmfError, match=problem):
        TelephoneEvent(event, False, volume, duration).pack()


def test_short_payload_is_refused() -> None:
    with pytest.raises(DtmfError, match="3 bytes"):
        parse_event(b"\x01\x02\x03")


def test_event_codes_map_to_characters_rfc4733_section_3_2() -> None:
    assert [event_char(code) for code in range(17)] == list("0123456789*#ABCD!")
    assert event_char(17) is None and event_char(-1) is None
    assert event_code("#") == 11 and event_code("d") == 15 and event_code("!") == 16
    with pytest.raises(DtmfError, match="'E' is not a DTMF event"):
        event_code("E")


# ---------------------------------------------------------------- receiver


def test_one_digit_with_three_end_packets_gives_one_end() -> None:
    clock, receiver = Clock(), TelephoneEventReceiver()
    events = feed(receiver, clock, digit_packets(8000, [400, 800, 1200, 1280]))
    assert events == [
        DigitStarted("5", 8000, 100.0),
        DigitEnded("5", 160, 100 + 3 * STEP),
    ]
    assert receiver.next_deadline() is None


def test_start_without_marker_bit_still_starts_the_digit() -> None:
    clock, receiver = Clock(), TelephoneEventReceiver()
    events = feed(receiver, clock, [packet(500, 400, event=9), packet(500, 800, event=9)])
    assert events == [DigitStarted("9", 500, 100.0)]


def test_retransmitted_start_is_not_a_new_digit() -> None:
    clock, receiver = Clock(), TelephoneEventReceiver()
    start = packet(1000, 0, marker=True)
    events = feed(receiver, clock, [start, start, start, packet(1000, 400, end=True)])
    assert [type(e) for e in events] == [DigitStarted, DigitEnded]
    assert events[1] == DigitEnded("5", 50, 100 + 3 * STEP)


def test_lost_end_packets_end_the_digit_at_the_timeout() -> None:
    clock, receiver = Clock(), TelephoneEventReceiver(timeout=0.5)
    feed(receiver, clock, [packet(1000, 400, marker=True), packet(1000, 800)])
    last_packet_at = 100 + STEP
    assert receiver.next_deadline() == last_packet_at + 0.5
    assert receiver.on_timer(last_packet_at + 0.49) == []  # early (stale) timer: nothing
    assert receiver.on_timer(last_packet_at + 0.5) == [DigitEnded("5", 100, last_packet_at + 0.5)]
    assert receiver.next_deadline() is None
    assert receiver.on_timer(clock.advance(5.0)) == []
    # The end packets turning up after all are not a second end.
    assert receiver.on_packet(packet(1000, 1000, end=True), clock.now) == []


def test_updates_push_the_timeout_back() -> None:
    clock, receiver = Clock(), TelephoneEventReceiver(timeout=0.5)
    receiver.on_packet(packet(1000, 400, marker=True), clock.now)
    receiver.on_packet(packet(1000, 800), clock.advance(0.4))
    assert receiver.on_timer(clock.advance(0.2)) == []
    assert receiver.next_deadline() == pytest.approx(clock.now + 0.3)


def test_same_key_twice_gives_two_digits() -> None:
    clock, receiver = Clock(), TelephoneEventReceiver()
    first = digit_packets(16000, [400, 800, 960], event=1)
    second = digit_packets(16000 + 960 + 800, [400, 640], event=1)
    events = feed(receiver, clock, first + second)
    assert [(type(e).__name__, e.char) for e in events] == [
        ("DigitStarted", "1"),
        ("DigitEnded", "1"),
        ("DigitStarted", "1"),
        ("DigitEnded", "1"),
    ]
    assert [e.duration_ms for e in events if isinstance(e, DigitEnded)] == [120, 80]


def test_same_key_again_after_lost_ends_is_a_new_digit() -> None:
    clock, receiver = Clock(), TelephoneEventReceiver()
    events = feed(
        receiver,
        clock,
        [packet(8000, 400, marker=True), packet(8000, 800), packet(8000 + 2400, 400, marker=True)],
    )
    assert events == [
        DigitStarted("5", 8000, 100.0),
        DigitEnded("5", 100, 100 + 2 * STEP),
        DigitStarted("5", 10400, 100 + 2 * STEP),
    ]


def test_new_event_ends_an_unfinished_one_first() -> None:
    clock, receiver = Clock(), TelephoneEventReceiver()
    events = feed(receiver, clock, [packet(0, 400, event=2), packet(4000, 400, event=3)])
    assert [(type(e).__name__, e.char) for e in events] == [
        ("DigitStarted", "2"),
        ("DigitEnded", "2"),
        ("DigitStarted", "3"),
    ]


def test_late_packet_of_the_previous_digit_is_ignored() -> None:
    clock, receiver = Clock(), TelephoneEventReceiver()
    feed(receiver, clock, digit_packets(1000, [400, 800]) + [packet(5000, 400, event=7)])
    assert receiver.on_packet(packet(1000, 800, end=True), clock.now) == []
    assert receiver.on_packet(packet(1000, 400, marker=True), clock.now) == []
    assert receiver.next_deadline() is not None  # digit 7 still playing


def test_timestamp_wraparound_is_a_new_digit_not_a_late_one() -> None:
    clock, receiver = Clock(), TelephoneEventReceiver()
    events = feed(
        receiver,
        clock,
        digit_packets(0xFFFFFF00, [400]) + digit_packets(0x00000100, [400], event=6),
    )
    assert [e.char for e in events if isinstance(e, DigitStarted)] == ["5", "6"]


def test_long_event_segments_make_one_digit() -> None:
    """§2.5.2.3: 0xFFFF units, then a new segment at timestamp + 0xFFFF, same event."""
    clock, receiver = Clock(), TelephoneEventReceiver()
    first = [packet(1000, d, marker=d == 400) for d in range(400, MAX_DURATION, 400)]
    first.append(packet(1000, MAX_DURATION))
    second = digit_packets(1000 + MAX_DURATION, [400, 800, 1000])
    events = feed(receiver, clock, first + second, step=0.001)
    started, ended = events
    assert isinstance(started, DigitStarted) and isinstance(ended, DigitEnded)
    assert ended.duration_ms == round((MAX_DURATION + 1000) / 8)


def test_long_event_whose_last_full_packet_was_lost_still_continues() -> None:
    clock, receiver = Clock(), TelephoneEventReceiver()
    first = [packet(1000, d) for d in range(400, MAX_DURATION - 400, 400)]
    second = digit_packets(1000 + MAX_DURATION, [400, 800])
    events = feed(receiver, clock, first + second, step=0.001)
    started, ended = events
    assert isinstance(started, DigitStarted) and isinstance(ended, DigitEnded)
    assert ended.duration_ms == round((MAX_DURATION + 800) / 8)


def test_other_ssrc_ends_the_digit_and_starts_afresh() -> None:
    clock, receiver = Clock(), TelephoneEventReceiver()
    events = feed(receiver, clock, [packet(1000, 400), packet(1000, 400, ssrc=7, event=0)])
    assert [(type(e).__name__, e.char) for e in events] == [
        ("DigitStarted", "5"),
        ("DigitEnded", "5"),
        ("DigitStarted", "0"),
    ]


def test_non_dtmf_events_are_tracked_but_not_told() -> None:
    clock, receiver = Clock(), TelephoneEventReceiver()
    assert feed(receiver, clock, digit_packets(1000, [400, 800], event=32)) == []
    assert receiver.next_deadline() is None


def test_clock_rate_scales_the_duration() -> None:
    clock, receiver = Clock(), TelephoneEventReceiver(48000)
    events = feed(receiver, clock, digit_packets(0, [2400, 4800, 9600]))
    assert events[-1] == DigitEnded("5", 200, 100 + 2 * STEP)


def test_end_only_packet_gives_start_and_end() -> None:
    clock, receiver = Clock(), TelephoneEventReceiver()
    assert feed(receiver, clock, [packet(77, 320, end=True, event=16)]) == [
        DigitStarted("!", 77, 100.0),
        DigitEnded("!", 40, 100.0),
    ]


def test_headers_with_csrc_extension_and_padding_are_read() -> None:
    clock, receiver = Clock(), TelephoneEventReceiver()
    base = packet(1000, 800, end=True)
    header, payload = base[:12], base[12:]
    csrc = bytes([0x80 | 0x10 | 0x20 | 2]) + header[1:] + b"\0" * 8
    extension = b"\xbe\xde\x00\x01" + b"\x01\x02\x03\x04"
    padded = csrc + extension + payload + b"\0\0\x03"
    assert feed(receiver, clock, [padded]) == [
        DigitStarted("5", 1000, 100.0),
        DigitEnded("5", 100, 100.0),
    ]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x65" + b"\0" * 10,
        b"\x40" + bytes(15),
        b"\x81\x65" + bytes(14),
        b"\xa0" + bytes(14) + b"\x05",
        b"\xa0" + bytes(15),
    ],
)
def test_malformed_packets_are_counted_and_dropped(data: bytes) -> None:
    receiver = TelephoneEventReceiver()
    assert receiver.on_packet(data, 0.0) == []
    assert receiver.malformed == 1


# ---------------------------------------------------------------- generator


def test_schedule_continues_the_stream_and_follows_rfc4733() -> None:
    generator = TelephoneEventGenerator(PT, 8000)
    position = StreamPosition(SSRC, sequence=65534, timestamp=160_000, at=10.0)
    schedule = generator.play("7", 160, 10.0, position)
    parsed = [fields(item.data) for item in schedule]
    assert [p[0] for p in parsed] == [PT] * len(schedule)
    assert [p[1] for p in parsed] == [True] + [False] * (len(schedule) - 1)
    assert [p[2] for p in parsed] == [65535, 0, 1, 2, 3, 4]  # continues, wraps at 16 bits
    assert {p[3] for p in parsed} == {160_000}
    assert {p[4] for p in parsed} == {SSRC}
    events = [p[5] for p in parsed]
    assert [e.duration for e in events] == [400, 800, 1200, 1280, 1280, 1280]
    assert [e.end for e in events] == [False] * 3 + [True] * END_PACKETS
    assert {(e.event, e.volume) for e in events} == {(7, 10)}
    assert [item.send_at for item in schedule] == pytest.approx(
        [10.0, 10.05, 10.1, 10.11, 10.16, 10.21]
    )


def test_durations_grow_by_one_interval_of_ticks() -> None:
    generator = TelephoneEventGenerator(96, 16000, interval=0.02, volume=20)
    schedule = generator.play("A", 300, 0.0, StreamPosition(1, 10, 0, 0.0))
    durations = [fields(item.data)[5].duration for item in schedule]
    regular = durations[:-END_PACKETS]
    assert regular == [320 * k for k in range(1, len(regular) + 1)]
    assert durations[-END_PACKETS:] == [4800] * END_PACKETS
    gaps = [b.send_at - a.send_at for a, b in zip(schedule, schedule[1:], strict=False)]
    assert gaps[: len(regular) - 1] == pytest.approx([0.02] * (len(regular) - 1))
    assert {fields(item.data)[5].volume for item in schedule} == {20}


def test_timestamp_is_the_streams_projected_to_the_start() -> None:
    generator = TelephoneEventGenerator(PT)
    schedule = generator.play("1", 100, 10.5, StreamPosition(SSRC, 5, 1000, at=10.0))
    assert fields(schedule[0].data)[3] == 1000 + 4000


def test_second_digit_waits_for_the_first_with_a_gap() -> None:
    generator = TelephoneEventGenerator(PT, gap=0.08)
    position = StreamPosition(SSRC, 100, 0, at=0.0)
    first = generator.play("1", 100, 0.0, position)
    second = generator.play("2", 100, 0.03, position)  # while the first is playing
    assert second[0].send_at == pytest.approx(first[-1].send_at + 0.08)
    assert generator.busy_until == second[-1].send_at
    sequences = [fields(item.data)[2] for item in first + second]
    assert sequences == list(range(101, 101 + len(first) + len(second)))
    first_ts, second_ts = fields(first[0].data)[3], fields(second[0].data)[3]
    assert second_ts > first_ts + 800  # after the first event's end
    assert [fields(item.data)[1] for item in second] == [True] + [False] * (len(second) - 1)


def test_back_to_back_digits_never_overlap_in_timestamps() -> None:
    """With no gap and no end spacing the second digit starts while the first's time span
    (reported one interval ahead) is still open: its timestamp must move past that span."""
    generator = TelephoneEventGenerator(PT, gap=0.0, end_spacing=0.0)
    position = StreamPosition(SSRC, 0, 0, at=0.0)
    first = generator.play("4", 100, 0.0, position)
    second = generator.play("4", 100, 0.0, position)
    assert fields(second[0].data)[3] >= fields(first[0].data)[3] + 800
    receiver = TelephoneEventReceiver()
    events: list[DtmfEvent] = []
    for send_at, data in first + second:
        events += receiver.on_packet(data, send_at)
    assert [(type(e).__name__, e.char) for e in events] == [
        ("DigitStarted", "4"),
        ("DigitEnded", "4"),
        ("DigitStarted", "4"),
        ("DigitEnded", "4"),
    ]


def test_digit_after_idle_time_starts_now() -> None:
    generator = TelephoneEventGenerator(PT)
    generator.play("1", 100, 0.0, StreamPosition(SSRC, 1, 0, 0.0))
    later = generator.play("2", 100, 5.0, StreamPosition(SSRC, 300, 40000, 5.0))
    assert later[0].send_at == 5.0
    assert fields(later[0].data)[2:4] == (301, 40000)


def test_long_digit_is_split_into_segments() -> None:
    """§2.5.1.3: 10 s at 8000 Hz is 80000 units, more than the 16-bit duration holds."""
    generator = TelephoneEventGenerator(PT)
    schedule = generator.play("#", 10_000, 0.0, StreamPosition(SSRC, 0, 5000, 0.0))
    parsed = [fields(item.data) for item in schedule]
    timestamps = [p[3] for p in parsed]
    assert sorted(set(timestamps)) == [5000, 5000 + MAX_DURATION]
    closer = max(i for i, ts in enumerate(timestamps) if ts == 5000)
    assert parsed[closer][5].duration == MAX_DURATION and not parsed[closer][5].end
    assert not parsed[closer + 1][1]  # a new segment is not a new event: no M bit
    assert [p[1] for p in parsed].count(True) == 1
    assert parsed[-1][5] == TelephoneEvent(11, True, 10, 80000 - MAX_DURATION)
    assert [p[5].end for p in parsed].count(True) == END_PACKETS
    assert all(a.send_at <= b.send_at for a, b in zip(schedule, schedule[1:], strict=False))


@pytest.mark.parametrize(
    ("char", "ms", "rate"),
    [("5", 160, 8000), ("*", 90, 8000), ("!", 2000, 48000), ("D", 10_000, 8000), ("0", 1, 8000)],
)
def test_generator_to_receiver_round_trip(char: str, ms: int, rate: int) -> None:
    generator = TelephoneEventGenerator(PT, rate)
    receiver = TelephoneEventReceiver(rate)
    schedule = generator.play(char, ms, 3.0, StreamPosition(SSRC, 0, 0, 3.0))
    events: list[DtmfEvent] = []
    for send_at, data in schedule:
        events += receiver.on_packet(data, send_at)
    assert [type(e) for e in events] == [DigitStarted, DigitEnded]
    assert events[0].char == events[1].char == char
    assert events[1] == DigitEnded(char, ms, schedule[END_PACKETS * -1].send_at)


def test_generator_refuses_bad_digits() -> None:
    generator = TelephoneEventGenerator(PT)
    position = StreamPosition(SSRC, 0, 0, 0.0)
    with pytest.raises(DtmfError, match="'x' is not a DTMF event"):
        generator.play("x", 100, 0.0, position)
    with pytest.raises(DtmfError, match="not positive"):
        generator.play("1", 0, 0.0, position)
    with pytest.raises(DtmfError, match="volume"):
        generator.play("1", 100, 0.0, position, volume=70)
    with pytest.raises(DtmfError, match="payload type"):
        TelephoneEventGenerator(128)


# ---------------------------------------------------------------- injection into forwarded audio


def audio(sequence: int, timestamp: int, ssrc: int = SSRC) -> bytes:
    return build_rtp(0, sequence, timestamp, ssrc, b"\xff" * 160)


def test_outbound_learns_the_stream_and_leaves_packets_alone_until_injection() -> None:
    outbound = OutboundRtp()
    data = audio(1000, 80_000)
    assert outbound.forward(data, 1.0) is data
    assert outbound.position(2.0) == StreamPosition(SSRC, 1000, 80_000, 1.0)


def test_injected_packets_shift_later_audio_gap_free() -> None:
    clock, outbound = Clock(0.0), OutboundRtp()
    generator = TelephoneEventGenerator(PT)
    for n in range(3):
        outbound.forward(audio(500 + n, 160 * n), clock.advance(0.02))
    pending = generator.play("3", 100, clock.now, outbound.position(clock.now))
    sent: list[bytes] = []
    audio_n = 3
    # Interleave: audio every 20 ms, event packets when due, each renumbered when sent.
    while pending or audio_n < 20:
        next_audio = 0.02 * (audio_n + 1)
        if pending and pending[0].send_at <= next_audio:
            sent.append(outbound.inject(pending.pop(0).data))
        else:
            clock.now = next_audio
            sent.append(outbound.forward(audio(500 + audio_n, 160 * audio_n), clock.now))
            audio_n += 1
    sequences = [parse_rtp(data).sequence for data in sent]
    assert sequences == list(range(503, 503 + len(sent)))
    assert sum(parse_rtp(data).payload_type == PT for data in sent) == 1 + END_PACKETS
    last = sent[-1]
    assert last[12:] == audio(0, 0)[12:]  # payload untouched by the renumbering


def test_new_ssrc_drops_the_shift() -> None:
    outbound = OutboundRtp()
    outbound.forward(audio(10, 0), 0.0)
    outbound.inject(packet(0, 400))
    assert parse_rtp(outbound.forward(audio(11, 160), 0.02)).sequence == 12
    fresh = audio(7000, 99, ssrc=42)
    assert outbound.forward(fresh, 0.04) is fresh
    assert outbound.position(0.04).ssrc == 42


def test_reordered_audio_does_not_move_the_position_back() -> None:
    outbound = OutboundRtp()
    outbound.forward(audio(10, 1600), 0.0)
    outbound.forward(audio(9, 1440), 0.01)
    assert outbound.position(0.02) == StreamPosition(SSRC, 10, 1600, 0.0)


def test_injection_before_any_audio_uses_the_given_stream() -> None:
    outbound = OutboundRtp(ssrc=99, sequence=41, timestamp=7)
    position = outbound.position(3.0)
    assert position == StreamPosition(99, 41, 7, 3.0)
    data = TelephoneEventGenerator(PT).play("1", 60, 3.0, position)[0].data
    assert parse_rtp(outbound.inject(data)).sequence == 42


# ---------------------------------------------------------------- payload-type mapping


def test_remap_keeps_marker_and_payload() -> None:
    original = packet(1234, 400, marker=True, sequence=77)
    remapped = remap_payload_type(original, 96)
    header = parse_rtp(remapped)
    assert (header.payload_type, header.marker, header.sequence) == (96, True, 77)
    assert remapped[2:] == original[2:] and remapped[0] == original[0]
    unmarked = remap_payload_type(packet(1, 1), 96)
    assert not parse_rtp(unmarked).marker


def test_map_rewrites_only_telephone_events_in_each_direction() -> None:
    mapping = telephone_event_map(EventFormat(101), EventFormat(96))
    assert not mapping.identity
    assert parse_rtp(mapping.a_to_b(packet(1, 1))).payload_type == 96
    back = build_rtp(96, 1, 1, SSRC, b"\0" * 4, marker=True)
    assert parse_rtp(mapping.b_to_a(back)).payload_type == 101
    assert parse_rtp(mapping.b_to_a(back)).marker
    voice = audio(1, 1)
    assert mapping.a_to_b(voice) is voice and mapping.b_to_a(voice) is voice


def test_map_accepts_sdp_rtpmaps() -> None:
    mapping = telephone_event_map(
        RtpMap.parse("101 telephone-event/8000"), RtpMap.parse("101 telephone-event/8000")
    )
    assert mapping.identity and mapping.clock_rate == 8000
    data = packet(1, 1)
    assert mapping.a_to_b(data) is data


def test_map_refuses_different_clock_rates() -> None:
    with pytest.raises(ClockRateMismatch, match="101/8000 on leg A and 110/48000 on leg B"):
        telephone_event_map(
            RtpMap.parse("101 telephone-event/8000"), RtpMap.parse("110 telephone-event/48000")
        )


def test_map_refuses_bad_payload_types() -> None:
    with pytest.raises(DtmfError, match="outside 0-127"):
        telephone_event_map(EventFormat(128), EventFormat(101))


def test_scheduled_is_a_plain_pair() -> None:
    send_at, data = Scheduled(1.5, b"x")
    assert (send_at, data) == (1.5, b"x")
