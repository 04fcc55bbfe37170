"""sbc.inbound_auth: digest checks of PBX users (RFC 3261 §22, RFC 7616), driven with a
virtual clock and answered by our own client side (sbc.sip.challenge)."""

from __future__ import annotations

import ipaddress

from sbc.config import Pbx, PbxAuth, SocketAddress
from sbc.inbound_auth import Accepted, Challenge, InboundAuth, Refused
from sbc.sip import parse
from sbc.sip.challenge import ChallengeAnswerer
from sbc.sip.message import Request, make_response

PBX = Pbx(
    "main",
    "internal",
    SocketAddress("127.0.0.10", 5060),
    (ipaddress.ip_network("10.9.9.0/24"),),
    auth=PbxAuth("sbc.test", (("201", "pw-201"), ("202", "pw-202"))),
)


def request(method: str = "INVITE", *headers: str) -> Request:
    lines = [
        f"{method} sip:15551234567@127.0.0.1:5060 SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.10:5070;branch=z9hG4bK-1",
        "From: <sip:201@127.0.0.10>;tag=a",
        "To: <sip:15551234567@127.0.0.1>",
        "Call-ID: c1",
        f"CSeq: 1 {method}",
        *headers,
        "Content-Length: 0",
    ]
    message = parse(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def answered(auth: InboundAuth, user: str, password: str, now: float = 0.0) -> Request:
    """The request again with credentials computed from the challenge it got."""
    first = request()
    challenge = auth.check(first, PBX, now)
    assert isinstance(challenge, Challenge) and challenge.status == 407
    response = make_response(first, 407, headers=list(challenge.headers))
    header = ChallengeAnswerer(user, password).answer(first, response)
    assert header is not None and header[0] == "Proxy-Authorization"
    return request("INVITE", f"{header[0]}: {header[1]}")


def test_invite_without_credentials_is_challenged_407_strongest_first_rfc8760() -> None:
    outcome = InboundAuth((PBX,), b"k" * 32).check(request(), PBX, 0.0)
    assert isinstance(outcome, Challenge) and outcome.status == 407
    names = [name for name, _ in outcome.headers]
    assert set(names) == {"Proxy-Authenticate"}
    assert "SHA-256" in outcome.headers[0][1] and "MD5" in outcome.headers[-1][1]


def test_register_is_challenged_401_rfc3261_22_1() -> None:
    outcome = InboundAuth((PBX,), b"k" * 32).check(request("REGISTER"), PBX, 0.0)
    assert isinstance(outcome, Challenge) and outcome.status == 401
    assert outcome.headers[0][0] == "WWW-Authenticate"


def test_right_password_is_accepted_and_the_same_answer_cannot_be_replayed() -> None:
    auth = InboundAuth((PBX,), b"k" * 32)
    again = answered(auth, "201", "pw-201")
    assert auth.check(again, PBX, 1.0) == Accepted("201")
    replay = auth.check(again, PBX, 2.0)
    assert isinstance(replay, Refused) and replay.status == 403


def test_wrong_password_and_unknown_user_are_refused_403_and_counted() -> None:
    auth = InboundAuth((PBX,), b"k" * 32)
    wrong = auth.check(answered(auth, "201", "guess"), PBX, 1.0)
    assert isinstance(wrong, Refused) and wrong.status == 403 and wrong.username == "201"
    stranger = auth.check(answered(auth, "999", "pw"), PBX, 1.0)
    assert isinstance(stranger, Refused) and stranger.status == 403
    assert auth.failures == 2
    assert "guess" not in repr(wrong) and "pw-201" not in repr(PBX)


def test_expired_nonce_gets_a_stale_challenge_not_a_failure_rfc7616_3_3() -> None:
    auth = InboundAuth((PBX,), b"k" * 32)
    late = auth.check(answered(auth, "201", "pw-201", now=0.0), PBX, 301.0)
    assert isinstance(late, Challenge) and "stale=true" in late.headers[0][1].lower()
    assert auth.failures == 0


def test_credentials_for_another_host_are_malformed_400() -> None:
    auth = InboundAuth((PBX,), b"k" * 32)
    good = answered(auth, "201", "pw-201")
    # The same credentials on a request to another host (RFC 3261 §22.4: digest-uri must
    # name the Request-URI).
    other = parse(
        bytes(good).replace(b"sip:15551234567@127.0.0.1:5060 SIP", b"sip:1555@192.0.2.1 SIP")
    )
    assert isinstance(other, Request)
    outcome = auth.check(other, PBX, 1.0)
    assert isinstance(outcome, Refused) and outcome.status == 400
