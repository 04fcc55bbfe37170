"""SDES-SRTP across the call model (RFC 4568, TRAPS #9): per-side policy, keys generated
per leg and never carried across, answers checked against our offers, re-keying on a
re-offer, and the key pair the relay gets for each leg."""

from __future__ import annotations

import base64

from sbc.b2bua import LegPolicy
from sbc.b2bua.media_plan import plan_leg
from sbc.sdp.crypto import CryptoSuite, generate_key
from tests.unit.b2bua_harness import (
    A,
    B,
    Harness,
    body_sdp,
    itsp_sdp,
    make_setup,
    one,
    responses,
    sdp,
    sends,
    wire,
)

SUITE = CryptoSuite.AES_CM_128_HMAC_SHA1_80
PBX_KEY = base64.b64encode(generate_key(SUITE)).decode()
ITSP_KEY = base64.b64encode(generate_key(SUITE)).decode()
# Our offer lists the four suites strongest first: tag 3 is AES_CM_128_HMAC_SHA1_80.
SHA1_80_TAG = 3


def secured(body: bytes, key: str, *, tag: int = 1, proto: str = "RTP/SAVP") -> bytes:
    """`body` (one audio stream) as SDES-SRTP: proto and one a=crypto line."""
    text = body.decode().replace("RTP/AVP", proto)
    line = f"a=crypto:{tag} {SUITE} inline:{key}\r\n"
    return text.replace("a=sendrecv\r\n", line + "a=sendrecv\r\n").encode()


def cryptos(message: object) -> list[str]:
    desc = body_sdp(message)  # type: ignore[arg-type]
    return [v or "" for v in desc.media[0].attributes("crypto")]


def proto(message: object) -> str:
    return body_sdp(message).media[0].proto  # type: ignore[arg-type]


def trunk_requires_srtp() -> Harness:
    return Harness(setup=make_setup(b_policy=LegPolicy(srtp="required")))


def test_plain_pbx_to_srtp_trunk_offers_savp_with_fresh_keys_strongest_first() -> None:
    h = trunk_requires_srtp()
    h.start()
    invite = h.b_invite().request
    assert proto(invite) == "RTP/SAVP"
    lines = cryptos(invite)
    assert lines[0].split()[1] == "AEAD_AES_256_GCM"  # strongest first (TRAPS #9)
    assert [int(v.split()[0]) for v in lines] == list(range(1, len(lines) + 1))


def test_srtp_answer_from_the_trunk_reaches_the_pbx_as_plain_rtp_and_keys_stay_per_leg() -> None:
    h = trunk_requires_srtp()
    h.start()
    h.ring()
    out = h.answered(body=secured(itsp_sdp(), ITSP_KEY, tag=SHA1_80_TAG))
    ok = one(responses(out, A, 200)).response
    assert proto(ok) == "RTP/AVP" and cryptos(ok) == []
    assert ITSP_KEY not in bytes(ok).decode()
    # The relay's view: leg B decrypts with the carrier's key, encrypts with ours of tag 3.
    (_, _), (ours_b, theirs_b) = h.call.media_views()
    plan = plan_leg(ours_b, theirs_b, "rfc4733")[0]
    assert plan is not None and plan.srtp is not None
    assert plan.srtp.suite == str(SUITE) and plan.srtp.inbound == ITSP_KEY
    ours = [v for v in cryptos(h.b_invite().request) if v.startswith(f"{SHA1_80_TAG} ")]
    assert ours and plan.srtp.outbound in ours[0]
    (ours_a, theirs_a), _ = h.call.media_views()
    plan_a = plan_leg(ours_a, theirs_a, "rfc4733")[0]
    assert plan_a is not None and plan_a.srtp is None


def test_plain_answer_to_a_required_srtp_offer_ends_both_legs() -> None:
    h = trunk_requires_srtp()
    h.start()
    h.ring()
    out = h.answered(body=itsp_sdp())  # RTP/AVP, no a=crypto: breaks our RTP/SAVP offer
    # The carrier broke the offer/answer: 502 to the PBX, BYE with Reason 488 to it.
    assert [r.response.status for r in responses(out, A) if r.response.status >= 300] == [502]
    bye = one(sends(out, B, "BYE")).request
    assert "488" in (bye.header("Reason") or "")


def test_an_answer_accepting_a_tag_with_another_suite_is_refused() -> None:
    # RFC 4568 §5.1.3: the answer's line must name the tag AND the suite of one we offered.
    h = trunk_requires_srtp()
    h.start()
    h.ring()
    out = h.answered(body=secured(itsp_sdp(), ITSP_KEY, tag=1))  # tag 1 is AEAD_AES_256_GCM
    assert [r.response.status for r in responses(out, A) if r.response.status >= 300] == [502]


def test_srtp_offer_from_a_pbx_whose_policy_is_off_is_refused_488() -> None:
    h = Harness(invite_body=secured(sdp(), PBX_KEY))
    out = h.start()
    assert one(responses(out, A, 488))
    assert sends(out, B) == []


def test_optional_pbx_srtp_offer_is_answered_with_our_own_key_and_not_passed_on() -> None:
    setup = make_setup(a_policy=LegPolicy(srtp="optional"))
    h = Harness(setup=setup, invite_body=secured(sdp(), PBX_KEY, tag=7))
    h.start()
    invite = h.b_invite().request
    assert proto(invite) == "RTP/AVP" and cryptos(invite) == []
    assert PBX_KEY not in bytes(invite).decode()
    h.ring()
    out = h.answered()
    ok = one(responses(out, A, 200)).response
    assert proto(ok) == "RTP/SAVP"
    (line,) = cryptos(ok)
    assert line.startswith(f"7 {SUITE} inline:") and PBX_KEY not in line  # same tag, our key


def test_a_re_offer_re_keys_the_srtp_leg() -> None:
    h = trunk_requires_srtp()
    h.start()
    h.ring()
    h.answered(body=secured(itsp_sdp(), ITSP_KEY, tag=SHA1_80_TAG))
    h.from_a(h.pbx.ack())
    first = cryptos(h.b_invite().request)
    out = h.from_a(h.pbx.request("INVITE", sdp(version=2)))
    reinvite = one(sends(out, B, "INVITE")).request
    again = cryptos(reinvite)
    assert proto(reinvite) == "RTP/SAVP" and again
    assert not set(v.split("inline:")[1] for v in again) & set(v.split("inline:")[1] for v in first)


def test_no_key_crosses_in_any_message() -> None:
    setup = make_setup(a_policy=LegPolicy(srtp="optional"), b_policy=LegPolicy(srtp="required"))
    h = Harness(setup=setup, invite_body=secured(sdp(), PBX_KEY))
    out = h.start()
    out += h.ring()
    out += h.answered(body=secured(itsp_sdp(), ITSP_KEY, tag=SHA1_80_TAG))
    assert one(responses(out, A, 200))
    for message in wire(h.log, B):
        assert PBX_KEY not in bytes(message).decode()
    for message in wire(h.log, A):
        assert ITSP_KEY not in bytes(message).decode()
