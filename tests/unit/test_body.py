"""sbc.sip.body: media types and multipart bodies (RFC 2046 §5.1, RFC 5621)."""

from __future__ import annotations

import pytest

from sbc.sip.body import BodyPart, find_part, media_type, split_multipart
from sbc.sip.message import ParseError

SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.10\r\ns=-\r\nt=0 0\r\n"
ISUP = b"\x01\x00\x49\x00\x00\x03\x02\x00\x07"


def multipart(boundary: str, parts: list[tuple[str | None, bytes]], *, preamble: bytes = b"",
              epilogue: bytes = b"") -> bytes:  # fmt: skip
    out = preamble
    for ctype, payload in parts:
        out += f"--{boundary}\r\n".encode()
        if ctype is not None:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + payload + b"\r\n"
    return out + f"--{boundary}--".encode() + epilogue


# ----- media_type ------------------------------------------------------------------------


def test_media_type_lowercases_and_reads_params() -> None:
    assert media_type("Application/SDP") == ("application/sdp", {})
    assert media_type(' multipart/Mixed ; Boundary="x y" ; a=1') == (
        "multipart/mixed",
        {"boundary": '"x y"', "a": "1"},
    )


@pytest.mark.parametrize("value", ["sdp", "", "a/b/c", ";boundary=x"])
def test_media_type_malformed(value: str) -> None:
    with pytest.raises(ParseError, match="Content-Type"):
        media_type(value)


# ----- split_multipart -----------------------------------------------------------------------


def test_split_two_parts_with_preamble_and_epilogue_rfc2046_5_1_1() -> None:
    body = multipart(
        "unique-boundary-1",
        [("application/sdp", SDP), ("application/ISUP; version=itu-t92+", ISUP)],
        preamble=b"This is the preamble.\r\nIt is ignored.\r\n",
        epilogue=b"\r\nThis is the epilogue, also ignored.\r\n--unique-boundary-1\r\n",
    )
    parts = split_multipart("multipart/mixed; boundary=unique-boundary-1", body)
    assert [p.media_type for p in parts] == ["application/sdp", "application/isup"]
    assert parts[0].payload == SDP
    assert parts[1].payload == ISUP
    assert parts[1].params == {"version": "itu-t92+"}
    assert parts[0].headers == (("Content-Type", "application/sdp"),)


def test_payload_keeps_its_own_trailing_crlf_but_not_the_delimiters() -> None:
    body = b"--b\r\nContent-Type: text/plain\r\n\r\nline1\r\n\r\n--b--"
    (part,) = split_multipart("multipart/mixed;boundary=b", body)
    assert part.payload == b"line1\r\n"


def test_part_without_headers_defaults_to_text_plain_rfc2046_5_1_1() -> None:
    body = multipart("b", [(None, b"plain"), ("application/sdp", SDP)])
    parts = split_multipart("multipart/mixed;boundary=b", body)
    assert parts[0] == BodyPart("text/plain", {}, (), b"plain")
    assert parts[1].media_type == "application/sdp"


def test_part_with_several_headers_and_compact_content_type() -> None:
    body = (
        b"--b\r\nContent-Disposition: session;handling=required\r\nc: Application/SDP\r\n"
        b"Content-ID: <x@y>\r\n\r\n" + SDP + b"\r\n--b--\r\n"
    )
    (part,) = split_multipart("multipart/mixed;boundary=b", body)
    assert part.media_type == "application/sdp"
    assert dict(part.headers)["Content-ID"] == "<x@y>"
    assert part.payload == SDP


def test_quoted_boundary_with_special_characters() -> None:
    boundary = "simple boundary:'()+_,-./=?"
    body = multipart(boundary, [("application/sdp", SDP)])
    parts = split_multipart(f'multipart/mixed; boundary="{boundary}"', body)
    assert [p.payload for p in parts] == [SDP]


def test_transport_padding_after_delimiter() -> None:
    body = b"--b  \r\nContent-Type: text/plain\r\n\r\nx\r\n--b--  \r\n"
    (part,) = split_multipart("multipart/mixed;boundary=b", body)
    assert part.payload == b"x"


def test_binary_payload_is_kept_exactly() -> None:
    payload = bytes(range(256)).replace(b"\r\n", b"")
    body = multipart("b", [("application/octet-stream", payload)])
    (part,) = split_multipart("multipart/mixed;boundary=b", body)
    assert part.payload == payload


def test_missing_boundary_parameter() -> None:
    with pytest.raises(ParseError, match="boundary"):
        split_multipart("multipart/mixed", multipart("b", [("text/plain", b"x")]))
    with pytest.raises(ParseError, match="boundary"):
        split_multipart('multipart/mixed; boundary=""', multipart("b", [("text/plain", b"x")]))


def test_no_closing_delimiter() -> None:
    body = b"--b\r\n\r\nfirst\r\n--b\r\n\r\nsecond"
    with pytest.raises(ParseError, match="closing delimiter"):
        split_multipart("multipart/mixed;boundary=b", body)


def test_boundary_absent_from_body() -> None:
    with pytest.raises(ParseError, match="no complete part"):
        split_multipart("multipart/mixed;boundary=zzz", multipart("b", [("text/plain", b"x")]))


def test_only_a_close_delimiter() -> None:
    with pytest.raises(ParseError):
        split_multipart("multipart/mixed;boundary=b", b"--b--\r\n")


def test_delimiter_line_not_terminated() -> None:
    with pytest.raises(ParseError, match="not terminated"):
        split_multipart("multipart/mixed;boundary=b", b"--b\r\n\r\nx\r\n--b")


def test_part_headers_without_empty_line() -> None:
    with pytest.raises(ParseError, match="empty line"):
        split_multipart("multipart/mixed;boundary=b", b"--b\r\nContent-Type: text/plain\r\n--b--")


def test_part_header_without_colon() -> None:
    with pytest.raises(ParseError, match="colon"):
        split_multipart("multipart/mixed;boundary=b", b"--b\r\nbroken\r\n\r\nx\r\n--b--")


# ----- find_part --------------------------------------------------------------------------------


def test_find_sdp_in_plain_body() -> None:
    assert find_part("application/sdp", SDP, "application/sdp") == SDP
    assert find_part("Application/SDP; charset=utf-8", SDP, "application/sdp") == SDP


def test_find_returns_none_without_type_body_or_match() -> None:
    assert find_part(None, SDP, "application/sdp") is None
    assert find_part("application/sdp", b"", "application/sdp") is None
    assert find_part("text/plain", b"x", "application/sdp") is None


def test_find_sdp_in_multipart_mixed_rfc5621() -> None:
    body = multipart("b", [("application/ISUP", ISUP), ("application/sdp", SDP)])
    assert find_part("multipart/mixed;boundary=b", body, "application/sdp") == SDP


def test_find_first_matching_part() -> None:
    other = SDP.replace(b"o=- 1 1", b"o=- 2 2")
    body = multipart("b", [("application/sdp", SDP), ("application/sdp", other)])
    assert find_part("multipart/alternative;boundary=b", body, "application/sdp") == SDP


def test_find_sdp_in_nested_multipart() -> None:
    inner = multipart("inner", [("text/plain", b"hi"), ("application/sdp", SDP)])
    outer = multipart(
        "outer",
        [
            ("application/pidf+xml", b"<presence/>"),
            ('multipart/alternative; boundary="inner"', inner),
        ],
        preamble=b"preamble\r\n",
    )
    assert find_part("multipart/mixed; boundary=outer", outer, "application/sdp") == SDP


def test_find_stops_below_the_depth_limit() -> None:
    body = multipart("l3", [("application/sdp", SDP)])
    for level in ("l2", "l1", "l0"):
        inner_boundary = {"l2": "l3", "l1": "l2", "l0": "l1"}[level]
        body = multipart(level, [(f"multipart/mixed;boundary={inner_boundary}", body)])
    # four levels of multipart: deeper than MAX_DEPTH (3) is not searched
    assert find_part("multipart/mixed;boundary=l0", body, "application/sdp") is None
    # three levels are
    inner = multipart("l3", [("application/sdp", SDP)])
    two = multipart("l2", [("multipart/mixed;boundary=l3", inner)])
    three = multipart("l1", [("multipart/mixed;boundary=l2", two)])
    assert find_part("multipart/mixed;boundary=l1", three, "application/sdp") == SDP


def test_find_in_malformed_multipart_raises() -> None:
    with pytest.raises(ParseError):
        find_part("multipart/mixed;boundary=b", b"--b\r\n\r\nunterminated", "application/sdp")
