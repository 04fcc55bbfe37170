"""One TCP or TLS connection carrying SIP: frames the byte stream with StreamFramer, answers
keep-alive pings, and tells its owner about messages, failures and its end."""

from __future__ import annotations

import asyncio
from typing import Protocol, cast

from sbc.sip.framing import FramedMessage, FramingError, KeepAlivePong, StreamFramer
from sbc.sip.peer import Peer

# A peer that stops reading must not make us buffer without bound: past this many unsent
# bytes the connection is dropped (and the failed send reported). The layer passes its
# TransportLimits.max_write_buffer.
MAX_WRITE_BUFFER = 1 << 20


class StreamOwner(Protocol):
    """What a connection reports to (the TransportLayer)."""

    def on_stream_message(self, data: bytes, source: Peer) -> None: ...

    def on_stream_framing_error(self, error: FramingError, source: Peer) -> bytes | None: ...

    def on_stream_open(self, connection: StreamConnection) -> bool: ...

    def on_stream_closed(
        self, connection: StreamConnection, reason: str | None, undelivered: list[object]
    ) -> None: ...


class StreamConnection(asyncio.Protocol):
    """A SIP connection, accepted by a listener or opened by us.

    Until the connection is up (outbound), writes are queued. `peer` is the remote address
    as a Peer on the owning listener; it is known from the start for outbound connections
    (and accepted ones whose owner passes it) and from `connection_made` otherwise.

    The owner reads the times below to enforce its timeouts: `last_activity` (last byte
    either way) and `pending_since`, when the message being received began (for an
    accepted connection that has delivered nothing yet: when it was accepted), -1 when no
    message is pending.
    """

    def __init__(
        self,
        owner: StreamOwner,
        transport_name: str,
        listener_name: str,
        max_message_size: int,
        now: float,
        peer: Peer | None = None,
        *,
        outbound: bool | None = None,
        max_write_buffer: int = MAX_WRITE_BUFFER,
    ) -> None:
        self.owner = owner
        self.transport_name = transport_name
        self.listener_name = listener_name
        self.peer = peer
        self.outbound = peer is not None if outbound is None else outbound
        self.opened_at = now
        self.last_activity = now
        self.pending_since = -1.0 if self.outbound else now
        self.messages = 0  # complete messages received
        self.opened = False  # connection_made ran (for TLS: the handshake is done)
        self.closed = False
        # Owner bookkeeping: its timer for this connection, and whether the connection is
        # counted against its connection limits.
        self.timer: asyncio.TimerHandle | None = None
        self.counted = False
        self._max_write_buffer = max_write_buffer
        self._framer = StreamFramer(max_message_size)
        self._transport: asyncio.Transport | None = None
        self._pending: list[bytes] = []
        # The senders' contexts of queued writes, handed back if they are never delivered.
        self._pending_contexts: list[object] = []
        self._close_reason: str | None = None

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # create_server/create_connection always hand a stream transport to a Protocol.
        self._transport = transport = cast(asyncio.Transport, transport)
        self.opened = True
        if self.peer is None:
            address = transport.get_extra_info("peername")
            self.peer = Peer(self.transport_name, address[0], address[1], self.listener_name)
        if not self.owner.on_stream_open(self):
            self.closed = True
            transport.abort()
            return
        if self._pending:
            transport.write(b"".join(self._pending))
            self._pending.clear()
            self._pending_contexts.clear()

    def data_received(self, data: bytes) -> None:
        if self.closed or self.peer is None:
            return
        self.last_activity = now = asyncio.get_running_loop().time()
        delivered = False
        for event in self._framer.feed(data):
            if isinstance(event, FramedMessage):
                delivered = True
                self.messages += 1
                self.owner.on_stream_message(event.data, self.peer)
            elif isinstance(event, KeepAlivePong):
                self.write(event.data)
            else:
                self._fail(event, self.peer)
                return
        # Until its first message an accepted connection stays pending since its accept:
        # keep-alives or dribbled bytes do not buy it time.
        if self.messages or self.outbound:
            if not self._framer.buffered:
                self.pending_since = -1.0
            elif delivered or self.pending_since < 0:
                self.pending_since = now

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._transport = None
        reason = self._close_reason
        if exc is not None and reason is None:
            reason = str(exc) or type(exc).__name__
        self.owner.on_stream_closed(self, reason, [])

    # ------------------------------------------------------------------ used by the owner

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete message received so far."""
        return self._framer.buffered

    def write(self, data: bytes, context: object = None) -> bool:
        """Send bytes (queued while connecting); False when the connection is gone.

        `context` comes back through on_stream_closed if the queued bytes never leave.
        """
        if self.closed:
            return False
        if self._transport is None:
            self._pending.append(data)
            if context is not None:
                self._pending_contexts.append(context)
            return True
        if self._transport.is_closing():
            return False
        if self._transport.get_write_buffer_size() > self._max_write_buffer:
            self._close_reason = "peer is not reading: write buffer full"
            self._transport.abort()
            return False
        self._transport.write(data)
        return True

    def close(self, reason: str | None = None) -> None:
        if self._close_reason is None:
            self._close_reason = reason
        if self._transport is not None:
            self._transport.close()
        self.closed = True

    def connect_failed(self, reason: str) -> None:
        """Opening the connection failed (called by the owner's connect task)."""
        self.closed = True
        undelivered = self._pending_contexts
        self._pending = []
        self._pending_contexts = []
        self.owner.on_stream_closed(self, reason, undelivered)

    def _fail(self, error: FramingError, peer: Peer) -> None:
        reply = self.owner.on_stream_framing_error(error, peer)
        if reply and self._transport is not None:
            self._transport.write(reply)
        # close() flushes the reply before the socket goes.
        self.close(f"framing error: {error.reason}")
