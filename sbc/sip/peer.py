"""Where a SIP message came from or goes to, and the RFC 3261 §18 / RFC 3581 rules that
decide where a response is sent (sans-I/O)."""

from __future__ import annotations

from typing import NamedTuple

from sbc.sip.headers import Via
from sbc.sip.message import Request

RELIABLE_TRANSPORTS = frozenset({"tcp", "tls", "ws", "wss", "sctp"})


class Peer(NamedTuple):
    """A remote address as seen through one of our listeners.

    `transport` is lower-case ('udp', 'tcp', 'tls'); `listener` names the local listener
    the message arrived on or must leave through (empty: let the transport choose). A
    NamedTuple for the same reasons as TxnKey: C hashing, no work for the collector.
    """

    transport: str
    host: str
    port: int
    listener: str = ""

    @property
    def reliable(self) -> bool:
        return self.transport in RELIABLE_TRANSPORTS

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


def stamp_via(request: Request, source: Peer) -> None:
    """Record where a request really came from in its top Via (RFC 3261 §18.2.1: received=
    when the sent-by host differs from the source address; RFC 3581 §4: rport= filled in
    when the client asked for it, and then received= always)."""
    via = request.via
    rport = via.rport
    same_host = _bare(via.host) == source.host
    if rport is None and same_host and via.received is None:
        return
    params = dict(via.params)
    if same_host and rport is None:
        # A received= the sender wrote itself is not where the packet came from: drop it so
        # nobody can point our responses at a third party.
        del params["received"]
    else:
        params["received"] = source.host
    if rport is not None:
        params["rport"] = str(source.port)
    request.replace_top_via(Via(via.transport, via.host, via.port, params, via.protocol))


def response_peer(via: Via, source: Peer) -> Peer:
    """Where to send a response whose top Via is `via`, for a request that came from
    `source` (RFC 3261 §18.2.2, RFC 3581 §4)."""
    if source.reliable:
        # Reliable transports answer on the connection the request came in on; the
        # transport falls back to a new connection to received/sent-by if it has closed.
        return source
    if via.maddr:
        return Peer(source.transport, _bare(via.maddr), via.port or 5060, source.listener)
    host = via.received or via.host
    rport = via.rport
    if rport and rport.isdigit():
        port = int(rport)
    elif rport == "" or via.received is not None:
        port = source.port if rport == "" else (via.port or 5060)
    else:
        port = via.port or 5060
    return Peer(source.transport, _bare(host), port, source.listener)


def _bare(host: str) -> str:
    """An IPv6 reference without its brackets, as socket addresses have it."""
    return host[1:-1] if host.startswith("[") else host
