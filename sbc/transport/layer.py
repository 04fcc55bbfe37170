"""The SIP transport layer: binds the configured listeners, hands every received message to
one callback, and sends to a Peer over UDP or over a (reused or new) TCP/TLS connection."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl
from collections.abc import Callable, Iterable
from typing import Any

from sbc.config import Interface
from sbc.log import get_logger
from sbc.sip.errors import ParseError
from sbc.sip.framing import FramingError
from sbc.sip.message import Message, Request
from sbc.sip.peer import Peer
from sbc.transport.listeners import Listener, ListenerError
from sbc.transport.stream import StreamConnection
from sbc.transport.tls import TlsSetupError, client_context, server_context

OnMessage = Callable[[bytes, Peer], None]
OnTransportError = Callable[[Peer, str, object], None]
FramingReply = Callable[[FramingError, Peer], "bytes | None"]

# RFC 3261 §18.1.1: with an unknown path MTU, a request over 1300 bytes goes over TCP.
UDP_REQUEST_LIMIT = 1300
# Datagrams this short cannot be SIP: CRLF keep-alives (and NUL padding some phones send).
_KEEPALIVE_MAX = 4
_UDP_BUFFER = 4 * 1024 * 1024

log = get_logger("transport")


class _UdpProtocol(asyncio.DatagramProtocol):
    """Hands each datagram of one UDP listener to the layer's callback (the hot path)."""

    def __init__(self, layer: TransportLayer, name: str) -> None:
        self._layer = layer
        self._name = name
        self._on_message = layer.on_message
        self.closed = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if len(data) <= _KEEPALIVE_MAX:
            return
        try:
            self._on_message(data, Peer("udp", addr[0], addr[1], self._name))
        except Exception:
            # A bug handling one message must not take the listener down (uvloop closes a
            # UDP transport whose protocol callback raises).
            log.exception("message.handler_failed", listener=self._name)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends, reported on the next socket call.
        log.debug("udp.error", listener=self._name, error=str(exc))


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
    """

    def __init__(
        self,
        interfaces: Iterable[Interface],
        on_message: OnMessage,
        *,
        on_transport_error: OnTransportError | None = None,
        framing_reply: FramingReply | None = None,
        max_message_size: int = 65535,
        idle_timeout: float = 300.0,
        connect_timeout: float = 10.0,
        max_connections: int = 4096,
    ) -> None:
        self.on_message = on_message
        self._on_transport_error = on_transport_error
        self._framing_reply = framing_reply
        self._interfaces = {interface.name: interface for interface in interfaces}
        self.max_message_size = max_message_size
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.listeners: dict[str, Listener] = {}
        self._udp: dict[str, asyncio.DatagramTransport] = {}
        self._udp_protocols: list[_UdpProtocol] = []
        self._servers: dict[str, asyncio.Server] = {}
        self._client_tls: dict[str, ssl.SSLContext] = {}
        self._connections: dict[tuple[str, str, int], StreamConnection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind every configured listener, or none: raises ListenerError naming the first
        listener that failed after closing those already bound."""
        self._loop = asyncio.get_running_loop()
        try:
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
        self._schedule_sweep()

    async def close(self) -> None:
        """Close every connection and listener; pending connects are cancelled."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for task in list(self._tasks):
            task.cancel()
        for connection in list(self._connections.values()):
            connection.close()
        self._connections.clear()
        for udp in self._udp.values():
            udp.close()
        self._udp.clear()
        # The socket is only released when connection_lost runs (on a later loop turn):
        # wait for it so a restart can bind the same ports at once.
        closing = [protocol.closed for protocol in self._udp_protocols]
        self._udp_protocols.clear()
        if closing:
            await asyncio.wait(closing, timeout=2.0)
        servers = list(self._servers.values())
        self._servers.clear()
        for server in servers:
            server.close()
        for server in servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 2.0)
            except TimeoutError:
                pass
        self.listeners.clear()

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
            context = None
            if listener.transport == "tls":
                if interface.tls is None:
                    raise ListenerError(listener, "TLS listener without tls settings")
                context = server_context(interface.tls)
                self._client_tls[interface.name] = client_context(interface.tls)
            server = await loop.create_server(
                lambda: self._accepted(listener),
                host=listener.host,
                port=listener.port,
                family=family,
                ssl=context,
                reuse_address=True,
                backlog=1024,
            )
            self._servers[listener.name] = server
        except OSError as exc:
            raise ListenerError(listener, f"cannot bind: {exc.strerror or exc}") from exc
        except TlsSetupError as exc:
            raise ListenerError(listener, str(exc)) from exc

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

    # ------------------------------------------------------------------ connections

    def _accepted(self, listener: Listener) -> StreamConnection:
        return StreamConnection(
            self, listener.transport, listener.name, self.max_message_size, self._now()
        )

    def _open(self, peer: Peer, listener: Listener, context: object) -> StreamConnection | None:
        if len(self._connections) >= self.max_connections:
            self._report(peer, f"connection limit of {self.max_connections} reached", context)
            return None
        target = Peer(listener.transport, peer.host, peer.port, listener.name)
        connection = StreamConnection(
            self, listener.transport, listener.name, self.max_message_size, self._now(), target
        )
        self._connections[(listener.name, peer.host, peer.port)] = connection
        task = asyncio.get_running_loop().create_task(self._connect(connection, listener))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return connection

    async def _connect(self, connection: StreamConnection, listener: Listener) -> None:
        target = connection.peer
        if target is None:
            return
        context = None
        if listener.transport == "tls":
            context = self._client_tls.get(listener.interface)
            if context is None:
                connection.connect_failed("no TLS settings on the interface")
                return
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: connection,
                    target.host,
                    target.port,
                    ssl=context,
                    local_addr=(listener.host, 0),
                ),
                self.connect_timeout,
            )
        except TimeoutError:
            connection.connect_failed(f"connect timed out after {self.connect_timeout:g} s")
        except (OSError, ssl.SSLError) as exc:
            connection.connect_failed(f"connect failed: {exc}")

    def on_stream_open(self, connection: StreamConnection) -> bool:
        peer = connection.peer
        if peer is None:
            return False
        key = (connection.listener_name, peer.host, peer.port)
        if connection.outbound:
            return self._connections.get(key) is connection
        if len(self._connections) >= self.max_connections:
            log.warning("connection.refused", peer=str(peer), reason="connection limit")
            return False
        self._connections[key] = connection
        log.debug("connection.accepted", peer=str(peer), listener=connection.listener_name)
        return True

    def on_stream_closed(
        self, connection: StreamConnection, reason: str | None, undelivered: list[object]
    ) -> None:
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
            self._report(peer, reason, None)
        else:
            log.debug("connection.closed", peer=str(peer))

    def on_stream_message(self, data: bytes, source: Peer) -> None:
        try:
            self.on_message(data, source)
        except Exception:
            log.exception("message.handler_failed", listener=source.listener)

    def on_stream_framing_error(self, error: FramingError, source: Peer) -> bytes | None:
        log.warning("stream.framing_error", peer=str(source), reason=error.reason)
        if self._framing_reply is None:
            return None
        try:
            return self._framing_reply(error, source)
        except Exception:
            log.exception("framing_reply.failed", peer=str(source))
            return None

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def _schedule_sweep(self) -> None:
        loop = self._loop
        if loop is None:
            return
        self._sweeper = loop.call_later(max(self.idle_timeout / 4, 0.05), self._sweep)

    def _sweep(self) -> None:
        """Close connections with no traffic either way for idle_timeout seconds."""
        now = self._now()
        for connection in list(self._connections.values()):
            if now - connection.last_activity >= self.idle_timeout:
                log.debug("connection.idle_close", peer=str(connection.peer))
                connection.close()
        self._schedule_sweep()

    def _now(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    def _report(self, peer: Peer, reason: str, context: object) -> None:
        log.warning("transport.error", peer=str(peer), reason=reason)
        if self._on_transport_error is not None:
            try:
                self._on_transport_error(peer, reason, context)
            except Exception:
                log.exception("transport_error.handler_failed", peer=str(peer))


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
