"""RFC 4028 session timers in the B2BUA Call, run per leg (TRAPS #5): Min-SE and 422 both
ways, who refreshes, refreshes by UPDATE or re-INVITE, and ending the call when one fails."""

from __future__ import annotations

from b2bua_harness import (
    A,
    B,
    Harness,
    acks,
    cdr_of,
    itsp_sdp,
    make_setup,
    of_type,
    one,
    responses,
    sdp,
    sends,
    server_key,
    stateless,
    wire,
)

from sbc.b2bua import AllocateMedia, CallEnded, LegPolicy, UpdateMedia

ITSP_ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE"
ITSP_ALLOW_NO_UPDATE = "INVITE, ACK, CANCEL, BYE, OPTIONS"


def _up_with_b_timer(
    session_expires: str, allow: str = ITSP_ALLOW, supported: str = "timer"
) -> Harness:
    h = Harness()
    h.start()
    h.ring()
    h.answered(
        headers=[
            ("Session-Expires", session_expires),
            ("Supported", supported),
            ("Allow", allow),
        ]
    )
    h.from_a(h.pbx.ack())
    return h


# ============================================================================ leg A: we are UAS


def test_interval_below_min_se_is_refused_422_rfc4028_9() -> None:
    h = Harness(invite_headers=(("Session-Expires", "60"),))
    out = h.start()
    refused = one(responses(out, A))
    assert refused.key == h.invite_key
    assert (refused.response.status, refused.response.header("Min-SE")) == (422, "90")
    assert refused.response.to_tag == h.call.a_tag
    assert sends(out, B) == [] and of_type(out, AllocateMedia) == []
    assert cdr_of(out).status == 422


def test_min_se_of_our_policy_is_what_422_names() -> None:
    h = Harness(
        setup=make_setup(a_policy=LegPolicy(min_se=300)),
        invite_headers=(("Session-Expires", "200"),),
    )
    refused = one(responses(h.start(), A)).response
    assert (refused.status, refused.header("Min-SE")) == (422, "300")


def test_a_that_refreshes_itself_is_told_so_and_must_rfc4028_9() -> None:
    h = Harness(invite_headers=(("Session-Expires", "1800;refresher=uac"),))
    h.start()
    h.ring()
    ok = one(responses(h.answered(), A, 200)).response
    assert ok.header("Session-Expires") == "1800;refresher=uac"
    assert "timer" in ok.option_tags("Require")
    h.from_a(h.pbx.ack())
    # A refreshes (UPDATE, no body) before the interval runs out: answered here, not relayed.
    h.advance(900.0)
    update = h.pbx.request("UPDATE", headers=[("Session-Expires", "1800;refresher=uac")])
    out = h.from_a(update)
    assert one(responses(out, A)).response.header("Session-Expires") == "1800;refresher=uac"
    assert wire(out, B) == []
    # Then it stops refreshing: §10, BYE on both legs once 1800 - 32 s have passed.
    assert sends(h.advance(1800 - 32 - 0.1), A) == []
    out = h.advance(0.1)
    for leg in (A, B):
        bye = one(sends(out, leg, "BYE")).request
        assert bye.header("Reason") == 'SIP;cause=408;text="Session timer expired"'
    assert cdr_of(out).ended_by == "a"


def test_we_refresh_leg_a_with_update_when_it_asked_for_no_timer() -> None:
    h = Harness(setup=make_setup(a_policy=LegPolicy(session_expires=600)))
    h.established()
    answer = one(responses(h.log, A, 200)).response
    assert answer.header("Session-Expires") == "600;refresher=uas"
    out = h.advance(300.0)
    send = one(sends(out, A, "UPDATE"))
    assert send.request.header("Session-Expires") == "600;refresher=uac"
    assert send.request.body == b""
    assert wire(out, B) == []
    h.a_answers(send, 200, headers=[("Session-Expires", "600;refresher=uac")])
    assert sends(h.advance(299.0), A) == []
    assert one(sends(h.advance(1.0), A, "UPDATE"))


# ============================================================================ leg B: we are UAC


def test_invite_to_b_retries_after_422_with_its_min_se_rfc4028_7_4() -> None:
    h = Harness()
    h.start()
    first = h.b_invite()
    out = h.b_answers(first, 422, headers=[("Min-SE", "3600")])
    assert responses(out, A) == []
    retry = one(sends(out, B, "INVITE")).request
    assert retry.header("Session-Expires") == "3600"
    assert retry.header("Min-SE") == "3600"
    assert str(retry.cseq) == "2 INVITE"
    assert retry.call_id == first.request.call_id
    assert retry.from_tag == first.request.from_tag
    assert retry.via.branch != first.request.via.branch
    assert retry.body == first.request.body
    h.ring()
    out = h.answered()
    assert str(one(acks(out, B)).cseq) == "2 ACK"
    assert one(responses(out, A, 200))


def test_we_refresh_b_with_update_at_half_the_interval_rfc4028_10() -> None:
    h = _up_with_b_timer("90;refresher=uac")
    assert sends(h.advance(44.9), B) == []
    out = h.advance(0.1)
    send = one(sends(out, B, "UPDATE"))
    update = send.request
    assert update.header("Session-Expires") == "90;refresher=uac"
    assert "timer" in update.option_tags("Require")  # B said it supports timer
    assert update.body == b""
    assert update.call_id == h.call.b_call_id and str(update.cseq) == "2 UPDATE"
    assert wire(out, A) == []
    h.b_answers(send, 200, headers=[("Session-Expires", "90;refresher=uac")])
    assert sends(h.advance(44.9), B) == []
    assert one(sends(h.advance(0.1), B, "UPDATE"))


def test_without_update_we_refresh_b_with_the_same_offer_in_a_reinvite_rfc4028_7_1() -> None:
    h = _up_with_b_timer("90;refresher=uac", allow=ITSP_ALLOW_NO_UPDATE, supported="")
    out = h.advance(45.0)
    send = one(sends(out, B, "INVITE"))
    reinvite = send.request
    # The description in force, unchanged and with the same o= version (RFC 3264 §8).
    assert reinvite.body == _initial_offer(h)
    assert reinvite.header("Session-Expires") == "90;refresher=uac"
    assert reinvite.header("Require") is None  # B never said it supports timer
    assert str(reinvite.cseq) == "2 INVITE"
    out = h.b_answers(send, 200, body=itsp_sdp())
    assert str(one(acks(out, B)).cseq) == "2 ACK"
    assert of_type(out, UpdateMedia) == [UpdateMedia(B, (("127.0.0.20", 30000),))]
    assert wire(out, A) == []
    assert one(sends(h.advance(45.0), B, "INVITE"))


def _initial_offer(h: Harness) -> bytes:
    return one([s for s in sends(h.log, B, "INVITE") if s.request.cseq.number == 1]).request.body


def test_update_refused_falls_back_to_reinvite() -> None:
    h = _up_with_b_timer("90;refresher=uac")
    send = one(sends(h.advance(45.0), B, "UPDATE"))
    h.b_answers(send, 501)
    out = h.advance(10.0)
    reinvite = one(sends(out, B, "INVITE")).request
    assert reinvite.body == _initial_offer(h)


def test_refresh_answered_481_ends_the_call_with_reason_rfc4028_10() -> None:
    h = _up_with_b_timer("90;refresher=uac")
    send = one(sends(h.advance(45.0), B, "UPDATE"))
    out = h.b_answers(send, 481)
    assert sends(out, B) == []  # that dialog is gone already
    bye = one(sends(out, A, "BYE")).request
    assert bye.header("Reason") == 'SIP;cause=481;text="Session refresh failed"'
    cdr = cdr_of(out)
    assert (cdr.ended_by, cdr.status) == ("b", 200)


def test_refresh_answered_408_ends_both_legs() -> None:
    h = _up_with_b_timer("90;refresher=uac")
    send = one(sends(h.advance(45.0), B, "UPDATE"))
    out = h.b_answers(send, 408)
    for leg in (A, B):
        assert one(sends(out, leg, "BYE")).request.header("Reason") == (
            'SIP;cause=408;text="Session refresh failed"'
        )
    assert of_type(out, CallEnded)


def test_refresh_that_times_out_ends_the_call() -> None:
    h = _up_with_b_timer("90;refresher=uac")
    send = one(sends(h.advance(45.0), B, "UPDATE"))
    out = h.fail(send, "TimedOut")
    assert one(sends(out, A, "BYE")).request.header("Reason") == (
        'SIP;cause=408;text="Session refresh failed"'
    )
    assert of_type(out, CallEnded)


def test_peer_refresher_that_never_refreshes_ends_the_call_rfc4028_10() -> None:
    h = _up_with_b_timer("90;refresher=uas")
    # §10: BYE when no refresh came by interval - min(32, interval/3) = 60 s.
    assert sends(h.advance(59.9), B) == []
    out = h.advance(0.1)
    for leg in (A, B):
        bye = one(sends(out, leg, "BYE")).request
        assert bye.header("Reason") == 'SIP;cause=408;text="Session timer expired"'
    assert cdr_of(out).ended_by == "b"


def test_peer_refresh_by_update_restarts_the_timer() -> None:
    h = _up_with_b_timer("90;refresher=uas")
    h.advance(50.0)
    update = h.itsp.request("UPDATE", headers=[("Session-Expires", "90;refresher=uac")])
    out = h.from_b(update)
    ok = one(responses(out, B))
    assert (ok.key, ok.response.status) == (server_key(update), 200)
    assert ok.response.header("Session-Expires") == "90;refresher=uac"
    assert wire(out, A) == []
    assert sends(h.advance(59.9), B) == []
    assert one(sends(h.advance(0.1), B, "BYE"))


def test_peer_refresh_by_identical_reinvite_is_answered_here() -> None:
    h = _up_with_b_timer("90;refresher=uas")
    h.advance(50.0)
    reinvite = h.itsp.request(
        "INVITE", itsp_sdp(), headers=[("Session-Expires", "90;refresher=uac")]
    )
    out = h.from_b(reinvite)
    ok = one(responses(out, B, 200))
    assert ok.response.header("Session-Expires") == "90;refresher=uac"
    assert ok.response.body  # the answer in force, again
    assert wire(out, A) == []
    h.from_b(h.itsp.ack(cseq=reinvite.cseq.number))
    assert sends(h.advance(59.9), B) == []


def test_refresh_waits_while_an_offer_is_pending_on_that_leg() -> None:
    h = _up_with_b_timer("90;refresher=uac")
    h.advance(44.0)
    out = h.from_a(h.pbx.request("INVITE", _hold()))
    relayed = one(sends(out, B, "INVITE"))
    out = h.advance(1.0)
    assert sends(out, B) == []  # no UPDATE/INVITE across our pending re-INVITE
    h.b_answers(relayed, 200, body=itsp_sdp(version=2))
    h.from_a(h.pbx.ack(cseq=h.pbx.cseq))
    # The 2xx to that re-INVITE was a refresh itself (§9): the next is 45 s after it.
    assert sends(h.advance(44.0), B) == []
    assert one(sends(h.advance(1.5), B, "UPDATE"))


def _hold() -> bytes:
    return sdp(version=2, direction="sendonly")


def test_a_without_timer_support_is_not_required_to_refresh_rfc4028_9() -> None:
    h = Harness(supported=None, invite_headers=(("Session-Expires", "1800;refresher=uac"),))
    h.start()
    ok = one(responses(h.answered(), A, 200)).response
    # A UAC that did not name 'timer' cannot be made the refresher, nor be sent Require.
    assert ok.header("Session-Expires") == "1800;refresher=uas"
    assert ok.header("Require") is None


def test_retransmitted_2xx_to_a_refresh_reinvite_is_acked_again() -> None:
    h = _up_with_b_timer("90;refresher=uac", allow=ITSP_ALLOW_NO_UPDATE)
    send = one(sends(h.advance(45.0), B, "INVITE"))
    ok = h.itsp.respond(send.request, 200, body=itsp_sdp())
    first = one(acks(h.answer(send, ok), B))
    assert [a.message for a in stateless(h.answer(send, ok), B)] == [first]


def test_refresh_refused_491_is_retried_after_the_random_wait_rfc3261_14_1() -> None:
    h = _up_with_b_timer("90;refresher=uac")
    send = one(sends(h.advance(45.0), B, "UPDATE"))
    h.b_answers(send, 491)
    # We own leg B's Call-ID: the retry waits 2.1 to 4 s, not a whole half interval.
    assert sends(h.advance(2.0), B) == []
    assert one(sends(h.advance(2.1), B, "UPDATE"))
