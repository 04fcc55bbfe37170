"""Raw SIP over UDP, TCP and TLS for tests: small blocking clients with timeouts."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Self

from sbc.sip.framing import FramedMessage, FramingError, KeepAlivePong, StreamFramer

Address = tuple[str, int]


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def free_port(host: str = "127.0.0.1", avoid: Iterable[int] = ()) -> int:
    """A port number free for both UDP and TCP on `host` right now (not reserved: a tiny
    window remains in which another process could take it)."""
    avoid = set(avoid)
    for _ in range(200):
        with socket.socket(_family(host), socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            if port in avoid:
                continue
            with socket.socket(_family(host), socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
            return port
    raise RuntimeError(f"no port free for both UDP and TCP on {host}")


class PortPicker:
    """Free ports for one test set-up, never the same number twice (`used` is shared with
    helpers that pick media port runs around them)."""

    def __init__(self) -> None:
        self.used: set[int] = set()

    def port(self, host: str) -> int:
        value = free_port(host, avoid=self.used)
        self.used.add(value)
        return value


def ipv6_available() -> bool:
    """True when ::1 can be bound (IPv6 enabled on loopback)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


class UdpClient:
    """A UDP socket bound on loopback that sends datagrams and waits for replies."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = socket.socket(_family(host), socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        address = self.sock.getsockname()
        self.address: Address = (address[0], int(address[1]))

    def send(self, data: bytes, to: Address) -> None:
        self.sock.sendto(data, to)

    def recv(self, timeout: float = 2.0) -> bytes | None:
        """The next datagram, or None when none arrives within `timeout` seconds."""
        self.sock.settimeout(timeout)
        try:
            data, _ = self.sock.recvfrom(65535)
        except TimeoutError:
            return None
        return data

    def recv_until(self, predicate: object, timeout: float = 2.0) -> list[bytes]:
        """Datagrams until one satisfies `predicate(data)` (included) or `timeout` passes."""
        deadline = time.monotonic() + timeout
        received: list[bytes] = []
        while (left := deadline - time.monotonic()) > 0:
            data = self.recv(left)
            if data is None:
                break
            received.append(data)
            if callable(predicate) and predicate(data):
                break
        return received

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> UdpClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def udp_exchange(
    data: bytes, addr: Address, timeout: float = 2.0, *, source_host: str | None = None
) -> bytes | None:
    """Send one datagram to `addr` and return the first datagram that comes back, or None
    on timeout. The source is an ephemeral port on `source_host` (default: same family
    loopback)."""
    host = source_host or ("::1" if ":" in addr[0] else "127.0.0.1")
    with UdpClient(host) as client:
        client.send(data, addr)
        return client.recv(timeout)


class StreamClient:
    """A TCP or TLS connection that frames what it receives with Content-Length."""

    def __init__(
        self,
        addr: Address,
        *,
        tls: bool = False,
        cafile: str | None = None,
        server_hostname: str | None = None,
        timeout: float = 5.0,
        source_host: str | None = None,
    ) -> None:
        raw = socket.socket(_family(addr[0]), socket.SOCK_STREAM)
        raw.settimeout(timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source_host is not None:
            raw.bind((source_host, 0))
        raw.connect(addr)
        if tls:
            context = ssl.create_default_context(cafile=cafile)
            if cafile is None:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self.sock: socket.socket = context.wrap_socket(
                raw, server_hostname=server_hostname or addr[0]
            )
        else:
            self.sock = raw
        self._framer = StreamFramer(1 << 20)
        self._ready: list[bytes] = []
        self.pongs = 0
        self.closed_by_peer = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_segments(self, chunks: Sequence[bytes], gap: float = 0.05) -> None:
        """Send each chunk in its own write. The gap is not synchronisation: it only keeps
        the kernel from coalescing the writes so the server really reads partial data."""
        for index, chunk in enumerate(chunks):
            if index:
                time.sleep(gap)
            self.sock.sendall(chunk)

    def recv_message(self, timeout: float = 2.0) -> bytes | None:
        """The next complete SIP message, or None on timeout or when the peer closes."""
        deadline = time.monotonic() + timeout
        while not self._ready:
            left = deadline - time.monotonic()
            if left <= 0 or self.closed_by_peer:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return None
            except (ConnectionResetError, ssl.SSLError):
                self.closed_by_peer = True
                return None
            if not data:
                self.closed_by_peer = True
                continue
            for event in self._framer.feed(data):
                if isinstance(event, FramedMessage):
                    self._ready.append(event.data)
                elif isinstance(event, KeepAlivePong):
                    self.pongs += 1
                elif isinstance(event, FramingError):
                    raise AssertionError(f"server sent an unframeable stream: {event.reason}")
        return self._ready.pop(0)

    def recv_raw(self, timeout: float = 2.0) -> bytes:
        """Whatever bytes arrive next (b'' on close or timeout), bypassing the framer."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536)
        except TimeoutError:
            return b""

    def wait_closed(self, timeout: float = 2.0) -> bool:
        """True when the server closes the connection within `timeout` (data is discarded)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                if not self.sock.recv(65536):
                    return True
            except TimeoutError:
                return False
            except (ConnectionResetError, ssl.SSLError):
                return True
        return False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> StreamClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def tcp_exchange(
    chunks: Sequence[bytes], addr: Address, expect: int = 1, timeout: float = 2.0
) -> list[bytes]:
    """Connect, send `chunks` as separate writes, and return up to `expect` framed replies
    (fewer when the timeout passes first)."""
    with StreamClient(addr, timeout=timeout) as client:
        client.send_segments(chunks)
        return _collect(client, expect, timeout)


def tls_exchange(
    chunks: Sequence[bytes],
    addr: Address,
    expect: int = 1,
    timeout: float = 2.0,
    *,
    cafile: str | None = None,
    server_hostname: str | None = None,
) -> list[bytes]:
    """As tcp_exchange over TLS; with `cafile` the server certificate is verified."""
    with StreamClient(
        addr, tls=True, cafile=cafile, server_hostname=server_hostname, timeout=timeout
    ) as client:
        client.send_segments(chunks)
        return _collect(client, expect, timeout)


def _collect(client: StreamClient, expect: int, timeout: float) -> list[bytes]:
    deadline = time.monotonic() + timeout
    replies: list[bytes] = []
    while len(replies) < expect and (left := deadline - time.monotonic()) > 0:
        message = client.recv_message(left)
        if message is None:
            break
        replies.append(message)
    return replies


class UdpResponder:
    """A UDP server on a thread for tests: `answer(data)` (overridden) gives the reply to
    each datagram, or None for none. Bound at construction, so nothing sent to it before
    the thread starts is lost; stopped and closed on leaving the `with` block."""

    def __init__(self, host: str, port: int) -> None:
        self._sock = socket.socket(_family(host), socket.SOCK_DGRAM)
        self._sock.bind((host, port))
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def answer(self, data: bytes) -> bytes | None:
        raise NotImplementedError  # each responder speaks its own protocol

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = self.answer(data)
            if reply is not None:
                self._sock.sendto(reply, source)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()
