"""asyncio adapters for SIP over UDP, TCP and TLS: the only socket code for SIP signalling."""

from sbc.transport.layer import UDP_REQUEST_LIMIT, TransportLayer
from sbc.transport.limits import TransportCounters, TransportLimits
from sbc.transport.listeners import Listener, ListenerError, listener_name

__all__ = [
    "UDP_REQUEST_LIMIT",
    "Listener",
    "ListenerError",
    "TransportCounters",
    "TransportLayer",
    "TransportLimits",
    "listener_name",
]
