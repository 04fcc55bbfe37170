"""Offer/answer state per leg (RFC 3264, RFC 6337): transitions, rollback, illegal events."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sbc.sdp import (
    NegotiationEvent,
    NegotiationState,
    OfferAnswer,
    OfferAnswerError,
    SdpError,
    SessionDescription,
    parse_sdp,
)
from sbc.sdp.negotiation import TRANSITIONS

St = NegotiationState
Ev = NegotiationEvent


def body(*media: str, version: int = 1, address: str = "127.0.0.10") -> SessionDescription:
    lines = ["v=0", f"o=- 1 {version} IN IP4 {address}", "s=-", f"c=IN IP4 {address}", "t=0 0"]
    for m in media:
        lines.append(f"m={m}")
    return parse_sdp("".join(f"{line}\r\n" for line in lines).encode())


OFFER = body("audio 4000 RTP/AVP 0 8")
ANSWER = body("audio 5000 RTP/AVP 8", address="127.0.0.20")
REOFFER = body("audio 4000 RTP/AVP 0 8", "video 4002 RTP/AVP 31", version=2)
REANSWER = body("audio 5000 RTP/AVP 8", "video 0 RTP/AVP 31", version=2, address="127.0.0.20")


def negotiated() -> OfferAnswer:
    oa = OfferAnswer()
    oa.local_offer(OFFER)
    oa.remote_answer(ANSWER)
    return oa


def in_state(state: NegotiationState, *, after_negotiation: bool = False) -> OfferAnswer:
    """A machine in `state`, reached through legal events only."""
    oa = negotiated() if after_negotiation or state is St.NEGOTIATED else OfferAnswer()
    if state is St.LOCAL_OFFER_SENT:
        oa.local_offer(REOFFER if after_negotiation else OFFER)
    elif state is St.REMOTE_OFFER_RECEIVED:
        oa.remote_offer(REOFFER if after_negotiation else OFFER)
    assert oa.state is state
    return oa


EVENTS: dict[NegotiationEvent, Callable[[OfferAnswer], None]] = {
    Ev.LOCAL_OFFER: lambda oa: oa.local_offer(REOFFER),
    Ev.REMOTE_PROVISIONAL_ANSWER: lambda oa: oa.remote_provisional_answer(ANSWER),
    Ev.REMOTE_ANSWER: lambda oa: oa.remote_answer(ANSWER),
    Ev.REMOTE_OFFER: lambda oa: oa.remote_offer(REOFFER),
    Ev.LOCAL_ANSWER: lambda oa: oa.local_answer(ANSWER),
    Ev.ROLLBACK: lambda oa: oa.rollback(),
}


def snapshot(oa: OfferAnswer) -> tuple[object, ...]:
    return (
        oa.state,
        oa.local_current,
        oa.remote_current,
        oa.local_pending,
        oa.remote_pending,
        oa.remote_early,
    )


# ------------------------------------------------------------------------- happy paths


def test_initial_offer_from_us() -> None:
    oa = OfferAnswer()
    assert oa.state is St.NO_OFFER and not oa.offer_pending
    oa.local_offer(OFFER)
    assert oa.state is St.LOCAL_OFFER_SENT and oa.offer_pending
    assert oa.local_pending is OFFER and oa.local_current is None
    oa.remote_answer(ANSWER)
    assert oa.state is St.NEGOTIATED and not oa.offer_pending
    assert (oa.local_current, oa.remote_current) == (OFFER, ANSWER)
    assert oa.local_pending is None


def test_initial_offer_from_the_peer() -> None:
    oa = OfferAnswer()
    oa.remote_offer(ANSWER)
    assert oa.state is St.REMOTE_OFFER_RECEIVED and oa.remote_pending is ANSWER
    oa.local_answer(OFFER)
    assert oa.state is St.NEGOTIATED
    assert (oa.local_current, oa.remote_current) == (OFFER, ANSWER)
    assert oa.remote_pending is None


def test_late_offer_in_2xx_answered_in_ack_rfc6337_s2() -> None:
    # INVITE without SDP: the 2xx carries the peer's offer, our ACK the answer.
    oa = OfferAnswer()
    oa.remote_offer(ANSWER)
    oa.local_answer(OFFER)
    assert oa.state is St.NEGOTIATED


def test_reoffer_replaces_the_current_session_once_answered() -> None:
    oa = negotiated()
    oa.local_offer(REOFFER)
    assert (oa.local_current, oa.remote_current) == (OFFER, ANSWER)  # still in force
    oa.remote_answer(REANSWER)
    assert (oa.local_current, oa.remote_current) == (REOFFER, REANSWER)


def test_provisional_answer_is_kept_but_not_yet_the_answer_rfc6337_s3_1() -> None:
    oa = OfferAnswer()
    oa.local_offer(OFFER)
    oa.remote_provisional_answer(ANSWER)
    assert oa.state is St.LOCAL_OFFER_SENT and oa.remote_early is ANSWER
    assert oa.remote_current is None
    final = body("audio 5002 RTP/AVP 0", address="127.0.0.20")
    oa.remote_answer(final)
    assert oa.remote_current is final and oa.remote_early is None


# ------------------------------------------------------------------- rollback, TRAPS #2


def test_rejected_reinvite_keeps_the_previous_session_traps_2() -> None:
    oa = negotiated()
    oa.local_offer(REOFFER)
    oa.remote_provisional_answer(REANSWER)
    oa.rollback()  # 488 to our re-INVITE
    assert oa.state is St.NEGOTIATED
    assert (oa.local_current, oa.remote_current) == (OFFER, ANSWER)
    assert oa.local_pending is None and oa.remote_early is None
    oa.local_offer(REOFFER)  # and a new offer is possible again
    assert oa.state is St.LOCAL_OFFER_SENT


def test_our_rejection_of_their_reoffer_keeps_the_previous_session() -> None:
    oa = negotiated()
    oa.remote_offer(REOFFER)
    oa.rollback()  # we answered their re-INVITE with 488
    assert oa.state is St.NEGOTIATED and oa.remote_pending is None
    assert (oa.local_current, oa.remote_current) == (OFFER, ANSWER)


def test_rejected_initial_offer_goes_back_to_no_offer() -> None:
    oa = OfferAnswer()
    oa.local_offer(OFFER)
    oa.rollback()
    assert oa.state is St.NO_OFFER and oa.local_pending is None
    oa.remote_offer(OFFER)
    oa.rollback()
    assert oa.state is St.NO_OFFER and oa.remote_pending is None


# ---------------------------------------------------------------------- illegal events


def test_glare_is_491_rfc3261_s14_2() -> None:
    oa = in_state(St.LOCAL_OFFER_SENT, after_negotiation=True)
    before = snapshot(oa)
    with pytest.raises(OfferAnswerError) as caught:
        oa.remote_offer(REOFFER)
    err = caught.value
    assert (err.state, err.event, err.status) == (St.LOCAL_OFFER_SENT, Ev.REMOTE_OFFER, 491)
    assert "LOCAL_OFFER_SENT" in str(err) and "remote offer" in str(err) and "491" in str(err)
    assert snapshot(oa) == before


def test_second_remote_offer_before_our_answer_is_500_rfc3311_s5_2() -> None:
    oa = in_state(St.REMOTE_OFFER_RECEIVED)
    with pytest.raises(OfferAnswerError) as caught:
        oa.remote_offer(OFFER)
    assert caught.value.status == 500


def test_local_offer_while_ours_is_pending_is_our_bug_without_status() -> None:
    oa = in_state(St.LOCAL_OFFER_SENT)
    with pytest.raises(OfferAnswerError) as caught:
        oa.local_offer(OFFER)
    assert caught.value.status is None
    assert "local offer is not allowed in state LOCAL_OFFER_SENT" in str(caught.value)


LEGAL = set(TRANSITIONS)
ILLEGAL = [(s, e) for s in St for e in Ev if (s, e) not in LEGAL]


@pytest.mark.parametrize(
    ("state", "event"), ILLEGAL, ids=[f"{s.name}-{e.name}" for s, e in ILLEGAL]
)
def test_every_event_outside_the_table_raises_and_changes_nothing(
    state: NegotiationState, event: NegotiationEvent
) -> None:
    # NO_OFFER is only reachable before anything was negotiated.
    for after in (False,) if state is St.NO_OFFER else (False, True):
        oa = in_state(state, after_negotiation=after)
        before = snapshot(oa)
        with pytest.raises(OfferAnswerError) as caught:
            EVENTS[event](oa)
        assert (caught.value.state, caught.value.event) == (state, event)
        assert state.name in str(caught.value) and event.value in str(caught.value)
        assert snapshot(oa) == before


@pytest.mark.parametrize(("state", "event"), sorted(LEGAL, key=str))
def test_every_event_in_the_table_is_accepted(
    state: NegotiationState, event: NegotiationEvent
) -> None:
    oa = in_state(state, after_negotiation=state is not St.NO_OFFER)
    answer_to_reoffer = {Ev.REMOTE_ANSWER: REANSWER, Ev.REMOTE_PROVISIONAL_ANSWER: REANSWER}
    if event in answer_to_reoffer:
        getattr(oa, event.name.lower())(answer_to_reoffer[event])
    elif event is Ev.LOCAL_ANSWER:
        oa.local_answer(REANSWER)
    else:
        EVENTS[event](oa)
    target = TRANSITIONS[(state, event)]
    assert oa.state is (target if target is not None else St.NEGOTIATED)


# ------------------------------------------------------------------- content checks


def test_answer_must_have_one_m_line_per_offered_one_rfc3264_s6() -> None:
    oa = in_state(St.LOCAL_OFFER_SENT, after_negotiation=True)
    before = snapshot(oa)
    with pytest.raises(SdpError) as caught:
        oa.remote_answer(ANSWER)  # 1 m-line for an offer of 2
    assert caught.value.status == 488 and "1 m-lines for an offer of 2" in str(caught.value)
    assert snapshot(oa) == before
    with pytest.raises(SdpError, match="m-line 1 is 'audio'"):
        oa.remote_answer(body("audio 5000 RTP/AVP 8", "audio 5002 RTP/AVP 8"))
    with pytest.raises(SdpError):
        oa.remote_provisional_answer(ANSWER)
    assert snapshot(oa) == before


def test_our_answer_is_checked_too() -> None:
    oa = in_state(St.REMOTE_OFFER_RECEIVED, after_negotiation=True)
    with pytest.raises(SdpError, match="our answer"):
        oa.local_answer(ANSWER)
    assert oa.state is St.REMOTE_OFFER_RECEIVED


def test_reoffer_must_not_drop_m_lines_rfc3264_s8() -> None:
    oa = negotiated()
    oa.local_offer(REOFFER)
    oa.remote_answer(REANSWER)
    before = snapshot(oa)
    with pytest.raises(SdpError) as caught:
        oa.remote_offer(body("audio 5000 RTP/AVP 8", version=3))
    assert caught.value.status == 488 and "fewer than the 2" in str(caught.value)
    assert snapshot(oa) == before
    with pytest.raises(SdpError, match="our offer"):
        oa.local_offer(OFFER)
    assert snapshot(oa) == before


def test_reoffer_may_switch_a_slot_to_t38_image() -> None:
    oa = negotiated()
    fax = body("image 4000 udptl t38", version=2)
    oa.local_offer(fax)
    oa.remote_answer(body("image 5000 udptl t38", address="127.0.0.20"))
    assert oa.state is St.NEGOTIATED and oa.local_current is fax
