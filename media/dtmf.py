"""DTMF as RFC 4733 telephone-events, without I/O: the payload codec, a receiver turning packets
into digits, a generator scheduling the packets of a digit that arrived as SIP INFO, and the
payload-type remapping needed when the two legs negotiated different numbers.

How the data path uses it (one object per stream direction, all fed with `now` in seconds):

* RFC 4733 on both legs, same clock rate: `telephone_event_map(leg_a, leg_b)` once per
  offer/answer, then `a_to_b(data)` / `b_to_a(data)` on every forwarded packet of the stream
  (both return the packet unchanged when it is not a telephone-event). Different clock rates
  raise `ClockRateMismatch`: the caller decodes with a receiver and re-encodes with a generator.
* RFC 4733 toward INFO: every packet whose payload type is the source leg's telephone-event goes
  to that direction's `TelephoneEventReceiver.on_packet` (and is not forwarded to a leg that did
  not negotiate telephone-event); `DigitEnded` (or `DigitStarted`) becomes an INFO on the other
  leg; `next_deadline()` / `on_timer(now)` end a digit whose end packets were all lost.
* INFO toward RFC 4733: the direction toward the RFC 4733 leg keeps an `OutboundRtp`; the relay
  passes every forwarded RTP packet of that direction through `OutboundRtp.forward` (it learns
  SSRC, sequence and timestamp, and shifts later sequence numbers past injected packets). A
  digit is `TelephoneEventGenerator.play(char, ms, now, outbound.position(now))`; each scheduled
  packet is sent at its `send_at` after `OutboundRtp.inject` gives it the next sequence number,
  so audio forwarded between two event packets keeps the sequence gap-free and in order.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from media.rtp import RTP_HEADER, RTP_VERSION

TELEPHONE_EVENT = "telephone-event"  # the SDP encoding name (RFC 4733 §7.1.1)
DEFAULT_CLOCK_RATE = 8000
MAX_DURATION = 0xFFFF  # the 16-bit duration field; longer events are split (§2.5.1.3)
MAX_VOLUME = 63  # six bits of -dBm0 (§2.3.4)
DEFAULT_VOLUME = 10
DEFAULT_INTERVAL = 0.05  # §2.5.1.2 recommends an update every 50 ms
DEFAULT_GAP = 0.05  # silence between two queued digits, like a keypad's inter-digit pause
DEFAULT_TIMEOUT = 0.5  # ten missed 50-ms updates: the end packets are lost, not late
END_PACKETS = 3  # §2.5.1.4: the final packet is sent three times
STALE_SECONDS = 10.0  # how far back a timestamp may lie and still be a late packet, not a reset

# Event code = index (RFC 4733 §3.2): digits, *, #, A-D, then 16 = flash, written "!" as
# in the INFO bodies of the vendors that send it.
EVENT_CHARS = "0123456789*#ABCD!"
FLASH = "!"
_CODE_OF = {char: code for code, char in enumerate(EVENT_CHARS)}
_CODE_OF.update({char.lower(): code for char, code in _CODE_OF.items() if char.isalpha()})

_EVENT = struct.Struct("!BBH")  # event, E/R/volume, duration
_PLAIN = struct.Struct("!BBHIIBBH")  # RTP header without CSRC/extension + one event
_SEQ = struct.Struct("!H")
_SEQ_TS_SSRC = struct.Struct("!HII")  # bytes 2-12 of the RTP header
_BYTE = [bytes((value,)) for value in range(256)]
_PLAIN_FIRST = RTP_VERSION << 6  # V=2, no padding, extension or CSRC: the common case


class DtmfError(ValueError):
    """A telephone-event that cannot be encoded, or a character that is no DTMF event."""


class ClockRateMismatch(DtmfError):
    """The legs' telephone-event clock rates differ: a payload-type rewrite cannot carry the
    durations and timestamps across; decode and re-encode instead."""


# ------------------------------------------------------------------- payload (§2.3)


def event_char(code: int) -> str | None:
    """The character of event codes 0-16 (§3.2); None for any other event."""
    return EVENT_CHARS[code] if 0 <= code < len(EVENT_CHARS) else None


def event_code(char: str) -> int:
    """The event code of 0-9 * # A-D (either case) or "!" (flash)."""
    try:
        return _CODE_OF[char]
    except KeyError:
        raise DtmfError(f"{char!r} is not a DTMF event (0-9 * # A-D or ! for flash)") from None


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One RFC 4733 §2.3 payload; `duration` is in RTP timestamp units."""

    event: int
    end: bool
    volume: int
    duration: int
    reserved: bool = False  # the R bit: senders send 0, receivers ignore it (§2.3.3)

    def pack(self) -> bytes:
        _check_event(self.event, self.volume, self.duration)
        flags = self.end << 7 | self.reserved << 6 | self.volume
        return _EVENT.pack(self.event, flags, self.duration)


def parse_event(payload: bytes) -> TelephoneEvent:
    """The first event of a telephone-event payload. More than four bytes only occur with RFC
    2198 redundancy (§2.5.1.5), which has its own payload type, so the rest is ignored."""
    if len(payload) < _EVENT.size:
        raise DtmfError(f"telephone-event payload of {len(payload)} bytes, expected 4")
    event, flags, duration = _EVENT.unpack_from(payload)
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration, bool(flags & 0x40))


def _check_event(event: int, volume: int, duration: int) -> None:
    if not 0 <= event <= 0xFF:
        raise DtmfError(f"event code {event} does not fit in 8 bits")
    if not 0 <= volume <= MAX_VOLUME:
        raise DtmfError(f"volume {volume} is outside 0-{MAX_VOLUME} (-dBm0)")
    if not 0 <= duration <= MAX_DURATION:
        raise DtmfError(f"duration {duration} is outside 0-{MAX_DURATION} timestamp units")


def units_to_ms(units: int, clock_rate: int) -> int:
    """Timestamp units to whole milliseconds, rounded to nearest."""
    return (units * 1000 + clock_rate // 2) // clock_rate


def ms_to_units(ms: int, clock_rate: int) -> int:
    return (ms * clock_rate + 500) // 1000


# ------------------------------------------------------------------- receiver (§2.5.2)


@dataclass(frozen=True, slots=True)
class DigitStarted:
    char: str
    timestamp: int  # RTP timestamp of the event: tells two presses of one key apart
    now: float


@dataclass(frozen=True, slots=True)
class DigitEnded:
    char: str
    duration_ms: int  # from the duration field(s), not from the arrival times
    now: float


DtmfEvent = DigitStarted | DigitEnded


class TelephoneEventReceiver:
    """Digits out of the telephone-event packets of one stream direction.

    Feed it every packet of the negotiated telephone-event payload type. An event is keyed by
    its RTP timestamp (§2.5.1.2: all packets of an event share it), not by the M bit, which may
    be lost with the first packet. Malformed packets are counted in `malformed` and dropped.
    """

    __slots__ = (
        "clock_rate",
        "timeout",
        "malformed",
        "_stale",
        "_ssrc",
        "_timestamp",
        "_code",
        "_char",
        "_duration",
        "_earlier",
        "_ended",
        "_last_at",
    )

    def __init__(
        self, clock_rate: int = DEFAULT_CLOCK_RATE, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        if clock_rate <= 0:
            raise DtmfError(f"clock rate {clock_rate} is not positive")
        self.clock_rate = clock_rate
        self.timeout = timeout
        self.malformed = 0
        self._stale = int(STALE_SECONDS * clock_rate)
        self._ssrc = -1  # no SSRC has this value: the first packet always starts an event
        self._timestamp = 0
        self._code = -1
        self._char: str | None = None
        self._duration = 0  # largest duration seen in the current segment
        self._earlier = 0  # units in the earlier segments of a long event (§2.5.2.3)
        self._ended = True
        self._last_at = 0.0

    def on_packet(self, data: bytes, now: float) -> list[DtmfEvent]:
        if len(data) >= _PLAIN.size and data[0] == _PLAIN_FIRST:
            _, _, _, timestamp, ssrc, code, flags, duration = _PLAIN.unpack_from(data)
        else:
            fields = _unpack_slow(data)
            if fields is None:
                self.malformed += 1
                return []
            timestamp, ssrc, code, flags, duration = fields
        end = flags & 0x80 != 0
        if ssrc == self._ssrc:
            if timestamp == self._timestamp:
                return self._update(code, end, duration, now)
            if 0 < (self._timestamp - timestamp) & 0xFFFFFFFF <= self._stale:
                return []  # a late packet of an earlier event: that event is already told
            if self._continues(timestamp, code):
                return self._next_segment(timestamp, end, duration, now)
        events = self._close(now)
        self._ssrc = ssrc
        return self._start(events, timestamp, code, end, duration, now)

    def next_deadline(self) -> float | None:
        """When a digit whose end packets never came is given up, if one is playing."""
        return None if self._ended else self._last_at + self.timeout

    def on_timer(self, now: float) -> list[DtmfEvent]:
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return []  # stale or early timer
        return self._close(now)

    def _update(self, code: int, end: bool, duration: int, now: float) -> list[DtmfEvent]:
        # Same timestamp: a duration update, a repeated start or one of the three end packets
        # (§2.5.1.4); only the first end packet ends the digit.
        if self._ended or code != self._code:
            return []
        self._last_at = now
        if duration > self._duration:
            self._duration = duration
        return self._close(now) if end else []

    def _continues(self, timestamp: int, code: int) -> bool:
        # §2.5.1.3/§2.5.2.3: a long event goes on in a new segment whose timestamp is the old
        # one plus the old segment's duration, the full 0xFFFF unless the sender cut it
        # shorter (then we saw that last duration). A new press of the same key after lost
        # end packets starts later than either.
        if self._ended or code != self._code:
            return False
        ahead = (timestamp - self._timestamp) & 0xFFFFFFFF
        return ahead == MAX_DURATION or 0 < ahead == self._duration

    def _next_segment(
        self, timestamp: int, end: bool, duration: int, now: float
    ) -> list[DtmfEvent]:
        self._earlier += (timestamp - self._timestamp) & 0xFFFFFFFF
        self._timestamp = timestamp
        self._duration = duration
        self._last_at = now
        return self._close(now) if end else []

    def _start(
        self,
        events: list[DtmfEvent],
        timestamp: int,
        code: int,
        end: bool,
        duration: int,
        now: float,
    ) -> list[DtmfEvent]:
        self._timestamp = timestamp
        self._code = code
        self._char = event_char(code)  # None for events other than DTMF: tracked, not told
        self._duration = duration
        self._earlier = 0
        self._ended = False
        self._last_at = now
        if self._char is not None:
            events.append(DigitStarted(self._char, timestamp, now))
        if end:  # a digit shorter than one update, or all its other packets lost
            events.extend(self._close(now))
        return events

    def _close(self, now: float) -> list[DtmfEvent]:
        if self._ended:
            return []
        self._ended = True
        if self._char is None:
            return []
        ms = units_to_ms(self._earlier + self._duration, self.clock_rate)
        return [DigitEnded(self._char, ms, now)]


def _unpack_slow(data: bytes) -> tuple[int, int, int, int, int] | None:
    """(timestamp, ssrc, event, flags, duration) of a packet with CSRCs, a header extension or
    padding (RFC 3550 §5.1, §5.3.1); None when it is not RTP or carries no whole event."""
    size = len(data)
    if size < RTP_HEADER.size or data[0] >> 6 != RTP_VERSION:
        return None
    offset = RTP_HEADER.size + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:
        if size < offset + 4:
            return None
        offset += 4 + 4 * int.from_bytes(data[offset + 2 : offset + 4], "big")
    if data[0] & 0x20:
        if not data[-1]:
            return None  # the last octet counts the padding, itself included: never 0
        size -= data[-1]
    if size < offset + _EVENT.size:
        return None
    _, timestamp, ssrc = _SEQ_TS_SSRC.unpack_from(data, 2)
    code, flags, duration = _EVENT.unpack_from(data, offset)
    return timestamp, ssrc, code, flags, duration


# ------------------------------------------------------------------- generator (§2.5.1)


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """Where the outgoing stream stands: SSRC, last sequence number sent, and the RTP
    timestamp that went out at time `at`."""

    ssrc: int
    sequence: int
    timestamp: int
    at: float


class Scheduled(NamedTuple):
    send_at: float
    data: bytes


class OutboundRtp:
    """One forwarded direction into which telephone-events are injected.

    The relay passes every RTP packet it forwards in that direction through `forward`, and
    every injected packet through `inject` when it sends it. The injected packets take the next
    sequence numbers and every later forwarded packet is shifted past them, so the receiver
    sees one gap-free sequence (RFC 3550 §5.1). A new SSRC starts a new sequence space and
    drops the shift. The constructor's values stand until the first packet is forwarded.
    """

    __slots__ = ("clock_rate", "ssrc", "sequence", "timestamp", "at", "_shift")

    def __init__(
        self,
        clock_rate: int = DEFAULT_CLOCK_RATE,
        *,
        ssrc: int = 0,
        sequence: int = 0,
        timestamp: int = 0,
    ) -> None:
        self.clock_rate = clock_rate
        self.ssrc = ssrc
        self.sequence = sequence & 0xFFFF
        self.timestamp = timestamp & 0xFFFFFFFF
        self.at: float | None = None  # when `timestamp` went out; None before any packet
        self._shift = 0

    def forward(self, data: bytes, now: float) -> bytes:
        """The packet to send in place of `data` (the same object while nothing was injected)."""
        if len(data) < RTP_HEADER.size:
            return data
        sequence, timestamp, ssrc = _SEQ_TS_SSRC.unpack_from(data, 2)
        if ssrc != self.ssrc or self.at is None:
            self.ssrc, self._shift = ssrc, 0
            self._advance(sequence, timestamp, now)
            return data
        if self._shift:
            sequence = (sequence + self._shift) & 0xFFFF
            data = data[:2] + _SEQ.pack(sequence) + data[4:]
        if 0 < (sequence - self.sequence) & 0xFFFF < 0x8000:
            self._advance(sequence, timestamp, now)  # a reordered older packet changes nothing
        return data

    def inject(self, data: bytes) -> bytes:
        """`data` numbered as the next packet of the stream, at the moment it is sent."""
        self.sequence = (self.sequence + 1) & 0xFFFF
        if self.at is not None:  # before any audio there is nothing to shift
            self._shift = (self._shift + 1) & 0xFFFF
        return data[:2] + _SEQ.pack(self.sequence) + data[4:]

    def position(self, now: float) -> StreamPosition:
        return StreamPosition(
            self.ssrc, self.sequence, self.timestamp, now if self.at is None else self.at
        )

    def _advance(self, sequence: int, timestamp: int, now: float) -> None:
        self.sequence = sequence
        self.timestamp = timestamp
        self.at = now


class TelephoneEventGenerator:
    """The packets of digits to send on one leg (§2.5.1), one digit after the other.

    `play` returns the packets of one digit with their send times: M bit on the first, one RTP
    timestamp per segment, the duration growing by one interval per packet, the final packet
    three times with the E bit (§2.5.1.4). A digit asked for while another is still scheduled
    starts `gap` seconds after that one's last packet.
    """

    __slots__ = (
        "payload_type",
        "clock_rate",
        "interval",
        "volume",
        "gap",
        "end_spacing",
        "_busy_until",
        "_ssrc",
        "_next_sequence",
        "_next_timestamp",
    )

    def __init__(
        self,
        payload_type: int,
        clock_rate: int = DEFAULT_CLOCK_RATE,
        *,
        interval: float = DEFAULT_INTERVAL,
        volume: int = DEFAULT_VOLUME,
        gap: float = DEFAULT_GAP,
        end_spacing: float | None = None,
    ) -> None:
        if not 0 <= payload_type <= 127:
            raise DtmfError(f"payload type {payload_type} is outside 0-127")
        if clock_rate <= 0 or round(interval * clock_rate) < 1:
            raise DtmfError(f"interval {interval} s at {clock_rate} Hz is under one tick")
        _check_event(0, volume, 0)
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self.interval = interval
        self.volume = volume
        self.gap = gap
        # The end packets go out at the update interval by default, so that one short burst
        # of loss cannot take all three.
        self.end_spacing = interval if end_spacing is None else end_spacing
        self._busy_until = -math.inf
        self._ssrc = -1
        self._next_sequence = 0  # first sequence number after the last scheduled packet
        self._next_timestamp = 0  # first timestamp after the last scheduled event

    @property
    def busy_until(self) -> float:
        """Send time of the last scheduled packet (-inf when nothing was ever scheduled)."""
        return self._busy_until

    def play(
        self,
        char: str,
        duration_ms: int,
        now: float,
        position: StreamPosition,
        *,
        volume: int | None = None,
    ) -> list[Scheduled]:
        code = event_code(char)
        if duration_ms <= 0:
            raise DtmfError(f"digit duration {duration_ms} ms is not positive")
        start = max(now, self._busy_until + self.gap)
        sequence, timestamp = self._continue(position, start)
        units = ms_to_units(duration_ms, self.clock_rate) or 1
        packets = event_packets(
            EventPlan(
                payload_type=self.payload_type,
                ssrc=position.ssrc,
                sequence=sequence,
                timestamp=timestamp,
                event=code,
                units=units,
                volume=self.volume if volume is None else volume,
                clock_rate=self.clock_rate,
                interval=self.interval,
                end_spacing=self.end_spacing,
            ),
            start,
        )
        self._busy_until = packets[-1].send_at
        self._ssrc = position.ssrc
        self._next_sequence = (sequence + len(packets)) & 0xFFFF
        self._next_timestamp = (timestamp + units) & 0xFFFFFFFF
        return packets

    def _continue(self, position: StreamPosition, start: float) -> tuple[int, int]:
        """Sequence number and timestamp of a digit starting at `start`: the stream's, projected
        at its clock rate, but never behind a digit already scheduled on the same SSRC (a
        queued digit's packets follow that one's, and its timestamp lies after that event)."""
        sequence = (position.sequence + 1) & 0xFFFF
        ticks = round((start - position.at) * self.clock_rate)
        timestamp = (position.timestamp + ticks) & 0xFFFFFFFF
        if position.ssrc == self._ssrc:
            if (self._next_sequence - sequence) & 0xFFFF < 0x8000:
                sequence = self._next_sequence
            if (self._next_timestamp - timestamp) & 0xFFFFFFFF < 0x80000000:
                timestamp = self._next_timestamp
        return sequence, timestamp


@dataclass(frozen=True, slots=True)
class EventPlan:
    """Everything `event_packets` needs for one event; `units` is its whole duration."""

    payload_type: int
    ssrc: int
    sequence: int  # of the first packet
    timestamp: int  # of the event (its first segment)
    event: int
    units: int
    volume: int = DEFAULT_VOLUME
    clock_rate: int = DEFAULT_CLOCK_RATE
    interval: float = DEFAULT_INTERVAL
    end_spacing: float = DEFAULT_INTERVAL


def event_packets(plan: EventPlan, start: float) -> list[Scheduled]:
    """The packets of one event sent from `start` on.

    A packet reporting a duration of d units goes out when d minus one interval has elapsed:
    the first reports one interval, like an audio packet covering its frame. Events longer
    than 0xFFFF units go on in segments whose timestamp moves on by 0xFFFF, each closed by a
    packet of duration 0xFFFF; only the first packet of the event carries the M bit, as a new
    segment is no new event (§2.5.1.3).
    """
    _check_event(plan.event, plan.volume, 0)
    step = round(plan.interval * plan.clock_rate)
    points = set(range(step, plan.units, step))  # durations reported before the end
    points.update(range(MAX_DURATION, plan.units, MAX_DURATION))  # segment closers
    scheduled: list[Scheduled] = []
    sequence = plan.sequence
    for elapsed in [*sorted(points), plan.units]:
        segment = (elapsed - 1) // MAX_DURATION
        end = elapsed == plan.units
        send_at = start + max(0, elapsed - step) / plan.clock_rate
        for repeat in range(END_PACKETS if end else 1):
            data = _PLAIN.pack(
                _PLAIN_FIRST,
                (not scheduled) << 7 | plan.payload_type,
                sequence & 0xFFFF,
                (plan.timestamp + segment * MAX_DURATION) & 0xFFFFFFFF,
                plan.ssrc & 0xFFFFFFFF,
                plan.event,
                end << 7 | plan.volume,
                elapsed - segment * MAX_DURATION,
            )
            scheduled.append(Scheduled(send_at + repeat * plan.end_spacing, data))
            sequence += 1
    return scheduled


# ------------------------------------------------------------------- payload types (TRAPS 10)


def remap_payload_type(data: bytes, payload_type: int) -> bytes:
    """`data` with the payload type in byte 1 replaced, the M bit kept."""
    return data[:1] + _BYTE[(data[1] & 0x80) | payload_type] + data[2:]


class EventFormatLike(Protocol):
    """A telephone-event rtpmap: sbc.sdp's RtpMap (PT as text) or `EventFormat`."""

    @property
    def payload_type(self) -> str | int: ...

    @property
    def clock_rate(self) -> int: ...


@dataclass(frozen=True, slots=True)
class EventFormat:
    payload_type: int
    clock_rate: int = DEFAULT_CLOCK_RATE


@dataclass(frozen=True, slots=True)
class TelephoneEventMap:
    """The telephone-event payload type of each leg for one stream, at one clock rate."""

    a: int
    b: int
    clock_rate: int

    @property
    def identity(self) -> bool:
        """Both legs use the same number: forward untouched."""
        return self.a == self.b

    def a_to_b(self, data: bytes) -> bytes:
        if len(data) > 1 and data[1] & 0x7F == self.a and self.a != self.b:
            return remap_payload_type(data, self.b)
        return data

    def b_to_a(self, data: bytes) -> bytes:
        if len(data) > 1 and data[1] & 0x7F == self.b and self.a != self.b:
            return remap_payload_type(data, self.a)
        return data


def telephone_event_map(a: EventFormatLike, b: EventFormatLike) -> TelephoneEventMap:
    """Map leg A's telephone-event payload type to leg B's. Durations and timestamps count
    clock ticks, so a rewrite of the number alone is only right at one clock rate; with
    different rates (8000 and 48000) this raises `ClockRateMismatch`."""
    pt_a, pt_b = _payload_type(a.payload_type), _payload_type(b.payload_type)
    if a.clock_rate != b.clock_rate:
        raise ClockRateMismatch(
            f"telephone-event is {pt_a}/{a.clock_rate} on leg A and {pt_b}/{b.clock_rate} on"
            " leg B: durations and timestamps need converting, not only the payload type"
        )
    return TelephoneEventMap(pt_a, pt_b, a.clock_rate)


def _payload_type(value: str | int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise DtmfError(f"payload type {value!r} is not a number") from None
    if not 0 <= number <= 127:
        raise DtmfError(f"payload type {number} is outside 0-127")
    return number
