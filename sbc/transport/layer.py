"""The SIP transport layer: binds the configured listeners, hands every received message to
one callback, and sends to a Peer over UDP or over a (reused or new) TCP/TLS connection."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import socket
import ssl
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from sbc.log import get_logger
from sbc.sip.errors import ParseError
from sbc.sip.framing import FramingError
from sbc.sip.message import Message, Request
from sbc.sip.peer import Peer
from sbc.transport.limits import TransportCounters, TransportLimits
from sbc.transport.listeners import Listener, ListenerError
from sbc.transport.stream import StreamConnection
from sbc.transport.tls import TlsSetupError, client_context, server_context

if TYPE_CHECKING:  # sbc.config imports sbc.transport.limits: no import at run time
    from sbc.config import Interface

OnMessage = Callable[[bytes, Peer], None]
OnTransportError = Callable[[Peer, str, object], None]
FramingReply = Callable[[FramingError, Peer], "bytes | None"]

# RFC 3261 §18.1.1: with an unknown path MTU, a request over 1300 bytes goes over TCP.
UDP_REQUEST_LIMIT = 1300
# Datagrams this short cannot be SIP: CRLF keep-alives (and NUL padding some phones send).
_KEEPALIVE_MAX = 4
_UDP_BUFFER = 4 * 1024 * 1024
_BACKLOG = 1024
# accept() failing for want of descriptors or memory: pause accepting for a moment (as
# asyncio's own servers do) rather than spin on a listening socket that stays readable.
_ACCEPT_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ACCEPT_RETRY_DELAY = 1.0
# The listening socket itself is gone: stop accepting on it.
_ACCEPT_FATAL_ERRORS = frozenset({errno.EBADF, errno.EINVAL, errno.ENOTSOCK})
# What peers can cause (refusals, failed handshakes, timeouts) is logged as a warning at most
# once per this many seconds per event, with the running count; at debug level otherwise.
_WARN_INTERVAL = 10.0
# A timer may fire a hair before its time (uvloop counts in milliseconds): a deadline this
# close counts as reached, rather than re-arming for a few microseconds.
_TIMER_SLACK = 0.002

log = get_logger("transport")


class _UdpProtocol(asyncio.DatagramProtocol):
    """Hands each datagram of one UDP listener to the layer's callback (the hot path)."""

    def __init__(self, layer: TransportLayer, name: str) -> None:
        self._layer = layer
        self.name = name
        self._on_message = layer.on_message
        self.closed = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if len(data) <= _KEEPALIVE_MAX:
            return
        try:
            self._on_message(data, Peer("udp", addr[0], addr[1], self.name))
        except Exception:
            # A bug handling one message must not take the listener down (uvloop closes a
            # UDP transport whose protocol callback raises).
            log.exception("message.handler_failed", listener=self.name)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends, reported on the next socket call.
        log.debug("udp.error", listener=self.name, error=str(exc))


class InterfaceTlsError(TlsSetupError):
    """An interface's certificate, key or CA cannot be loaded."""

    def __init__(self, interface: Interface, reason: str) -> None:
        super().__init__(f"interfaces.{interface.name}.tls: {reason}")
        self.interface = interface
        self.reason = reason

    def first_listener(self) -> Listener:
        """The listener start-up failure reports name (its first TLS one, else its first)."""
        addresses = self.interface.listen
        address = next((a for a in addresses if a.transport == "tls"), addresses[0])
        return Listener(self.interface.name, address.transport, address.host, address.port)


class TransportLayer:
    """All SIP sockets of the process.

    Listener names are `interface/transport:host:port` (see sbc.transport.listeners); each
    received message reaches `on_message(data, source)` with `source.listener` set to the
    listener it arrived on. Sending to a Peer whose listener is empty or unknown picks the
    first listener of the peer's transport and address family. Peers carry IP addresses:
    RFC 3263 name resolution belongs above this layer (a host name here would make UDP
    sendto block on DNS).

    TCP/TLS connections are keyed by (listener, remote host, remote port), whoever opened
    them, so a connection a peer opened carries our responses and requests to that address.

    `limits` (TransportLimits) bounds what peers can make us hold: connections in total and
    per source IP (checked at accept, before any TLS handshake; the excess is closed at
    once), the time a connection may stay idle or take to deliver a message, the TLS
    handshake time. `counters` (TransportCounters) tells what those limits refused or
    closed. The keyword arguments idle_timeout, connect_timeout and max_connections
    override the matching fields of `limits`.

    Outbound TLS checks the server's certificate against the address connected to, unless
    `set_tls_server_name()` gave a name for that address (a trunk's host name): that name
    is then sent as SNI and checked instead.
    """

    def __init__(
        self,
        interfaces: Iterable[Interface],
        on_message: OnMessage,
        *,
        on_transport_error: OnTransportError | None = None,
        framing_reply: FramingReply | None = None,
        max_message_size: int = 65535,
        limits: TransportLimits | None = None,
        idle_timeout: float | None = None,
        connect_timeout: float | None = None,
        max_connections: int | None = None,
    ) -> None:
        self.on_message = on_message
        self._on_transport_error = on_transport_error
        self._framing_reply = framing_reply
        self._interfaces = {interface.name: interface for interface in interfaces}
        self.max_message_size = max_message_size
        overrides: dict[str, Any] = {
            name: value
            for name, value in (
                ("idle_timeout", idle_timeout),
                ("connect_timeout", connect_timeout),
                ("max_connections", max_connections),
            )
            if value is not None
        }
        limits = limits if limits is not None else TransportLimits()
        self.limits = dataclasses.replace(limits, **overrides) if overrides else limits
        self.counters = TransportCounters()
        self.listeners: dict[str, Listener] = {}
        self._udp: dict[str, asyncio.DatagramTransport] = {}
        self._udp_protocols: list[_UdpProtocol] = []
        self._stream_sockets: dict[str, socket.socket] = {}
        self._acceptors: dict[str, asyncio.Task[None]] = {}
        # Per interface name, built from its tls settings; read at each accept / connect, so
        # a reload's new contexts (renewed certificates) apply to new connections only.
        self._server_tls: dict[str, ssl.SSLContext] = {}
        self._client_tls: dict[str, ssl.SSLContext] = {}
        self._tls_server_names: dict[tuple[str, int], str] = {}
        self._connections: dict[tuple[str, str, int], StreamConnection] = {}
        # Connections counted against the limits: inbound ones from accept (TLS handshake
        # included) and outbound ones from the connect attempt, until they close.
        self._inbound = 0
        self._outbound = 0
        self._per_ip: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._warned: dict[str, float] = {}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind every configured listener, or none: raises ListenerError naming the first
        listener that failed after closing those already bound."""
        self._loop = asyncio.get_running_loop()
        self._closing = False
        try:
            try:
                self._install_tls(self._interfaces.values())
            except InterfaceTlsError as exc:
                raise ListenerError(exc.first_listener(), exc.reason) from None
            for interface in self._interfaces.values():
                for address in interface.listen:
                    listener = Listener(
                        interface.name, address.transport, address.host, address.port
                    )
                    await self._bind(listener, interface)
                    self.listeners[listener.name] = listener
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close every connection and listener; pending connects are cancelled."""
        self._closing = True
        acceptors = list(self._acceptors.values())
        self._acceptors.clear()
        for task in acceptors:
            task.cancel()
        if acceptors:
            # Cancelled first, so no accept is pending on a socket about to be closed.
            await asyncio.wait(acceptors, timeout=2.0)
        for sock in self._stream_sockets.values():
            sock.close()
        self._stream_sockets.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for connection in list(self._connections.values()):
            connection.counted = False
            if connection.timer is not None:
                connection.timer.cancel()
                connection.timer = None
            connection.close()
        self._connections.clear()
        self._inbound = self._outbound = 0
        self._per_ip.clear()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        for udp in self._udp.values():
            udp.close()
        self._udp.clear()
        # The socket is only released when connection_lost runs (on a later loop turn):
        # wait for it so a restart can bind the same ports at once.
        closing = [protocol.closed for protocol in self._udp_protocols]
        self._udp_protocols.clear()
        if closing:
            await asyncio.wait(closing, timeout=2.0)
        self.listeners.clear()

    async def update(self, interfaces: Iterable[Interface]) -> tuple[list[str], list[str]]:
        """Bring the bound listeners in line with `interfaces` (a configuration reload):
        read every interface's TLS files again (TlsSetupError, with nothing changed, when
        one cannot be loaded; renewed certificates are served to new connections, open ones
        keep theirs), bind the new listeners (ListenerError, with nothing changed, when one
        cannot be bound), then close the ones no longer configured with their connections.
        Returns (added, removed) listener names."""
        interfaces = list(interfaces)
        server_tls, client_tls = self._server_tls, self._client_tls
        self._install_tls(interfaces)  # TlsSetupError: nothing changed yet
        wanted: dict[str, tuple[Listener, Interface]] = {}
        for interface in interfaces:
            for address in interface.listen:
                listener = Listener(interface.name, address.transport, address.host, address.port)
                wanted[listener.name] = (listener, interface)
        added: list[str] = []
        try:
            for name, (listener, interface) in wanted.items():
                if name not in self.listeners:
                    await self._bind(listener, interface)
                    self.listeners[name] = listener
                    added.append(name)
        except BaseException:
            for name in added:
                await self._unbind(name)
            self._server_tls, self._client_tls = server_tls, client_tls
            raise
        removed = [name for name in self.listeners if name not in wanted]
        for name in removed:
            await self._unbind(name)
        self._interfaces = {interface.name: interface for interface in interfaces}
        return added, removed

    def _install_tls(self, interfaces: Iterable[Interface]) -> None:
        """Build the server and client TLS contexts of every interface with tls settings
        (the files are read now), then put them in place all at once."""
        server: dict[str, ssl.SSLContext] = {}
        client: dict[str, ssl.SSLContext] = {}
        for interface in interfaces:
            if interface.tls is None:
                continue
            try:
                server[interface.name] = server_context(interface.tls)
                client[interface.name] = client_context(interface.tls)
            except TlsSetupError as exc:
                raise InterfaceTlsError(interface, str(exc)) from None
        self._server_tls, self._client_tls = server, client

    async def _unbind(self, name: str) -> None:
        self.listeners.pop(name, None)
        udp = self._udp.pop(name, None)
        if udp is not None:
            protocol = next((p for p in self._udp_protocols if p.name == name), None)
            udp.close()
            if protocol is not None:
                self._udp_protocols.remove(protocol)
                await asyncio.wait([protocol.closed], timeout=2.0)
            return
        task = self._acceptors.pop(name, None)
        if task is not None:
            task.cancel()
            await asyncio.wait([task], timeout=2.0)
        sock = self._stream_sockets.pop(name, None)
        if sock is not None:
            sock.close()
        for key, connection in list(self._connections.items()):
            if key[0] == name:
                connection.close("listener removed by a configuration reload")

    async def _bind(self, listener: Listener, interface: Interface) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if listener.ipv6 else socket.AF_INET
        try:
            if listener.transport == "udp":
                sock = socket.socket(family, socket.SOCK_DGRAM)
                try:
                    _grow_buffers(sock)
                    if family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    sock.bind((listener.host, listener.port))
                except OSError:
                    sock.close()
                    raise
                protocol = _UdpProtocol(self, listener.name)
                udp, _ = await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
                self._udp[listener.name] = udp
                self._udp_protocols.append(protocol)
                return
            if listener.transport == "tls" and interface.name not in self._server_tls:
                raise ListenerError(listener, "TLS listener without tls settings")
            # Our own accept loop rather than loop.create_server: the limits need the
            # peer's address before a TLS handshake is spent on it.
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((listener.host, listener.port))
                sock.listen(_BACKLOG)
                sock.setblocking(False)
            except OSError:
                sock.close()
                raise
            self._stream_sockets[listener.name] = sock
            self._acceptors[listener.name] = loop.create_task(self._accept_loop(listener, sock))
        except OSError as exc:
            raise ListenerError(listener, f"cannot bind: {exc.strerror or exc}") from exc

    # ------------------------------------------------------------------ sending

    def send(self, peer: Peer, data: bytes, context: object = None) -> None:
        """Send bytes to `peer`. A failure, now or later (a connection that cannot be
        opened), is reported as on_transport_error(peer, reason, context)."""
        if peer.transport == "udp":
            udp = self._udp.get(peer.listener)
            if udp is None:
                listener = self._listener_for(peer)
                udp = self._udp.get(listener.name) if listener is not None else None
                if udp is None:
                    self._report(peer, "no UDP listener to send from", context)
                    return
            try:
                udp.sendto(data, (peer.host, peer.port))
            except OSError as exc:
                self._report(peer, f"sendto failed: {exc}", context)
            return
        listener = self._listener_for(peer)
        if listener is None:
            self._report(peer, f"no {peer.transport.upper()} listener to send from", context)
            return
        connection = self._connections.get((listener.name, peer.host, peer.port))
        if connection is None or connection.closed:
            connection = self._open(peer, listener, context)
            if connection is None:
                return
        if connection.write(data, context):
            connection.last_activity = self._now()
        else:
            self._report(peer, "connection closed", context)

    def send_message(self, peer: Peer, message: Message) -> None:
        """Serialize and send a message, applying the transport choice of RFC 3261 §18.1.1.

        A request bigger than 1300 bytes bound for UDP leaves over TCP when the listener's
        interface has a TCP listener of the same address family; its top Via is rewritten to
        TCP first (the message object is changed, so retransmissions carry the same Via).
        Responses always use the transport they were asked for (§18.2.2).
        """
        data = bytes(message)
        if (
            len(data) > UDP_REQUEST_LIMIT
            and peer.transport == "udp"
            and isinstance(message, Request)
        ):
            tcp = self._twin(peer, "tcp")
            if tcp is not None and _set_top_via_transport(message, "TCP", tcp.port):
                peer = Peer("tcp", peer.host, peer.port, tcp.name)
                data = bytes(message)
        self.send(peer, data, message)

    def _listener_for(self, peer: Peer) -> Listener | None:
        listener = self.listeners.get(peer.listener)
        if listener is not None and listener.transport == peer.transport:
            return listener
        return self._twin(peer, peer.transport)

    def _twin(self, peer: Peer, transport: str) -> Listener | None:
        """A listener for `transport` on the peer's interface (any interface when the peer's
        listener is unknown) whose address family can reach the peer."""
        current = self.listeners.get(peer.listener)
        ipv6 = ":" in peer.host
        fallback = None
        for listener in self.listeners.values():
            if listener.transport != transport or listener.ipv6 != ipv6:
                continue
            if current is None or listener.interface == current.interface:
                if current is None or listener.host == current.host:
                    return listener
                fallback = fallback or listener
        return fallback

    # ------------------------------------------------------------------ TLS server names

    def set_tls_server_name(self, host: str, port: int, server_name: str | None) -> None:
        """Name the TLS server at `host`:`port` (an IP address a trunk's host name resolved
        to): connections we open to it send `server_name` as SNI and check the server's
        certificate against it rather than against the address (RFC 5922 §4: the SIP
        domain is what the certificate vouches for). None forgets the name. Connections
        already open are not affected."""
        if server_name is None:
            self._tls_server_names.pop((host, port), None)
        else:
            self._tls_server_names[(host, port)] = server_name

    def tls_server_name(self, host: str, port: int) -> str | None:
        """The server name set for `host`:`port`, or None (the address itself is checked)."""
        return self._tls_server_names.get((host, port))

    # ------------------------------------------------------------------ accepting

    async def _accept_loop(self, listener: Listener, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        tls = listener.transport == "tls"
        while True:
            try:
                conn, address = await loop.sock_accept(sock)
            except OSError as exc:
                self.counters.accept_errors += 1
                if exc.errno in _ACCEPT_FATAL_ERRORS:
                    log.error("listener.failed", listener=listener.name, error=str(exc))
                    return
                if exc.errno in _ACCEPT_RESOURCE_ERRORS:
                    self._log_sampled(
                        "connection.accept_failed",
                        self.counters.accept_errors,
                        listener=listener.name,
                        error=str(exc),
                    )
                    await asyncio.sleep(_ACCEPT_RETRY_DELAY)
                continue
            try:
                context = self._server_tls[listener.interface] if tls else None
                self._admit(listener, conn, address, context)
            except Exception:
                # Nothing a peer sends may stop the listener.
                log.exception("connection.admit_failed", listener=listener.name)
                conn.close()

    def _admit(
        self,
        listener: Listener,
        conn: socket.socket,
        address: tuple[Any, ...],
        context: ssl.SSLContext | None,
    ) -> None:
        """Take an accepted socket on, or close it at once when a limit says no."""
        host = address[0]
        limits = self.limits
        counters = self.counters
        refused = None
        if self._inbound + self._outbound >= limits.max_connections:
            counters.refused_connection_limit += 1
            refused = ("connection limit", counters.refused_connection_limit)
        elif self._per_ip.get(host, 0) >= limits.max_connections_per_ip:
            counters.refused_per_ip_limit += 1
            refused = ("per-IP connection limit", counters.refused_per_ip_limit)
        if refused is not None:
            conn.close()
            reason, count = refused
            self._log_sampled(
                "connection.refused",
                count,
                peer=f"{listener.transport}:{host}:{address[1]}",
                listener=listener.name,
                reason=reason,
            )
            return
        conn.setblocking(False)
        peer = Peer(listener.transport, host, address[1], listener.name)
        connection = StreamConnection(
            self,
            listener.transport,
            listener.name,
            self.max_message_size,
            self._now(),
            peer,
            outbound=False,
            max_write_buffer=limits.max_write_buffer,
        )
        self._count(connection)
        self._spawn(self._serve(connection, conn, context))

    async def _serve(
        self, connection: StreamConnection, conn: socket.socket, context: ssl.SSLContext | None
    ) -> None:
        """Attach an admitted socket to its StreamConnection (after the TLS handshake)."""
        loop = asyncio.get_running_loop()
        try:
            if context is None:
                await loop.connect_accepted_socket(lambda: connection, conn)
            else:
                await loop.connect_accepted_socket(
                    lambda: connection,
                    conn,
                    ssl=context,
                    ssl_handshake_timeout=self.limits.handshake_timeout,
                )
        except Exception as exc:
            if connection.opened:
                return  # its end is reported through on_stream_closed
            self._release(connection)
            if context is not None:
                self.counters.tls_handshake_failures += 1
                self._log_sampled(
                    "tls.handshake_failed",
                    self.counters.tls_handshake_failures,
                    peer=str(connection.peer),
                    listener=connection.listener_name,
                    reason=_describe(exc),
                )
            else:
                log.debug("connection.setup_failed", peer=str(connection.peer), error=str(exc))

    # ------------------------------------------------------------------ connections

    def _open(self, peer: Peer, listener: Listener, context: object) -> StreamConnection | None:
        limit = self.limits.max_connections
        if self._inbound + self._outbound >= limit:
            self.counters.refused_outbound_limit += 1
            self._report(peer, f"connection limit of {limit} reached", context)
            return None
        target = Peer(listener.transport, peer.host, peer.port, listener.name)
        connection = StreamConnection(
            self,
            listener.transport,
            listener.name,
            self.max_message_size,
            self._now(),
            target,
            max_write_buffer=self.limits.max_write_buffer,
        )
        self._connections[(listener.name, peer.host, peer.port)] = connection
        self._count(connection)
        self._spawn(self._connect(connection, listener))
        return connection

    async def _connect(self, connection: StreamConnection, listener: Listener) -> None:
        target = connection.peer
        if target is None:
            return
        context = None
        server_name = None
        if listener.transport == "tls":
            context = self._client_tls.get(listener.interface)
            if context is None:
                connection.connect_failed("no TLS settings on the interface")
                return
            server_name = self._tls_server_names.get((target.host, target.port))
        loop = asyncio.get_running_loop()
        timeout = self.limits.connect_timeout
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: connection,
                    target.host,
                    target.port,
                    ssl=context,
                    server_hostname=server_name if context is not None else None,
                    local_addr=(listener.host, 0),
                ),
                timeout,
            )
        except TimeoutError:
            connection.connect_failed(f"connect timed out after {timeout:g} s")
        except ssl.SSLCertVerificationError as exc:
            name = server_name or target.host
            connection.connect_failed(
                f"connect failed: TLS certificate of {target} rejected for server name "
                f"{name!r}: {exc}"
            )
        except (OSError, ssl.SSLError) as exc:
            connection.connect_failed(f"connect failed: {exc}")

    def on_stream_open(self, connection: StreamConnection) -> bool:
        peer = connection.peer
        if peer is None or self._closing:
            return False
        key = (connection.listener_name, peer.host, peer.port)
        if connection.outbound:
            if self._connections.get(key) is not connection:
                return False
        else:
            self._connections[key] = connection
            log.debug("connection.accepted", peer=str(peer), listener=connection.listener_name)
        # Timeouts start now (connect_timeout covered the connect; the message timeout of
        # an accepted connection still counts from its accept, handshake included).
        connection.last_activity = self._now()
        self._arm(connection)
        return True

    def on_stream_closed(
        self, connection: StreamConnection, reason: str | None, undelivered: list[object]
    ) -> None:
        if connection.timer is not None:
            connection.timer.cancel()
            connection.timer = None
        self._release(connection)
        peer = connection.peer
        if peer is None:
            return
        key = (connection.listener_name, peer.host, peer.port)
        if self._connections.get(key) is connection:
            del self._connections[key]
        if undelivered:
            for context in undelivered:
                self._report(peer, reason or "connection closed", context)
        elif reason is not None:
            # Nothing of ours was lost: what a peer's garbage or silence causes, so sampled
            # (one connection after another must not flood the log).
            self.counters.closed_on_error += 1
            self._log_sampled(
                "connection.closed_on_error",
                self.counters.closed_on_error,
                peer=str(peer),
                reason=reason,
            )
            self._notify(peer, reason, None)
        else:
            log.debug("connection.closed", peer=str(peer))

    def on_stream_message(self, data: bytes, source: Peer) -> None:
        try:
            self.on_message(data, source)
        except Exception:
            log.exception("message.handler_failed", listener=source.listener)

    def on_stream_framing_error(self, error: FramingError, source: Peer) -> bytes | None:
        self.counters.framing_errors += 1
        self._log_sampled(
            "stream.framing_error",
            self.counters.framing_errors,
            peer=str(source),
            reason=error.reason,
        )
        if self._framing_reply is None:
            return None
        try:
            return self._framing_reply(error, source)
        except Exception:
            log.exception("framing_reply.failed", peer=str(source))
            return None

    @property
    def connection_count(self) -> int:
        """Open connections (accepted ones after their TLS handshake) and pending connects."""
        return len(self._connections)

    def connections_from(self, host: str) -> int:
        """Inbound connections from `host` counted against max_connections_per_ip."""
        return self._per_ip.get(host, 0)

    # ------------------------------------------------------------------ accounting, timeouts

    def _count(self, connection: StreamConnection) -> None:
        connection.counted = True
        if connection.outbound:
            self._outbound += 1
            return
        self._inbound += 1
        if connection.peer is not None:
            host = connection.peer.host
            self._per_ip[host] = self._per_ip.get(host, 0) + 1

    def _release(self, connection: StreamConnection) -> None:
        if not connection.counted:
            return
        connection.counted = False
        if connection.outbound:
            self._outbound -= 1
            return
        self._inbound -= 1
        if connection.peer is not None:
            host = connection.peer.host
            left = self._per_ip.get(host, 0) - 1
            if left > 0:
                self._per_ip[host] = left
            else:
                self._per_ip.pop(host, None)

    def _arm(self, connection: StreamConnection) -> None:
        """One timer per connection, re-armed lazily: traffic only moves the times the
        connection records, and the timer, when it fires, works out the next deadline."""
        limits = self.limits
        due = connection.last_activity + limits.idle_timeout
        if connection.pending_since >= 0:
            due = min(due, connection.pending_since + limits.message_timeout)
        loop = self._loop or asyncio.get_running_loop()
        connection.timer = loop.call_at(due, self._on_connection_timer, connection)

    def _on_connection_timer(self, connection: StreamConnection) -> None:
        connection.timer = None
        if connection.closed:
            return
        now = self._now() + _TIMER_SLACK
        limits = self.limits
        if (
            connection.pending_since >= 0
            and now >= connection.pending_since + limits.message_timeout
        ):
            self.counters.message_timeouts += 1
            self._log_sampled(
                "connection.message_timeout",
                self.counters.message_timeouts,
                peer=str(connection.peer),
                first=connection.messages == 0,
                buffered=connection.buffered,
                timeout=limits.message_timeout,
            )
            connection.close()
            return
        if now >= connection.last_activity + limits.idle_timeout:
            self.counters.idle_closed += 1
            log.debug("connection.idle_close", peer=str(connection.peer))
            connection.close()
            return
        self._arm(connection)

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _log_sampled(self, event: str, count: int, **fields: Any) -> None:
        """A warning (with the count so far) at most every _WARN_INTERVAL seconds per
        event, debug otherwise: what a flood of peers causes must not flood the log."""
        now = self._now()
        last = self._warned.get(event)
        if last is None or now - last >= _WARN_INTERVAL:
            self._warned[event] = now
            log.warning(event, count=count, **fields)
        else:
            log.debug(event, count=count, **fields)

    def _now(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    def _report(self, peer: Peer, reason: str, context: object) -> None:
        log.warning("transport.error", peer=str(peer), reason=reason)
        self._notify(peer, reason, context)

    def _notify(self, peer: Peer, reason: str, context: object) -> None:
        if self._on_transport_error is not None:
            try:
                self._on_transport_error(peer, reason, context)
            except Exception:
                log.exception("transport_error.handler_failed", peer=str(peer))


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _grow_buffers(sock: socket.socket) -> None:
    """Larger socket buffers absorb bursts of datagrams while the loop is busy."""
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, _UDP_BUFFER)
        except OSError:
            pass


def _set_top_via_transport(message: Request, transport: str, port: int) -> bool:
    """Move the top Via to `transport` and our listener's `port` for it (RFC 3261 §18.1.1:
    the sent-by must name where responses on that transport reach us); False when there is
    no Via."""
    try:
        via = message.via
    except ParseError:
        return False
    if via.transport.upper() != transport or via.port != port:
        message.replace_top_via(dataclasses.replace(via, transport=transport, port=port))
    return True
