"""The B2BUA Call once answered: re-INVITE and UPDATE offers crossing (hold, TRAPS #1), their
rejection and rollback (TRAPS #2), glare, local refreshes, and the other in-dialog methods."""

from __future__ import annotations

from typing import Any

from b2bua_harness import (
    A_FROM_TAG,
    PBX_MEDIA,
    RELAY_A,
    RELAY_B,
    A,
    B,
    Harness,
    acks,
    body_sdp,
    cdr_of,
    client_key,
    directions,
    itsp_sdp,
    make_setup,
    media_ports,
    of_type,
    one,
    responses,
    sdp,
    sends,
    server_key,
    stateless,
    wire,
)

from sbc.b2bua import CallEnded, CancelRequest, LegPolicy, SendRequest, UpdateMedia
from sbc.sip.message import Request, Response

PBX_MOVED = ("127.0.0.11", 21000)


def _up(**kwargs: Any) -> Harness:
    h = Harness(**kwargs)
    h.established()
    return h


def _reinvite_from_a(h: Harness, body: bytes) -> SendRequest:
    """A re-INVITE from the PBX; returns what the call sent on to leg B."""
    out = h.from_a(h.pbx.request("INVITE", body))
    assert responses(out, A) == [], [r.response for r in responses(out, A)]
    return one(sends(out, B, "INVITE"))


def _origin_version(message: Request | Response) -> int:
    return body_sdp(message).origin.sess_version


# ============================================================================ hold / resume


def test_hold_from_a_is_relayed_and_answered_recvonly_traps_1() -> None:
    h = _up()
    initial = h.b_invite().request
    reinvite = h.pbx.request("INVITE", sdp(PBX_MOVED, version=2, direction="sendonly"))
    out = h.from_a(reinvite)
    assert UpdateMedia(A, (PBX_MOVED,)) in out
    send = one(sends(out, B, "INVITE"))
    offer = send.request
    assert offer.call_id == initial.call_id and offer.to_tag == "itsp-tag-1"
    assert str(offer.cseq) == "2 INVITE"
    assert offer.header("Contact") == "<sip:198.51.100.7:5080>"
    assert directions(offer) == ["sendonly"]
    assert media_ports(offer) == [(RELAY_B, 50000)]  # the same relay ports as before
    assert body_sdp(offer).origin.sess_id == body_sdp(initial).origin.sess_id
    assert _origin_version(offer) == _origin_version(initial) + 1
    assert offer.header("Session-Expires") is not None
    # The ITSP answers sendrecv, which RFC 3264 §6.1 does not allow: A must see recvonly.
    out = h.b_answers(send, 200, body=itsp_sdp(version=2))
    ack = one(acks(out, B))
    assert str(ack.cseq) == "2 ACK"
    assert UpdateMedia(B, (("127.0.0.20", 30000),)) in out
    ok = one(responses(out, A, 200))
    assert ok.key == server_key(reinvite)
    assert directions(ok.response) == ["recvonly"]
    assert media_ports(ok.response) == [(RELAY_A, 40000)]
    assert ok.response.header("Contact") == "<sip:127.0.0.1:5060>"
    assert ok.response.header("Session-Expires") is not None
    # Our 2xx to the re-INVITE is retransmitted until its ACK.
    assert [s.message for s in stateless(h.advance(0.5), A)] == [ok.response]
    assert h.from_a(h.pbx.ack(cseq=reinvite.cseq.number)) == []
    assert stateless(h.advance(10.0), A) == []


def test_resume_flips_the_direction_back_and_origin_versions_follow_changes_rfc3264_8() -> None:
    h = _up()
    v0 = _origin_version(h.b_invite().request)
    hold = _reinvite_from_a(h, sdp(version=2, direction="sendonly"))
    h.b_answers(hold, 200, body=itsp_sdp(version=2, direction="recvonly"))
    assert _origin_version(hold.request) == v0 + 1
    resume = _reinvite_from_a(h, sdp(version=3))
    assert directions(resume.request) == ["sendrecv"]
    assert _origin_version(resume.request) == v0 + 2
    out = h.b_answers(resume, 200, body=itsp_sdp(version=3))
    assert directions(one(responses(out, A, 200)).response) == ["sendrecv"]
    # The PBX bumps its version without changing anything: the body toward B is the same,
    # so its version stays (an unchanged description keeps its o= version).
    again = _reinvite_from_a(h, sdp(version=4))
    assert again.request.body == resume.request.body
    h.b_answers(again, 200, body=itsp_sdp(version=3))


def test_hold_from_b_is_relayed_to_a_and_answered_recvonly() -> None:
    h = _up()
    reinvite = h.itsp.request("INVITE", itsp_sdp(version=2, direction="sendonly"))
    out = h.from_b(reinvite)
    send = one(sends(out, A, "INVITE"))
    request = send.request
    assert request.from_tag == h.call.a_tag and request.to_tag == A_FROM_TAG
    assert str(request.cseq) == "1 INVITE"
    assert directions(request) == ["sendonly"]
    assert media_ports(request) == [(RELAY_A, 40000)]
    out = h.a_answers(send, 200, body=sdp(version=2))
    ack = one(acks(out, A))
    assert str(ack.cseq) == "1 ACK"
    ok = one(responses(out, B, 200))
    assert ok.key == server_key(reinvite)
    assert directions(ok.response) == ["recvonly"]
    assert media_ports(ok.response) == [(RELAY_B, 50000)]
    assert UpdateMedia(A, (PBX_MEDIA,)) in out


def test_offer_in_update_is_rewritten_like_one_in_invite_traps_4() -> None:
    h = _up()
    out = h.from_a(h.pbx.request("UPDATE", sdp(PBX_MOVED, version=2, direction="sendonly")))
    send = one(sends(out, B, "UPDATE"))
    assert directions(send.request) == ["sendonly"]
    assert media_ports(send.request) == [(RELAY_B, 50000)]
    out = h.b_answers(send, 200, body=itsp_sdp(version=2))
    assert acks(out, B) == []  # UPDATE has no ACK
    ok = one(responses(out, A, 200)).response
    assert ok.cseq.method == "UPDATE"
    assert directions(ok) == ["recvonly"]
    assert media_ports(ok) == [(RELAY_A, 40000)]
    assert stateless(h.advance(2.0), A) == []  # no 2xx retransmission for UPDATE


# ============================================================================ failed re-offers


def test_rejected_reinvite_is_relayed_and_both_legs_roll_back_traps_2() -> None:
    h = _up()
    send = _reinvite_from_a(h, sdp(PBX_MOVED, version=2, streams=1, formats=(18,)))
    out = h.b_answers(send, 488, headers=[("Warning", '304 gw.itsp.example "codec"')])
    rejected = one(responses(out, A))
    assert rejected.response.status == 488
    assert rejected.response.header("Warning") is None
    # The relay goes back to where A's media was before the failed offer.
    assert of_type(out, UpdateMedia) == [UpdateMedia(A, (PBX_MEDIA,))]
    assert sends(out, A) == sends(out, B) == []
    assert of_type(out, CallEnded) == [] and not h.call.ended
    # Leg A is back at the old session: repeating the original offer is a mere refresh.
    refresh = h.from_a(h.pbx.request("INVITE", sdp()))
    assert wire(refresh, B) == []
    assert one(responses(refresh, A, 200))
    h.from_a(h.pbx.ack(cseq=h.pbx.cseq))
    # Leg B is back too: the next real offer crosses (no 491 for a pending one).
    send = _reinvite_from_a(h, sdp(version=3, direction="sendonly"))
    out = h.b_answers(send, 200, body=itsp_sdp(version=2))
    assert directions(one(responses(out, A, 200)).response) == ["recvonly"]


def test_491_from_b_is_relayed_and_the_call_stays() -> None:
    h = _up()
    send = _reinvite_from_a(h, sdp(version=2, direction="sendonly"))
    out = h.b_answers(send, 491)
    assert one(responses(out, A)).response.status == 491
    assert not h.call.ended
    send = _reinvite_from_a(h, sdp(version=2, direction="sendonly"))
    assert directions(send.request) == ["sendonly"]


def test_481_to_a_relayed_request_ends_the_call() -> None:
    h = _up()
    out = h.from_a(h.pbx.request("INFO", b"Signal=1\r\n", content_type="application/dtmf-relay"))
    out = h.b_answers(one(sends(out, B, "INFO")), 481)
    assert one(responses(out, A)).response.status == 481
    assert sends(out, B) == []  # leg B's dialog is gone: no BYE there
    bye = one(sends(out, A, "BYE")).request
    assert bye.header("Reason") == 'SIP;cause=481;text="Far end dialog gone"'
    assert cdr_of(out).ended_by == "b"


def test_relayed_request_that_times_out_ends_the_call() -> None:
    h = _up()
    out = h.from_a(h.pbx.request("INFO", b"Signal=1\r\n", content_type="application/dtmf-relay"))
    out = h.fail(one(sends(out, B, "INFO")), "TimedOut")
    assert one(responses(out, A)).response.status == 408
    # §12.2.1.2: no answer at all ends the dialog; a BYE still goes to leg B, best effort,
    # in case only that one request was lost.
    for leg in (A, B):
        bye = one(sends(out, leg, "BYE")).request
        assert bye.header("Reason") == 'SIP;cause=408;text="Far end not responding"'
    assert cdr_of(out).ended_by == "b"


# ============================================================================ glare


def test_reinvite_from_b_crossing_ours_gets_491_rfc3261_14_2() -> None:
    h = _up()
    send = _reinvite_from_a(h, sdp(version=2, direction="sendonly"))
    crossing = h.itsp.request("INVITE", itsp_sdp(version=2, direction="sendonly"))
    out = h.from_b(crossing)
    refused = one(responses(out, B))
    assert (refused.key, refused.response.status) == (server_key(crossing), 491)
    assert wire(out, A) == []
    # Ours goes on.
    out = h.b_answers(send, 200, body=itsp_sdp(version=2))
    assert one(responses(out, A, 200))


def test_update_from_b_crossing_our_offer_gets_491_rfc3311_5_2() -> None:
    h = _up()
    _reinvite_from_a(h, sdp(version=2, direction="sendonly"))
    out = h.from_b(h.itsp.request("UPDATE", itsp_sdp(version=2)))
    assert one(responses(out, B)).response.status == 491
    assert wire(out, A) == []


def test_reinvite_from_a_while_b_reinvites_toward_a_gets_491() -> None:
    h = _up()
    out = h.from_b(h.itsp.request("INVITE", itsp_sdp(version=2, direction="sendonly")))
    assert one(sends(out, A, "INVITE"))
    out = h.from_a(h.pbx.request("INVITE", sdp(version=2)))
    assert one(responses(out, A)).response.status == 491
    assert wire(out, B) == []


# ============================================================================ local answers


def test_update_without_body_is_a_local_session_refresh_rfc4028_7() -> None:
    h = _up()
    before = len(wire(h.log, B))
    update = h.pbx.request("UPDATE", headers=[("Session-Expires", "1800;refresher=uac")])
    out = h.from_a(update)
    ok = one(responses(out, A))
    assert (ok.key, ok.response.status) == (server_key(update), 200)
    assert ok.response.header("Session-Expires") == "1800;refresher=uac"
    assert ok.response.header("Contact") == "<sip:127.0.0.1:5060>"
    assert ok.response.body == b""
    assert len(wire(h.log, B)) == before


def test_reinvite_repeating_the_session_is_answered_locally_rfc3264_8() -> None:
    h = _up()
    answer = one(responses(h.log, A, 200)).response  # our 200 to the initial INVITE
    reinvite = h.pbx.request("INVITE", sdp())  # the same o= version as the initial offer
    out = h.from_a(reinvite)
    assert wire(out, B) == []
    ok = one(responses(out, A, 200))
    assert ok.key == server_key(reinvite)
    assert ok.response.body == answer.body  # same answer, same o= version
    assert [s.message for s in stateless(h.advance(0.5), A)] == [ok.response]
    h.from_a(h.pbx.ack(cseq=reinvite.cseq.number))
    assert stateless(h.advance(10.0), A) == []


def test_offerless_reinvite_gets_our_current_offer_and_the_answer_in_ack_stays_local() -> None:
    h = _up()
    answer = one(responses(h.log, A, 200)).response
    reinvite = h.pbx.request("INVITE")
    out = h.from_a(reinvite)
    assert wire(out, B) == []
    ok = one(responses(out, A, 200)).response
    assert ok.body == answer.body
    out = h.from_a(h.pbx.ack(cseq=reinvite.cseq.number, body=sdp(PBX_MOVED, version=2)))
    assert of_type(out, UpdateMedia) == [UpdateMedia(A, (PBX_MOVED,))]
    assert wire(out, B) == []


def test_reinvite_below_min_se_gets_422_rfc4028_8() -> None:
    h = _up()
    out = h.from_a(h.pbx.request("INVITE", sdp(version=2), headers=[("Session-Expires", "60")]))
    refused = one(responses(out, A)).response
    assert (refused.status, refused.header("Min-SE")) == (422, "90")
    assert wire(out, B) == []


def test_options_in_dialog_is_answered_locally() -> None:
    h = _up()
    options = h.itsp.request("OPTIONS")
    out = h.from_b(options)
    ok = one(responses(out, B))
    assert (ok.key, ok.response.status) == (server_key(options), 200)
    assert "INVITE" in (ok.response.header("Allow") or "")
    assert ok.response.header("Accept") == "application/sdp"
    assert wire(out, A) == []


def test_unknown_method_in_dialog_gets_501() -> None:
    h = _up()
    out = h.from_a(h.pbx.request("PUBLISH", b"x", content_type="text/plain"))
    response = one(responses(out, A)).response
    assert response.status == 501 and response.header("Allow")
    assert wire(out, B) == []


def test_request_with_an_old_cseq_gets_500_rfc3261_12_2_2() -> None:
    h = _up()
    h.from_a(h.pbx.request("OPTIONS", cseq=10))
    out = h.from_a(h.pbx.request("OPTIONS", cseq=5))
    assert one(responses(out, A)).response.status == 500


# ============================================================================ other methods


def test_info_crosses_with_its_body_and_package() -> None:
    h = _up()
    info = h.pbx.request(
        "INFO",
        b"Signal=5\r\nDuration=160\r\n",
        headers=[("Info-Package", "dtmf"), ("Content-Disposition", "Info-Package")],
        content_type="application/dtmf-relay",
    )
    out = h.from_a(info)
    send = one(sends(out, B, "INFO"))
    request = send.request
    assert request.body == b"Signal=5\r\nDuration=160\r\n"
    assert request.header("Content-Type") == "application/dtmf-relay"
    assert request.header("Info-Package") == "dtmf"
    assert request.header("Content-Disposition") == "Info-Package"
    assert request.call_id == h.call.b_call_id and str(request.cseq) == "2 INFO"
    assert request.header("User-Agent") == "SBC/1"
    out = h.b_answers(send, 200)
    ok = one(responses(out, A))
    assert (ok.key, ok.response.status) == (server_key(info), 200)
    assert ok.response.call_id == info.call_id


def test_message_from_b_crosses_to_a() -> None:
    h = _up()
    message = h.itsp.request("MESSAGE", b"hello", content_type="text/plain")
    out = h.from_b(message)
    send = one(sends(out, A, "MESSAGE"))
    assert send.request.body == b"hello"
    assert send.request.header("Content-Type") == "text/plain"
    out = h.a_answers(send, 202)
    assert one(responses(out, B)).response.status == 202


def test_refer_is_declined_by_default() -> None:
    h = _up()
    refer = h.pbx.request("REFER", headers=[("Refer-To", "<sip:300@127.0.0.10>")])
    out = h.from_a(refer)
    assert one(responses(out, A)).response.status == 603
    assert wire(out, B) == []


def test_refer_and_its_notify_are_relayed_with_policy_relay() -> None:
    h = _up(setup=make_setup(a_policy=LegPolicy(refer="relay")))
    refer = h.pbx.request(
        "REFER",
        headers=[("Refer-To", "<sip:+4930999@example.net>"), ("Referred-By", "<sip:201@x>")],
    )
    out = h.from_a(refer)
    send = one(sends(out, B, "REFER"))
    assert send.request.header("Refer-To") == "<sip:+4930999@example.net>"
    assert send.request.header("Referred-By") == "<sip:201@x>"
    out = h.b_answers(send, 202)
    assert one(responses(out, A)).response.status == 202
    notify = h.itsp.request(
        "NOTIFY",
        b"SIP/2.0 100 Trying\r\n",
        headers=[("Event", "refer"), ("Subscription-State", "active;expires=60")],
        content_type="message/sipfrag",
    )
    out = h.from_b(notify)
    relayed = one(sends(out, A, "NOTIFY")).request
    assert relayed.header("Event") == "refer"
    assert relayed.header("Subscription-State") == "active;expires=60"
    assert relayed.body == b"SIP/2.0 100 Trying\r\n"
    assert relayed.header("Content-Type") == "message/sipfrag"


# ============================================================================ ending mid-offer


def test_bye_while_a_relayed_reinvite_is_pending_answers_it_487_rfc3261_15_1_2() -> None:
    h = _up()
    reinvite = h.pbx.request("INVITE", sdp(version=2, direction="sendonly"))
    h.from_a(reinvite)
    out = h.from_b(h.itsp.request("BYE"))
    # The PBX's re-INVITE must not be left without a final answer when the dialog ends.
    pending = one(responses(out, A))
    assert (pending.key, pending.response.status) == (server_key(reinvite), 487)
    assert one(sends(out, A, "BYE"))
    assert cdr_of(out).ended_by == "b"


def test_bye_from_a_while_its_info_is_pending_answers_the_info_487() -> None:
    h = _up()
    info = h.pbx.request("INFO", b"Signal=1\r\n", content_type="application/dtmf-relay")
    h.from_a(info)
    bye = h.pbx.request("BYE")
    out = h.from_a(bye)
    statuses = {r.key: r.response.status for r in responses(out, A)}
    assert statuses == {server_key(bye): 200, server_key(info): 487}
    assert one(sends(out, B, "BYE"))


def test_hangup_while_b_reinvites_a_answers_b_487() -> None:
    h = _up()
    reinvite = h.itsp.request("INVITE", itsp_sdp(version=2, direction="sendonly"))
    h.from_b(reinvite)
    out = h.hangup()
    pending = one(responses(out, B))
    assert (pending.key, pending.response.status) == (server_key(reinvite), 487)
    assert one(sends(out, A, "BYE")) and one(sends(out, B, "BYE"))


# ============================================================================ streams


def test_stream_added_beyond_the_relay_ports_is_rejected_toward_b() -> None:
    h = _up()
    send = _reinvite_from_a(h, sdp(version=2, streams=2))
    assert media_ports(send.request) == [(RELAY_B, 50000), (RELAY_B, 0)]
    out = h.b_answers(send, 200, body=_two_streams_second_rejected())
    answer = one(responses(out, A, 200)).response
    assert [port for _, port in media_ports(answer)] == [40000, 0]
    assert media_ports(answer)[0] == (RELAY_A, 40000)


def _two_streams_second_rejected() -> bytes:
    body = itsp_sdp(version=2, streams=2).decode()
    return body.replace("m=audio 30002 ", "m=audio 0 ").encode()


def test_rfc2543_hold_address_is_kept_and_sends_no_media_there_rfc3264_8_4() -> None:
    h = _up()
    hold = sdp(("0.0.0.0", 20000), version=2)
    out = h.from_a(h.pbx.request("INVITE", hold))
    assert UpdateMedia(A, (None,)) in out
    send = one(sends(out, B, "INVITE"))
    assert media_ports(send.request) == [("0.0.0.0", 50000)]


def test_retransmitted_2xx_to_a_relayed_reinvite_is_acked_again_rfc3261_13_2_2_4() -> None:
    h = _up()
    send = _reinvite_from_a(h, sdp(version=2, direction="sendonly"))
    ok = h.itsp.respond(send.request, 200, body=itsp_sdp(version=2))
    first = one(acks(h.answer(send, ok), B))
    # Our ACK was lost: the ITSP retransmits its 2xx (the transaction layer passes it on,
    # RFC 6026 §7.2). It gets the same ACK; A hears nothing of it.
    out = h.answer(send, ok)
    assert [a.message for a in stateless(out, B)] == [first]
    assert wire(out, A) == []


def test_retransmitted_2xx_from_a_to_a_relayed_reinvite_is_acked_again() -> None:
    h = _up()
    out = h.from_b(h.itsp.request("INVITE", itsp_sdp(version=2, direction="sendonly")))
    send = one(sends(out, A, "INVITE"))
    ok = h.pbx.respond(send.request, 200, body=sdp(version=2))
    first = one(acks(h.answer(send, ok), A))
    out = h.answer(send, ok)
    assert [a.message for a in stateless(out, A)] == [first]
    assert wire(out, B) == []


def test_cancel_of_a_relayed_reinvite_is_relayed_and_its_487_returns_rfc3261_9() -> None:
    h = Harness()
    h.established()
    reinvite = h.pbx.request("INVITE", sdp(version=2, direction="sendonly"))
    relayed = one(sends(h.from_a(reinvite), B, "INVITE"))
    out = h.from_a(h.pbx.cancel(reinvite))
    assert one(responses(out, A, 200)).response.cseq.method == "CANCEL"
    cancel = one(of_type(out, CancelRequest))
    assert cancel == CancelRequest(B, client_key(relayed.request))
    out = h.b_answers(relayed, 487)
    assert one(responses(out, A, 487)).response.cseq.method == "INVITE"
    assert not of_type(out, CallEnded) and wire(out, B) == []  # the call goes on
