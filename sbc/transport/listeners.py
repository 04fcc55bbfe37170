"""Listener identities: every bound socket has a name `interface/transport:host:port`
(e.g. `internal/udp:127.0.0.1:5060`, `external/tls:[::1]:5061`) that Peer.listener carries."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Listener:
    """One local socket (UDP) or listening server (TCP, TLS) of an interface."""

    interface: str
    transport: str
    host: str
    port: int

    @property
    def name(self) -> str:
        return listener_name(self.interface, self.transport, self.host, self.port)

    @property
    def ipv6(self) -> bool:
        return ":" in self.host


def listener_name(interface: str, transport: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{interface}/{transport}:{shown}:{port}"


class ListenerError(Exception):
    """A listener could not be started; the message names it and says why."""

    def __init__(self, listener: Listener, reason: str) -> None:
        super().__init__(f"listener {listener.name}: {reason}")
        self.listener = listener
        self.reason = reason
