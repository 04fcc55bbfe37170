"""DTMF translation in the call model: a side that signals DTMF with SIP INFO against one
that expects RFC 4733 telephone-events (TRAPS 10). SDP toward each side says what it will
get; INFO digits become PlayDtmf for the relay, relay digits become INFO."""

from __future__ import annotations

from sbc.b2bua import LegPolicy, PlayDtmf
from sbc.sdp.telephone_event import telephone_events
from tests.unit.b2bua_harness import (
    A,
    B,
    Harness,
    body_sdp,
    itsp_sdp,
    make_setup,
    of_type,
    one,
    responses,
    sdp,
    sends,
)

INFO_PBX = make_setup(a_policy=LegPolicy(dtmf="info"))
INFO_TRUNK = make_setup(b_policy=LegPolicy(dtmf="info"))
DTMF_RELAY = "application/dtmf-relay"


def events_in(message: object) -> dict[int, int]:
    desc = body_sdp(message)  # type: ignore[arg-type]
    return telephone_events(desc.media[0])


def test_offer_toward_an_rfc4733_trunk_gains_telephone_event_when_the_pbx_uses_info() -> None:
    h = Harness(setup=INFO_PBX, invite_body=sdp(formats=(0, 8)))
    h.start()
    invite = h.b_invite().request
    assert events_in(invite) == {101: 8000}, "the trunk must be offered telephone-event"
    desc = body_sdp(invite)
    assert desc.media[0].fmtp("101") == "0-16"  # RFC 4733 §7.1.1 events 0-15 and flash
    # The carrier's answer keeps telephone-event; the PBX, which wants INFO, is not shown it.
    out = h.ring()
    out += h.answered(body=itsp_sdp(formats=(8, 101)))
    ok = one(responses(out, A, 200)).response
    assert events_in(ok) == {}
    assert body_sdp(ok).media[0].formats == ("8",)


def test_offer_toward_an_info_trunk_loses_telephone_event_and_the_pbx_answer_keeps_it() -> None:
    h = Harness(setup=INFO_TRUNK)  # the PBX offers PCMU, PCMA, telephone-event 101
    h.start()
    invite = h.b_invite().request
    assert events_in(invite) == {}
    assert "telephone-event" not in (invite.body or b"").decode()
    h.ring()
    out = h.answered(body=itsp_sdp(formats=(8,)))  # INFO carrier: no telephone-event
    ok = one(responses(out, A, 200)).response
    # RFC 3264 §6.1: only what was offered, with the offer's number: the PBX's 101.
    assert events_in(ok) == {101: 8000}


def test_info_digit_from_the_pbx_is_answered_here_and_played_as_rtp_events() -> None:
    h = Harness(setup=INFO_PBX, invite_body=sdp(formats=(0, 8)))
    h.established()
    info = h.pbx.request("INFO", b"Signal=5\r\nDuration=200\r\n", content_type=DTMF_RELAY)
    out = h.from_a(info)
    assert one(responses(out, A)).response.status == 200
    assert of_type(out, PlayDtmf) == [PlayDtmf(B, "5", 200)]
    assert sends(out, B) == [], "the INFO must not reach the RFC 4733 trunk"


def test_info_of_another_kind_is_still_relayed() -> None:
    h = Harness(setup=INFO_PBX, invite_body=sdp(formats=(0, 8)))
    h.established()
    out = h.from_a(h.pbx.request("INFO", b"<xml/>", content_type="application/x-custom+xml"))
    relayed = one(sends(out, B, "INFO")).request
    assert relayed.body == b"<xml/>"
    assert of_type(out, PlayDtmf) == []


def test_malformed_dtmf_info_gets_400_and_plays_nothing() -> None:
    h = Harness(setup=INFO_PBX, invite_body=sdp(formats=(0, 8)))
    h.established()
    out = h.from_a(h.pbx.request("INFO", b"Signal=Z\r\n", content_type=DTMF_RELAY))
    assert one(responses(out, A)).response.status == 400
    assert of_type(out, PlayDtmf) == [] and sends(out, B) == []


def test_digit_heard_in_the_trunks_rtp_goes_to_the_info_pbx_as_dtmf_relay() -> None:
    h = Harness(setup=INFO_PBX, invite_body=sdp(formats=(0, 8)))
    h.established()
    out = h.feed(h.call.on_dtmf(B, "7", 120, h.now))
    info = one(sends(out, A, "INFO")).request
    assert info.content_type == DTMF_RELAY
    body = (info.body or b"").decode()
    assert "Signal=7" in body and "Duration=120" in body
    # Its answer ends nothing and goes nowhere.
    after = h.a_answers(one(sends(out, A, "INFO")), 200)
    assert sends(after, B) == [] and responses(after, B) == []


def test_same_mode_on_both_sides_changes_nothing() -> None:
    h = Harness()
    h.start()
    assert events_in(h.b_invite().request) == {101: 8000}
    h.ring()
    h.answered()
    h.from_a(h.pbx.ack())
    assert h.feed(h.call.on_dtmf(B, "7", 120, h.now)) == []
    info = h.pbx.request("INFO", b"Signal=1\r\n", content_type=DTMF_RELAY)
    out = h.from_a(info)
    assert one(sends(out, B, "INFO")).request.body == b"Signal=1\r\n"
    assert of_type(out, PlayDtmf) == []
