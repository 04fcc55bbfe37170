"""Offer/answer state of one leg (RFC 3264, used in SIP as RFC 6337 describes).

Which side has an offer outstanding, and the last descriptions both sides agreed on, so a
rejected re-offer (a non-2xx to a re-INVITE or UPDATE) rolls back to them (TRAPS.md #2).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sbc.sdp.model import SdpError, SessionDescription

__all__ = [
    "TRANSITIONS",
    "NegotiationEvent",
    "NegotiationState",
    "OfferAnswer",
    "OfferAnswerError",
]


class NegotiationState(enum.Enum):
    NO_OFFER = "no offer"
    LOCAL_OFFER_SENT = "local offer sent"
    REMOTE_OFFER_RECEIVED = "remote offer received"
    NEGOTIATED = "negotiated"


class NegotiationEvent(enum.Enum):
    LOCAL_OFFER = "local offer"
    REMOTE_PROVISIONAL_ANSWER = "remote provisional answer"
    REMOTE_ANSWER = "remote answer"
    REMOTE_OFFER = "remote offer"
    LOCAL_ANSWER = "local answer"
    ROLLBACK = "rollback"


_S = NegotiationState
_E = NegotiationEvent

# None as a target: back to the last stable state (NEGOTIATED once anything was agreed,
# else NO_OFFER) -- the offer was rejected and the previous session stays in force.
TRANSITIONS: dict[tuple[NegotiationState, NegotiationEvent], NegotiationState | None] = {
    (_S.NO_OFFER, _E.LOCAL_OFFER): _S.LOCAL_OFFER_SENT,
    (_S.NO_OFFER, _E.REMOTE_OFFER): _S.REMOTE_OFFER_RECEIVED,
    (_S.NEGOTIATED, _E.LOCAL_OFFER): _S.LOCAL_OFFER_SENT,
    (_S.NEGOTIATED, _E.REMOTE_OFFER): _S.REMOTE_OFFER_RECEIVED,
    # SDP in an unreliable 18x is a preview; the answer is the one in the 2xx (RFC 6337 §3.1).
    (_S.LOCAL_OFFER_SENT, _E.REMOTE_PROVISIONAL_ANSWER): _S.LOCAL_OFFER_SENT,
    (_S.LOCAL_OFFER_SENT, _E.REMOTE_ANSWER): _S.NEGOTIATED,
    (_S.LOCAL_OFFER_SENT, _E.ROLLBACK): None,
    (_S.REMOTE_OFFER_RECEIVED, _E.LOCAL_ANSWER): _S.NEGOTIATED,
    (_S.REMOTE_OFFER_RECEIVED, _E.ROLLBACK): None,
}

# What a request carrying an offer that arrives in the wrong state must be answered with.
_REMOTE_OFFER_STATUS = {
    # Glare: their offer crosses ours (RFC 3261 §14.2, RFC 3311 §5.2).
    _S.LOCAL_OFFER_SENT: 491,
    # A second offer before we answered the first (RFC 3261 §14.2, RFC 3311 §5.2).
    _S.REMOTE_OFFER_RECEIVED: 500,
}


class OfferAnswerError(Exception):
    """An event the offer/answer state does not allow; names the state and the event.

    `status` is the SIP response for the request that carried a remote offer (491 on glare,
    500 for an offer while theirs is unanswered); None when there is nothing to answer (a
    local event out of order is a bug of ours; a stray remote answer has no request).
    """

    def __init__(
        self, state: NegotiationState, event: NegotiationEvent, status: int | None = None
    ) -> None:
        hint = f" (answer {status})" if status is not None else ""
        super().__init__(f"offer/answer: {event.value} is not allowed in state {state.name}{hint}")
        self.state = state
        self.event = event
        self.status = status


@dataclass(slots=True)
class OfferAnswer:
    """One leg's offer/answer state: which offer is outstanding and what was agreed.

    `local_current`/`remote_current` are the descriptions in force (RFC 3264 §8: a
    rejected re-offer leaves them as they were); `local_pending`/`remote_pending` the
    unanswered offer; `remote_early` the latest SDP of an unreliable 18x. A failed event
    (OfferAnswerError or SdpError) changes nothing.
    """

    state: NegotiationState = NegotiationState.NO_OFFER
    local_current: SessionDescription | None = None
    remote_current: SessionDescription | None = None
    local_pending: SessionDescription | None = None
    remote_pending: SessionDescription | None = None
    remote_early: SessionDescription | None = None

    @property
    def offer_pending(self) -> bool:
        return self.state in (_S.LOCAL_OFFER_SENT, _S.REMOTE_OFFER_RECEIVED)

    def local_offer(self, sdp: SessionDescription) -> None:
        """We send an offer (INVITE, re-INVITE, UPDATE, or a 2xx to an offerless INVITE)."""
        self._move(_E.LOCAL_OFFER)
        _check_reoffer(self.local_current, sdp, "our offer")
        self._apply(_E.LOCAL_OFFER)
        self.local_pending = sdp

    def remote_offer(self, sdp: SessionDescription) -> None:
        """The peer sends an offer; OfferAnswerError.status says how to refuse a bad one."""
        self._move(_E.REMOTE_OFFER)
        _check_reoffer(self.remote_current, sdp, "the peer's offer")
        self._apply(_E.REMOTE_OFFER)
        self.remote_pending = sdp

    def remote_provisional_answer(self, sdp: SessionDescription) -> None:
        """SDP in an unreliable 18x: kept for early media, not yet the answer."""
        self._move(_E.REMOTE_PROVISIONAL_ANSWER)
        _check_answer(self.local_pending, sdp, "the peer's early answer")
        self.remote_early = sdp

    def remote_answer(self, sdp: SessionDescription) -> None:
        """The peer answers our offer; the pair becomes the current session.

        Feed one answer per offer: the copy of a reliable 18x's answer repeated in the 2xx
        (RFC 6337 §3.1.1) is not a new answer.
        """
        self._move(_E.REMOTE_ANSWER)
        _check_answer(self.local_pending, sdp, "the peer's answer")
        self._apply(_E.REMOTE_ANSWER)
        self.local_current, self.remote_current = self.local_pending, sdp
        self.local_pending = self.remote_early = None

    def local_answer(self, sdp: SessionDescription) -> None:
        """We answer the peer's offer; the pair becomes the current session."""
        self._move(_E.LOCAL_ANSWER)
        _check_answer(self.remote_pending, sdp, "our answer")
        self._apply(_E.LOCAL_ANSWER)
        self.local_current, self.remote_current = sdp, self.remote_pending
        self.remote_pending = None

    def rollback(self) -> None:
        """The outstanding offer was rejected (non-2xx): the previous session stays."""
        self._move(_E.ROLLBACK)
        self._apply(_E.ROLLBACK)
        self.local_pending = self.remote_pending = self.remote_early = None

    # -- the table

    def _move(self, event: NegotiationEvent) -> None:
        """Raise unless `event` is allowed now; changes nothing."""
        if (self.state, event) not in TRANSITIONS:
            status = _REMOTE_OFFER_STATUS.get(self.state) if event is _E.REMOTE_OFFER else None
            raise OfferAnswerError(self.state, event, status)

    def _apply(self, event: NegotiationEvent) -> None:
        target = TRANSITIONS[(self.state, event)]
        if target is None:
            target = _S.NEGOTIATED if self.local_current is not None else _S.NO_OFFER
        self.state = target


def _check_answer(offer: SessionDescription | None, answer: SessionDescription, who: str) -> None:
    """RFC 3264 §6: one m-line per offered m-line, in order, of the same media type."""
    if offer is None:  # unreachable through the table; keeps the types honest
        raise SdpError(f"{who} answers no offer", status=488)
    if len(answer.media) != len(offer.media):
        raise SdpError(
            f"{who} has {len(answer.media)} m-lines for an offer of {len(offer.media)} "
            "(RFC 3264 §6: one per offered m-line)",
            status=488,
        )
    for index, (offered, answered) in enumerate(zip(offer.media, answer.media, strict=True)):
        if offered.media != answered.media:
            raise SdpError(
                f"{who}: m-line {index} is {answered.media!r} but the offer's is {offered.media!r}",
                status=488,
            )


def _check_reoffer(
    previous: SessionDescription | None, offer: SessionDescription, who: str
) -> None:
    """RFC 3264 §8: a new offer keeps a matching m-line for every earlier one, in order.

    The media type in a slot may change: a T.38 switch replaces m=audio with m=image in
    place (ITU-T T.38 Annex D), so only the count is checked.
    """
    if previous is None:
        return
    if len(offer.media) < len(previous.media):
        raise SdpError(
            f"{who} has {len(offer.media)} m-lines, fewer than the {len(previous.media)} "
            "of the previous one (RFC 3264 §8: streams are disabled with port 0, not removed)",
            status=488,
        )
