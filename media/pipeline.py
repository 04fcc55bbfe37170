"""What happens to a packet of one stream between being received from one leg's peer and
being sent to the other's: SRTP off and on again with each leg's own keys, quality
statistics, telephone-event payload-type mapping, DTMF taken out for a side that wants SIP
INFO, and digits played into the stream toward a side that expects RFC 4733.

The relay's sockets call the per-direction paths (`rtp[leg]`, `rtcp[leg]`: packets coming
from `leg`) on every packet; everything else here runs when the signalling side reconfigures
the stream. No I/O: time comes from time.monotonic() (microsecond resolution, which jitter
needs; uvloop's loop.time() moves in whole milliseconds)."""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic

from media.dtmf import (
    DigitEnded,
    DtmfError,
    DtmfEvent,
    OutboundRtp,
    Scheduled,
    TelephoneEventGenerator,
    TelephoneEventReceiver,
    remap_payload_type,
)
from media.plan import LegMedia, SrtpKeys
from media.quality import LegQuality, QualityReport, StreamQuality
from media.session import Leg
from media.srtp import SrtpTransform

DigitHandler = Callable[[Leg, str, int], None]  # (leg it came from, digit, duration ms)


class PipelineError(ValueError):
    """A configuration the stream cannot take (bad keys, no telephone-event to play on)."""


@dataclass(frozen=True, slots=True)
class SrtpCounters:
    """Packets one leg's SRTP refused: what the operator needs when one side hears nothing
    (TRAPS #8: SRTP authentication failures are a cause of one-way audio)."""

    suite: str
    auth_failures: int
    replays: int
    bad_packets: int
    oversized: int
    protect_failures: int


@dataclass(frozen=True, slots=True)
class StreamReport:
    """Quality of one stream, per direction (`from_a`: media sent by leg A's peer)."""

    stream: int
    from_a: QualityReport
    from_b: QualityReport
    srtp_a: SrtpCounters | None
    srtp_b: SrtpCounters | None
    digits_heard: int
    digits_played: int


class RtpPath:
    """RTP from one leg's peer to the other's. Slots instead of a dict and None checks in
    a fixed order: this runs for every packet."""

    __slots__ = (
        "decrypt",
        "encrypt",
        "quality",
        "event_pt",
        "receiver",
        "remap",
        "outbound",
        "on_events",
    )

    def __init__(self, quality: LegQuality, on_events: Callable[[list[DtmfEvent]], None]) -> None:
        self.decrypt: SrtpTransform | None = None
        self.encrypt: SrtpTransform | None = None
        self.quality = quality
        self.event_pt = -1  # telephone-event payload type from this side; -1: none
        self.receiver: TelephoneEventReceiver | None = None  # set: events end here (INFO)
        self.remap = -1  # payload type the other side numbers telephone-event with; -1: same
        self.outbound: OutboundRtp | None = None  # set: digits may be injected this way
        self.on_events = on_events

    def __call__(self, data: bytes) -> bytes | None:
        decrypt = self.decrypt
        if decrypt is not None:
            plain = decrypt.unprotect_rtp(data)
            if plain is None:
                return None
            data = plain
        now = monotonic()
        self.quality.on_rtp(data, now)
        if self.event_pt >= 0 and len(data) > 1 and data[1] & 0x7F == self.event_pt:
            receiver = self.receiver
            if receiver is not None:
                events = receiver.on_packet(data, now)
                if events:
                    self.on_events(events)
                return None  # the other side takes DTMF as SIP INFO only
            if self.remap >= 0:
                data = remap_payload_type(data, self.remap)
        outbound = self.outbound
        if outbound is not None:
            data = outbound.forward(data, now)
        encrypt = self.encrypt
        if encrypt is not None:
            return encrypt.protect_rtp(data)
        return data


class RtcpPath:
    """RTCP from one leg's peer to the other's: SRTCP per leg, and the reports read."""

    __slots__ = ("decrypt", "encrypt", "quality")

    def __init__(self, quality: LegQuality) -> None:
        self.decrypt: SrtpTransform | None = None
        self.encrypt: SrtpTransform | None = None
        self.quality = quality

    def __call__(self, data: bytes) -> bytes | None:
        decrypt = self.decrypt
        if decrypt is not None:
            plain = decrypt.unprotect_rtcp(data)
            if plain is None:
                return None
            data = plain
        self.quality.on_rtcp(data, monotonic())
        encrypt = self.encrypt
        if encrypt is not None:
            return encrypt.protect_rtcp(data)
        return data


def _receiver(clock_rate: int) -> TelephoneEventReceiver | None:
    """None for a clock no event can be read in (a peer's SDP may say 8 Hz): the digits of
    that side are then not turned into INFO, and the call goes on."""
    try:
        return TelephoneEventReceiver(clock_rate)
    except DtmfError:
        return None


def _generator(payload_type: int, clock_rate: int) -> TelephoneEventGenerator | None:
    """None for a clock no event can be timed in: play() then refuses INFO digits toward
    that side (the caller logs them as dropped), and the call goes on."""
    try:
        return TelephoneEventGenerator(payload_type, clock_rate)
    except DtmfError:
        return None


class StreamPipeline:
    """The packet processing of one stream: both directions, and the DTMF translation.

    `on_digit(leg, digit, duration_ms)` hears each digit that a side sending RFC 4733 played
    while the other side wants SIP INFO.
    """

    __slots__ = (
        "media",
        "srtp",
        "quality",
        "rtp",
        "rtcp",
        "_receivers",
        "_outbound",
        "_generators",
        "_on_digit",
        "digits_heard",
        "digits_played",
        "held",
        "listening",
    )

    def __init__(self, on_digit: DigitHandler | None = None) -> None:
        self.media: dict[Leg, LegMedia] = {Leg.A: LegMedia(), Leg.B: LegMedia()}
        self.srtp: dict[Leg, SrtpTransform | None] = {Leg.A: None, Leg.B: None}
        self.quality = StreamQuality(8000)
        self._on_digit = on_digit
        self.rtp = {leg: RtpPath(self._quality_of(leg), self._events_handler(leg)) for leg in Leg}
        self.rtcp = {leg: RtcpPath(self._quality_of(leg)) for leg in Leg}
        self._receivers: dict[Leg, TelephoneEventReceiver] = {}  # events from that leg
        self._outbound: dict[Leg, OutboundRtp] = {}  # RTP toward that leg
        self._generators: dict[Leg, TelephoneEventGenerator] = {}  # digits toward that leg
        self.digits_heard = 0
        self.digits_played = 0
        # Read by the relay's once-a-second sweep over every stream: plain attributes, kept
        # up to date by configure(), so that sweep costs next to nothing per stream.
        self.held = False
        self.listening = False

    # ------------------------------------------------------------------ configuration
    def configure(self, leg: Leg, media: LegMedia) -> None:
        """What the latest offer/answer says about `leg`'s side. Keys change only through
        SrtpTransform.rekey (RFC 3711 §3.3.1: a new context for an unchanged key would
        reset the rollover counter). PipelineError for keys that cannot be used."""
        old = self.media[leg]
        if media == old:
            return
        self.srtp[leg] = _transform(self.srtp[leg], media.srtp)
        self.media[leg] = media
        a = self.media[Leg.A]
        events = {
            pt for m in self.media.values() for pt in (m.events_in, m.events_out) if pt is not None
        }
        if media.clock_rate != old.clock_rate or media.codec != old.codec:
            # A new codec or clock: the statistics start over (their units changed).
            self.quality = StreamQuality(
                a.clock_rate, codec=a.codec, ptime_ms=a.ptime_ms, event_payload_types=events
            )
        else:
            self.quality.a.exempt(events)
            self.quality.b.exempt(events)
        self._rebuild()

    def _rebuild(self) -> None:
        for source in Leg:
            target = source.other
            mine, theirs = self.media[source], self.media[target]
            rtp, rtcp = self.rtp[source], self.rtcp[source]
            rtp.decrypt = rtcp.decrypt = self.srtp[source]
            rtp.encrypt = rtcp.encrypt = self.srtp[target]
            rtp.quality = rtcp.quality = self._quality_of(source)
            rtp.event_pt = -1 if mine.events_in is None else mine.events_in
            rtp.receiver = None
            rtp.remap = -1
            if mine.events_in is not None:
                if mine.dtmf == "rfc4733" and theirs.dtmf == "info":
                    receiver = self._receivers.get(source)
                    if receiver is None or receiver.clock_rate != mine.event_rate:
                        receiver = _receiver(mine.event_rate)
                        if receiver is None:
                            self._receivers.pop(source, None)
                        else:
                            self._receivers[source] = receiver
                    rtp.receiver = receiver
                elif (
                    theirs.events_out is not None
                    and theirs.events_out != mine.events_in
                    and theirs.event_rate == mine.event_rate
                ):
                    rtp.remap = theirs.events_out  # TRAPS #10: the numbers differ per leg
            if theirs.dtmf == "rfc4733" and mine.dtmf == "info" and theirs.events_out is not None:
                if target not in self._outbound:
                    self._outbound[target] = OutboundRtp(
                        theirs.clock_rate,
                        ssrc=secrets.randbits(32),
                        sequence=secrets.randbits(16),
                        timestamp=secrets.randbits(32),
                    )
                generator = self._generators.get(target)
                if (
                    generator is None
                    or generator.payload_type != theirs.events_out
                    or generator.clock_rate != theirs.event_rate
                ):
                    generator = _generator(theirs.events_out, theirs.event_rate)
                    if generator is None:
                        self._generators.pop(target, None)
                    else:
                        self._generators[target] = generator
            # Once digits were injected the numbering shift must go on for good.
            rtp.outbound = self._outbound.get(target)
        self.held = any(m.direction != "sendrecv" for m in self.media.values())
        self.listening = bool(self._receivers)

    def _quality_of(self, leg: Leg) -> LegQuality:
        return self.quality.a if leg is Leg.A else self.quality.b

    def _events_handler(self, leg: Leg) -> Callable[[list[DtmfEvent]], None]:
        def handle(events: list[DtmfEvent]) -> None:
            self._digits(leg, events)

        return handle

    def _digits(self, leg: Leg, events: list[DtmfEvent]) -> None:
        for event in events:
            if isinstance(event, DigitEnded):
                self.digits_heard += 1
                if self._on_digit is not None:
                    self._on_digit(leg, event.char, event.duration_ms)

    @property
    def on_hold(self) -> bool:
        """A side's SDP says other than sendrecv: silence may be normal (no music on hold)."""
        return self.held

    # ------------------------------------------------------------------ DTMF toward a leg
    def play(self, leg: Leg, digit: str, duration_ms: int, now: float) -> list[Scheduled]:
        """The telephone-event packets (with send times, monotonic clock) that play `digit`
        toward `leg`; each goes out through `injected(leg, data)` at its time."""
        generator = self._generators.get(leg)
        outbound = self._outbound.get(leg)
        if generator is None or outbound is None:
            raise PipelineError(
                f"leg {leg.value} negotiated no telephone-event: cannot play DTMF to it"
            )
        schedule = generator.play(digit, duration_ms, now, outbound.position(now))
        self.digits_played += 1
        return schedule

    def injected(self, leg: Leg, data: bytes) -> bytes | None:
        """A scheduled packet numbered into the stream toward `leg`, encrypted for it."""
        outbound = self._outbound.get(leg)
        if outbound is None:
            return None
        data = outbound.inject(data)
        srtp = self.srtp[leg]
        return data if srtp is None else srtp.protect_rtp(data)

    def next_deadline(self) -> float | None:
        deadlines = [d for r in self._receivers.values() if (d := r.next_deadline()) is not None]
        return min(deadlines, default=None)

    def on_timer(self, now: float) -> None:
        """End digits whose end packets were all lost (RFC 4733 §2.5.1.4)."""
        for leg, receiver in self._receivers.items():
            events = receiver.on_timer(now)
            if events:
                self._digits(leg, events)

    # ------------------------------------------------------------------ reports
    def report(self, stream: int, now: float) -> StreamReport:
        from_a, from_b = self.quality.snapshot(now)
        return StreamReport(
            stream,
            from_a,
            from_b,
            _counters(self.srtp[Leg.A]),
            _counters(self.srtp[Leg.B]),
            self.digits_heard,
            self.digits_played,
        )


def _transform(current: SrtpTransform | None, keys: SrtpKeys | None) -> SrtpTransform | None:
    if keys is None:
        return None
    try:
        inbound = base64.b64decode(keys.inbound, validate=True)
        outbound = base64.b64decode(keys.outbound, validate=True)
    except (binascii.Error, ValueError):
        raise PipelineError(f"SRTP keys for {keys.suite} are not valid base64") from None
    try:
        if current is None:
            return SrtpTransform(keys.suite, inbound, outbound)
        return current.rekey(keys.suite, inbound, outbound)
    except ValueError as exc:
        raise PipelineError(str(exc)) from None


def _counters(srtp: SrtpTransform | None) -> SrtpCounters | None:
    if srtp is None:
        return None
    return SrtpCounters(
        srtp.suite,
        srtp.auth_failures,
        srtp.replays,
        srtp.bad_packets,
        srtp.oversized,
        srtp.protect_failures,
    )
