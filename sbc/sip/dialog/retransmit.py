"""UAS core retransmission of responses the transaction layer does not retransmit: a 2xx to
INVITE until its ACK (RFC 3261 §13.3.1.4) and a reliable 1xx until its PRACK (RFC 3262 §3).
Sans-I/O: the owner sends what on_timer() returns and re-arms at next_deadline()."""

from __future__ import annotations

from dataclasses import dataclass

from sbc.sip.message import Request, Response


@dataclass(frozen=True, slots=True)
class GiveUp:
    """64*T1 passed without the acknowledgement. For a 2xx the dialog stays confirmed but the
    session should end with a BYE (§13.3.1.4); for a reliable 1xx the INVITE should be
    rejected with a 5xx (RFC 3262 §3)."""

    response: Response


class ResponseRetransmitter:
    """Resend `response` at T1, then at intervals doubling up to `cap` (None: no cap), and give
    up 64*T1 after the first send. The first send, at `now`, is the caller's."""

    __slots__ = ("response", "_interval", "_cap", "_due", "_give_up_at", "_done")

    def __init__(self, response: Response, now: float, t1: float, cap: float | None) -> None:
        if not t1 > 0:
            raise ValueError(f"SIP timer T1 must be positive, got {t1}")
        if cap is not None and cap < t1:
            raise ValueError(f"SIP timer T2 ({cap}) must not be below T1 ({t1})")
        self.response = response
        self._interval = t1
        self._cap = cap
        self._due = now + t1
        self._give_up_at = now + 64 * t1
        self._done = False

    @property
    def done(self) -> bool:
        """Acknowledged or given up: nothing more will be sent."""
        return self._done

    def next_deadline(self) -> float | None:
        if self._done:
            return None
        return min(self._due, self._give_up_at)

    def on_timer(self, now: float) -> Response | GiveUp | None:
        """The response to resend, GiveUp once 64*T1 has passed, or None (early or stale)."""
        if self._done:
            return None
        if now >= self._give_up_at:
            self._done = True
            return GiveUp(self.response)
        if now < self._due:
            return None
        interval = 2 * self._interval
        if self._cap is not None and interval > self._cap:
            interval = self._cap
        self._interval = interval
        # Count from the planned time, not from a late firing, so that lateness does not add up;
        # after a long stall, restart from now rather than burst the missed resends.
        due = self._due + interval
        self._due = due if due > now else now + interval
        return self.response

    def stop(self) -> None:
        self._done = True


class TwoXXRetransmitter(ResponseRetransmitter):
    """A 2xx to INVITE: T1, 2*T1, 4*T1 ... capped at T2, on every transport (§13.3.1.4)."""

    __slots__ = ()

    def __init__(self, response: Response, now: float, t1: float = 0.5, t2: float = 4.0) -> None:
        if not 200 <= response.status < 300:
            raise ValueError(f"only a 2xx is retransmitted until ACK, not {response.status}")
        super().__init__(response, now, t1, t2)

    def acknowledges(self, ack: Request) -> bool:
        """Whether a received ACK (already matched to this dialog) is the one for our 2xx:
        same CSeq number (§13.2.2.4, §13.3.1.4)."""
        return ack.method == "ACK" and ack.cseq.number == self.response.cseq.number

    def ack_received(self) -> None:
        self.stop()


class ReliableProvisionalRetransmitter(ResponseRetransmitter):
    """A reliable 1xx: T1, then doubling each time, until its PRACK (RFC 3262 §3)."""

    __slots__ = ()

    def __init__(self, response: Response, now: float, t1: float = 0.5) -> None:
        if not 100 < response.status < 200:
            raise ValueError(f"only a 101-199 response is sent reliably, not {response.status}")
        super().__init__(response, now, t1, None)

    def prack_received(self) -> None:
        self.stop()
