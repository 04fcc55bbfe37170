"""RFC 3261 §17 transaction timers (RFC 3261 Appendix A, Table 4, plus L and M from RFC 6026
§7.1 and §7.2), derived from T1, T2 and T4."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class IdentityHashEnum(enum.Enum):
    """An enum hashed by identity: members are singletons and compare by identity anyway,
    while Enum's own __hash__ runs Python code on every transition-table and timer look-up."""

    __hash__ = object.__hash__


class Timer(IdentityHashEnum):
    """The transaction timers; the letter is the RFC's name for each."""

    A = "A"  # INVITE request retransmit interval, unreliable transports only
    B = "B"  # INVITE transaction timeout (also: wait for the final answer after CANCEL, §9.1)
    D = "D"  # wait time for response retransmits (INVITE client, Completed)
    E = "E"  # non-INVITE request retransmit interval, unreliable transports only
    F = "F"  # non-INVITE transaction timeout
    G = "G"  # INVITE final response retransmit interval, unreliable transports only
    H = "H"  # wait time for ACK receipt
    I = "I"  # noqa: E741  (the RFC's name) wait time for ACK retransmits
    J = "J"  # wait time for non-INVITE request retransmits
    K = "K"  # wait time for response retransmits (non-INVITE client, Completed)
    L = "L"  # RFC 6026: wait time for accepted INVITE request retransmits (server Accepted)
    M = "M"  # RFC 6026: wait time for retransmission of 2xx to INVITE or forked 2xx (client)


@dataclass(frozen=True, slots=True)
class TimerSettings:
    """T1 (RTT estimate), T2 (maximum retransmit interval) and T4 (maximum time a message
    stays in the network), in seconds; RFC 3261 §17.1.1.1 and Table 4 give the defaults."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    def __post_init__(self) -> None:
        if not self.t1 > 0:
            raise ValueError(f"SIP timer T1 must be positive, got {self.t1}")
        if not self.t2 >= self.t1:
            raise ValueError(f"SIP timer T2 ({self.t2}) must not be below T1 ({self.t1})")
        if not self.t4 >= 0:
            raise ValueError(f"SIP timer T4 must not be negative, got {self.t4}")

    @property
    def timeout(self) -> float:
        """64*T1: timers B, F, H, L, M, and J on unreliable transports."""
        return 64 * self.t1

    def next_interval(self, interval: float) -> float:
        """The retransmit interval after `interval`: doubled, capped at T2 (timers E and G,
        RFC 3261 §17.1.2.2, §17.2.1). Timer A doubles without a cap (§17.1.1.2)."""
        return min(2 * interval, self.t2)

    def d(self, reliable: bool) -> float:
        """Timer D: at least 32 s on unreliable transports, zero on reliable (§17.1.1.2)."""
        return 0.0 if reliable else max(32.0, self.timeout)

    def i(self, reliable: bool) -> float:
        """Timer I: T4 on unreliable transports, zero on reliable (§17.2.1)."""
        return 0.0 if reliable else self.t4

    def j(self, reliable: bool) -> float:
        """Timer J: 64*T1 on unreliable transports, zero on reliable (§17.2.2)."""
        return 0.0 if reliable else self.timeout

    def k(self, reliable: bool) -> float:
        """Timer K: T4 on unreliable transports, zero on reliable (§17.1.2.2)."""
        return 0.0 if reliable else self.t4
