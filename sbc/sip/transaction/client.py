"""Client transactions: INVITE (RFC 3261 §17.1.1 with the RFC 6026 Accepted state) and
non-INVITE (§17.1.2), plus the ACK (§17.1.1.3) and CANCEL (§9.1) they build."""

from __future__ import annotations

from sbc.sip.message import Request, Response
from sbc.sip.peer import Peer
from sbc.sip.transaction.events import (
    Action,
    ResponseReceived,
    Send,
    TimedOut,
    TransportFailed,
    TxnKey,
)
from sbc.sip.transaction.machine import Input, Transaction, Trigger, response_trigger
from sbc.sip.transaction.timers import IdentityHashEnum, Timer, TimerSettings


def _copied_headers(request: Request) -> list[tuple[str, str]]:
    """Top Via only, Max-Forwards, and every Route line of `request`, in that order."""
    headers = [("Via", str(request.via))]
    headers.append(("Max-Forwards", request.header("Max-Forwards") or "70"))
    headers.extend(("Route", value) for value in request.header_values("Route"))
    return headers


def build_ack(request: Request, response: Response) -> Request:
    """The ACK a client transaction sends for a 300-699 answer (RFC 3261 §17.1.1.3): the
    original Request-URI, Call-ID, From, top Via and Route; To from the response; CSeq number
    of the request with method ACK."""
    headers = _copied_headers(request)
    headers.append(("From", request.header("From") or ""))
    headers.append(("To", response.header("To") or ""))
    headers.append(("Call-ID", request.call_id))
    headers.append(("CSeq", f"{request.cseq.number} ACK"))
    return Request("ACK", request.uri, headers)


def build_cancel(request: Request) -> Request:
    """A CANCEL for `request` (RFC 3261 §9.1): same Request-URI, Call-ID, From, To (tags
    included) and CSeq number, one Via equal to its top Via, its Route headers, and no
    Require or Proxy-Require."""
    headers = _copied_headers(request)
    headers.append(("From", request.header("From") or ""))
    headers.append(("To", request.header("To") or ""))
    headers.append(("Call-ID", request.call_id))
    headers.append(("CSeq", f"{request.cseq.number} CANCEL"))
    return Request("CANCEL", request.uri, headers)


class ClientInviteState(IdentityHashEnum):
    CALLING = "Calling"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    ACCEPTED = "Accepted"  # RFC 6026 §7.2
    TERMINATED = "Terminated"


_CI = ClientInviteState
_T = Trigger

# RFC 3261 Figure 5 as amended by RFC 6026 Figure 4. Self-loops on network input in the
# later states are how retransmissions and stragglers are absorbed.
CLIENT_INVITE_TABLE: dict[tuple[ClientInviteState, Input], ClientInviteState] = {
    (_CI.CALLING, Timer.A): _CI.CALLING,
    (_CI.CALLING, Timer.B): _CI.TERMINATED,
    (_CI.CALLING, _T.RECV_1XX): _CI.PROCEEDING,
    (_CI.CALLING, _T.RECV_2XX): _CI.ACCEPTED,
    (_CI.CALLING, _T.RECV_FINAL): _CI.COMPLETED,
    (_CI.CALLING, _T.TRANSPORT_ERROR): _CI.TERMINATED,
    (_CI.PROCEEDING, _T.RECV_1XX): _CI.PROCEEDING,
    (_CI.PROCEEDING, _T.RECV_2XX): _CI.ACCEPTED,
    (_CI.PROCEEDING, _T.RECV_FINAL): _CI.COMPLETED,
    (_CI.PROCEEDING, _T.TRANSPORT_ERROR): _CI.TERMINATED,
    # Timer B re-armed when a CANCEL went out: RFC 3261 §9.1, no final answer in 64*T1.
    (_CI.PROCEEDING, Timer.B): _CI.TERMINATED,
    (_CI.COMPLETED, _T.RECV_1XX): _CI.COMPLETED,
    (_CI.COMPLETED, _T.RECV_2XX): _CI.COMPLETED,
    (_CI.COMPLETED, _T.RECV_FINAL): _CI.COMPLETED,
    (_CI.COMPLETED, Timer.D): _CI.TERMINATED,
    (_CI.COMPLETED, _T.TRANSPORT_ERROR): _CI.TERMINATED,
    (_CI.ACCEPTED, _T.RECV_1XX): _CI.ACCEPTED,
    (_CI.ACCEPTED, _T.RECV_2XX): _CI.ACCEPTED,
    (_CI.ACCEPTED, _T.RECV_FINAL): _CI.ACCEPTED,
    (_CI.ACCEPTED, Timer.M): _CI.TERMINATED,
    (_CI.ACCEPTED, _T.TRANSPORT_ERROR): _CI.TERMINATED,
}


class ClientInviteTransaction(Transaction[ClientInviteState]):
    __slots__ = ("_interval", "_ack", "cancel_wanted", "cancel_sent")

    _table = CLIENT_INVITE_TABLE
    _terminated = ClientInviteState.TERMINATED

    def __init__(self, key: TxnKey, request: Request, dest: Peer, settings: TimerSettings) -> None:
        super().__init__(key, request, dest, settings, ClientInviteState.CALLING)
        self._interval = settings.t1
        self._ack: Request | None = None
        self.cancel_wanted = False  # the TU asked to cancel before any provisional came
        self.cancel_sent = False

    def start(self, now: float) -> list[Action]:
        # RFC 3261 §17.1.1.2: Timer A only on unreliable transports, Timer B always.
        if not self.reliable:
            self._start(Timer.A, now, self._interval)
        self._start(Timer.B, now, self.settings.timeout)
        return [Send(self.peer, self.request)]

    def receive(self, response: Response, now: float) -> list[Action]:
        old = self.state
        event = response_trigger(response.status, received=True)
        self.state = new = self._next(event)
        if old is _CI.CALLING or old is _CI.PROCEEDING:
            if old is _CI.CALLING or new is not _CI.PROCEEDING:
                # A 1xx in Proceeding leaves Timer B alone: it may be the §9.1 CANCEL wait.
                self._stop(Timer.A, Timer.B)
            actions: list[Action] = [ResponseReceived(self.key, response)]
            if new is _CI.ACCEPTED:
                # RFC 6026 §7.2: stay to pass further 2xx (retransmitted or forked) to the TU.
                self._start(Timer.M, now, self.settings.timeout)
                self.request.shed()  # no more retransmissions: kept lean for Timer M
            elif new is _CI.COMPLETED:
                # RFC 3261 §17.1.1.2: ACK even on reliable transports, to the same peer. It
                # goes out before the TU hears of the answer, so that whatever the TU sends
                # next (a new INVITE with credentials after a 407) follows the ACK.
                self._ack = build_ack(self.request, response)
                self.request.shed()
                self._ack.shed()
                actions.insert(0, Send(self.peer, self._ack))
                actions += self._start_or_fire(Timer.D, now, self.settings.d(self.reliable))
            return actions
        if old is _CI.COMPLETED and event is _T.RECV_FINAL and self._ack is not None:
            return [Send(self.peer, self._ack)]  # retransmitted final: re-send the ACK only
        if old is _CI.ACCEPTED and event is _T.RECV_2XX:
            return [ResponseReceived(self.key, response)]
        # Provisional answers after a final one, and a non-2xx after a 2xx, are stragglers.
        return []

    def fire(self, timer: Timer, now: float) -> list[Action]:
        self.timers.pop(timer, None)
        self.state = self._next(timer)
        if timer is Timer.A:
            # RFC 3261 §17.1.1.2: the interval doubles on every retransmission, with no T2
            # cap (that cap is for timers E and G); Timer B ends it after seven sends.
            self._interval *= 2
            self._start(Timer.A, now, self._interval)
            return [Send(self.peer, self.request)]
        self._terminate()
        if timer is Timer.B:
            return [TimedOut(self.key)]  # §17.1.1.2: inform the TU, and no ACK
        return []

    def transport_error(self, now: float) -> list[Action]:
        self._next(_T.TRANSPORT_ERROR)
        self._terminate()
        return [TransportFailed(self.key)]

    def note_cancel_sent(self, now: float) -> None:
        """A CANCEL went out for this INVITE: give up waiting 64*T1 later (RFC 3261 §9.1)."""
        self.cancel_sent = True
        self.cancel_wanted = False
        self._start(Timer.B, now, self.settings.timeout)


class ClientNonInviteState(IdentityHashEnum):
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    TERMINATED = "Terminated"


_CN = ClientNonInviteState

# RFC 3261 Figure 6.
CLIENT_NON_INVITE_TABLE: dict[tuple[ClientNonInviteState, Input], ClientNonInviteState] = {
    (_CN.TRYING, Timer.E): _CN.TRYING,
    (_CN.TRYING, Timer.F): _CN.TERMINATED,
    (_CN.TRYING, _T.RECV_1XX): _CN.PROCEEDING,
    (_CN.TRYING, _T.RECV_2XX): _CN.COMPLETED,
    (_CN.TRYING, _T.RECV_FINAL): _CN.COMPLETED,
    (_CN.TRYING, _T.TRANSPORT_ERROR): _CN.TERMINATED,
    (_CN.PROCEEDING, Timer.E): _CN.PROCEEDING,
    (_CN.PROCEEDING, Timer.F): _CN.TERMINATED,
    (_CN.PROCEEDING, _T.RECV_1XX): _CN.PROCEEDING,
    (_CN.PROCEEDING, _T.RECV_2XX): _CN.COMPLETED,
    (_CN.PROCEEDING, _T.RECV_FINAL): _CN.COMPLETED,
    (_CN.PROCEEDING, _T.TRANSPORT_ERROR): _CN.TERMINATED,
    (_CN.COMPLETED, _T.RECV_1XX): _CN.COMPLETED,
    (_CN.COMPLETED, _T.RECV_2XX): _CN.COMPLETED,
    (_CN.COMPLETED, _T.RECV_FINAL): _CN.COMPLETED,
    (_CN.COMPLETED, Timer.K): _CN.TERMINATED,
    (_CN.COMPLETED, _T.TRANSPORT_ERROR): _CN.TERMINATED,
}


class ClientNonInviteTransaction(Transaction[ClientNonInviteState]):
    __slots__ = ("_interval",)

    _table = CLIENT_NON_INVITE_TABLE
    _terminated = ClientNonInviteState.TERMINATED

    def __init__(self, key: TxnKey, request: Request, dest: Peer, settings: TimerSettings) -> None:
        super().__init__(key, request, dest, settings, ClientNonInviteState.TRYING)
        self._interval = settings.t1

    def start(self, now: float) -> list[Action]:
        # RFC 3261 §17.1.2.2: Timer F always, Timer E on unreliable transports only.
        self._start(Timer.F, now, self.settings.timeout)
        if not self.reliable:
            self._start(Timer.E, now, self._interval)
        return [Send(self.peer, self.request)]

    def receive(self, response: Response, now: float) -> list[Action]:
        old = self.state
        self.state = new = self._next(response_trigger(response.status, received=True))
        if old is _CN.COMPLETED:
            return []  # §17.1.2.2: Completed buffers response retransmissions
        actions: list[Action] = [ResponseReceived(self.key, response)]
        if new is _CN.COMPLETED:
            self._stop(Timer.E, Timer.F)
            self.request.shed()
            actions += self._start_or_fire(Timer.K, now, self.settings.k(self.reliable))
        return actions

    def fire(self, timer: Timer, now: float) -> list[Action]:
        self.timers.pop(timer, None)
        self.state = self._next(timer)
        if timer is Timer.E:
            # §17.1.2.2: doubling up to T2 while Trying; T2 flat once Proceeding.
            if self.state is _CN.TRYING:
                self._interval = self.settings.next_interval(self._interval)
            else:
                self._interval = self.settings.t2
            self._start(Timer.E, now, self._interval)
            return [Send(self.peer, self.request)]
        self._terminate()
        if timer is Timer.F:
            return [TimedOut(self.key)]
        return []

    def transport_error(self, now: float) -> list[Action]:
        self._next(_T.TRANSPORT_ERROR)
        self._terminate()
        return [TransportFailed(self.key)]


ClientTransaction = ClientInviteTransaction | ClientNonInviteTransaction
