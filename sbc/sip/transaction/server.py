"""Server transactions: INVITE (RFC 3261 §17.2.1 with the RFC 6026 Accepted state) and
non-INVITE (§17.2.2)."""

from __future__ import annotations

from sbc.sip.message import Request, Response, make_response
from sbc.sip.peer import Peer
from sbc.sip.transaction.events import (
    AckReceived,
    Action,
    Send,
    TimedOut,
    TransportFailed,
    TxnKey,
)
from sbc.sip.transaction.machine import Input, Transaction, Trigger, response_trigger
from sbc.sip.transaction.timers import IdentityHashEnum, Timer, TimerSettings

_T = Trigger


def build_trying(request: Request) -> Response:
    """100 Trying per RFC 3261 §8.2.6 with no To tag added (§17.2.1); make_response copies
    the Timestamp header (§8.2.6.1)."""
    return make_response(request, 100, "Trying")


class ServerInviteState(IdentityHashEnum):
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"  # RFC 6026 §7.1
    TERMINATED = "Terminated"


_SI = ServerInviteState

# RFC 3261 Figure 7 as amended by RFC 6026 Figure 5. TU inputs missing here (a response
# after a final one) are TU errors and raise; every network input has an entry.
SERVER_INVITE_TABLE: dict[tuple[ServerInviteState, Input], ServerInviteState] = {
    (_SI.PROCEEDING, _T.RECV_REQUEST): _SI.PROCEEDING,
    (_SI.PROCEEDING, _T.RECV_ACK): _SI.PROCEEDING,
    (_SI.PROCEEDING, _T.SEND_1XX): _SI.PROCEEDING,
    (_SI.PROCEEDING, _T.SEND_2XX): _SI.ACCEPTED,
    (_SI.PROCEEDING, _T.SEND_FINAL): _SI.COMPLETED,
    (_SI.PROCEEDING, _T.TRANSPORT_ERROR): _SI.TERMINATED,
    (_SI.COMPLETED, _T.RECV_REQUEST): _SI.COMPLETED,
    (_SI.COMPLETED, _T.RECV_ACK): _SI.CONFIRMED,
    (_SI.COMPLETED, Timer.G): _SI.COMPLETED,
    (_SI.COMPLETED, Timer.H): _SI.TERMINATED,
    (_SI.COMPLETED, _T.TRANSPORT_ERROR): _SI.TERMINATED,
    (_SI.CONFIRMED, _T.RECV_REQUEST): _SI.CONFIRMED,
    (_SI.CONFIRMED, _T.RECV_ACK): _SI.CONFIRMED,
    (_SI.CONFIRMED, Timer.I): _SI.TERMINATED,
    (_SI.CONFIRMED, _T.TRANSPORT_ERROR): _SI.TERMINATED,
    (_SI.ACCEPTED, _T.RECV_REQUEST): _SI.ACCEPTED,
    (_SI.ACCEPTED, _T.RECV_ACK): _SI.ACCEPTED,
    (_SI.ACCEPTED, _T.SEND_2XX): _SI.ACCEPTED,
    (_SI.ACCEPTED, Timer.L): _SI.TERMINATED,
    # Stay Accepted: terminating early would let the next INVITE retransmission look like a
    # new request, the very fault RFC 6026 fixes. The TU still hears of the failure.
    (_SI.ACCEPTED, _T.TRANSPORT_ERROR): _SI.ACCEPTED,
}


class ServerInviteTransaction(Transaction[ServerInviteState]):
    """`peer` is where responses go (RFC 3261 §18.2.2); `source` where the INVITE came from."""

    __slots__ = ("source", "last_response", "_interval", "match_key")

    _table = SERVER_INVITE_TABLE
    _terminated = ServerInviteState.TERMINATED

    def __init__(
        self,
        key: TxnKey,
        request: Request,
        source: Peer,
        response_dest: Peer,
        settings: TimerSettings,
    ) -> None:
        super().__init__(key, request, response_dest, settings, ServerInviteState.PROCEEDING)
        self.source = source
        self.last_response: Response | None = None
        self._interval = settings.t1
        self.match_key: tuple[object, ...] | None = None  # RFC 2543 index entry, if any

    def start(self, now: float) -> list[Action]:
        # RFC 3261 §17.2.1: 100 Trying at once, to quench INVITE retransmissions.
        self.last_response = build_trying(self.request)
        return [Send(self.peer, self.last_response)]

    def receive_request(self, request: Request, now: float) -> list[Action]:
        """A retransmission of the INVITE."""
        old = self.state
        self.state = self._next(_T.RECV_REQUEST)
        if (old is _SI.PROCEEDING or old is _SI.COMPLETED) and self.last_response is not None:
            return [Send(self.peer, self.last_response)]
        return []  # Confirmed, and Accepted (RFC 6026 §7.1: absorbed, 2xx resends are the TU's)

    def receive_ack(self, ack: Request, source: Peer, now: float) -> list[Action]:
        old = self.state
        self.state = self._next(_T.RECV_ACK)
        if old is _SI.COMPLETED:
            # §17.2.1: the ACK for our non-2xx ends retransmissions; Confirmed absorbs the rest.
            self._stop(Timer.G, Timer.H)
            return self._start_or_fire(Timer.I, now, self.settings.i(self.reliable))
        if old is _SI.CONFIRMED:
            return []
        # RFC 6026 §7.1: an ACK in Accepted is the 2xx's ACK and belongs to the TU.
        return [AckReceived(ack, source)]

    def send(self, response: Response, now: float) -> list[Action]:
        """A response from the TU."""
        old = self.state
        self.state = new = self._next(response_trigger(response.status, received=False))
        actions: list[Action] = [Send(self.peer, response)]
        if old is _SI.ACCEPTED:
            return actions  # RFC 6026 §7.1: the TU's 2xx retransmissions pass through
        self.last_response = response
        if new is _SI.ACCEPTED or new is _SI.COMPLETED:
            # From here on both are only resent or matched against: keep them lean.
            self.request.shed()
            response.shed()
        if new is _SI.ACCEPTED:
            self._start(Timer.L, now, self.settings.timeout)
        elif new is _SI.COMPLETED:
            # §17.2.1: G retransmits on unreliable transports only; H waits for the ACK.
            if not self.reliable:
                self._start(Timer.G, now, self._interval)
            self._start(Timer.H, now, self.settings.timeout)
        return actions

    def fire(self, timer: Timer, now: float) -> list[Action]:
        self.timers.pop(timer, None)
        self.state = self._next(timer)
        if timer is Timer.G and self.last_response is not None:
            self._interval = self.settings.next_interval(self._interval)
            self._start(Timer.G, now, self._interval)
            return [Send(self.peer, self.last_response)]
        self._terminate()
        if timer is Timer.H:
            return [TimedOut(self.key)]  # §17.2.1: the ACK never came; the TU must know
        return []

    def transport_error(self, now: float) -> list[Action]:
        if self._next(_T.TRANSPORT_ERROR) is _SI.TERMINATED:
            self._terminate()
        return [TransportFailed(self.key)]

    @property
    def response_to_tag(self) -> str | None:
        """The To tag of the last response sent (RFC 2543 ACK matching, §17.2.3)."""
        return self.last_response.to_tag if self.last_response is not None else None


class ServerNonInviteState(IdentityHashEnum):
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    TERMINATED = "Terminated"


_SN = ServerNonInviteState

# RFC 3261 Figure 8.
SERVER_NON_INVITE_TABLE: dict[tuple[ServerNonInviteState, Input], ServerNonInviteState] = {
    (_SN.TRYING, _T.RECV_REQUEST): _SN.TRYING,
    (_SN.TRYING, _T.SEND_1XX): _SN.PROCEEDING,
    (_SN.TRYING, _T.SEND_2XX): _SN.COMPLETED,
    (_SN.TRYING, _T.SEND_FINAL): _SN.COMPLETED,
    (_SN.TRYING, _T.TRANSPORT_ERROR): _SN.TERMINATED,
    (_SN.PROCEEDING, _T.RECV_REQUEST): _SN.PROCEEDING,
    (_SN.PROCEEDING, _T.SEND_1XX): _SN.PROCEEDING,
    (_SN.PROCEEDING, _T.SEND_2XX): _SN.COMPLETED,
    (_SN.PROCEEDING, _T.SEND_FINAL): _SN.COMPLETED,
    (_SN.PROCEEDING, _T.TRANSPORT_ERROR): _SN.TERMINATED,
    (_SN.COMPLETED, _T.RECV_REQUEST): _SN.COMPLETED,
    # §17.2.2: further final responses from the TU are discarded in Completed.
    (_SN.COMPLETED, _T.SEND_2XX): _SN.COMPLETED,
    (_SN.COMPLETED, _T.SEND_FINAL): _SN.COMPLETED,
    (_SN.COMPLETED, Timer.J): _SN.TERMINATED,
    (_SN.COMPLETED, _T.TRANSPORT_ERROR): _SN.TERMINATED,
}


class ServerNonInviteTransaction(Transaction[ServerNonInviteState]):
    __slots__ = ("source", "last_response", "match_key")

    _table = SERVER_NON_INVITE_TABLE
    _terminated = ServerNonInviteState.TERMINATED

    def __init__(
        self,
        key: TxnKey,
        request: Request,
        source: Peer,
        response_dest: Peer,
        settings: TimerSettings,
    ) -> None:
        super().__init__(key, request, response_dest, settings, ServerNonInviteState.TRYING)
        self.source = source
        self.last_response: Response | None = None
        self.match_key: tuple[object, ...] | None = None

    def start(self, now: float) -> list[Action]:
        return []  # §17.2.2: the TU answers; no automatic provisional for non-INVITE

    def receive_request(self, request: Request, now: float) -> list[Action]:
        """A retransmission: discarded while Trying, else answered with the last response."""
        self.state = self._next(_T.RECV_REQUEST)
        if self.last_response is None:
            return []
        return [Send(self.peer, self.last_response)]

    def send(self, response: Response, now: float) -> list[Action]:
        old = self.state
        self.state = new = self._next(response_trigger(response.status, received=False))
        if old is _SN.COMPLETED:
            return []
        self.last_response = response
        actions: list[Action] = [Send(self.peer, response)]
        if new is _SN.COMPLETED:
            self.request.shed()  # kept only to absorb retransmissions for Timer J
            response.shed()
            actions += self._start_or_fire(Timer.J, now, self.settings.j(self.reliable))
        return actions

    def fire(self, timer: Timer, now: float) -> list[Action]:
        self.timers.pop(timer, None)
        self.state = self._next(timer)
        self._terminate()
        return []

    def transport_error(self, now: float) -> list[Action]:
        self._next(_T.TRANSPORT_ERROR)
        self._terminate()
        return [TransportFailed(self.key)]


ServerTransaction = ServerInviteTransaction | ServerNonInviteTransaction
