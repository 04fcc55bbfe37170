"""The B2BUA Call (sbc.b2bua) driven sans-I/O: call setup, answer, BYE, failures, CANCEL and its
races, timeouts and hangup. Every assertion is on a message the call puts on the wire.
(Early media, forking and late offers: test_b2bua_early.py; mid-call: test_b2bua_midcall.py;
RFC 4028: test_b2bua_session_timer.py.)"""

from __future__ import annotations

from dataclasses import replace

import pytest
from b2bua_harness import (
    A_CALL_ID,
    A_FROM_TAG,
    B_FROM_URI,
    B_REQUEST_URI,
    B_TO_URI,
    ITSP_PROXY,
    PBX_HOST,
    PBX_PORT,
    PBX_SOURCE,
    RELAY_A,
    RELAY_B,
    A,
    Actions,
    B,
    Harness,
    acks,
    body_sdp,
    cdr_of,
    client_key,
    last,
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

from sbc.b2bua import (
    AllocateMedia,
    CallEnded,
    CancelRequest,
    DialogOpened,
    LegPolicy,
    LogEvent,
    ReleaseMedia,
    UpdateMedia,
)
from sbc.sip.peer import Peer

# ============================================================================ setup toward B


def test_invite_toward_b_is_a_new_request_of_ours() -> None:
    h = Harness()
    out = h.start()
    assert one(of_type(out, DialogOpened)) == DialogOpened(A, A_CALL_ID, h.call.a_tag, A_FROM_TAG)
    # The relay is asked for one stream pair before anything goes to leg B.
    assert of_type(out, AllocateMedia) == [AllocateMedia(1)]
    assert out.index(of_type(out, AllocateMedia)[0]) < out.index(one(sends(out, B)))
    send = one(sends(out, B, "INVITE"))
    invite = send.request
    assert send.dest == Peer("udp", "127.0.0.20", 5090, "")
    assert invite.uri == B_REQUEST_URI
    assert invite.call_id != A_CALL_ID and "@" not in invite.call_id
    assert invite.from_tag not in (None, A_FROM_TAG)
    assert invite.to_tag is None
    assert invite.from_.uri == B_FROM_URI
    assert invite.from_.display == '"Alice"'
    assert invite.to.uri == B_TO_URI
    assert str(invite.cseq) == "1 INVITE"
    assert invite.max_forwards == 69
    via = one(invite.vias)
    assert (via.host, via.port) == ("198.51.100.7", 5080)
    assert via.branch is not None and via.branch.startswith("z9hG4bK")
    assert via.branch != h.invite.via.branch
    assert invite.header("Contact") == "<sip:198.51.100.7:5080>"
    # Nothing of leg A's own headers crosses: not its User-Agent, X- headers, Record-Route.
    for name in ("Record-Route", "Route", "X-Pbx-Route"):
        assert invite.header(name) is None, name
    assert invite.header("User-Agent") == "SBC/1"
    assert "100rel" in invite.option_tags("Supported")
    assert invite.header("Session-Expires") == "1800"
    assert invite.header("Min-SE") == "90"
    assert of_type(out, LogEvent)[-1].event == "call.invite_sent"


def test_offer_toward_b_names_only_leg_b_relay_ports_and_our_origin() -> None:
    offer = sdp(ice=True, streams=2)
    h = Harness(
        invite_body=offer,
        setup=make_setup(b_policy=LegPolicy(codecs=("PCMA", "telephone-event"))),
    )
    out = h.start()
    assert of_type(out, AllocateMedia) == [AllocateMedia(2)]
    invite = one(sends(out, B, "INVITE")).request
    assert media_ports(invite) == [(RELAY_B, 50000), (RELAY_B, 50002)]
    desc = body_sdp(invite)
    origin = desc.origin
    assert (origin.username, origin.address, origin.sess_version) == ("-", RELAY_B, 0)
    assert desc.session_name == "-"
    # The trunk's codec policy, no ICE (the relay is no ICE agent).
    assert [s.formats for s in desc.media] == [("8", "101"), ("8", "101")]
    assert b"ice-" not in invite.body and b"candidate" not in invite.body
    # Where leg A's media goes, for the relay's latching.
    update = one(of_type(out, UpdateMedia))
    assert update == UpdateMedia(A, (("127.0.0.10", 20000), ("127.0.0.10", 20002)))


def test_sdp_address_names_the_advertised_address_in_origin() -> None:
    setup = make_setup()
    target = setup.targets[0]
    local = replace(target.local, sdp_address="203.0.113.5")
    setup = replace(setup, targets=(replace(target, local=local),))
    h = Harness(setup=setup)
    invite = one(sends(h.start(), B, "INVITE")).request
    assert body_sdp(invite).origin.address == "203.0.113.5"


def test_invite_waits_for_the_relay_ports() -> None:
    h = Harness(auto_media=False)
    out = h.start()
    assert sends(out, B) == []
    assert h.pending_media == [AllocateMedia(1)]
    out = h.media_ready(1)
    assert one(sends(out, B, "INVITE"))


# ============================================================================ answer


def test_provisionals_reach_a_with_its_call_id_and_our_to_tag() -> None:
    h = Harness()
    h.start()
    out = h.ring(180)
    assert one(of_type(out, DialogOpened)) == DialogOpened(
        B, h.call.b_call_id, h.call.b_tag, "itsp-tag-1"
    )
    ringing = one(responses(out, A, 180))
    assert ringing.key == h.invite_key
    response = ringing.response
    assert response.call_id == A_CALL_ID
    assert response.from_tag == A_FROM_TAG
    assert response.to_tag == h.call.a_tag
    assert response.via.branch == h.invite.via.branch
    assert response.header("Contact") == "<sip:127.0.0.1:5060>"
    assert response.header("Server") == "SBC/1"
    assert response.header("Record-Route") is None
    assert response.header("RSeq") is None  # an unreliable 180 stays unreliable
    out = h.ring(183)
    assert of_type(out, DialogOpened) == []  # same To tag: same early dialog
    assert one(responses(out, A, 183)).response.to_tag == h.call.a_tag


def test_200_from_b_is_acked_and_relayed_to_a_with_leg_a_relay_ports() -> None:
    h = Harness()
    h.start()
    h.ring()
    out = h.answered()
    ack = one(acks(out, B))
    invite = h.b_invite().request
    assert str(ack.cseq) == "1 ACK"
    assert ack.call_id == invite.call_id and ack.from_tag == invite.from_tag
    assert ack.to_tag == "itsp-tag-1"
    assert ack.uri == "sip:+4930123456@127.0.0.20:5090"  # the 2xx's Contact
    assert ack.header("Route") == f"<sip:{ITSP_PROXY}:5090;lr>"  # its Record-Route, reversed
    assert ack.via.branch != invite.via.branch
    assert one(stateless(out, B)).dest == Peer("udp", ITSP_PROXY, 5090, "")
    assert UpdateMedia(B, (("127.0.0.20", 30000),)) in out
    ok = one(responses(out, A, 200))
    assert ok.key == h.invite_key
    response = ok.response
    assert response.call_id == A_CALL_ID and response.to_tag == h.call.a_tag
    assert response.header("Contact") == "<sip:127.0.0.1:5060>"
    assert media_ports(response) == [(RELAY_A, 40000)]
    origin = body_sdp(response).origin
    assert (origin.username, origin.address) == ("-", RELAY_A)
    assert body_sdp(response).session_name == "-"
    assert LogEvent("call.answered", (("status", "200"),), debug=True) in out
    assert h.call.answered == h.now


def test_2xx_to_a_is_retransmitted_until_ack_rfc3261_13_3_1_4() -> None:
    h = Harness()
    h.start()
    h.ring()
    ok = one(responses(h.answered(), A, 200)).response
    start = h.now
    out = h.advance(8.0)
    resent = stateless(out, A)
    # T1, then doubling up to T2: at +0.5, +1.5, +3.5, +7.5.
    assert len(resent) == 4
    for item in resent:
        assert item.message is ok
        assert item.dest == Peer("udp", PBX_HOST, PBX_PORT, "internal/udp:127.0.0.1:5060")
    assert [h.sent_at(item) - start for item in resent] == [0.5, 1.5, 3.5, 7.5]
    # An ACK for another CSeq does not stop it; ours does.
    assert h.from_a(h.pbx.ack(cseq=7)) == []
    assert stateless(h.advance(4.0), A)
    assert h.from_a(h.pbx.ack()) == []
    assert stateless(h.advance(30.0), A) == []
    assert not h.call.ended


def test_retransmitted_2xx_from_b_gets_the_same_ack_and_nothing_reaches_a() -> None:
    h = Harness()
    h.start()
    h.ring()
    first = one(acks(h.answered(), B))
    out = h.answered()
    assert one(acks(out, B)) is first
    assert wire(out, A) == []


def test_bye_from_a_ends_both_legs_with_a_cdr() -> None:
    h = Harness()
    h.established()
    answered_at = h.now
    h.now += 42.0
    bye = h.pbx.request("BYE", headers=[("Reason", 'Q.850;cause=16;text="Normal"')])
    out = h.from_a(bye)
    ok = one(responses(out, A, 200))
    assert ok.key == server_key(bye)
    assert ok.response.cseq.method == "BYE"
    send = one(sends(out, B, "BYE"))
    assert send.request.call_id == h.call.b_call_id
    assert send.request.header("Reason") == 'Q.850;cause=16;text="Normal"'
    assert str(send.request.cseq) == "2 BYE"
    assert send.dest == Peer("udp", ITSP_PROXY, 5090, "")
    assert ReleaseMedia() in out
    cdr = cdr_of(out)
    assert cdr.a_call_id == A_CALL_ID and cdr.b_call_id == h.call.b_call_id
    assert (cdr.start, cdr.answer, cdr.end) == (h.started, answered_at, answered_at + 42.0)
    assert (cdr.status, cdr.ended_by) == (200, "a")
    assert cdr.reason == 'Q.850;cause=16;text="Normal"'
    assert (cdr.caller, cdr.callee, cdr.callee_rewritten, cdr.target) == (
        "201",
        "0301234567",
        "+4930123456",
        "itsp-a",
    )
    assert cdr.direction == "outbound" and cdr.call_key == "edge7-call-1"
    # The 200 to our BYE changes nothing any more.
    assert h.b_answers(send, 200) == []


def test_bye_from_b_ends_both_legs() -> None:
    h = Harness()
    h.established()
    bye = h.itsp.request("BYE")
    out = h.from_b(bye)
    assert one(responses(out, B, 200)).key == server_key(bye)
    send = one(sends(out, A, "BYE"))
    request = send.request
    assert request.call_id == A_CALL_ID
    assert request.from_tag == h.call.a_tag and request.to_tag == A_FROM_TAG
    assert request.uri == f"sip:201@{PBX_HOST}:{PBX_PORT};ob"  # A's Contact
    assert request.header("Route") == "<sip:127.0.0.30;lr>"  # A's Record-Route
    assert str(request.cseq) == "1 BYE"  # our first request on leg A
    assert send.dest == Peer("udp", PBX_HOST, PBX_PORT, "internal/udp:127.0.0.1:5060")
    cdr = cdr_of(out)
    assert (cdr.status, cdr.ended_by, cdr.reason) == (200, "b", "bye")


def test_bye_with_wrong_tags_is_not_this_dialog() -> None:
    h = Harness()
    h.established()
    bye = h.itsp.request("BYE", tag="someone-else")
    out = h.from_b(bye)
    assert one(responses(out, B)).response.status == 481
    assert not h.call.ended


# ============================================================================ failures


def test_busy_from_b_is_relayed_and_ends_the_call_without_bye() -> None:
    h = Harness()
    h.start()
    h.ring()
    out = h.b_answers(
        h.b_invite(),
        486,
        headers=[
            ("Reason", 'Q.850;cause=17;text="User busy"'),
            ("Retry-After", "60"),
            ("Warning", '399 sbc7.itsp.example "busy here"'),
        ],
    )
    busy = one(responses(out, A))
    response = busy.response
    assert busy.key == h.invite_key
    assert (response.status, response.reason) == (486, "Busy Here")
    assert response.to_tag == h.call.a_tag
    assert response.header("Reason") == 'Q.850;cause=17;text="User busy"'
    assert response.header("Retry-After") == "60"
    for name in ("Warning", "X-Carrier-Info", "Record-Route", "Contact"):
        assert response.header(name) is None, name
    assert response.header("Server") == "SBC/1"  # ours, not the carrier's
    assert sends(out, B) == [] and sends(out, A) == []
    assert acks(out, B) == []  # the non-2xx ACK is the transaction layer's (§17.1.1.3)
    cdr = cdr_of(out)
    assert (cdr.status, cdr.ended_by, cdr.answer) == (486, "b", None)
    assert cdr.reason == 'Q.850;cause=17;text="User busy"'


@pytest.mark.parametrize(
    ("status", "mapped"),
    [(401, 403), (407, 403), (300, 480), (301, 480), (302, 480), (305, 480), (380, 480)],
)
def test_challenges_and_redirects_do_not_reach_a(status: int, mapped: int) -> None:
    h = Harness()
    h.start()
    headers = [
        ("WWW-Authenticate", 'Digest realm="itsp.example", nonce="abc"'),
        ("Contact", "<sip:+4930123456@203.0.113.99>"),
    ]
    out = h.b_answers(h.b_invite(), status, headers=headers)
    response = one(responses(out, A)).response
    assert response.status == mapped
    text = bytes(response).decode()
    assert "203.0.113.99" not in text and "realm" not in text
    assert cdr_of(out).status == mapped


@pytest.mark.parametrize(
    "reason",
    [
        "Busy <sip:agent7@10.20.30.40>",
        "Rejected by gw3.itsp.example",
        "Busy at 127.0.0.20",
        "Busy [2001:db8::1]",
        "x" * 65,
        "Caf\u00e9 closed",
    ],
)
def test_reason_phrase_that_could_name_the_far_side_is_replaced(reason: str) -> None:
    h = Harness(audit=False)
    h.start()
    out = h.b_answers(h.b_invite(), 486, reason)
    assert one(responses(out, A)).response.reason == "Busy Here"


def test_plain_reason_phrase_crosses() -> None:
    h = Harness()
    h.start()
    out = h.b_answers(h.b_invite(), 480, "Subscriber Absent")
    assert one(responses(out, A)).response.reason == "Subscriber Absent"


def test_decline_from_b_is_an_answer() -> None:
    h = Harness()
    h.start()
    out = h.b_answers(h.b_invite(), 603)
    assert one(responses(out, A)).response.status == 603
    assert cdr_of(out).ended_by == "b"


@pytest.mark.parametrize(("reason", "status"), [("TimedOut", 408), ("TransportFailed", 503)])
def test_invite_transaction_failure_answers_a(reason: str, status: int) -> None:
    h = Harness()
    h.start()
    out = h.fail(h.b_invite(), reason)
    response = one(responses(out, A)).response
    assert response.status == status
    assert response.to_tag == h.call.a_tag
    assert sends(out, B) == [] and of_type(out, CancelRequest) == []
    cdr = cdr_of(out)
    assert (cdr.status, cdr.ended_by, cdr.reason) == (status, "b", reason)


def test_invite_without_contact_is_refused_400() -> None:
    h = Harness()
    h.invite.remove_header("Contact")
    out = h.start()
    assert one(responses(out, A)).response.status == 400
    assert sends(out, B) == [] and of_type(out, AllocateMedia) == []
    assert cdr_of(out).status == 400


def test_offer_of_another_content_type_is_refused_415() -> None:
    h = Harness(invite_body=b"")
    h.invite.body = b"<xml/>"
    h.invite.set_header("Content-Type", "application/xml")
    out = h.start()
    assert one(responses(out, A)).response.status == 415
    assert sends(out, B) == []


def test_malformed_offer_is_refused_400() -> None:
    h = Harness(invite_body=b"v=0\r\nthis is no sdp\r\n")
    out = h.start()
    assert one(responses(out, A)).response.status == 400
    assert sends(out, B) == []


# ============================================================================ CANCEL


def _cancel(h: Harness) -> Actions:
    return h.from_a(h.pbx.cancel(h.invite))


def test_cancel_while_ringing_rfc3261_9_2() -> None:
    h = Harness()
    h.start()
    h.ring()
    cancel = h.pbx.cancel(h.invite)
    out = h.from_a(cancel)
    ok = one(responses(out, A, 200))
    assert ok.key == server_key(cancel)
    assert ok.response.cseq.method == "CANCEL"
    # §8.2.6.2: a response outside a dialog carries a To tag; §9.2: the same as the 487's.
    assert ok.response.to_tag == h.call.a_tag
    terminated = one(responses(out, A, 487))
    assert terminated.key == h.invite_key
    assert terminated.response.to_tag == h.call.a_tag
    assert one(of_type(out, CancelRequest)) == CancelRequest(B, client_key(h.b_invite().request))
    assert of_type(out, CallEnded) == []  # until leg B's INVITE is over
    out = h.b_answers(h.b_invite(), 487)
    assert wire(out, A) == []  # A has its final answer already
    cdr = cdr_of(out)
    assert (cdr.status, cdr.ended_by, cdr.reason) == (487, "a", "cancel")
    assert cdr.answer is None


def test_200_crossing_the_cancel_is_acked_and_ended_with_bye_rfc3261_9_1() -> None:
    h = Harness()
    h.start()
    h.ring()
    _cancel(h)
    out = h.answered()
    ack = one(acks(out, B))
    assert ack.to_tag == "itsp-tag-1"
    bye = one(sends(out, B, "BYE")).request
    assert bye.to_tag == "itsp-tag-1" and str(bye.cseq) == "2 BYE"
    assert bye.header("Reason") is not None
    assert out.index(one(stateless(out, B))) < out.index(one(sends(out, B, "BYE")))
    assert wire(out, A) == []
    assert [
        r
        for r in responses(h.log, A)
        if 200 <= r.response.status < 300 and r.response.cseq.method == "INVITE"
    ] == []
    cdr = cdr_of(out)
    assert (cdr.status, cdr.answer) == (487, None)


def test_cancel_after_the_answer_only_gets_200() -> None:
    h = Harness()
    h.established()
    out = _cancel(h)
    assert [r.response.status for r in responses(out, A)] == [200]
    assert of_type(out, CancelRequest) == []
    assert not h.call.ended


def test_cancel_before_the_invite_went_out_ends_at_once() -> None:
    h = Harness(auto_media=False)
    h.start()
    out = _cancel(h)
    assert one(responses(out, A, 487))
    cdr_of(out)
    assert h.call.next_deadline() is None


def test_leg_b_silent_after_cancel_is_given_up_after_64_t1() -> None:
    h = Harness()
    h.start()
    h.ring()
    _cancel(h)
    assert h.advance(64 * 0.5) == []
    out = h.advance(5.0)
    cdr = cdr_of(out)
    assert cdr.status == 487


def test_bye_from_a_in_the_early_dialog_ends_the_attempt_rfc3261_15() -> None:
    h = Harness()
    h.start()
    h.ring()
    bye = h.pbx.request("BYE")
    out = h.from_a(bye)
    assert one(responses(out, A, 200)).key == server_key(bye)
    assert one(responses(out, A, 487)).key == h.invite_key
    assert one(of_type(out, CancelRequest)).leg is B
    out = h.b_answers(h.b_invite(), 487)
    assert cdr_of(out).ended_by == "a"


# ============================================================================ timeouts, hangup


def test_no_answer_timeout_cancels_b_and_answers_408() -> None:
    h = Harness(setup=make_setup(no_answer_timeout=30.0))
    h.start()
    h.ring()
    assert h.call.next_deadline() == h.started + 30.0
    assert h.advance(29.9) == []
    out = h.advance(0.1)
    assert LogEvent("call.no_answer", ()) in out
    assert one(responses(out, A)).response.status == 408
    assert one(of_type(out, CancelRequest)).leg is B
    out = h.b_answers(h.b_invite(), 487)
    cdr = cdr_of(out)
    assert (cdr.status, cdr.ended_by, cdr.reason) == (408, "sbc", "no answer")


def test_no_answer_timer_stops_at_the_answer() -> None:
    h = Harness(setup=make_setup(no_answer_timeout=30.0))
    h.established()
    out = h.advance(100.0)
    assert responses(out, A) == [] and of_type(out, CancelRequest) == []


def test_media_timeout_after_answer_ends_both_legs() -> None:
    h = Harness()
    h.established()
    out = h.media_timeout()
    for leg in (A, B):
        bye = one(sends(out, leg, "BYE")).request
        assert bye.header("Reason") == 'SIP;cause=408;text="Media timeout"'
    assert cdr_of(out).ended_by == "sbc"


def test_media_timeout_before_answer_is_ignored() -> None:
    h = Harness()
    h.start()
    h.ring()
    assert h.media_timeout() == []
    assert not h.call.ended


def test_no_ack_for_our_2xx_ends_both_legs_rfc3261_13_3_1_4() -> None:
    h = Harness()
    h.start()
    h.ring()
    h.answered()
    out = h.advance(64 * 0.5 - 0.01)
    assert len(stateless(out, A)) == 10  # +0.5, +1.5, +3.5, then every T2 up to +31.5
    assert sends(out, A) == []
    out = h.advance(0.01)
    for leg in (A, B):
        bye = one(sends(out, leg, "BYE")).request
        assert bye.header("Reason") == 'SIP;cause=408;text="No ACK"'
    cdr = cdr_of(out)
    assert (cdr.status, cdr.ended_by) == (200, "a")


def test_hangup_during_setup_answers_503_and_cancels_b() -> None:
    h = Harness()
    h.start()
    h.ring()
    out = h.hangup("shutdown")
    assert one(responses(out, A)).response.status == 503
    assert one(of_type(out, CancelRequest)).leg is B
    out = h.b_answers(h.b_invite(), 487)
    cdr = cdr_of(out)
    assert (cdr.status, cdr.ended_by, cdr.reason) == (503, "sbc", "shutdown")


def test_hangup_after_answer_sends_bye_with_reason_on_both_legs() -> None:
    h = Harness()
    h.established()
    out = h.hangup("shutdown")
    for leg in (A, B):
        bye = one(sends(out, leg, "BYE")).request
        assert bye.header("Reason") == 'SIP;cause=503;text="shutdown"'
    cdr = cdr_of(out)
    assert (cdr.status, cdr.ended_by) == (200, "sbc")
    assert h.hangup() == []


def test_after_call_ended_nothing_more_is_emitted() -> None:
    h = Harness()
    h.established()
    h.from_a(h.pbx.request("BYE"))
    call = h.call
    assert call.ended and call.next_deadline() is None
    bye = last(sends(h.log, B, "BYE"))
    now = h.now + 3600
    assert call.on_timer(now) == []
    assert call.on_response(B, client_key(bye.request), h.itsp.respond(bye.request, 200), now) == []
    assert call.on_failure(B, client_key(bye.request), "TimedOut", now) == []
    assert call.on_ack(A, h.pbx.ack(), now) == []
    assert call.on_media_timeout(now) == []
    assert call.on_media_ready(((RELAY_A, 40000),), ((RELAY_B, 50000),), now) == []
    assert call.hangup("late", now) == []
    # A request that still finds the call gets 481 and nothing else (RFC 3261 §12.2.2).
    late = h.pbx.request("INFO", b"x", content_type="text/plain")
    out = call.on_request(A, server_key(late), late, PBX_SOURCE, now)
    assert [r.response.status for r in responses(out, A)] == [481]
    assert len(out) == 1
    assert call.next_deadline() is None


def test_topology_of_a_whole_call_is_audited() -> None:
    # The harness audits every message of every test (Harness.audit); this flow adds the
    # relayed INFO and its answer, and checks the answer to A carries none of the ITSP's SDP.
    h = Harness()
    h.established()
    h.from_a(h.pbx.request("INFO", b"Signal=5\r\n", content_type="application/dtmf-relay"))
    h.b_answers(last(sends(h.log, B, "INFO")), 200)
    h.from_b(h.itsp.request("BYE"))
    assert h.call.ended
    answer = responses(h.log, A, 200)[0].response
    assert answer.cseq.method == "INVITE"
    assert b"itspsession" not in answer.body and b"o=itsp" not in answer.body


def test_bye_toward_a_waits_for_its_ack_rfc3261_15() -> None:
    h = Harness()
    h.start()
    h.ring()
    h.answered()
    out = h.from_b(h.itsp.request("BYE"))
    assert sends(out, A, "BYE") == []
    assert not of_type(out, CallEnded), "the call ended with its BYE still held"
    out = h.from_a(h.pbx.ack())
    assert one(sends(out, A, "BYE"))
    assert cdr_of(out).ended_by == "b"


def test_held_bye_goes_when_the_2xx_retransmissions_give_up_rfc3261_15() -> None:
    h = Harness()
    h.start()
    h.ring()
    h.answered()
    out = h.from_b(h.itsp.request("BYE"))
    assert sends(out, A, "BYE") == []
    out = h.advance(64 * h.t1)
    assert one(sends(out, A, "BYE"))
    assert of_type(out, CallEnded)


def test_maximum_call_duration_ends_an_answered_call_on_both_legs() -> None:
    # A toll-fraud rule: an answered call lasts at most `max_duration` s from the answer.
    setup = make_setup()
    h = Harness(setup=replace(setup, max_duration=60.0))
    h.established()
    early = h.advance(59.9)
    assert sends(early, A, "BYE") == [] and sends(early, B, "BYE") == []
    out = h.advance(0.1)
    assert one(sends(out, A, "BYE")) and one(sends(out, B, "BYE"))
    assert "Maximum call duration" in (one(sends(out, B, "BYE")).request.header("Reason") or "")
