"""Leg B moving to the next target (TRAPS #11) and answering the trunk's digest challenges
(RFC 3261 §22.2): the PBX sees one call and never a challenge."""

from __future__ import annotations

from dataclasses import replace

from b2bua_harness import (
    A,
    B,
    Harness,
    cdr_of,
    itsp_sdp,
    of_type,
    one,
    responses,
    sends,
    stateless,
)

from sbc.b2bua import CallEnded, CancelRequest, DigestSecret, LogEvent
from sbc.b2bua.api import CallSetup
from sbc.sip.auth import DigestServer
from sbc.sip.peer import Peer

SECOND_DEST = Peer("udp", "192.0.2.77", 5060)


def _two_targets(h: Harness, **first: object) -> Harness:
    setup: CallSetup = h.setup
    primary = replace(setup.targets[0], **first)  # type: ignore[arg-type]
    backup = replace(setup.targets[0], name="itsp-b", dest=SECOND_DEST)
    return Harness(setup=replace(setup, targets=(primary, backup)))


def test_503_moves_the_call_to_the_next_trunk_and_the_pbx_sees_one_call() -> None:
    h = _two_targets(Harness())
    h.start()
    first = h.b_invite()
    out = h.b_answers(first, 503)
    assert responses(out, A) == []  # the PBX hears nothing of the failed trunk
    second = h.b_invite()
    assert second is not first and second.dest == SECOND_DEST
    assert second.request.call_id != first.request.call_id  # a new leg B
    assert any(e.event == "call.failover" for e in of_type(out, LogEvent))
    h.ring()
    out = h.answered()
    assert one(responses(out, A, 200))
    h.from_a(h.pbx.ack())
    out = h.from_a(h.pbx.request("BYE"))
    bye = one(sends(out, B, "BYE"))
    assert bye.request.call_id == second.request.call_id
    assert cdr_of(out).target == "itsp-b"


def test_busy_is_an_answer_not_a_trunk_failure_traps_11() -> None:
    h = _two_targets(Harness())
    h.start()
    out = h.b_answers(h.b_invite(), 486)
    assert one(responses(out, A, 486))
    assert len(sends(h.log, B, "INVITE")) == 1


def test_timeout_and_6xx_by_config_fail_over() -> None:
    h = _two_targets(Harness(), fail_on_6xx=True)
    h.start()
    out = h.b_answers(h.b_invite(), 603)
    assert responses(out, A) == [] and h.b_invite().dest == SECOND_DEST
    h2 = _two_targets(Harness())
    h2.start()
    h2.fail(h2.b_invite(), "TimedOut")
    assert h2.b_invite().dest == SECOND_DEST


def test_setup_timeout_cancels_and_moves_on_and_a_late_200_is_acked_and_ended() -> None:
    h = _two_targets(Harness(), setup_timeout=5.0)
    h.start()
    first = h.b_invite()
    h.b_answers(first, 100)
    out = h.advance(5.0)
    assert one(of_type(out, CancelRequest)).leg is B
    assert h.b_invite().dest == SECOND_DEST
    # The first trunk answers anyway: it gets ACK and BYE, the PBX hears nothing of it.
    out = h.b_answers(first, 200, body=b"")
    assert one(stateless(out, B)).message.method == "ACK"
    assert one(sends(out, B, "BYE")).request.call_id == first.request.call_id
    assert responses(out, A) == [] and not h.call.ended


def test_no_failover_once_the_pbx_heard_early_media() -> None:
    h = _two_targets(Harness())
    h.start()
    h.ring(183, body=itsp_sdp())
    out = h.b_answers(h.b_invite(), 503)
    assert one(responses(out, A, 503))
    assert of_type(out, CallEnded)


def _challenging(h: Harness) -> DigestServer:
    return DigestServer("itsp.example", b"k" * 32, algorithms=("SHA-256", "MD5"))


def test_invite_challenge_answered_with_credentials_rfc3261_22_2() -> None:
    h = _two_targets(Harness(), credentials=DigestSecret("alice", "s3cret"))
    server = _challenging(h)
    h.start()
    first = h.b_invite()
    challenge = [("Proxy-Authenticate", v) for v in server.challenge(h.now)]
    out = h.b_answers(first, 407, headers=challenge)
    assert responses(out, A) == []
    again = h.b_invite().request
    assert again.call_id == first.request.call_id and again.from_tag == first.request.from_tag
    assert again.cseq.number == first.request.cseq.number + 1
    assert again.via.branch != first.request.via.branch
    value = again.header("Proxy-Authorization")
    assert value is not None and "SHA-256" in value  # strongest first (RFC 8760)
    result = server.verify(value, method="INVITE", now=h.now, password_lookup=lambda u, r: "s3cret")
    assert result.ok, result.reason
    assert again.body == first.request.body
    h.ring()
    assert one(responses(h.answered(), A, 200))


def test_second_challenge_fails_the_call_with_403_and_no_loop() -> None:
    h = _two_targets(Harness(), credentials=DigestSecret("alice", "wrong"))
    server = _challenging(h)
    h.start()
    h.b_answers(
        h.b_invite(), 401, headers=[("WWW-Authenticate", v) for v in server.challenge(h.now)]
    )
    out = h.b_answers(
        h.b_invite(), 401, headers=[("WWW-Authenticate", v) for v in server.challenge(h.now)]
    )
    assert one(responses(out, A, 403))
    assert len(sends(h.log, B, "INVITE")) == 2


def test_challenge_without_credentials_is_403_never_the_challenge() -> None:
    h = Harness()
    server = _challenging(h)
    h.start()
    out = h.b_answers(
        h.b_invite(), 401, headers=[("WWW-Authenticate", v) for v in server.challenge(h.now)]
    )
    answer = one(responses(out, A, 403)).response
    assert answer.header("WWW-Authenticate") is None


def test_challenged_bye_is_resent_with_credentials() -> None:
    h = _two_targets(Harness(), credentials=DigestSecret("alice", "s3cret"))
    server = _challenging(h)
    h.established()
    out = h.from_a(h.pbx.request("BYE"))
    bye = one(sends(out, B, "BYE"))
    out = h.b_answers(bye, 401, headers=[("WWW-Authenticate", v) for v in server.challenge(h.now)])
    assert not of_type(out, CallEnded)  # the call waits for the BYE to get through
    resent = one(sends(out, B, "BYE"))
    again = resent.request
    assert again.cseq.number == bye.request.cseq.number + 1
    value = again.header("Authorization")
    assert value is not None
    assert server.verify(value, method="BYE", now=h.now, password_lookup=lambda u, r: "s3cret").ok
    assert of_type(h.b_answers(resent, 200), CallEnded)


def test_trunk_identity_is_asserted_instead_of_the_callers_rfc3325() -> None:
    base = Harness()
    policy = replace(base.setup.targets[0].policy, pai="pass")
    h = _two_targets(base, identity="+4930555000", policy=policy)
    h.start()
    invite = h.b_invite().request
    assert invite.header_values("P-Asserted-Identity") == [f"<sip:+4930555000@{invite.via.host}>"]
    strip = replace(base.setup.targets[0].policy, pai="strip")
    stripped = _two_targets(Harness(), identity="+4930555000", policy=strip)
    stripped.start()
    assert stripped.b_invite().request.header("P-Asserted-Identity") is None
