"""sbc.sip.message: parsing, header access, editing, serialization, check(), responses."""

from __future__ import annotations

import pytest

from sbc.sip.headers import Via
from sbc.sip.message import (
    CSeq,
    ParseError,
    Request,
    Response,
    error_response,
    header_key,
    make_response,
    parse,
)

VIA1 = "SIP/2.0/UDP 127.0.0.10:5060;branch=z9hG4bK-one"
VIA2 = "SIP/2.0/TCP 10.0.0.7:5070;branch=z9hG4bK-two"


def raw(
    method: str = "INVITE",
    *,
    headers: list[str] | None = None,
    extra: tuple[str, ...] = (),
    body: bytes = b"",
    start: str | None = None,
) -> bytes:
    """A request (or a response when `start` is a status line) built line by line.

    `headers` replaces the default header lines entirely; `extra` is appended to them.
    """
    if headers is None:
        headers = [
            f"Via: {VIA1}",
            "Max-Forwards: 70",
            'From: "Alice" <sip:alice@127.0.0.10>;tag=from-1',
            "To: <sip:bob@127.0.0.1>",
            "Call-ID: call-1@127.0.0.10",
            f"CSeq: 17 {method}",
            "Contact: <sip:alice@127.0.0.10:5060>",
            f"Content-Length: {len(body)}",
        ]
    first = start if start is not None else f"{method} sip:bob@127.0.0.1 SIP/2.0"
    return ("\r\n".join([first, *headers, *extra]) + "\r\n\r\n").encode() + body


def parsed(data: bytes) -> Request:
    msg = parse(data)
    assert isinstance(msg, Request)
    return msg


# ----- start lines ----------------------------------------------------------------------


def test_parse_request_line_fields() -> None:
    msg = parsed(raw("OPTIONS"))
    assert msg.method == "OPTIONS"
    assert msg.uri == "sip:bob@127.0.0.1"
    assert msg.ruri.host == "127.0.0.1"  # type: ignore[union-attr]
    assert msg.ruri.user == "bob"  # type: ignore[union-attr]


def test_parse_response_status_line_keeps_reason_with_spaces() -> None:
    data = raw(start="SIP/2.0 486 Busy Here Right Now", headers=[f"Via: {VIA1}", "CSeq: 1 INVITE"])
    msg = parse(data)
    assert isinstance(msg, Response)
    assert msg.status == 486
    assert msg.reason == "Busy Here Right Now"


def test_parse_response_with_empty_reason() -> None:
    msg = parse(raw(start="SIP/2.0 200 ", headers=[f"Via: {VIA1}"]))
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason) == (200, "")


@pytest.mark.parametrize("code", ["20", "2000", "abc", "099"])
def test_status_code_must_be_three_digits_rfc3261_25_1(code: str) -> None:
    with pytest.raises(ParseError) as exc:
        parse(raw(start=f"SIP/2.0 {code} OK", headers=[f"Via: {VIA1}"]))
    assert exc.value.status == 400


@pytest.mark.parametrize(
    "line",
    [
        "INVITE  sip:bob@127.0.0.1 SIP/2.0",  # two spaces
        "INVITE sip:bob@127.0.0.1",  # no version
        "INVITE sip:bob@127.0.0.1 SIP/2.0 extra",
        "INVITE sip:bob@127.0.0.1 HTTP/1.1",
        "IN<VITE sip:bob@127.0.0.1 SIP/2.0",  # method not a token
    ],
)
def test_malformed_request_line_is_400_rfc3261_7_1(line: str) -> None:
    with pytest.raises(ParseError) as exc:
        parse(raw(start=line))
    assert exc.value.status == 400


def test_request_uri_with_headers_is_rejected_rfc3261_19_1_1() -> None:
    with pytest.raises(ParseError, match="headers"):
        parse(raw(start="INVITE sip:bob@127.0.0.1?Subject=x SIP/2.0"))


def test_question_mark_in_user_part_is_not_a_header() -> None:
    msg = parsed(raw(start="INVITE sip:b?b@127.0.0.1 SIP/2.0"))
    assert msg.ruri.user == "b?b"  # type: ignore[union-attr]


def test_unknown_sip_version_in_request_is_505() -> None:
    with pytest.raises(ParseError) as exc:
        parse(raw(start="INVITE sip:bob@127.0.0.1 SIP/3.0"))
    assert exc.value.status == 505


def test_unknown_sip_version_in_response_is_505() -> None:
    with pytest.raises(ParseError) as exc:
        parse(raw(start="SIP/3.0 200 OK", headers=[f"Via: {VIA1}"]))
    assert exc.value.status == 505


def test_version_is_case_insensitive_rfc3261_7_1() -> None:
    msg = parsed(raw(start="INVITE sip:bob@127.0.0.1 sip/2.0"))
    assert msg.method == "INVITE"


def test_unknown_method_token_is_parsed() -> None:
    msg = parsed(raw("NEWMETHOD"))
    assert msg.method == "NEWMETHOD"
    assert msg.cseq == CSeq(17, "NEWMETHOD")


def test_no_empty_line_after_headers_is_an_error() -> None:
    data = raw().rstrip(b"\r\n")
    with pytest.raises(ParseError, match="empty line"):
        parse(data)


def test_leading_crlfs_are_ignored_rfc3261_7_5() -> None:
    data = raw()
    msg = parsed(b"\r\n\r\n\r\n" + data)
    assert msg.method == "INVITE"
    assert bytes(msg) == data


# ----- header names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("compact", "full"),
    [
        ("i", "Call-ID"),
        ("m", "Contact"),
        ("v", "Via"),
        ("f", "From"),
        ("t", "To"),
        ("l", "Content-Length"),
        ("c", "Content-Type"),
        ("k", "Supported"),
        ("e", "Content-Encoding"),
        ("s", "Subject"),
        ("o", "Event"),
        ("r", "Refer-To"),
        ("u", "Allow-Events"),
        ("x", "Session-Expires"),
    ],
)
def test_compact_forms_rfc3261_7_3_3(compact: str, full: str) -> None:
    assert header_key(compact) == header_key(full) == full.lower()
    assert header_key(compact.upper()) == full.lower()


def test_message_with_only_compact_names_parses_and_checks() -> None:
    body = b"v=0\r\n"
    data = raw(
        headers=[
            f"v: {VIA1}",
            "Max-Forwards: 70",
            "f: <sip:alice@127.0.0.10>;tag=a",
            "t: <sip:bob@127.0.0.1>",
            "i: compact@127.0.0.10",
            "CSeq: 1 INVITE",
            "m: <sip:alice@127.0.0.10>",
            "c: application/sdp",
            "k: 100rel, timer",
            f"l: {len(body)}",
        ],
        body=body,
    )
    msg = parsed(data)
    msg.check()
    assert msg.call_id == "compact@127.0.0.10"
    assert msg.from_tag == "a"
    assert msg.to.uri == "sip:bob@127.0.0.1"
    assert msg.via.branch == "z9hG4bK-one"
    assert msg.content_type == "application/sdp"
    assert msg.option_tags("Supported") == ["100rel", "timer"]
    assert msg.body == body
    assert bytes(msg) == data


def test_header_names_are_case_insensitive() -> None:
    msg = parsed(raw(extra=("sUbJeCt: lunch",)))
    assert msg.header("SUBJECT") == "lunch"
    assert msg.header("subject") == "lunch"
    assert msg.header("s") == "lunch"
    assert msg.header("CALL-ID") == msg.header("i") == "call-1@127.0.0.10"


def test_space_before_colon_in_header_name() -> None:
    msg = parsed(raw(extra=("Subject  :  spaced",)))
    assert msg.header("subject") == "spaced"


def test_header_line_without_colon_is_rejected() -> None:
    with pytest.raises(ParseError, match="colon"):
        parse(raw(extra=("NoColonHere",)))


def test_header_line_without_colon_is_rejected_even_for_a_known_name_rfc3261_7_3() -> None:
    parse(raw(extra=("Supported: timer",)))  # makes "Supported" a known (cached) name
    with pytest.raises(ParseError, match="colon"):
        parse(raw(extra=("Supported",)))


def test_header_name_starting_with_whitespace_in_first_line_is_rejected() -> None:
    data = raw().replace(b"\r\nVia:", b"\r\n Via:", 1)
    with pytest.raises(ParseError):
        parse(data)


# ----- folding --------------------------------------------------------------------------


def test_folded_header_is_unfolded_to_one_space_rfc3261_7_3_1() -> None:
    data = raw(extra=("Subject: I know you're there,\r\n   pick up\r\n\tthe phone",))
    msg = parsed(data)
    assert msg.header("subject") == "I know you're there, pick up the phone"
    assert msg.header_values("Subject") == ["I know you're there, pick up the phone"]
    assert bytes(msg) == data  # folding kept when untouched


def test_folded_core_header_is_parsed() -> None:
    data = raw().replace(b"To: <sip:bob", b"To:\r\n <sip:bob", 1)
    msg = parsed(data)
    msg.check()
    assert msg.to.uri == "sip:bob@127.0.0.1"


def test_folded_line_survives_byte_for_byte_when_another_header_changes() -> None:
    folded = "Subject: first\r\n second"
    msg = parsed(raw(extra=(folded,)))
    msg.set_header("Max-Forwards", "69")
    out = bytes(msg)
    assert folded.encode() in out
    assert b"Max-Forwards: 69\r\n" in out


def test_folded_via_with_two_values() -> None:
    data = raw(headers=[f"Via: {VIA1},\r\n {VIA2}", "CSeq: 1 INVITE"])
    msg = parsed(data)
    assert [v.branch for v in msg.vias] == ["z9hG4bK-one", "z9hG4bK-two"]


# ----- Content-Length framing (datagrams, RFC 3261 §18.3) ------------------------------


def test_content_length_frames_body_trailing_bytes_ignored_rfc3261_18_3() -> None:
    data = raw(body=b"abc")
    msg = parsed(data + b"garbage after")
    assert msg.body == b"abc"
    assert bytes(msg) == data


def test_content_length_larger_than_data_is_an_error() -> None:
    data = raw(body=b"abc").replace(b"Content-Length: 3", b"Content-Length: 4")
    with pytest.raises(ParseError, match="Content-Length") as exc:
        parse(data)
    assert exc.value.status == 400


def test_no_content_length_body_is_the_rest() -> None:
    data = raw(headers=[f"Via: {VIA1}", "CSeq: 1 INVITE"], body=b"all of\r\nthis")
    msg = parsed(data)
    assert msg.body == b"all of\r\nthis"
    assert bytes(msg) == data


def test_content_length_zero_with_trailing_bytes() -> None:
    msg = parsed(raw() + b"\r\n\r\n")
    assert msg.body == b""


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "", "99999999999999"])
def test_bad_content_length_is_an_error(value: str) -> None:
    data = raw().replace(b"Content-Length: 0", f"Content-Length: {value}".encode())
    with pytest.raises(ParseError, match="Content-Length"):
        parse(data)


def test_two_content_length_headers_are_an_error() -> None:
    with pytest.raises(ParseError, match="more than one Content-Length"):
        parse(raw(extra=("l: 0",)))


def test_content_length_with_whitespace() -> None:
    data = raw(body=b"xy").replace(b"Content-Length: 2", b"Content-Length:   2  ")
    assert parsed(data).body == b"xy"


# ----- serialization --------------------------------------------------------------------


def test_untouched_message_serializes_byte_for_byte() -> None:
    data = raw(
        extra=("X-Odd :   spacing ;and=stuff  ", "x-lower: v"),
        body=b"",
    )
    msg = parsed(data)
    # reading the parsed headers changes nothing
    _ = (msg.vias, msg.from_, msg.to, msg.cseq, msg.call_id, msg.contacts)
    assert bytes(msg) == data


def test_untouched_response_serializes_byte_for_byte() -> None:
    data = raw(start="SIP/2.0 180 Ringing", headers=[f"Via: {VIA1}", "CSeq: 1 INVITE", "l: 0"])
    assert bytes(parse(data)) == data


def test_non_utf8_bytes_survive_round_trip() -> None:
    body = b"\xff\x00\xfe binary"
    # a header holding raw 0xE9 / 0xFF bytes (not UTF-8)
    data = raw(body=body).replace(b"\r\n\r\n", b"\r\nX-Latin: caf\xe9 \xff\r\n\r\n", 1)
    msg = parsed(data)
    assert bytes(msg) == data
    value = msg.header("x-latin")
    assert value is not None
    assert value.encode("utf-8", "surrogateescape") == b"caf\xe9 \xff"
    msg.set_header("Max-Forwards", "10")  # forces a rebuild
    out = bytes(msg)
    assert b"X-Latin: caf\xe9 \xff\r\n" in out
    assert out.endswith(b"\r\n\r\n" + body)
    again = parsed(out)
    assert again.body == body
    assert again.header("x-latin") == value


def test_uri_setter_rebuilds_start_line() -> None:
    msg = parsed(raw())
    ruri_before = msg.ruri
    msg.uri = "sip:carol@127.0.0.20:5080"
    assert bytes(msg).startswith(b"INVITE sip:carol@127.0.0.20:5080 SIP/2.0\r\n")
    assert msg.ruri.host == "127.0.0.20"  # type: ignore[union-attr]
    assert msg.ruri != ruri_before


def test_response_start_line_after_status_change() -> None:
    resp = Response(180, None, [("Via", VIA1)])
    resp.status, resp.reason = 183, "Session Progress"
    resp.set_header("X-A", "1")
    assert bytes(resp).startswith(b"SIP/2.0 183 Session Progress\r\n")


# ----- header access --------------------------------------------------------------------


def test_header_returns_first_value_and_none_when_absent() -> None:
    msg = parsed(raw(extra=("Route: <sip:p1>", "Route: <sip:p2>")))
    assert msg.header("Route") == "<sip:p1>"
    assert msg.header("Record-Route") is None
    assert msg.header_values("Record-Route") == []


def test_header_values_are_per_line_not_comma_split() -> None:
    msg = parsed(raw(extra=("Route: <sip:p1>, <sip:p2>", "Route: <sip:p3>")))
    assert msg.header_values("route") == ["<sip:p1>, <sip:p2>", "<sip:p3>"]
    assert [n.uri for n in msg.name_addrs("Route")] == ["sip:p1", "sip:p2", "sip:p3"]


def test_has_header() -> None:
    msg = parsed(raw(extra=("k: timer",)))
    assert msg.has_header("Supported")
    assert msg.has_header("K")
    assert not msg.has_header("Require")


def test_headers_lists_names_as_written() -> None:
    msg = parsed(raw(headers=[f"v: {VIA1}", "CSeq: 1 INVITE", "x-Custom :  y "]))
    assert msg.headers() == [("v", VIA1), ("CSeq", "1 INVITE"), ("x-Custom", "y")]


def test_empty_header_value() -> None:
    msg = parsed(raw(extra=("Subject:",)))
    assert msg.header("Subject") == ""
    assert msg.has_header("subject")


def test_max_forwards_and_content_type_properties() -> None:
    msg = parsed(raw(extra=("Content-Type: Application/SDP ; charset=utf-8",)))
    assert msg.max_forwards == 70
    assert msg.content_type == "application/sdp"
    bare = parsed(raw(headers=[f"Via: {VIA1}", "CSeq: 1 INVITE"]))
    assert bare.max_forwards is None
    assert bare.content_type is None


def test_contacts_wildcard_and_absent() -> None:
    assert parsed(raw("REGISTER", extra=("Contact: *",))).contacts is None
    assert parsed(raw(headers=[f"Via: {VIA1}"])).contacts == []
    many = parsed(raw(extra=('m: "Doe, J" <sip:j@127.0.0.11>, <sip:k@127.0.0.12>',)))
    contacts = many.contacts
    assert contacts is not None
    assert [c.uri for c in contacts] == [
        "sip:alice@127.0.0.10:5060",
        "sip:j@127.0.0.11",
        "sip:k@127.0.0.12",
    ]


# ----- editing --------------------------------------------------------------------------


def test_set_header_replaces_all_lines_at_first_position() -> None:
    msg = parsed(raw(extra=("Route: <sip:p1>", "X-Mid: m", "Route: <sip:p2>")))
    msg.set_header("Route", "<sip:only>")
    assert msg.header_values("route") == ["<sip:only>"]
    names = [n for n, _ in msg.headers()]
    assert names.index("Route") < names.index("X-Mid")
    assert b"Route: <sip:only>\r\nX-Mid: m\r\n" in bytes(msg)


def test_set_header_absent_appends() -> None:
    msg = parsed(raw())
    msg.set_header("Subject", "new")
    assert msg.headers()[-1] == ("Subject", "new")
    assert parsed(bytes(msg)).header("subject") == "new"


def test_set_header_replaces_compact_form_lines() -> None:
    msg = parsed(raw(headers=[f"Via: {VIA1}", "CSeq: 1 INVITE", "i: old", "l: 0"]))
    msg.set_header("Call-ID", "new-id")
    assert msg.call_id == "new-id"
    assert b"i: old" not in bytes(msg)
    assert b"Call-ID: new-id\r\n" in bytes(msg)


def test_set_header_invalidates_parsed_core_headers() -> None:
    msg = parsed(raw())
    assert msg.to.tag is None
    assert msg.cseq.number == 17
    msg.set_header("To", "<sip:bob@127.0.0.1>;tag=t9")
    msg.set_header("CSeq", "18 INVITE")
    msg.set_header("From", "<sip:x@127.0.0.10>;tag=f9")
    assert msg.to_tag == "t9"
    assert msg.from_tag == "f9"
    assert msg.cseq == CSeq(18, "INVITE")


def test_add_header_first_inserts_before_existing_via() -> None:
    msg = parsed(raw(extra=("X-After: 1",)))
    assert msg.via.branch == "z9hG4bK-one"
    msg.add_header("Via", VIA2, first=True)
    assert [v.branch for v in msg.vias] == ["z9hG4bK-two", "z9hG4bK-one"]
    assert msg.via.transport == "TCP"
    out = bytes(msg)
    assert f"Via: {VIA2}\r\nVia: {VIA1}\r\n".encode() in out
    assert parsed(out).via.branch == "z9hG4bK-two"


def test_add_header_first_when_absent_goes_to_the_top() -> None:
    msg = parsed(raw())
    msg.add_header("Record-Route", "<sip:sbc;lr>", first=True)
    assert msg.headers()[0] == ("Record-Route", "<sip:sbc;lr>")


def test_add_header_appends() -> None:
    msg = parsed(raw(extra=("Route: <sip:p1>",)))
    msg.add_header("Route", "<sip:p2>")
    assert msg.header_values("Route") == ["<sip:p1>", "<sip:p2>"]
    assert msg.headers()[-1] == ("Route", "<sip:p2>")


def test_remove_header_counts_and_removes_compact_lines() -> None:
    msg = parsed(raw(extra=("Supported: a", "k: b", "X-Keep: 1")))
    assert msg.remove_header("supported") == 2
    assert not msg.has_header("k")
    assert msg.remove_header("Supported") == 0
    out = bytes(msg)
    assert b"Supported" not in out and b"k: b" not in out
    assert b"X-Keep: 1\r\n" in out


def test_remove_header_invalidates_parsed_value() -> None:
    msg = parsed(raw())
    assert msg.from_tag == "from-1"
    msg.remove_header("From")
    with pytest.raises(ParseError, match="From"):
        _ = msg.from_


def test_remove_via_then_via_raises() -> None:
    msg = parsed(raw())
    assert msg.via.branch
    msg.remove_header("v")
    assert msg.vias == []
    with pytest.raises(ParseError, match="Via"):
        _ = msg.via


def test_body_setter_updates_content_length() -> None:
    msg = parsed(raw(body=b"abc"))
    msg.body = b"hello world"
    assert msg.header("Content-Length") == "11"
    out = bytes(msg)
    assert out.endswith(b"\r\n\r\nhello world")
    again = parsed(out)
    assert again.body == b"hello world"
    msg.body = b""
    assert parsed(bytes(msg)).body == b""


def test_body_setter_replaces_compact_content_length() -> None:
    msg = parsed(raw(headers=[f"Via: {VIA1}", "CSeq: 1 INVITE", "l: 3"], body=b"abc"))
    msg.body = b"abcdef"
    out = bytes(msg)
    assert b"l: 3" not in out
    assert parsed(out).body == b"abcdef"


def test_missing_content_length_is_added_on_rebuild() -> None:
    msg = parsed(raw(body=b"xyz"))
    msg.remove_header("Content-Length")
    out = bytes(msg)
    assert b"Content-Length: 3\r\n" in out
    assert parsed(out).body == b"xyz"


def test_replace_top_via_splits_comma_separated_line() -> None:
    data = raw(headers=[f"Via: {VIA1}, {VIA2} ,SIP/2.0/UDP h3;branch=z9hG4bK-3", "CSeq: 1 INVITE"])
    msg = parsed(data)
    top = msg.via
    msg.replace_top_via(
        Via(top.transport, top.host, top.port, {**top.params, "received": "192.0.2.1"})
    )
    assert [v.branch for v in msg.vias] == ["z9hG4bK-one", "z9hG4bK-two", "z9hG4bK-3"]
    assert msg.via.received == "192.0.2.1"
    again = parsed(bytes(msg))
    assert [str(v) for v in again.vias] == [str(v) for v in msg.vias]
    assert again.vias[0].received == "192.0.2.1"
    assert again.vias[1].received is None
    assert again.header_values("via")[0] == f"{VIA1};received=192.0.2.1"


def test_replace_top_via_single_value_keeps_other_via_lines() -> None:
    msg = parsed(raw(headers=[f"Via: {VIA1}", f"Via: {VIA2}", "CSeq: 1 INVITE"]))
    _ = msg.vias
    msg.replace_top_via(Via("UDP", "192.0.2.9", 5062, {"branch": "z9hG4bK-new"}))
    assert msg.header_values("via") == ["SIP/2.0/UDP 192.0.2.9:5062;branch=z9hG4bK-new", VIA2]
    assert [v.branch for v in parsed(bytes(msg)).vias] == ["z9hG4bK-new", "z9hG4bK-two"]


def test_replace_top_via_without_via_raises() -> None:
    msg = parsed(raw(headers=["CSeq: 1 INVITE"]))
    with pytest.raises(ParseError, match="Via"):
        msg.replace_top_via(Via("UDP", "h"))


# ----- constructors ---------------------------------------------------------------------


def test_request_constructor_adds_content_length() -> None:
    req = Request("MESSAGE", "sip:bob@127.0.0.1", [("Via", VIA1), ("CSeq", "1 MESSAGE")], b"hi!")
    out = bytes(req)
    assert out.startswith(b"MESSAGE sip:bob@127.0.0.1 SIP/2.0\r\n")
    assert b"Content-Length: 3\r\n\r\nhi!" in out
    assert parsed(out).body == b"hi!"


def test_request_constructor_keeps_given_content_length() -> None:
    req = Request("OPTIONS", "sip:x", [("Via", VIA1), ("l", "0")])
    assert req.header_values("content-length") == ["0"]
    assert bytes(req).count(b"Content-Length") == 0


def test_response_constructor_defaults() -> None:
    resp = Response(404, None, [("Via", VIA1)])
    assert resp.reason == "Not Found"
    assert (
        bytes(resp) == f"SIP/2.0 404 Not Found\r\nVia: {VIA1}\r\nContent-Length: 0\r\n\r\n".encode()
    )
    assert Response(499).reason == "Unknown"
    assert Response(200, "Fine").reason == "Fine"


# ----- check() --------------------------------------------------------------------------


def test_check_accepts_a_good_request_and_response() -> None:
    parsed(raw()).check()
    parse(raw(start="SIP/2.0 200 OK", headers=[
        f"Via: {VIA1}", "From: <sip:a@h>;tag=1", "To: <sip:b@h>;tag=2",
        "Call-ID: x", "CSeq: 1 INVITE", "Content-Length: 0",
    ])).check()  # fmt: skip


def test_check_names_every_missing_mandatory_header_rfc3261_8_1_1() -> None:
    msg = parsed(raw(headers=[f"Via: {VIA1}", "From: <sip:a@h>;tag=1", "CSeq: 17 INVITE"]))
    with pytest.raises(ParseError) as exc:
        msg.check()
    text = str(exc.value)
    assert "To" in text and "Call-ID" in text
    assert "From" not in text and "CSeq" not in text
    assert exc.value.status == 400


@pytest.mark.parametrize("missing", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_check_each_mandatory_header(missing: str) -> None:
    msg = parsed(raw())
    msg.remove_header(missing)
    with pytest.raises(ParseError, match=missing):
        msg.check()


@pytest.mark.parametrize(
    "dup",
    [
        "From: <sip:x@h>;tag=2",
        "t: <sip:y@h>",
        "i: other",
        "CSeq: 18 INVITE",
        "Max-Forwards: 5",
        "c: text/plain",
    ],
)
def test_check_rejects_duplicate_single_valued_headers_rfc3261_7_3_1(dup: str) -> None:
    extra = (dup, "Content-Type: application/sdp") if dup.startswith("c:") else (dup,)
    msg = parsed(raw(extra=extra))
    with pytest.raises(ParseError, match="more than one"):
        msg.check()


def test_check_allows_repeated_multi_valued_headers() -> None:
    msg = parsed(raw(extra=(f"Via: {VIA2}", "Route: <sip:a>", "Route: <sip:b>", "k: a", "k: b")))
    msg.check()
    assert len(msg.vias) == 2


def test_check_cseq_method_must_match_request_method_rfc3261_8_1_1_5() -> None:
    msg = parsed(raw().replace(b"CSeq: 17 INVITE", b"CSeq: 17 OPTIONS"))
    with pytest.raises(ParseError, match="CSeq method"):
        msg.check()


def test_check_cseq_method_is_case_sensitive() -> None:
    msg = parsed(raw().replace(b"CSeq: 17 INVITE", b"CSeq: 17 invite"))
    with pytest.raises(ParseError, match="CSeq"):
        msg.check()


def test_check_cseq_below_2_31_rfc3261_8_1_1_5() -> None:
    ok = parsed(raw().replace(b"CSeq: 17", f"CSeq: {2**31 - 1}".encode()))
    ok.check()
    assert ok.cseq.number == 2**31 - 1
    bad = parsed(raw().replace(b"CSeq: 17", f"CSeq: {2**31}".encode()))
    with pytest.raises(ParseError, match="CSeq"):
        bad.check()


def test_check_max_forwards_range() -> None:
    parsed(raw().replace(b"Max-Forwards: 70", b"Max-Forwards: 255")).check()
    parsed(raw().replace(b"Max-Forwards: 70", b"Max-Forwards: 0")).check()
    for bad in (b"256", b"-1", b"ten", b""):
        msg = parsed(raw().replace(b"Max-Forwards: 70", b"Max-Forwards: " + bad))
        with pytest.raises(ParseError, match="Max-Forwards"):
            msg.check()


@pytest.mark.parametrize("call_id", ["", "has space", "tab\there"])
def test_check_bad_call_id(call_id: str) -> None:
    msg = parsed(raw().replace(b"Call-ID: call-1@127.0.0.10", f"Call-ID: {call_id}".encode()))
    with pytest.raises(ParseError, match="Call-ID"):
        msg.check()


def test_check_bad_via() -> None:
    msg = parsed(raw().replace(VIA1.encode(), b"SIP/2.0/UDP"))
    with pytest.raises(ParseError, match="Via"):
        msg.check()


def test_check_bad_from() -> None:
    msg = parsed(raw().replace(b'"Alice" <sip:alice', b'"Alice <sip:alice'))
    with pytest.raises(ParseError, match="From"):
        msg.check()


# ----- make_response (RFC 3261 §8.2.6) ---------------------------------------------------


def invite_with_two_via_lines(*extra: str) -> Request:
    return parsed(
        raw(
            headers=[
                f"Via: {VIA1}, SIP/2.0/UDP 10.9.9.9;branch=z9hG4bK-mid",
                f"v: {VIA2}",
                "Max-Forwards: 70",
                'From: "Alice" <sip:alice@127.0.0.10>;tag=from-1',
                "t: Bob <sip:bob@127.0.0.1>",
                "Call-ID: call-1@127.0.0.10",
                "CSeq: 17 INVITE",
                "Contact: <sip:alice@127.0.0.10:5060>",
                "Record-Route: <sip:rr@127.0.0.30;lr>",
                *extra,
                "Content-Length: 0",
            ]
        )
    )


def test_make_response_copies_vias_in_order_from_callid_cseq_rfc3261_8_2_6_2() -> None:
    req = invite_with_two_via_lines()
    resp = make_response(req, 486)
    again = parse(bytes(resp))
    assert isinstance(again, Response)
    assert (again.status, again.reason) == (486, "Busy Here")
    assert [str(v) for v in again.vias] == [str(v) for v in req.vias]
    assert len(again.vias) == 3
    assert again.header("From") == req.header("From")
    assert again.call_id == req.call_id
    assert again.cseq == req.cseq
    assert again.to.uri == "sip:bob@127.0.0.1"
    again.check()


def test_make_response_does_not_copy_other_headers() -> None:
    resp = make_response(invite_with_two_via_lines("Subject: hi"), 200, to_tag="t")
    for name in ("Max-Forwards", "Contact", "Subject", "Record-Route"):
        assert not resp.has_header(name), name


def test_make_response_adds_to_tag_when_absent() -> None:
    resp = make_response(invite_with_two_via_lines(), 180, to_tag="uas-tag")
    assert resp.to_tag == "uas-tag"
    again = parse(bytes(resp))
    assert again.to_tag == "uas-tag"
    assert again.to.display == "Bob"


def test_make_response_without_to_tag_argument_leaves_to_alone() -> None:
    req = invite_with_two_via_lines()
    resp = make_response(req, 100)
    assert resp.to_tag is None
    assert resp.header("To") == req.header("To")


def test_make_response_keeps_existing_to_tag_rfc3261_8_2_6_2() -> None:
    req = parsed(raw().replace(b"To: <sip:bob@127.0.0.1>", b"To: <sip:bob@127.0.0.1>;tag=dlg"))
    resp = make_response(req, 200, to_tag="other")
    assert resp.to_tag == "dlg"
    assert bytes(resp).count(b"tag=") == 2  # From and To, no second To tag
    assert b"other" not in bytes(resp)


def test_make_response_extra_headers_body_and_content_length() -> None:
    body = b"v=0\r\n"
    resp = make_response(
        invite_with_two_via_lines(),
        200,
        "Fine",
        to_tag="t",
        headers=[("Contact", "<sip:sbc@127.0.0.1>"), ("Content-Type", "application/sdp")],
        body=body,
    )
    again = parse(bytes(resp))
    assert isinstance(again, Response)
    assert again.reason == "Fine"
    assert again.header("Contact") == "<sip:sbc@127.0.0.1>"
    assert again.content_type == "application/sdp"
    assert again.header_values("Content-Length") == [str(len(body))]
    assert again.body == body


def test_make_response_copies_timestamp_on_100_only_rfc3261_8_2_6_1() -> None:
    req = invite_with_two_via_lines("Timestamp: 54.3 0.1")
    assert make_response(req, 100).header("Timestamp") == "54.3 0.1"
    assert make_response(req, 180, to_tag="t").header("Timestamp") is None
    assert make_response(req, 200, to_tag="t").header("Timestamp") is None


def test_make_response_to_tagless_addr_spec_to() -> None:
    req = parsed(raw().replace(b"To: <sip:bob@127.0.0.1>", b"To: sip:bob@127.0.0.1"))
    resp = parse(bytes(make_response(req, 404, to_tag="x1")))
    assert resp.to_tag == "x1"
    assert resp.to.uri == "sip:bob@127.0.0.1"


# ----- error_response ---------------------------------------------------------------------


def bad_request_bytes() -> bytes:
    return raw(
        headers=[
            f"Via: {VIA1}",
            f"v: {VIA2}",
            "From: <sip:alice@127.0.0.10>;tag=f",
            "To: <sip:bob@127.0.0.1>",
            "Call-ID: broken@127.0.0.10",
            "CSeq: not-a-number INVITE",
            "Content-Length: 0",
        ]
    )


def test_error_response_400_from_raw_bytes() -> None:
    data = bad_request_bytes()
    msg = parsed(data)
    with pytest.raises(ParseError) as exc:
        msg.check()
    resp = error_response(data, exc.value)
    assert resp is not None
    again = parse(bytes(resp))
    assert isinstance(again, Response)
    assert again.status == 400
    assert [v.branch for v in again.vias] == ["z9hG4bK-one", "z9hG4bK-two"]
    assert again.header("From") == "<sip:alice@127.0.0.10>;tag=f"
    assert again.header("Call-ID") == "broken@127.0.0.10"
    assert again.header("CSeq") == "not-a-number INVITE"  # copied raw
    assert again.to.uri == "sip:bob@127.0.0.1"
    assert again.to_tag  # a tag was added to the tag-less To


def test_error_response_keeps_existing_to_tag() -> None:
    data = bad_request_bytes().replace(b"To: <sip:bob@127.0.0.1>", b"To: <sip:bob@127.0.0.1>;tag=k")
    resp = error_response(data, ParseError("x"))
    assert resp is not None
    assert resp.to_tag == "k"


def test_error_response_505() -> None:
    data = raw(start="INVITE sip:bob@127.0.0.1 SIP/3.0")
    with pytest.raises(ParseError) as exc:
        parse(data)
    resp = error_response(data, exc.value)
    assert resp is not None
    assert resp.status == 505
    assert resp.via.branch == "z9hG4bK-one"


def test_error_response_none_for_a_response() -> None:
    data = raw(start="SIP/2.0 200 OK", headers=[f"Via: {VIA1}", "CSeq: x"])
    assert error_response(data, ParseError("bad")) is None
    assert error_response(b"\r\n" + data, ParseError("bad")) is None


def test_error_response_none_without_via() -> None:
    data = raw(headers=["From: <sip:a@h>;tag=1", "CSeq: 1 INVITE"])
    assert error_response(data, ParseError("bad")) is None


def test_error_response_without_empty_line_still_answers() -> None:
    data = f"INVITE sip:bob@h SIP/2.0\r\nVia: {VIA1}\r\nCSeq: 1 INVITE".encode()
    resp = error_response(data, ParseError("no empty line"))
    assert resp is not None
    assert resp.via.branch == "z9hG4bK-one"


def test_error_response_reason_phrase_is_printable_rfc3261_25_1() -> None:
    resp = error_response(bad_request_bytes(), ParseError("bad\r\nInjected: yes\x00\x7f"))
    assert resp is not None
    assert resp.reason.isprintable()
    out = bytes(resp)
    assert b"\r\nInjected" not in out
    again = parse(out)
    assert isinstance(again, Response)
    assert again.reason == resp.reason
    assert "Injected" not in [n for n, _ in again.headers()]


def test_error_response_long_reason_is_truncated() -> None:
    resp = error_response(bad_request_bytes(), ParseError("x" * 500))
    assert resp is not None
    assert 0 < len(resp.reason) <= 200


def test_error_response_copies_first_of_duplicate_single_headers() -> None:
    data = bad_request_bytes().replace(
        b"Call-ID: broken@127.0.0.10", b"Call-ID: first\r\ni: second"
    )
    resp = error_response(data, ParseError("more than one Call-ID header"))
    assert resp is not None
    assert resp.header_values("Call-ID") == ["first"]


def test_error_response_unfolds_folded_via() -> None:
    data = bad_request_bytes().replace(
        f"Via: {VIA1}".encode(), b"Via: SIP/2.0/UDP\r\n 127.0.0.10;branch=z9hG4bK-f"
    )
    resp = error_response(data, ParseError("bad"))
    assert resp is not None
    assert resp.via.host == "127.0.0.10"
    assert resp.via.branch == "z9hG4bK-f"


def test_error_response_none_for_ack_rfc3261_17() -> None:
    data = raw("ACK", body=b"").replace(b"Content-Length: 0", b"Content-Length: 50")
    with pytest.raises(ParseError) as exc:
        parse(data)
    assert error_response(data, exc.value) is None
