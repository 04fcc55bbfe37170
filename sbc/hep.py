"""HEP v3 (EEP) capture: every SIP message we receive or send, copied to a Homer/sngrep
collector over UDP.

A HEP3 packet is the 4-byte id "HEP3", a 16-bit total length (header included), then
chunks of (vendor id 16 bits, type id 16 bits, length 16 bits including these 6 bytes,
value), all in network byte order. Vendor 0 is the generic chunk set used here; type ids as
sipcapture's HEP3 specification numbers them (confirmed against sngrep's decoder, captagent,
Kamailio's siptrace and reSIProcate's encoder).

Capture is best effort by design: the sender never blocks and never raises into the SIP
path; a full socket buffer drops the copy and counts it.
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "Chunk",
    "HepCounters",
    "HepError",
    "HepPacket",
    "HepSender",
    "decode",
    "encode",
    "parse_target",
]

MAGIC = b"HEP3"
_HEADER = struct.Struct("!4sH")
_CHUNK = struct.Struct("!HHH")
_U8 = struct.Struct("!HHHB")
_U16 = struct.Struct("!HHHH")
_U32 = struct.Struct("!HHHI")
MAX_PACKET = 0xFFFF  # the total length is a 16-bit field

# The HEP spec carries the address family as the Linux AF_* numbers, whatever the sender's
# platform (socket.AF_INET6 is 30 on BSD/macOS), so they are spelled out.
FAMILY_IPV4 = 2
FAMILY_IPV6 = 10
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_SCTP = 132
PROTO_TYPE_SIP = 1

# TLS and WebSocket ride on TCP: the collector is told the IP protocol, not the SIP one.
_IP_PROTOCOL = {
    "udp": PROTO_UDP,
    "tcp": PROTO_TCP,
    "tls": PROTO_TCP,
    "ws": PROTO_TCP,
    "wss": PROTO_TCP,
    "sctp": PROTO_SCTP,
}


class Chunk(IntEnum):
    """Generic (vendor 0) chunk type ids."""

    IP_FAMILY = 0x0001
    IP_PROTOCOL = 0x0002
    IPV4_SRC = 0x0003
    IPV4_DST = 0x0004
    IPV6_SRC = 0x0005
    IPV6_DST = 0x0006
    SRC_PORT = 0x0007
    DST_PORT = 0x0008
    TIME_SEC = 0x0009
    TIME_USEC = 0x000A
    PROTO_TYPE = 0x000B
    CAPTURE_ID = 0x000C
    KEEP_ALIVE = 0x000D
    AUTH_KEY = 0x000E
    PAYLOAD = 0x000F
    COMPRESSED_PAYLOAD = 0x0010
    CORRELATION_ID = 0x0011


class HepError(ValueError):
    """Bytes that are not a well-formed HEP3 packet, or a packet that cannot be encoded."""


@dataclass(frozen=True, slots=True)
class HepPacket:
    """One captured message. Addresses are IP literals (no brackets); `seconds` and
    `micros` are UNIX time."""

    family: int
    ip_protocol: int
    src: tuple[str, int]
    dst: tuple[str, int]
    seconds: int
    micros: int
    proto_type: int
    capture_id: int
    payload: bytes
    auth_key: str | None = None
    correlation: str | None = None


# ----- encoding -----------------------------------------------------------------------------


def _bare(host: str) -> str:
    """An address as inet_pton takes it: no brackets, no IPv6 zone (%eth0)."""
    if host.startswith("["):
        host = host[1:-1]
    return host.partition("%")[0]


def _packed(host: str, v6: bool) -> bytes:
    """`host` in network form; an IPv4 address on an IPv6 packet becomes ::ffff:a.b.c.d,
    since one packet has one family for both ends."""
    try:
        if ":" in host:
            return socket.inet_pton(socket.AF_INET6, host)
        packed = socket.inet_pton(socket.AF_INET, host)
    except OSError as err:
        raise HepError(f"'{host}' is not an IP address") from err
    return b"\0" * 10 + b"\xff\xff" + packed if v6 else packed


def _chunk(kind: Chunk, value: bytes) -> bytes:
    length = _CHUNK.size + len(value)
    if length > MAX_PACKET:
        raise HepError(f"{kind.name} chunk of {length} bytes exceeds the 16-bit length field")
    return _CHUNK.pack(0, kind, length) + value


def encode(
    data: bytes,
    src: tuple[str, int],
    dst: tuple[str, int],
    transport: str,
    now: float,
    capture_id: int,
    auth_key: str | None = None,
    correlation: str | None = None,
) -> bytes:
    """A HEP3 packet carrying the SIP message `data` sent from `src` to `dst` over
    `transport` ('udp', 'tcp', 'tls', ...) at UNIX time `now`.

    Raises HepError for a non-IP address, an unknown transport or a packet over 64 KiB.
    """
    src_host, dst_host = _bare(src[0]), _bare(dst[0])
    v6 = ":" in src_host or ":" in dst_host
    proto = _IP_PROTOCOL.get(transport.lower())
    if proto is None:
        raise HepError(f"transport '{transport}' has no IP protocol")
    seconds = int(now)
    # Rounding can reach 1_000_000; clamp rather than carry, a microsecond does not matter.
    micros = min(int(round((now - seconds) * 1_000_000)), 999_999)
    src_kind, dst_kind = (
        (Chunk.IPV6_SRC, Chunk.IPV6_DST) if v6 else (Chunk.IPV4_SRC, Chunk.IPV4_DST)
    )
    parts = [
        _U8.pack(0, Chunk.IP_FAMILY, _U8.size, FAMILY_IPV6 if v6 else FAMILY_IPV4),
        _U8.pack(0, Chunk.IP_PROTOCOL, _U8.size, proto),
        _chunk(src_kind, _packed(src_host, v6)),
        _chunk(dst_kind, _packed(dst_host, v6)),
        _U16.pack(0, Chunk.SRC_PORT, _U16.size, src[1] & 0xFFFF),
        _U16.pack(0, Chunk.DST_PORT, _U16.size, dst[1] & 0xFFFF),
        _U32.pack(0, Chunk.TIME_SEC, _U32.size, seconds & 0xFFFFFFFF),
        _U32.pack(0, Chunk.TIME_USEC, _U32.size, micros),
        _U8.pack(0, Chunk.PROTO_TYPE, _U8.size, PROTO_TYPE_SIP),
        _U32.pack(0, Chunk.CAPTURE_ID, _U32.size, capture_id & 0xFFFFFFFF),
    ]
    if auth_key is not None:
        parts.append(_chunk(Chunk.AUTH_KEY, auth_key.encode()))
    if correlation is not None:
        parts.append(_chunk(Chunk.CORRELATION_ID, correlation.encode()))
    # The payload goes last, after the small chunks a collector needs to route it.
    parts.append(_chunk(Chunk.PAYLOAD, data))
    body = b"".join(parts)
    total = _HEADER.size + len(body)
    if total > MAX_PACKET:
        raise HepError(f"HEP packet of {total} bytes exceeds the 16-bit length field")
    return _HEADER.pack(MAGIC, total) + body


# ----- decoding (tests and diagnostics) -----------------------------------------------------


def iter_chunks(packet: bytes) -> list[tuple[int, int, bytes]]:
    """(vendor id, type id, value) of every chunk, checking the header and every length."""
    if len(packet) < _HEADER.size:
        raise HepError("shorter than the HEP3 header")
    magic, total = _HEADER.unpack_from(packet)
    if magic != MAGIC:
        raise HepError(f"magic {magic!r} is not HEP3")
    if total != len(packet):
        raise HepError(f"length field {total} but {len(packet)} bytes")
    chunks: list[tuple[int, int, bytes]] = []
    pos = _HEADER.size
    while pos < total:
        if pos + _CHUNK.size > total:
            raise HepError(f"truncated chunk header at offset {pos}")
        vendor, kind, length = _CHUNK.unpack_from(packet, pos)
        if length < _CHUNK.size or pos + length > total:
            raise HepError(f"chunk {kind:#06x} at offset {pos} has bad length {length}")
        chunks.append((vendor, kind, packet[pos + _CHUNK.size : pos + length]))
        pos += length
    return chunks


def _int(value: bytes) -> int:
    return int.from_bytes(value, "big")


def _address(value: bytes) -> str:
    family = socket.AF_INET6 if len(value) == 16 else socket.AF_INET
    try:
        return socket.inet_ntop(family, value)
    except (OSError, ValueError) as err:
        raise HepError(f"address chunk of {len(value)} bytes") from err


def decode(packet: bytes) -> HepPacket:
    """The fields of a HEP3 packet; vendor-specific and unknown chunks are skipped."""
    fields: dict[int, bytes] = {}
    for vendor, kind, value in iter_chunks(packet):
        if vendor == 0:
            fields[kind] = value
    v6 = _int(fields.get(Chunk.IP_FAMILY, b"")) == FAMILY_IPV6
    src_kind, dst_kind = (
        (Chunk.IPV6_SRC, Chunk.IPV6_DST) if v6 else (Chunk.IPV4_SRC, Chunk.IPV4_DST)
    )
    missing = [
        kind.name
        for kind in (Chunk.IP_FAMILY, Chunk.IP_PROTOCOL, src_kind, dst_kind, Chunk.PAYLOAD)
        if kind not in fields
    ]
    if missing:
        raise HepError(f"missing chunks: {', '.join(missing)}")
    auth = fields.get(Chunk.AUTH_KEY)
    correlation = fields.get(Chunk.CORRELATION_ID)
    return HepPacket(
        family=_int(fields[Chunk.IP_FAMILY]),
        ip_protocol=_int(fields[Chunk.IP_PROTOCOL]),
        src=(_address(fields[src_kind]), _int(fields.get(Chunk.SRC_PORT, b""))),
        dst=(_address(fields[dst_kind]), _int(fields.get(Chunk.DST_PORT, b""))),
        seconds=_int(fields.get(Chunk.TIME_SEC, b"")),
        micros=_int(fields.get(Chunk.TIME_USEC, b"")),
        proto_type=_int(fields.get(Chunk.PROTO_TYPE, b"")),
        capture_id=_int(fields.get(Chunk.CAPTURE_ID, b"")),
        payload=fields[Chunk.PAYLOAD],
        auth_key=None if auth is None else auth.decode(errors="replace"),
        correlation=None if correlation is None else correlation.decode(errors="replace"),
    )


# ----- sending ------------------------------------------------------------------------------


def parse_target(text: str, default_port: int = 9060) -> tuple[str, int]:
    """'10.0.0.9:9060', '[2001:db8::9]:9060' or a bare address (port 9060, the usual HEP
    port) as (host, port). Raises ValueError."""
    host, port = text, default_port
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"'{text}': missing ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ValueError(f"'{text}': bad port")
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, digits = text.partition(":")
        if not digits.isdigit():
            raise ValueError(f"'{text}': bad port")
        port = int(digits)
    if not host or not 0 < port < 65536:
        raise ValueError(f"'{text}' is not host:port")
    return host, port


@dataclass(slots=True)
class HepCounters:
    """What became of capture() calls; for metrics and the drop warning."""

    sent: int = 0
    dropped: int = 0  # socket buffer full (EAGAIN/ENOBUFS) or collector unreachable
    failed: int = 0  # could not be encoded (oversize, non-IP address)


# Errors a send may return that mean "not now / not there", never a bug of ours: the
# collector's ICMP port unreachable comes back as ECONNREFUSED on a connected socket.
_TRANSIENT = frozenset(
    {
        errno.EAGAIN,
        errno.EWOULDBLOCK,
        errno.ENOBUFS,
        errno.ECONNREFUSED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EMSGSIZE,
    }
)


class HepSender:
    """Sends HEP3 copies to one collector from a non-blocking UDP socket.

    No asyncio protocol: a datagram either fits the socket buffer now or is dropped, so the
    SIP path never waits for the capture path. The target must be an IP literal (resolved
    by the caller at startup, never per message). `sock` is for tests: an unconnected UDP
    socket of the target's family.
    """

    __slots__ = ("capture_id", "password", "counters", "_sock", "_target")

    def __init__(
        self,
        target: tuple[str, int],
        capture_id: int,
        password: str | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        host = _bare(target[0])
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._target = (host, target[1])
        self.capture_id = capture_id
        self.password = password
        self.counters = HepCounters()
        if sock is None:
            sock = socket.socket(family, socket.SOCK_DGRAM)
        # connect() fixes the destination once (no per-send route lookup) and makes a dead
        # collector show up as ECONNREFUSED, counted as a drop. Done at startup: an OSError
        # here (no route) is a configuration problem for the caller to report.
        sock.connect(self._target)
        sock.setblocking(False)
        self._sock = sock

    @property
    def target(self) -> tuple[str, int]:
        return self._target

    def capture(
        self,
        data: bytes,
        src: tuple[str, int],
        dst: tuple[str, int],
        transport: str,
        now: float,
        correlation: str | None = None,
    ) -> bool:
        """Copy one SIP message to the collector; `now` is UNIX time. True if it left."""
        try:
            packet = encode(
                data, src, dst, transport, now, self.capture_id, self.password, correlation
            )
        except HepError:
            self.counters.failed += 1
            return False
        try:
            self._sock.send(packet)
        except OSError as err:
            if err.errno not in _TRANSIENT:
                # Anything else (a closed socket) is still no reason to fail a SIP message.
                self.counters.failed += 1
            else:
                self.counters.dropped += 1
            return False
        self.counters.sent += 1
        return True

    def close(self) -> None:
        self._sock.close()
