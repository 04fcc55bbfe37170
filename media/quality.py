"""Call-quality statistics for relayed RTP streams (sans-I/O, `now` passed in): RFC 3550 receive
statistics and jitter per direction, RTCP reports and round trips through the relay, and a
simplified ITU-T G.107 E-model score (R-factor and MOS)."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, fields

from media.rtp import RTCP_TYPES, RTP_HEADER, RTP_VERSION

# ---------------------------------------------------------------------------- constants

SEQ_MOD = 1 << 16
# RFC 3550 §A.1: a forward jump of up to MAX_DROPOUT is loss; up to MAX_MISORDER behind is a
# late (reordered or duplicated) packet; anything else is a jump the sender must confirm.
MAX_DROPOUT = 3000
MAX_MISORDER = 100
_NO_BAD_SEQ = SEQ_MOD + 1  # A.1's "no suspicious sequence number yet": never equals a seq
# Bit i set: sequence number max_seq - i arrived. It spans exactly the late window of A.1, so
# every late packet can be told apart as reordered (first copy) or duplicate.
_WINDOW_MASK = (1 << MAX_MISORDER) - 1

COMFORT_NOISE_PT = 13  # RFC 3389 static payload type
RTCP_SR = 200
RTCP_RR = 201

_TS_HALF = float(1 << 31)
_TS_MOD = float(1 << 32)

_RTP_UNPACK = RTP_HEADER.unpack_from
_RTCP_COMMON = struct.Struct("!BBH")  # V/P/count, packet type, length in words - 1
_SSRC = struct.Struct("!I")
_SENDER_INFO = struct.Struct("!IIIII")  # NTP msw, NTP lsw, RTP timestamp, packets, octets
_REPORT_BLOCK = struct.Struct("!IIIIII")  # SSRC, fraction|cumulative, highest, jitter, LSR, DLSR
_SR_FIXED = 8 + _SENDER_INFO.size
_RR_FIXED = 8

SR_LOG_SIZE = 8  # SRs remembered per direction: 40 s at the usual 5 s RTCP interval
REMOTE_SOURCES = 8  # report blocks remembered per leg, one per SSRC they describe


# ---------------------------------------------------------------------------- E-model

R_MAX = 93.2  # G.107 default R0 - Is, with A = 0 (the usual simplification for VoIP)
_MOUTH_TO_EAR_KNEE_MS = 177.3


@dataclass(frozen=True, slots=True)
class CodecProfile:
    """What the E-model needs to know about a codec: equipment impairment Ie, packet-loss
    robustness Bpl (both ITU-T G.113 Appendix I unless `source` says otherwise) and the
    algorithmic look-ahead added to the packetization time (ptime) as codec delay."""

    name: str
    ie: float
    bpl: float
    lookahead_ms: float
    source: str


_G711 = CodecProfile("PCMU", 0.0, 25.1, 0.0, "G.113 App. I: G.711 with PLC (G.711 App. I)")

# Keyed by the upper-cased rtpmap encoding name. Values marked "approximation" have no G.113
# Appendix I row (wideband codecs, iLBC, opus): the narrowband E-model cannot credit a wideband
# codec for sounding better than G.711, so those are capped at Ie = 0.
CODECS: dict[str, CodecProfile] = {
    "PCMU": _G711,
    "PCMA": CodecProfile("PCMA", 0.0, 25.1, 0.0, _G711.source),
    "G722": CodecProfile(
        "G722",
        0.0,
        25.1,
        3.0,  # QMF analysis and synthesis filters
        "approximation: wideband (G.113 App. IV gives Ie,wb); on the narrowband scale treated"
        " as G.711 with PLC (G.722 App. III/IV)",
    ),
    "G729": CodecProfile("G729", 11.0, 19.0, 5.0, "G.113 App. I: G.729A + VAD"),
    "G723": CodecProfile("G723", 15.0, 16.1, 7.5, "G.113 App. I: G.723.1 6.3 kbit/s + VAD"),
    "GSM": CodecProfile(
        "GSM",
        20.0,
        10.0,
        0.0,
        "G.113 App. I: GSM 06.10 full rate Ie; Bpl has no row, GSM-EFR's is used (approximation)",
    ),
    "GSM-EFR": CodecProfile("GSM-EFR", 5.0, 10.0, 0.0, "G.113 App. I: GSM-EFR"),
    "AMR": CodecProfile(
        "AMR",
        5.0,
        10.0,
        5.0,
        "GSM-EFR's G.113 App. I values: AMR's 12.2 kbit/s mode is that codec; lower modes"
        " are worse (approximation)",
    ),
    "ILBC": CodecProfile(
        "iLBC",
        11.0,
        25.0,
        10.0,  # 30 ms mode, RFC 3952's default (RFC 3951 §1: 40 ms algorithmic delay)
        "approximation: no G.113 App. I row; Ie as G.729A, Bpl higher because iLBC frames are"
        " coded independently (RFC 3951)",
    ),
    "OPUS": CodecProfile(
        "opus",
        0.0,
        25.1,
        6.5,  # RFC 6716 §2: 26.5 ms algorithmic delay at 20 ms frames
        "approximation: no ITU-T values; treated as G.711 with PLC (conservative: in-band FEC"
        " not credited)",
    ),
}


def codec_profile(name: str) -> CodecProfile:
    """The profile for an rtpmap encoding name (any case); unknown codecs get G.711's values
    under their own name, with a `source` that says so."""
    profile = CODECS.get(name.upper())
    if profile is not None:
        return profile
    return CodecProfile(name, _G711.ie, _G711.bpl, 0.0, "unknown codec: G.711 values assumed")


def delay_impairment(delay_ms: float) -> float:
    """Id for a one-way mouth-to-ear delay: the common piecewise-linear fit of G.107's Idd
    (no echo term: endpoints are assumed to cancel echo)."""
    if delay_ms <= 0.0:
        return 0.0
    impairment = 0.024 * delay_ms
    if delay_ms > _MOUTH_TO_EAR_KNEE_MS:
        impairment += 0.11 * (delay_ms - _MOUTH_TO_EAR_KNEE_MS)
    return impairment


def effective_equipment_impairment(
    loss_percent: float, ie: float, bpl: float, burst_ratio: float = 1.0
) -> float:
    """G.107 §7.4: Ie,eff = Ie + (95 - Ie) * Ppl / (Ppl / BurstR + Bpl). BurstR = 1 is random
    loss, which is what a loss count alone can tell."""
    ppl = min(max(loss_percent, 0.0), 100.0)
    return ie + (95.0 - ie) * ppl / (ppl / burst_ratio + bpl)


def r_factor(delay_ms: float, loss_percent: float, codec: CodecProfile) -> float:
    """R = 93.2 - Id - Ie,eff (G.107 with default R0, Is and A = 0), floored at 0."""
    r = (
        R_MAX
        - delay_impairment(delay_ms)
        - effective_equipment_impairment(loss_percent, codec.ie, codec.bpl)
    )
    return max(r, 0.0)


def mos_from_r(r: float) -> float:
    """G.107 Annex B: MOS = 1 + 0.035 R + R (R - 60)(100 - R) 7e-6, within [1, 4.5]. The
    polynomial dips under 1 for small R, hence the clamp and not only the R bounds."""
    if r <= 0.0:
        return 1.0
    if r >= 100.0:
        return 4.5
    mos = 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6
    return min(max(mos, 1.0), 4.5)


def one_way_delay_ms(
    rtt_ms: float, jitter_ms: float, codec: CodecProfile, ptime_ms: float
) -> float:
    """Mouth-to-ear delay estimate: half the network round trip, a jitter buffer sized at
    twice the interarrival jitter (an adaptive buffer's usual target), the packetization time
    and the codec's look-ahead."""
    return rtt_ms / 2.0 + 2.0 * jitter_ms + ptime_ms + codec.lookahead_ms


def quality_estimate(
    loss_fraction: float,
    jitter_ms: float,
    rtt_ms: float,
    codec: CodecProfile,
    ptime_ms: float = 20.0,
) -> tuple[float, float]:
    """(R-factor, MOS) for one direction of a call."""
    r = r_factor(one_way_delay_ms(rtt_ms, jitter_ms, codec, ptime_ms), 100.0 * loss_fraction, codec)
    return r, mos_from_r(r)


# ---------------------------------------------------------------------------- RTCP


@dataclass(frozen=True, slots=True)
class SenderInfo:
    """The sender information of an SR (RFC 3550 §6.4.1)."""

    ntp_timestamp: int  # 64-bit NTP format: seconds << 32 | fraction
    rtp_timestamp: int
    packet_count: int
    octet_count: int

    @property
    def lsr(self) -> int:
        """What receivers echo as LSR: the middle 32 bits of the NTP timestamp."""
        return (self.ntp_timestamp >> 16) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One reception report block of an SR or RR (RFC 3550 §6.4.1)."""

    ssrc: int  # the source this block is about
    fraction_lost: int  # lost since the previous report, in 1/256
    cumulative_lost: int  # signed 24 bits: duplicates can make it negative
    highest_sequence: int  # extended highest sequence number received
    jitter: int  # interarrival jitter in RTP timestamp units
    lsr: int  # middle 32 bits of the NTP timestamp of the last SR received, 0 if none
    dlsr: int  # delay since that SR, in 1/65536 s

    @property
    def loss_fraction(self) -> float:
        return self.fraction_lost / 256.0


@dataclass(frozen=True, slots=True)
class RtcpReport:
    """An SR (with `sender`) or an RR from source `ssrc`."""

    ssrc: int
    sender: SenderInfo | None
    blocks: tuple[ReportBlock, ...]


@dataclass(frozen=True, slots=True)
class RtcpCompound:
    """What a compound RTCP packet held: its SRs and RRs, how many other packets (SDES, BYE,
    APP, XR, feedback...) were skipped, and whether some part of it was not valid RTCP."""

    reports: tuple[RtcpReport, ...]
    skipped: int
    malformed: bool


def parse_rtcp_compound(data: bytes) -> RtcpCompound:
    """Walk a compound RTCP packet (RFC 3550 §6.1) by the length fields; never raises. A bad
    packet marks the compound malformed; reports before it are kept, a bad length ends the
    walk (nothing after it can be located)."""
    size = len(data)
    if size < _RTCP_COMMON.size:
        return RtcpCompound((), 0, True)
    reports: list[RtcpReport] = []
    skipped = 0
    malformed = False
    offset = 0
    while offset < size:
        if size - offset < _RTCP_COMMON.size:
            malformed = True
            break
        first, packet_type, words = _RTCP_COMMON.unpack_from(data, offset)
        end = offset + 4 * (words + 1)
        if first >> 6 != RTP_VERSION or end > size or packet_type not in RTCP_TYPES:
            malformed = True
            break
        if packet_type == RTCP_SR or packet_type == RTCP_RR:
            report = _parse_report(data, offset, end, packet_type == RTCP_SR, first & 0x1F)
            if report is None:
                malformed = True
            else:
                reports.append(report)
        else:
            skipped += 1
        offset = end
    return RtcpCompound(tuple(reports), skipped, malformed)


def _parse_report(data: bytes, offset: int, end: int, is_sr: bool, count: int) -> RtcpReport | None:
    fixed = _SR_FIXED if is_sr else _RR_FIXED
    if offset + fixed + count * _REPORT_BLOCK.size > end:
        return None  # the blocks it announces do not fit in its length
    (ssrc,) = _SSRC.unpack_from(data, offset + 4)
    sender = None
    if is_sr:
        msw, lsw, rtp_ts, packets, octets = _SENDER_INFO.unpack_from(data, offset + 8)
        sender = SenderInfo(msw << 32 | lsw, rtp_ts, packets, octets)
    start = offset + fixed
    blocks = tuple(_parse_block(data, start + i * _REPORT_BLOCK.size) for i in range(count))
    # Anything between the blocks and `end` is a profile-specific extension: ignored.
    return RtcpReport(ssrc, sender, blocks)


def _parse_block(data: bytes, offset: int) -> ReportBlock:
    ssrc, lost, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, offset)
    cumulative = lost & 0xFFFFFF
    if cumulative & 0x800000:
        cumulative -= 0x1000000
    return ReportBlock(ssrc, lost >> 24, cumulative, highest, jitter, lsr, dlsr)


class SenderReportLog:
    """The SRs the relay forwarded toward one side, by the LSR key that side's receiver
    reports will echo, with the time the relay saw each: enough to time the round trip
    between the relay and that side (RFC 3550 §6.4.1)."""

    __slots__ = ("_seen", "limit")

    def __init__(self, limit: int = SR_LOG_SIZE) -> None:
        self._seen: dict[int, float] = {}
        self.limit = max(1, limit)

    def __len__(self) -> int:
        return len(self._seen)

    def record(self, lsr: int, now: float) -> None:
        if lsr == 0:
            return  # an LSR of 0 means "no SR" in reports: never match one
        seen = self._seen
        seen.pop(lsr, None)  # a repeated key moves to the newest end
        seen[lsr] = now
        if len(seen) > self.limit:
            del seen[next(iter(seen))]

    def round_trip(self, lsr: int, dlsr: int, now: float) -> float | None:
        """now - (when the relay saw that SR) - DLSR, in seconds; None for LSR 0, an SR the
        relay did not forward (or forgot), or a negative result (clock granularity, bogus
        DLSR)."""
        if lsr == 0:
            return None
        seen = self._seen.get(lsr)
        if seen is None:
            return None
        rtt = now - seen - dlsr / 65536.0
        return rtt if rtt >= 0.0 else None


# ---------------------------------------------------------------------------- per leg


class LegQuality:
    """Everything the relay learns from one leg's peer on one stream: receive statistics of
    the RTP it sends (RFC 3550 §A.1, §A.3, §A.8), and from its RTCP what it says about the
    media it receives and the round trip to it. A StreamQuality links the two legs so SRs
    from one side are timed against the other side's RRs."""

    __slots__ = (
        "label",
        "clock_rate",
        "codec",
        "ptime_ms",
        "_exempt",
        # totals, kept across sources
        "packets",
        "bytes",
        "malformed",
        "duplicates",
        "reordered",
        "ssrc_changes",
        "resyncs",
        "_expected_before",
        "_received_before",
        "_first_arrival",
        # the current source (RFC 3550 §A.1)
        "ssrc",
        "base_seq",
        "max_seq",
        "cycles",
        "received",
        "bad_seq",
        "_window",
        # interarrival jitter (§A.8), in RTP timestamp units
        "_transit",
        "jitter",
        "max_jitter",
        # RTCP from this leg's peer
        "rtcp_packets",
        "rtcp_malformed",
        "sender_info",
        "_blocks",
        "forwarded_to_peer",
        "_forwarded_to_other",
        "rtt_samples",
        "_rtt_sum",
        "rtt_last",
        "rtt_max",
    )

    def __init__(
        self,
        clock_rate: int,
        *,
        codec: str | CodecProfile = "PCMU",
        ptime_ms: float = 20.0,
        event_payload_types: Iterable[int] = (),
        label: str = "",
        forwarded_to_peer: SenderReportLog | None = None,
        forwarded_to_other: SenderReportLog | None = None,
    ) -> None:
        """`clock_rate`: the RTP clock of the stream (rtpmap); `event_payload_types`:
        telephone-event (RFC 4733) and dynamic comfort-noise payload types, which, like static
        CN 13, are left out of jitter because their timestamps mark event or silence starts,
        not media time. `forwarded_to_peer`: the SRs the relay sends this leg's peer;
        `forwarded_to_other`: where SRs from this peer are recorded (the other leg's log)."""
        if clock_rate <= 0:
            raise ValueError(f"RTP clock rate must be positive, not {clock_rate}")
        self.label = label
        self.clock_rate = clock_rate
        self.codec = codec if isinstance(codec, CodecProfile) else codec_profile(codec)
        self.ptime_ms = ptime_ms
        self._exempt = frozenset(event_payload_types) | {COMFORT_NOISE_PT}
        self.packets = 0
        self.bytes = 0
        self.malformed = 0
        self.duplicates = 0
        self.reordered = 0
        self.ssrc_changes = 0
        self.resyncs = 0
        self._expected_before = 0
        self._received_before = 0
        self._first_arrival: float | None = None
        self.ssrc: int | None = None
        self.base_seq = 0
        self.max_seq = 0
        self.cycles = 0
        self.received = 0
        self.bad_seq = _NO_BAD_SEQ
        self._window = 0
        self._transit: float | None = None
        self.jitter = 0.0
        self.max_jitter = 0.0
        self.rtcp_packets = 0
        self.rtcp_malformed = 0
        self.sender_info: SenderInfo | None = None
        self._blocks: dict[int, ReportBlock] = {}
        # `is None`, not `or`: an empty log has length 0 and is falsy.
        if forwarded_to_peer is None:
            forwarded_to_peer = SenderReportLog()
        if forwarded_to_other is None:
            forwarded_to_other = SenderReportLog()
        self.forwarded_to_peer = forwarded_to_peer
        self._forwarded_to_other = forwarded_to_other
        self.rtt_samples = 0
        self._rtt_sum = 0.0
        self.rtt_last: float | None = None
        self.rtt_max: float | None = None

    def exempt(self, payload_types: Iterable[int]) -> None:
        """Leave these payload types (telephone-event, dynamic comfort noise) out of jitter
        from now on: a re-offer may number them differently."""
        self._exempt = frozenset(payload_types) | {COMFORT_NOISE_PT}

    # ------------------------------------------------------------------ RTP (hot path)

    def on_rtp(self, data: bytes, now: float) -> None:
        """One packet from this leg's peer, `now` its arrival time in seconds. Never raises:
        what is not RTP counts as malformed; RTCP muxed on the port (RFC 5761) goes to
        on_rtcp."""
        try:
            first, second, seq, timestamp, ssrc = _RTP_UNPACK(data)
        except struct.error:
            self._short(data, now)
            return
        if second >= 192 and second < 224:  # RFC 5761 §4: RTCP types 192-223
            self.on_rtcp(data, now)
            return
        # One test sends the rare shapes (bad version, padding, CSRCs) to the careful check.
        if first & 0xEF != 0x80 and not _plausible_rtp(data, first):
            self.malformed += 1
            return
        self.packets += 1
        self.bytes += len(data)
        if ssrc != self.ssrc:
            self._start_source(ssrc, seq, timestamp, second & 0x7F, now)
            return
        # RFC 3550 §A.1 update_seq, without the probation of new sources (the relay already
        # latched on the peer, and operators expect counting from the first packet).
        max_seq = self.max_seq
        udelta = (seq - max_seq) & 0xFFFF
        if 0 < udelta < MAX_DROPOUT:
            if seq < max_seq:
                self.cycles += SEQ_MOD
            self.max_seq = seq
            self._window = ((self._window << udelta) | 1) & _WINDOW_MASK
        elif udelta == 0:
            self.duplicates += 1
        elif udelta <= SEQ_MOD - MAX_MISORDER:
            self._jump(seq, timestamp, second & 0x7F, now)
            return
        else:
            self._late(SEQ_MOD - udelta)
        self.received += 1
        if (second & 0x7F) in self._exempt:
            return
        # RFC 3550 §A.8 with arrival time in RTP units, kept as a float.
        transit = now * self.clock_rate - timestamp
        last = self._transit
        self._transit = transit
        if last is None:
            return
        d = transit - last
        if d < 0.0:
            d = -d
        if d > _TS_HALF:  # the 32-bit RTP timestamp wrapped between the two packets
            d = abs(d - _TS_MOD)
        jitter = self.jitter + (d - self.jitter) * 0.0625
        self.jitter = jitter
        if jitter > self.max_jitter:
            self.max_jitter = jitter

    def _short(self, data: bytes, now: float) -> None:
        # Shorter than an RTP header: a reduced-size RTCP packet (RFC 5506) can be that short.
        if len(data) >= 2 and 192 <= data[1] < 224:
            self.on_rtcp(data, now)
        else:
            self.malformed += 1

    def _late(self, behind: int) -> None:
        bit = 1 << behind
        if self._window & bit:
            self.duplicates += 1
        else:
            self._window |= bit
            self.reordered += 1

    def _jump(self, seq: int, timestamp: int, payload_type: int, now: float) -> None:
        """§A.1: one packet far from the expected sequence is dropped from the statistics; a
        second one right after it means the sender restarted its numbering: start over."""
        if seq != self.bad_seq:
            self.bad_seq = (seq + 1) & 0xFFFF
            return
        self.resyncs += 1
        self._fold()
        self._init_seq(seq)
        self._transit = self._first_transit(timestamp, payload_type, now)

    def _start_source(
        self, ssrc: int, seq: int, timestamp: int, payload_type: int, now: float
    ) -> None:
        """A new SSRC (the first one, or a new source mid-call: re-INVITE, a PBX transferring
        the call, a restarted phone): sequence and jitter start over, totals go on."""
        if self.ssrc is None:
            self._first_arrival = now
        else:
            self.ssrc_changes += 1
            self._fold()
        self.ssrc = ssrc
        self._init_seq(seq)
        self.jitter = 0.0
        self._transit = self._first_transit(timestamp, payload_type, now)

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.cycles = 0
        self.received = 1  # this packet
        self.bad_seq = _NO_BAD_SEQ
        self._window = 1

    def _first_transit(self, timestamp: int, payload_type: int, now: float) -> float | None:
        if payload_type in self._exempt:
            return None
        return now * self.clock_rate - timestamp

    def _fold(self) -> None:
        """Bank the current source's expected/received counts before starting over."""
        self._expected_before += self._source_expected()
        self._received_before += self.received

    def _source_expected(self) -> int:
        if self.ssrc is None:
            return 0
        return self.cycles + self.max_seq - self.base_seq + 1

    # ------------------------------------------------------------------ RTP results

    @property
    def extended_max_seq(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        """Packets expected over every source so far (§A.3)."""
        return self._expected_before + self._source_expected()

    @property
    def lost(self) -> int:
        """Expected minus received (§A.3): negative when duplicates outnumber losses."""
        return self.expected - self._received_before - self.received

    @property
    def loss_fraction(self) -> float:
        """lost / expected, within [0, 1]."""
        expected = self.expected
        if expected <= 0:
            return 0.0
        return min(max(self.lost / expected, 0.0), 1.0)

    @property
    def jitter_ms(self) -> float:
        return 1000.0 * self.jitter / self.clock_rate

    @property
    def max_jitter_ms(self) -> float:
        return 1000.0 * self.max_jitter / self.clock_rate

    # ------------------------------------------------------------------ RTCP

    def on_rtcp(self, data: bytes, now: float) -> None:
        """A compound RTCP packet from this leg's peer, as it is forwarded to the other leg.
        Its SRs are logged for the other side's RRs; its report blocks say how the peer
        receives media and, when they echo an SR the relay forwarded, time the round trip."""
        self.rtcp_packets += 1
        compound = parse_rtcp_compound(data)
        if compound.malformed:
            self.rtcp_malformed += 1
        for report in compound.reports:
            if report.sender is not None:
                self.sender_info = report.sender
                self._forwarded_to_other.record(report.sender.lsr, now)
            for block in report.blocks:
                self._on_block(block, now)

    def _on_block(self, block: ReportBlock, now: float) -> None:
        blocks = self._blocks
        blocks.pop(block.ssrc, None)
        blocks[block.ssrc] = block
        if len(blocks) > REMOTE_SOURCES:
            del blocks[next(iter(blocks))]
        rtt = self.forwarded_to_peer.round_trip(block.lsr, block.dlsr, now)
        if rtt is None:
            return
        self.rtt_samples += 1
        self._rtt_sum += rtt
        self.rtt_last = rtt
        if self.rtt_max is None or rtt > self.rtt_max:
            self.rtt_max = rtt

    def report_about(self, ssrc: int | None) -> ReportBlock | None:
        """The peer's latest report block about source `ssrc` (media it receives)."""
        return None if ssrc is None else self._blocks.get(ssrc)

    @property
    def rtt(self) -> float | None:
        """Mean round trip between the relay and this leg's peer, seconds."""
        if self.rtt_samples == 0:
            return None
        return self._rtt_sum / self.rtt_samples

    # ------------------------------------------------------------------ report

    def snapshot(self, now: float, receiver: LegQuality | None = None) -> QualityReport:
        """The direction whose media this leg's peer sends. `receiver` is the other leg of the
        stream: its peer's RTCP tells how the media arrived there and the round trip to it."""
        block = receiver.report_about(self.ssrc) if receiver is not None else None
        rtt = receiver.rtt if receiver is not None else None
        remote_loss = block.loss_fraction if block is not None else None
        remote_jitter_ms = 1000.0 * block.jitter / self.clock_rate if block is not None else None
        r = mos = None
        if self.ssrc is not None:
            # Worst of what the relay saw and what the receiver reports; both halves of the
            # path for delay (a half not measured counts as 0: an optimistic estimate).
            path_rtt = (rtt or 0.0) + (self.rtt or 0.0)
            r, mos = quality_estimate(
                max(self.loss_fraction, remote_loss or 0.0),
                max(self.jitter_ms, remote_jitter_ms or 0.0),
                1000.0 * path_rtt,
                self.codec,
                self.ptime_ms,
            )
        sender = self.sender_info
        return QualityReport(
            source=self.label,
            ssrc=self.ssrc,
            codec=self.codec.name,
            duration_s=None if self._first_arrival is None else now - self._first_arrival,
            packets=self.packets,
            bytes=self.bytes,
            expected=self.expected,
            lost=self.lost,
            loss_fraction=self.loss_fraction,
            duplicates=self.duplicates,
            reordered=self.reordered,
            ssrc_changes=self.ssrc_changes,
            resyncs=self.resyncs,
            malformed=self.malformed,
            jitter_ms=self.jitter_ms,
            max_jitter_ms=self.max_jitter_ms,
            rtt_ms=None if rtt is None else 1000.0 * rtt,
            remote_loss_fraction=remote_loss,
            remote_cumulative_lost=None if block is None else block.cumulative_lost,
            remote_jitter_ms=remote_jitter_ms,
            sender_packets=None if sender is None else sender.packet_count,
            sender_octets=None if sender is None else sender.octet_count,
            rtcp_packets=self.rtcp_packets,
            rtcp_malformed=self.rtcp_malformed,
            r_factor=r,
            mos=mos,
        )


def _plausible_rtp(data: bytes, first: int) -> bool:
    """The checks the common header shape skips: version, CSRC list, padding (RFC 3550 §5.1).
    Header extensions are not walked (it would cost every WebRTC packet)."""
    if first >> 6 != RTP_VERSION:
        return False
    header = RTP_HEADER.size + 4 * (first & 0x0F)
    size = len(data)
    if size < header:
        return False
    if first & 0x20:
        padding = data[-1]  # counts itself: 0 is impossible
        if padding == 0 or header + padding > size:
            return False
    return True


class StreamQuality:
    """Both directions of one relayed stream: leg `a` and leg `b`, their SR logs crossed so
    SRs from one side time the round trip to the other (no reference cycle between legs)."""

    __slots__ = ("a", "b")

    def __init__(
        self,
        clock_rate: int,
        *,
        codec: str | CodecProfile = "PCMU",
        ptime_ms: float = 20.0,
        event_payload_types: Iterable[int] = (),
        labels: tuple[str, str] = ("a", "b"),
    ) -> None:
        toward_a, toward_b = SenderReportLog(), SenderReportLog()
        events = tuple(event_payload_types)
        self.a = LegQuality(
            clock_rate,
            codec=codec,
            ptime_ms=ptime_ms,
            event_payload_types=events,
            label=labels[0],
            forwarded_to_peer=toward_a,
            forwarded_to_other=toward_b,
        )
        self.b = LegQuality(
            clock_rate,
            codec=codec,
            ptime_ms=ptime_ms,
            event_payload_types=events,
            label=labels[1],
            forwarded_to_peer=toward_b,
            forwarded_to_other=toward_a,
        )

    def snapshot(self, now: float) -> tuple[QualityReport, QualityReport]:
        """(media sent by a's peer, media sent by b's peer)."""
        return self.a.snapshot(now, self.b), self.b.snapshot(now, self.a)


@dataclass(frozen=True, slots=True)
class QualityReport:
    """Quality of one direction of one stream (the media `source`'s peer sends), for CDRs,
    metrics and the API. Times in ms, fractions in [0, 1], None where nothing was measured."""

    source: str
    ssrc: int | None
    codec: str
    duration_s: float | None  # since the first RTP packet
    packets: int  # valid RTP packets, every source
    bytes: int  # their size as received, headers included
    expected: int  # RFC 3550 §A.3, summed over sources
    lost: int  # expected - received; negative with duplicates
    loss_fraction: float
    duplicates: int
    reordered: int
    ssrc_changes: int
    resyncs: int  # sequence restarts after a jump (§A.1)
    malformed: int  # datagrams that were not RTP
    jitter_ms: float  # §A.8, the current source
    max_jitter_ms: float
    rtt_ms: float | None  # relay <-> the receiving side, mean over the call
    remote_loss_fraction: float | None  # the receiver's last RR: fraction lost
    remote_cumulative_lost: int | None
    remote_jitter_ms: float | None
    sender_packets: int | None  # the source's last SR
    sender_octets: int | None
    rtcp_packets: int  # compound RTCP packets from the source's side
    rtcp_malformed: int
    r_factor: float | None  # simplified G.107 for the listener on the receiving side
    mos: float | None

    def to_dict(self) -> dict[str, int | float | str | None]:
        return {field.name: getattr(self, field.name) for field in fields(self)}
