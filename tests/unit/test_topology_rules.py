"""sbc.topology: the deny-by-default rules for what crosses from one leg to the other."""

from __future__ import annotations

import pytest

from sbc.sip import parse
from sbc.sip.message import Request, Response
from sbc.topology import asserted_identity, crossing_headers, reason_header, sanitized_reason


def request(*headers: str, method: str = "INVITE") -> Request:
    head = [
        f"{method} sip:100@198.51.100.1 SIP/2.0",
        "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-1",
        "From: <sip:201@10.0.0.5>;tag=a",
        "To: <sip:100@198.51.100.1>",
        "Call-ID: internal-call@10.0.0.5",
        f"CSeq: 1 {method}",
        *headers,
        "Content-Length: 0",
    ]
    message = parse(("\r\n".join(head) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def test_only_method_headers_and_allow_listed_ones_cross() -> None:
    info = request(
        "Info-Package: dtmf",
        "X-Internal: secret",
        "User-Agent: PBX/1",
        "Record-Route: <sip:10.0.0.9;lr>",
        "Diversion: <sip:200@10.0.0.5>",
        method="INFO",
    )
    assert crossing_headers(info, "INFO", ()) == [("Info-Package", "dtmf")]
    assert crossing_headers(info, "INFO", ("diversion",)) == [
        ("Info-Package", "dtmf"),
        ("Diversion", "<sip:200@10.0.0.5>"),
    ]


def test_compact_header_names_match_their_long_form() -> None:
    notify = request("o: refer", "Subscription-State: active", method="NOTIFY")
    assert [name for name, _ in crossing_headers(notify, "NOTIFY", ())] == [
        "o",
        "Subscription-State",
    ]


def test_nothing_crosses_for_a_method_without_rules() -> None:
    assert crossing_headers(request("X-Foo: 1", "Subject: hi"), "INVITE", ()) == []


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("Busy Here", "Busy Here"),
        ("Busy at sip:gw3@10.1.2.3", ""),  # names a host
        ("Overloaded [10.1.2.3]", ""),
        ("x" * 65, ""),
        ("Besetzt \u00e4", ""),  # not ASCII
    ],
)
def test_reason_phrases_naming_the_far_side_are_dropped(reason: str, expected: str) -> None:
    assert sanitized_reason(Response(486, reason)) == expected


def test_reason_header_is_well_formed_whatever_the_text() -> None:
    assert reason_header("SIP", 408, 'No "ACK"\r\n') == ("Reason", 'SIP;cause=408;text="No ACK"')


def test_asserted_identity_is_rehomed_on_our_address_rfc3325() -> None:
    invite = request(
        'P-Asserted-Identity: "Alice, Sales" <sip:+4930123@10.0.0.5:5060;user=phone;x=y>',
        "P-Asserted-Identity: <tel:+4930123>",
        "Privacy: id",
    )
    assert asserted_identity(invite, "pass", "203.0.113.5") == [
        ("P-Asserted-Identity", '"Alice, Sales" <sip:+4930123@203.0.113.5;user=phone>'),
        ("P-Asserted-Identity", "<tel:+4930123>"),
        ("Privacy", "id"),
    ]


def test_asserted_identity_stripped_by_policy_and_garbage_dropped() -> None:
    invite = request("P-Asserted-Identity: <sip:201@10.0.0.5>", "Privacy: id")
    assert asserted_identity(invite, "strip", "203.0.113.5") == []
    broken = request("P-Asserted-Identity: <not a uri", "Privacy: id")
    assert asserted_identity(broken, "pass", "203.0.113.5") == []
