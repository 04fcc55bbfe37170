"""The B2BUA Call before the answer: reliable provisionals per leg (RFC 3262), early media
previews, forking (several early dialogs on leg B) and the late offer (RFC 3261 §13.2.1)."""

from __future__ import annotations

from b2bua_harness import (
    RELAY_A,
    RELAY_B,
    A,
    Actions,
    B,
    Harness,
    acks,
    body_sdp,
    cdr_of,
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

from sbc.b2bua import AllocateMedia, CancelRequest, DialogOpened, LegPolicy, UpdateMedia


def _reliable_183(
    h: Harness, rseq: int = 7001, body: bytes | None = None, tag: str | None = None
) -> Actions:
    out = h.b_answers(
        h.b_invite(),
        183,
        headers=[("Require", "100rel"), ("RSeq", str(rseq))],
        body=itsp_sdp() if body is None else body,
        tag=tag,
    )
    h.learn_a_tag(out)
    return out


# ============================================================================ RFC 3262 on leg B


def test_reliable_183_from_b_is_pracked_with_its_rack_rfc3262_7_2() -> None:
    h = Harness()
    h.start()
    out = _reliable_183(h)
    send = one(sends(out, B, "PRACK"))
    prack = send.request
    invite = h.b_invite().request
    assert prack.header("RAck") == "7001 1 INVITE"
    assert prack.call_id == invite.call_id and prack.to_tag == "itsp-tag-1"
    assert str(prack.cseq) == "2 PRACK"
    assert prack.uri == "sip:+4930123456@127.0.0.20:5090"
    assert prack.header("Route") == "<sip:127.0.0.21:5090;lr>"
    assert UpdateMedia(B, (("127.0.0.20", 30000),)) in out
    assert h.b_answers(send, 200) == []
    # A retransmission of the same reliable 183 is neither PRACKed again nor relayed.
    assert _reliable_183(h) == []


def test_reliable_183_reaches_a_reliably_when_a_supports_100rel_rfc3262_3() -> None:
    h = Harness(supported="100rel, timer")
    h.start()
    out = _reliable_183(h)
    progress = one(responses(out, A, 183))
    response = progress.response
    assert progress.key == h.invite_key
    assert "100rel" in response.option_tags("Require")
    rseq = response.header("RSeq")
    assert rseq is not None and rseq.isdigit()
    assert media_ports(response) == [(RELAY_A, 40000)]
    # Retransmitted, doubling from T1 and not capped at T2, until A's PRACK.
    start = h.now
    resent = responses(h.advance(8.0), A, 183)
    assert [h.sent_at(r) - start for r in resent] == [0.5, 1.5, 3.5, 7.5]
    assert all(r.response is response for r in resent)
    prack = h.pbx.request("PRACK", headers=[("RAck", f"{rseq} 1 INVITE")])
    out = h.from_a(prack)
    ok = one(responses(out, A))
    assert (ok.key, ok.response.status) == (server_key(prack), 200)
    assert wire(out, B) == []  # PRACKs are per leg: nothing crosses
    assert responses(h.advance(30.0), A) == []
    # The 2xx then carries no second answer (the offer/answer is done, RFC 3262 §5).
    out = h.answered(body=b"")
    assert one(responses(out, A, 200)).response.body == b""
    assert one(acks(out, B)).body == b""


def test_prack_from_a_with_a_wrong_rack_gets_481_rfc3262_3() -> None:
    h = Harness()
    h.start()
    rseq = one(responses(_reliable_183(h), A, 183)).response.header("RSeq")
    assert rseq is not None
    prack = h.pbx.request("PRACK", headers=[("RAck", f"{int(rseq) + 5} 1 INVITE")])
    out = h.from_a(prack)
    assert one(responses(out, A)).response.status == 481
    assert responses(h.advance(0.5), A, 183)  # still unacknowledged: still retransmitted


def test_a_never_pracks_the_reliable_183_rfc3262_3() -> None:
    h = Harness()
    h.start()
    _reliable_183(h)
    out = h.advance(64 * 0.5)
    failure = one([r for r in responses(out, A) if r.response.status >= 200])
    assert failure.response.status == 504
    assert failure.key == h.invite_key
    assert one(of_type(out, CancelRequest)).leg is B
    assert cdr_of(h.b_answers(h.b_invite(), 487)).status == 504


def test_reliable_183_reaches_a_unreliably_without_its_100rel() -> None:
    h = Harness(supported="timer")
    h.start()
    out = _reliable_183(h)
    assert one(sends(out, B, "PRACK"))  # leg B still gets its PRACK
    progress = one(responses(out, A, 183)).response
    assert progress.header("RSeq") is None
    assert "100rel" not in progress.option_tags("Require")
    assert media_ports(progress) == [(RELAY_A, 40000)]
    assert responses(h.advance(5.0), A) == []  # nothing to retransmit
    out = h.answered(body=b"")
    ok = one(responses(out, A, 200)).response
    # The answer A saw early is its answer: same ports, same o= version (RFC 3264 §8).
    assert media_ports(ok) == media_ports(progress)
    assert body_sdp(ok).origin == body_sdp(progress).origin


def test_early_media_preview_and_answer_name_the_same_relay_ports() -> None:
    h = Harness(supported="timer")
    h.start()
    out = h.ring(183, body=itsp_sdp())
    progress = one(responses(out, A, 183)).response
    assert UpdateMedia(B, (("127.0.0.20", 30000),)) in out
    assert sends(out, B) == []  # an unreliable 183 gets no PRACK
    ok = one(responses(h.answered(), A, 200)).response
    assert media_ports(progress) == media_ports(ok) == [(RELAY_A, 40000)]
    assert body_sdp(ok).origin == body_sdp(progress).origin


def test_a_that_requires_100rel_gets_one_reliable_provisional_at_a_time_rfc3262_3() -> None:
    h = Harness(supported=None, invite_headers=(("Require", "100rel"),))
    h.start()
    ringing = one(responses(h.ring(180, headers=[("Require", "100rel"), ("RSeq", "1")]), A))
    assert ringing.response.status == 180 and ringing.response.header("RSeq") is not None
    out = _reliable_183(h, rseq=2)
    assert one(sends(out, B, "PRACK")).request.header("RAck") == "2 1 INVITE"
    assert responses(out, A) == []  # queued behind the unacknowledged 180
    rseq = int(ringing.response.header("RSeq") or 0)
    out = h.from_a(h.pbx.request("PRACK", headers=[("RAck", f"{rseq} 1 INVITE")]))
    assert [r.response.status for r in responses(out, A)] == [200, 183]
    progress = responses(out, A, 183)[0].response
    assert progress.header("RSeq") == str(rseq + 1)
    assert media_ports(progress) == [(RELAY_A, 40000)]


def test_leg_b_policy_without_100rel_does_not_offer_it() -> None:
    h = Harness(setup=make_setup(b_policy=LegPolicy(supports_100rel=False)))
    invite = one(sends(h.start(), B, "INVITE")).request
    assert invite.option_tags("Supported") == ["timer"]


# ============================================================================ forking


def test_two_early_dialogs_on_b_then_the_second_2xx_is_acked_and_byed_rfc3261_13_2_2_4() -> None:
    h = Harness()
    h.start()
    out = h.ring(180, tag="itsp-tag-1")
    out += h.ring(183, tag="itsp-tag-2", body=itsp_sdp(sess_id=6000))
    opened = of_type(out, DialogOpened)
    assert [d.remote_tag for d in opened] == ["itsp-tag-1", "itsp-tag-2"]
    assert {d.leg for d in opened} == {B}
    assert {d.local_tag for d in opened} == {h.call.b_tag}
    # Both early dialogs are shown to A in its one dialog.
    assert {r.response.to_tag for r in responses(out, A)} == {h.call.a_tag}
    out = h.answered(tag="itsp-tag-1")
    assert one(acks(out, B)).to_tag == "itsp-tag-1"
    assert one(responses(out, A, 200))
    out = h.answered(tag="itsp-tag-2")
    ack = one(acks(out, B))
    bye = one(sends(out, B, "BYE")).request
    assert ack.to_tag == bye.to_tag == "itsp-tag-2"
    assert out.index(one(stateless(out, B))) < out.index(one(sends(out, B, "BYE")))
    assert wire(out, A) == []
    assert not h.call.ended
    # The call goes on with the first fork.
    h.from_a(h.pbx.ack())
    out = h.from_a(h.pbx.request("BYE"))
    assert one(sends(out, B, "BYE")).request.to_tag == "itsp-tag-1"


# ============================================================================ late offer


def test_late_offer_flows_through_both_legs_rfc3261_13_2_1() -> None:
    h = Harness(invite_body=b"")
    out = h.start()
    assert of_type(out, AllocateMedia) == []
    invite = one(sends(out, B, "INVITE")).request
    assert invite.body == b"" and invite.header("Content-Type") is None
    h.ring()
    out = h.answered(body=itsp_sdp())
    assert of_type(out, AllocateMedia) == [AllocateMedia(1)]
    assert acks(out, B) == []  # its ACK carries the answer, which A has yet to give
    assert UpdateMedia(B, (("127.0.0.20", 30000),)) in out
    ok = one(responses(out, A, 200)).response
    assert media_ports(ok) == [(RELAY_A, 40000)]
    assert body_sdp(ok).origin.address == RELAY_A
    # The ITSP retransmits its 2xx meanwhile: still no ACK, nothing new to A.
    assert h.answered(body=itsp_sdp()) == []
    out = h.from_a(h.pbx.ack(body=sdp(formats=(8, 101))))
    assert UpdateMedia(A, (("127.0.0.10", 20000),)) in out
    ack = one(acks(out, B))
    assert str(ack.cseq) == "1 ACK" and ack.to_tag == "itsp-tag-1"
    assert media_ports(ack) == [(RELAY_B, 50000)]
    assert body_sdp(ack).origin.address == RELAY_B
    assert body_sdp(ack).session_name == "-"
    # Further 2xx retransmissions get the same ACK.
    assert one(acks(h.answered(body=itsp_sdp()), B)) is ack
    assert stateless(h.advance(10.0), A) == []  # our 2xx to A was ACKed


def test_late_offer_without_answer_in_ack_ends_the_call() -> None:
    h = Harness(invite_body=b"")
    h.start()
    h.answered(body=itsp_sdp())
    out = h.from_a(h.pbx.ack())
    # RFC 3261 §13.2.2.4: leg B's 2xx is ACKed before the BYE that ends it.
    ack = one(acks(out, B))
    bye = one(sends(out, B, "BYE")).request
    assert out.index(one(stateless(out, B))) < out.index(one(sends(out, B, "BYE")))
    assert ack.to_tag == bye.to_tag and str(ack.cseq) == "1 ACK"
    # A valid answer that rejects every offered stream, naming only leg B's side.
    assert [port for _, port in media_ports(ack)] == [0]
    assert body_sdp(ack).origin.address == RELAY_B
    assert one(sends(out, A, "BYE"))
    assert cdr_of(out).ended_by == "a"


def test_late_offer_never_acked_by_a_still_acks_b_before_bye() -> None:
    h = Harness(invite_body=b"")
    h.start()
    h.answered(body=itsp_sdp())
    out = h.advance(64 * 0.5)
    assert one(acks(out, B))
    assert one(sends(out, B, "BYE"))
    assert out.index(one(stateless(out, B))) < out.index(one(sends(out, B, "BYE")))
    cdr_of(out)


def test_a_requiring_100rel_against_policy_is_refused_420_rfc3262_4() -> None:
    h = Harness(
        setup=make_setup(a_policy=LegPolicy(supports_100rel=False)),
        supported=None,
        invite_headers=(("Require", "100rel"),),
    )
    out = h.start()
    refused = one(responses(out, A)).response
    assert (refused.status, refused.header("Unsupported")) == (420, "100rel")
    assert sends(out, B) == []
    assert cdr_of(out).status == 420


def test_a_supporting_100rel_against_policy_gets_unreliable_provisionals() -> None:
    h = Harness(setup=make_setup(a_policy=LegPolicy(supports_100rel=False)))
    h.start()
    progress = one(responses(_reliable_183(h), A, 183)).response
    assert progress.header("RSeq") is None


def test_cancel_while_the_late_offer_waits_for_relay_ports_still_ends_leg_b() -> None:
    h = Harness(invite_body=b"", auto_media=False)
    h.start()
    h.ring()
    out = h.answered(body=itsp_sdp())
    assert h.pending_media == [AllocateMedia(1)]
    assert responses(out, A, 200) == []
    out = h.from_a(h.pbx.cancel(h.invite))
    assert [r.response.status for r in responses(out, A)] == [200, 487]
    # Leg B answered already: its 2xx is ACKed (RFC 3261 §13.2.2.4) and the dialog ended.
    ack = one(acks(out, B))
    assert [port for _, port in media_ports(ack)] == [0]
    assert one(sends(out, B, "BYE"))
    assert out.index(one(stateless(out, B))) < out.index(one(sends(out, B, "BYE")))
    assert cdr_of(out).status == 487


def test_2xx_from_b_without_contact_is_502_for_a() -> None:
    h = Harness()
    h.start()
    out = h.answered(contact=False)
    assert one(responses(out, A)).response.status == 502
    assert cdr_of(out).ended_by == "b"


def test_offer_in_reliable_183_of_a_late_offer_reaches_a() -> None:
    h = Harness(invite_body=b"")
    h.start()
    out = _reliable_183(h)
    progress = one(responses(out, A, 183)).response
    assert media_ports(progress) == [(RELAY_A, 40000)]
    assert progress.header("Require") == "100rel" and progress.header("RSeq")
    assert sends(out, B, "PRACK") == []  # RFC 3262 §5: it must carry A's answer
    rseq = progress.header("RSeq")
    prack_a = h.pbx.request("PRACK", sdp(formats=(0, 101)), headers=[("RAck", f"{rseq} 1 INVITE")])
    out = h.from_a(prack_a)
    assert one(responses(out, A, 200)).response.cseq.method == "PRACK"
    prack_b = one(sends(out, B, "PRACK")).request
    assert prack_b.header("RAck") == "7001 1 INVITE"
    assert media_ports(prack_b) == [(RELAY_B, 50000)]
    # The call's one offer/answer is done: the 2xx brings no new offer to A.
    out = h.answered(body=b"")
    assert one(responses(out, A, 200)).response.body == b""


def test_early_offer_prack_without_answer_still_pracks_b() -> None:
    h = Harness(invite_body=b"")
    h.start()
    out = _reliable_183(h)
    rseq = one(responses(out, A, 183)).response.header("RSeq")
    out = h.from_a(h.pbx.request("PRACK", headers=[("RAck", f"{rseq} 1 INVITE")]))
    assert one(sends(out, B, "PRACK")).request.body == b""


def test_bye_from_a_fork_the_call_did_not_take_ends_only_that_fork_rfc3261_12_1_2() -> None:
    h = Harness()
    h.start()
    h.ring(180, tag="itsp-tag-1")
    h.ring(180, tag="itsp-tag-2")
    h.answered(tag="itsp-tag-2")
    h.from_a(h.pbx.ack())
    out = h.from_b(h.itsp.request("BYE", tag="itsp-tag-1"))
    assert one(responses(out, B, 200)).response.cseq.method == "BYE"
    assert wire(out, A) == [] and not h.call.ended
    out = h.from_b(h.itsp.request("INFO", b"x", tag="itsp-tag-1", content_type="text/plain"))
    assert one(responses(out, B, 481))
    # The fork that answered still ends the call.
    out = h.from_b(h.itsp.request("BYE", tag="itsp-tag-2"))
    assert one(sends(out, A, "BYE"))
