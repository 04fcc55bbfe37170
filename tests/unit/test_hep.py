"""sbc.hep: the HEP3 encoder against its decoder and the byte layout, and a real UDP send."""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable, Iterator

import pytest

from sbc.hep import (
    FAMILY_IPV4,
    FAMILY_IPV6,
    MAGIC,
    PROTO_TCP,
    PROTO_TYPE_SIP,
    PROTO_UDP,
    Chunk,
    HepError,
    HepSender,
    decode,
    encode,
    iter_chunks,
    parse_target,
)

SIP = (
    b"OPTIONS sip:sbc@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.10:5070;branch=z9hG4bK-1\r\n"
    b"Call-ID: hep-test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)
NOW = 1_700_000_000.123456


@pytest.mark.parametrize(
    ("src", "dst", "family"),
    [
        (("127.0.0.10", 5070), ("127.0.0.1", 5060), FAMILY_IPV4),
        (("2001:db8::10", 5070), ("[2001:db8::1]", 5060), FAMILY_IPV6),
    ],
)
@pytest.mark.parametrize(("transport", "proto"), [("udp", PROTO_UDP), ("tcp", PROTO_TCP)])
@pytest.mark.parametrize("auth_key", [None, "s3cret"])
@pytest.mark.parametrize("correlation", [None, "call-42"])
def test_round_trip(
    src: tuple[str, int],
    dst: tuple[str, int],
    family: int,
    transport: str,
    proto: int,
    auth_key: str | None,
    correlation: str | None,
) -> None:
    packet = decode(encode(SIP, src, dst, transport, NOW, 2001, auth_key, correlation))
    assert packet.family == family
    assert packet.ip_protocol == proto
    assert packet.src == (src[0].strip("[]"), 5070)
    assert packet.dst == (dst[0].strip("[]"), 5060)
    assert (packet.seconds, packet.micros) == (1_700_000_000, 123456)
    assert packet.proto_type == PROTO_TYPE_SIP
    assert packet.capture_id == 2001
    assert packet.payload == SIP
    assert packet.auth_key == auth_key
    assert packet.correlation == correlation


def test_header_and_chunk_lengths() -> None:
    data = encode(SIP, ("127.0.0.10", 5070), ("127.0.0.1", 5060), "udp", NOW, 7, "pw", "corr-1")
    assert data[:4] == MAGIC
    assert struct.unpack_from("!H", data, 4)[0] == len(data)
    # Walk the chunks by hand: each length covers its 6-byte header, and they tile exactly.
    pos, seen = 6, {}
    while pos < len(data):
        vendor, kind, length = struct.unpack_from("!HHH", data, pos)
        assert vendor == 0
        seen[kind] = data[pos + 6 : pos + length]
        pos += length
    assert pos == len(data)
    assert seen[Chunk.IP_FAMILY] == bytes([2])
    assert seen[Chunk.IP_PROTOCOL] == bytes([17])
    assert seen[Chunk.IPV4_SRC] == socket.inet_aton("127.0.0.10")
    assert seen[Chunk.IPV4_DST] == socket.inet_aton("127.0.0.1")
    assert seen[Chunk.SRC_PORT] == struct.pack("!H", 5070)
    assert seen[Chunk.DST_PORT] == struct.pack("!H", 5060)
    assert seen[Chunk.TIME_SEC] == struct.pack("!I", 1_700_000_000)
    assert seen[Chunk.TIME_USEC] == struct.pack("!I", 123456)
    assert seen[Chunk.PROTO_TYPE] == bytes([1])
    assert seen[Chunk.CAPTURE_ID] == struct.pack("!I", 7)
    assert seen[Chunk.AUTH_KEY] == b"pw"
    assert seen[Chunk.CORRELATION_ID] == b"corr-1"
    assert seen[Chunk.PAYLOAD] == SIP
    # The ids as the HEP3 specification numbers them.
    assert (Chunk.AUTH_KEY, Chunk.PAYLOAD, Chunk.CORRELATION_ID) == (0x0E, 0x0F, 0x11)


def test_ipv6_chunks_carry_sixteen_bytes() -> None:
    data = encode(SIP, ("::1", 1), ("2001:db8::1", 2), "tls", NOW, 1)
    chunks = {kind: value for _, kind, value in iter_chunks(data)}
    assert Chunk.IPV4_SRC not in chunks
    assert chunks[Chunk.IPV6_SRC] == socket.inet_pton(socket.AF_INET6, "::1")
    assert len(chunks[Chunk.IPV6_DST]) == 16
    assert chunks[Chunk.IP_PROTOCOL] == bytes([PROTO_TCP])  # TLS rides on TCP


def test_mixed_families_map_ipv4_into_ipv6() -> None:
    packet = decode(encode(SIP, ("192.0.2.1", 1), ("2001:db8::1", 2), "udp", NOW, 1))
    assert packet.family == FAMILY_IPV6
    assert packet.src[0] == "::ffff:192.0.2.1"


def test_microseconds_never_reach_a_full_second() -> None:
    packet = decode(encode(SIP, ("1.2.3.4", 1), ("1.2.3.5", 2), "udp", 10.9999999, 1))
    assert (packet.seconds, packet.micros) == (10, 999_999)


@pytest.mark.parametrize(
    ("src", "transport"),
    [(("pbx.example.com", 1), "udp"), (("1.2.3.4", 1), "carrier-pigeon")],
)
def test_encode_refuses_what_it_cannot_express(src: tuple[str, int], transport: str) -> None:
    with pytest.raises(HepError):
        encode(SIP, src, ("1.2.3.5", 2), transport, NOW, 1)


def test_encode_refuses_oversize() -> None:
    with pytest.raises(HepError, match="16-bit"):
        encode(b"x" * 65_535, ("1.2.3.4", 1), ("1.2.3.5", 2), "tcp", NOW, 1)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: b"HEP2" + d[4:],
        lambda d: d[:-1],
        lambda d: d[:4] + struct.pack("!H", len(d) + 1) + d[6:] + b"\0",
        lambda d: d[:10] + struct.pack("!H", 3) + d[12:],  # first chunk shorter than a header
    ],
)
def test_decode_rejects_malformed(mangle: Callable[[bytes], bytes]) -> None:
    good = encode(SIP, ("1.2.3.4", 1), ("1.2.3.5", 2), "udp", NOW, 1)
    with pytest.raises(HepError):
        decode(mangle(good))


def test_decode_skips_vendor_chunks() -> None:
    good = encode(SIP, ("1.2.3.4", 1), ("1.2.3.5", 2), "udp", NOW, 1)
    vendor = struct.pack("!HHH", 0x1234, Chunk.PAYLOAD, 9) + b"bad"
    body = good[6:] + vendor
    packet = decode(MAGIC + struct.pack("!H", 6 + len(body)) + body)
    assert packet.payload == SIP


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.9:9060", ("10.0.0.9", 9060)),
        ("10.0.0.9", ("10.0.0.9", 9060)),
        ("[2001:db8::9]:9061", ("2001:db8::9", 9061)),
        ("2001:db8::9", ("2001:db8::9", 9060)),
    ],
)
def test_parse_target(text: str, expected: tuple[str, int]) -> None:
    assert parse_target(text) == expected


@pytest.mark.parametrize("text", ["10.0.0.9:x", "[::1", "[::1]x", ":9060", "1.2.3.4:0"])
def test_parse_target_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_target(text)


@pytest.fixture
def collector() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)  # bounded wait: loopback delivers at once or not at all
    yield sock
    sock.close()


def test_sender_delivers_over_udp(collector: socket.socket) -> None:
    sender = HepSender(collector.getsockname(), 2001, password="pw")
    try:
        for n in range(3):
            assert sender.capture(
                SIP, ("127.0.0.10", 5070), ("127.0.0.1", 5060), "udp", NOW + n, f"c{n}"
            )
        received = [decode(collector.recv(65_535)) for _ in range(3)]
    finally:
        sender.close()
    assert [p.correlation for p in received] == ["c0", "c1", "c2"]
    assert all(p.payload == SIP and p.auth_key == "pw" and p.capture_id == 2001 for p in received)
    assert sender.counters.sent == 3 and sender.counters.dropped == 0


def test_sender_drops_instead_of_blocking_or_raising() -> None:
    # A socket whose send buffer is full: every send fails with EAGAIN, like a stalled
    # collector path; capture() must return at once, counting the drops.
    class FullSocket(socket.socket):
        def send(self, data: bytes, flags: int = 0) -> int:  # type: ignore[override]
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    sock = FullSocket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = HepSender(("127.0.0.1", 9), 1, sock=sock)
    try:
        for _ in range(5):
            assert not sender.capture(SIP, ("1.2.3.4", 1), ("1.2.3.5", 2), "udp", NOW)
        assert not sender.capture(SIP, ("not-an-ip", 1), ("1.2.3.5", 2), "udp", NOW)
    finally:
        sender.close()
    assert (sender.counters.sent, sender.counters.dropped, sender.counters.failed) == (0, 5, 1)


def test_sender_survives_a_closed_socket(collector: socket.socket) -> None:
    sender = HepSender(collector.getsockname(), 1)
    sender.close()
    assert not sender.capture(SIP, ("1.2.3.4", 1), ("1.2.3.5", 2), "udp", NOW)
    assert sender.counters.failed == 1
