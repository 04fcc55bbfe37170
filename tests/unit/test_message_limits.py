"""sbc.sip.message.parse: the cap on header fields per message (400 'Too many headers')."""

from __future__ import annotations

import pytest

from sbc.sip.message import MAX_HEADERS, ParseError, error_response, parse

CORE = [
    "Via: SIP/2.0/UDP 127.0.0.10:5060;branch=z9hG4bK-limits",
    "Max-Forwards: 70",
    "From: <sip:alice@127.0.0.10>;tag=from-1",
    "To: <sip:bob@127.0.0.1>",
    "Call-ID: limits-1@127.0.0.10",
    "CSeq: 1 OPTIONS",
    "Content-Length: 0",
]


def message(fields: int, *, start: str = "OPTIONS sip:bob@127.0.0.1 SIP/2.0") -> bytes:
    """A message with exactly `fields` header fields (the core ones plus fillers)."""
    filler = [f"X-Filler-{n}: x" for n in range(fields - len(CORE))]
    return ("\r\n".join([start, *CORE, *filler]) + "\r\n\r\n").encode()


def test_default_cap_is_100_header_fields() -> None:
    assert MAX_HEADERS == 100
    parsed = parse(message(100))
    assert parsed.header("X-Filler-92") == "x"


def test_one_field_over_the_cap_is_a_400_too_many_headers() -> None:
    data = message(101)
    with pytest.raises(ParseError) as caught:
        parse(data)
    assert caught.value.reason == "Too many headers"
    assert caught.value.status == 400
    answer = error_response(data, caught.value)
    assert answer is not None
    assert (answer.status, answer.reason) == (400, "Too many headers")
    assert answer.call_id == "limits-1@127.0.0.10"


def test_a_response_over_the_cap_is_refused_and_not_answered() -> None:
    data = message(101, start="SIP/2.0 200 OK")
    with pytest.raises(ParseError, match="Too many headers") as caught:
        parse(data)
    assert error_response(data, caught.value) is None


def test_folded_lines_count_as_one_field() -> None:
    lines = message(100).split(b"\r\n")
    # Fold the first filler over three lines (RFC 3261 §7.3.1): still 100 fields.
    index = lines.index(b"X-Filler-0: x")
    lines[index : index + 1] = [b"X-Filler-0: x,", b" y,", b"\tz"]
    parsed = parse(b"\r\n".join(lines))
    assert parsed.header("X-Filler-0") == "x, y, z"


def test_cap_is_configurable_per_call() -> None:
    data = message(30)
    with pytest.raises(ParseError, match="Too many headers"):
        parse(data, max_headers=29)
    assert parse(data, max_headers=30).header("Call-ID") == "limits-1@127.0.0.10"
    assert parse(message(150), max_headers=200).header("X-Filler-142") == "x"
