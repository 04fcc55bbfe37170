"""Resource limits of the SIP transport layer (so no single peer can exhaust memory, file
descriptors or CPU) and the counters of what those limits refused or closed."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TransportLimits:
    """Limits on connections and messages; the defaults suit a public-facing SBC.

    Connections (TCP and TLS):
      max_connections          all connections at once, inbound (TLS handshakes included)
                               and outbound; an inbound one over it is accepted and closed
                               at once, an outbound one is not opened (a transport error).
      max_connections_per_ip   inbound connections from one source IP address at once.
      idle_timeout             s without a byte either way before a connection is closed.
      message_timeout          s an accepted connection has to deliver its first complete
                               message, and any later message to complete once its first
                               byte arrived (slowloris: bytes dribbled to stay non-idle).
      handshake_timeout        s an inbound TLS handshake may take.
      connect_timeout          s an outbound connect (TLS handshake included) may take.
      max_write_buffer         bytes queued for a peer that does not read before its
                               connection is dropped.
    Messages:
      max_headers              header fields per message: more gets 400 'Too many headers'
                               (requests; other messages are dropped). Enforced where
                               messages are parsed: pass it to sbc.sip.message.parse().
    The size of one message is capped by the layer's max_message_size (sip settings).
    """

    max_connections: int = 4096
    max_connections_per_ip: int = 64
    idle_timeout: float = 300.0
    message_timeout: float = 10.0
    handshake_timeout: float = 10.0
    connect_timeout: float = 10.0
    max_write_buffer: int = 1 << 20
    max_headers: int = 100

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"TransportLimits.{field.name} must be a positive number")


@dataclass(slots=True)
class TransportCounters:
    """What the limits did since start: monotonically growing, for metrics."""

    refused_connection_limit: int = 0  # inbound over max_connections, closed at accept
    refused_per_ip_limit: int = 0  # inbound over max_connections_per_ip, closed at accept
    refused_outbound_limit: int = 0  # outbound not opened: max_connections reached
    accept_errors: int = 0  # accept() failed (e.g. out of file descriptors)
    tls_handshake_failures: int = 0  # inbound TLS handshakes that failed or timed out
    idle_closed: int = 0  # closed after idle_timeout without traffic
    message_timeouts: int = 0  # closed: no complete message within message_timeout
    framing_errors: int = 0  # closed: unframeable stream or message over the size cap
    closed_on_error: int = 0  # closed by an error (framing, reset, timeout) with nothing lost

    def as_dict(self) -> dict[str, int]:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
