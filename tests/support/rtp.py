"""A tiny RTP endpoint for media tests: build and parse RTP packets (RFC 3550 §5.1 fixed
header, no CSRC or extensions sent) and exchange them over a UDP socket on loopback."""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass
from types import TracebackType

Address = tuple[str, int]

_HEADER = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, sequence, timestamp, SSRC


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False

    def to_bytes(self) -> bytes:
        first = 0x80  # version 2, no padding, no extension, no CSRC
        second = (0x80 if self.marker else 0) | (self.payload_type & 0x7F)
        header = _HEADER.pack(
            first, second, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc
        )
        return header + self.payload

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """The packet in `data`; ValueError when it is not RTP version 2."""
        if len(data) < _HEADER.size:
            raise ValueError(f"{len(data)} bytes is shorter than an RTP header")
        first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
        if first >> 6 != 2:
            raise ValueError(f"RTP version {first >> 6}, expected 2")
        offset = _HEADER.size + 4 * (first & 0x0F)
        if first & 0x10:  # header extension: 16-bit profile, 16-bit length in words
            if len(data) < offset + 4:
                raise ValueError("truncated RTP header extension")
            (words,) = struct.unpack_from("!H", data, offset + 2)
            offset += 4 + 4 * words
        end = len(data)
        if first & 0x20 and end > offset:  # padding: the last byte counts it
            end -= data[-1]
        if end < offset:
            raise ValueError("RTP header longer than the packet")
        return cls(second & 0x7F, sequence, timestamp, ssrc, data[offset:end], bool(second & 0x80))


@dataclass(frozen=True, slots=True)
class Received:
    packet: RtpPacket
    source: Address


class RtpEndpoint:
    """A UDP socket bound at (host, port) that sends numbered RTP packets of one SSRC."""

    def __init__(self, host: str, port: int = 0, *, ssrc: int = 0x5BC0001, payload_type: int = 0):
        self.sock = socket.socket(
            socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM
        )
        self.sock.bind((host, port))
        bound = self.sock.getsockname()
        self.address: Address = (bound[0], int(bound[1]))
        self.ssrc = ssrc
        self.payload_type = payload_type
        self._sequence = 1000
        self._timestamp = 160_000

    def send(self, to: Address, payload: bytes, *, payload_type: int | None = None) -> RtpPacket:
        """Send one packet (the next sequence number, +160 samples) and return it."""
        packet = RtpPacket(
            self.payload_type if payload_type is None else payload_type,
            self._sequence,
            self._timestamp,
            self.ssrc,
            payload,
        )
        self._sequence = (self._sequence + 1) & 0xFFFF
        self._timestamp = (self._timestamp + 160) & 0xFFFFFFFF
        self.sock.sendto(packet.to_bytes(), to)
        return packet

    def recv(self, timeout: float = 1.0) -> Received | None:
        """The next RTP packet and its source, or None after `timeout` s (non-RTP is skipped)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, source = self.sock.recvfrom(65535)
            except TimeoutError:
                return None
            try:
                return Received(RtpPacket.parse(data), (source[0], int(source[1])))
            except ValueError:
                continue
        return None

    def drain(self) -> list[Received]:
        """Whatever has already arrived, without waiting."""
        received = []
        while (item := self.recv(0.001)) is not None:
            received.append(item)
        return received

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RtpEndpoint:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def send_until_received(
    sender: RtpEndpoint,
    receiver: RtpEndpoint,
    to: Address,
    payload: bytes,
    *,
    timeout: float = 3.0,
    interval: float = 0.05,
) -> tuple[RtpPacket, Received]:
    """Send `payload` from `sender` to `to` every `interval` s until `receiver` gets a packet
    with that payload (a relay may drop packets until both legs are set up). Returns the
    packet sent with the sequence number that arrived (else the last one sent) and what
    arrived; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    sent: dict[int, RtpPacket] = {}
    while time.monotonic() < deadline:
        packet = sender.send(to, payload)
        sent[packet.sequence] = packet
        # Waiting on the receiver's socket is the event; `interval` bounds one attempt.
        wait_until = min(deadline, time.monotonic() + interval)
        while (left := wait_until - time.monotonic()) > 0:
            got = receiver.recv(left)
            if got is None:
                break
            if got.packet.payload == payload:
                return sent.get(got.packet.sequence, packet), got
    raise AssertionError(
        f"no RTP with payload {payload!r} from {sender.address} via {to} reached "
        f"{receiver.address} within {timeout:g} s"
    )
