"""What the four transaction state machines share: triggers, the transition-table lookup that
rejects illegal events, and per-transaction timer bookkeeping (deadlines only, no clock)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Generic, TypeVar

from sbc.sip.message import Request
from sbc.sip.peer import Peer
from sbc.sip.transaction.events import Action, TxnKey
from sbc.sip.transaction.timers import IdentityHashEnum, Timer, TimerSettings


class Trigger(IdentityHashEnum):
    """Non-timer inputs of a transaction (timers are triggers too: see Timer)."""

    RECV_1XX = "1xx received"
    RECV_2XX = "2xx received"
    RECV_FINAL = "300-699 received"
    SEND_1XX = "1xx from TU"
    SEND_2XX = "2xx from TU"
    SEND_FINAL = "300-699 from TU"
    RECV_REQUEST = "request retransmission received"
    RECV_ACK = "ACK received"
    TRANSPORT_ERROR = "transport error"


Input = Trigger | Timer


def response_trigger(status: int, *, received: bool) -> Trigger:
    if status < 200:
        return Trigger.RECV_1XX if received else Trigger.SEND_1XX
    if status < 300:
        return Trigger.RECV_2XX if received else Trigger.SEND_2XX
    return Trigger.RECV_FINAL if received else Trigger.SEND_FINAL


class TransactionError(Exception):
    """The TU asked the transaction layer for something it cannot do."""


class TransactionStateError(TransactionError):
    """An event the transaction's state table does not allow in its current state."""

    def __init__(self, machine: str, state: enum.Enum, event: Input) -> None:
        what = f"timer {event.value}" if isinstance(event, Timer) else event.value
        super().__init__(f"{machine} in state {state.name}: {what} is not allowed")
        self.state = state
        self.event = event


S = TypeVar("S", bound=enum.Enum)


class Transaction(Generic[S]):
    """Base of the four machines. `peer` is where requests go (client) or where responses go
    (server). `timers` maps each running timer to its deadline; `armed` lists timers started
    since the owner last drained it (the layer's heap learns them from there)."""

    __slots__ = ("key", "request", "peer", "reliable", "settings", "state", "timers", "armed")

    _table: Mapping[tuple[S, Input], S]
    _terminated: S

    def __init__(
        self, key: TxnKey, request: Request, peer: Peer, settings: TimerSettings, initial: S
    ) -> None:
        self.key = key
        self.request = request
        self.peer = peer
        self.reliable = peer.reliable
        self.settings = settings
        self.state: S = initial
        self.timers: dict[Timer, float] = {}
        self.armed: list[tuple[float, Timer]] = []

    @property
    def terminated(self) -> bool:
        return self.state is self._terminated

    def abort(self) -> None:
        """End here, whatever the state: no timer fires, nothing more is sent. For the
        owner that decided the peer gets no answer at all (not an RFC 3261 transition)."""
        self.state = self._terminated
        self.timers.clear()
        self.armed.clear()

    def _next(self, event: Input) -> S:
        """The state `event` leads to from the current one; raises if the table forbids it."""
        new = self._table.get((self.state, event))
        if new is None:
            raise TransactionStateError(type(self).__name__, self.state, event)
        return new

    def _start(self, timer: Timer, now: float, duration: float) -> None:
        deadline = now + duration
        self.timers[timer] = deadline
        self.armed.append((deadline, timer))

    def _stop(self, *timers: Timer) -> None:
        for timer in timers:
            self.timers.pop(timer, None)

    def _start_or_fire(self, timer: Timer, now: float, duration: float) -> list[Action]:
        """Start `timer`, or fire it at once when its value is zero (reliable transports)."""
        if duration > 0:
            self._start(timer, now, duration)
            return []
        return self.fire(timer, now)

    def _terminate(self) -> None:
        self.state = self._terminated
        self.timers.clear()

    def fire(self, timer: Timer, now: float) -> list[Action]:
        raise NotImplementedError

    def transport_error(self, now: float) -> list[Action]:
        raise NotImplementedError
