"""A tiny view of RTP and RTCP fixed headers (RFC 3550 §5.1, §6.4) built on struct, for
tests, benchmarks and, later, stats and SRTP policy lookups (the relay forwards bytes as is)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

RTP_VERSION = 2
RTP_HEADER = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, sequence, timestamp, SSRC
RTCP_HEADER = struct.Struct("!BBHI")  # V/P/RC, PT, length in 32-bit words - 1, sender SSRC
# RFC 5761 §4: RTCP packet types 192-223 sit where RTP payload types 64-95 with the marker
# bit would; a muxed port tells them apart by this range.
RTCP_TYPES = range(192, 224)


class RtpError(ValueError):
    """Bytes that are not an RTP/RTCP packet (too short, wrong version)."""


@dataclass(frozen=True, slots=True)
class RtpHeader:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool = False
    padding: bool = False
    extension: bool = False
    csrc_count: int = 0

    @property
    def size(self) -> int:
        """Bytes before the payload, header extension excluded."""
        return RTP_HEADER.size + 4 * self.csrc_count

    def pack(self) -> bytes:
        first = (
            RTP_VERSION << 6 | self.padding << 5 | self.extension << 4 | (self.csrc_count & 0x0F)
        )
        second = self.marker << 7 | (self.payload_type & 0x7F)
        return RTP_HEADER.pack(
            first,
            second,
            self.sequence & 0xFFFF,
            self.timestamp & 0xFFFFFFFF,
            self.ssrc & 0xFFFFFFFF,
        )


def parse_rtp(data: bytes) -> RtpHeader:
    if len(data) < RTP_HEADER.size:
        raise RtpError(f"RTP packet of {len(data)} bytes is shorter than its 12-byte header")
    first, second, sequence, timestamp, ssrc = RTP_HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {first >> 6}, expected {RTP_VERSION}")
    header = RtpHeader(
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        marker=bool(second & 0x80),
        padding=bool(first & 0x20),
        extension=bool(first & 0x10),
        csrc_count=first & 0x0F,
    )
    if len(data) < header.size:
        raise RtpError(f"RTP packet of {len(data)} bytes is shorter than its CSRC list")
    return header


def build_rtp(
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    marker: bool = False,
) -> bytes:
    return RtpHeader(payload_type, sequence, timestamp, ssrc, marker).pack() + payload


@dataclass(frozen=True, slots=True)
class RtcpHeader:
    packet_type: int
    count: int
    length: int  # bytes of this RTCP packet, header included
    ssrc: int


def parse_rtcp(data: bytes) -> RtcpHeader:
    """The header of the first packet of a compound RTCP packet."""
    if len(data) < RTCP_HEADER.size:
        raise RtpError(f"RTCP packet of {len(data)} bytes is shorter than its 8-byte header")
    first, packet_type, words, ssrc = RTCP_HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise RtpError(f"RTCP version {first >> 6}, expected {RTP_VERSION}")
    if packet_type not in RTCP_TYPES:
        raise RtpError(f"RTCP packet type {packet_type} is outside 192-223")
    return RtcpHeader(packet_type, first & 0x1F, 4 * (words + 1), ssrc)


def build_rtcp_bye(ssrc: int) -> bytes:
    """A minimal RTCP BYE (PT 203, RFC 3550 §6.6) for one source."""
    return RTCP_HEADER.pack(RTP_VERSION << 6 | 1, 203, 1, ssrc & 0xFFFFFFFF)


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4 demultiplexing of RTP and RTCP sharing one port."""
    return len(data) >= 2 and data[1] in RTCP_TYPES
