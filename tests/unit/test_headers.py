"""sbc.sip.headers: Via, name-addr, CSeq, option tags and comma splitting (RFC 3261 §20, §25.1).

Several parsers have a fast path for the common spelling and a general one; the tests
that compare them call the private functions directly so each path is really exercised.
"""

from __future__ import annotations

import pytest

from sbc.sip.headers import (
    MAX_CSEQ,
    CSeq,
    NameAddr,
    Via,
    _fast_name_addr,
    _fast_via,
    _parse_name_addr_slow,
    _parse_via,
    is_token,
    parse_contacts,
    parse_cseq,
    parse_name_addr,
    parse_option_tags,
    parse_uint,
    parse_vias,
    split_commas,
)
from sbc.sip.message import ParseError
from sbc.sip.uri import SipUri

# ----- Via: fast path and general path agree ----------------------------------------------

FAST_VIAS = [
    "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK776asdhds",
    "SIP/2.0/UDP 127.0.0.1",
    "SIP/2.0/TCP [::1]:5060;branch=z9hG4bKa;rport",
    "SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKb",
    "SIP/2.0/UDP host.example.com;branch=z9hG4bKc;rport=5061;received=192.0.2.1",
    "SIP/2.0/UDP h;maddr=224.2.0.1;ttl=16;branch=z9hG4bKd",
    "SIP/2.0/tls h:5061;BRANCH=Z9hG4bKMixedCase",
    "SIP/2.0/UDP h;received=",
    "SIP/2.0/UDP h:0;branch=z9hG4bKe",
    "SIP/2.0/UDP h:65535;branch=z9hG4bKf",
    "SIP/2.0/SCTP h-1.example:5060;branch=z9hG4bKg;x-custom=a:b",
]


@pytest.mark.parametrize("value", FAST_VIAS)
def test_via_fast_and_general_paths_agree(value: str) -> None:
    fast = _fast_via(value)
    assert fast is not None, "the fast path should take this value"
    assert fast == _parse_via(value)
    assert parse_vias(value) == [fast]


@pytest.mark.parametrize(
    ("spaced", "compact"),
    [
        (
            "SIP / 2.0 / UDP host.example.com : 5060 ; branch = z9hG4bK1 ; rport",
            "SIP/2.0/UDP host.example.com:5060;branch=z9hG4bK1;rport",
        ),
        ("SIP/2.0/UDP\t[::1] :5062;received=::1", "SIP/2.0/UDP [::1]:5062;received=::1"),
        ("sip/2.0/udp h;branch=z9hG4bK2", "SIP/2.0/UDP h;branch=z9hG4bK2"),
        ("SIP/2.0/UDP  first.example.com: 4000;ttl=16 ;branch=z9hG4bKa7c6a8dlze.1",
         "SIP/2.0/UDP first.example.com:4000;ttl=16;branch=z9hG4bKa7c6a8dlze.1"),
    ],
)  # fmt: skip
def test_via_lws_around_separators_rfc3261_25_1(spaced: str, compact: str) -> None:
    assert parse_vias(spaced) == parse_vias(compact)


def test_via_fields() -> None:
    (via,) = parse_vias("SIP/2.0/udp 192.0.2.4:5070;Branch=z9hG4bKx;received=198.51.100.1;maddr=m")
    assert via.protocol == "SIP/2.0"
    assert via.transport == "UDP"
    assert via.host == "192.0.2.4"
    assert via.port == 5070
    assert via.branch == "z9hG4bKx"
    assert via.received == "198.51.100.1"
    assert via.maddr == "m"
    assert via.rport is None
    assert via.sent_by() == "192.0.2.4:5070"


def test_via_ipv6_host_keeps_brackets() -> None:
    (via,) = parse_vias("SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK1")
    assert via.host == "[2001:db8::1]"
    assert via.port == 5060
    assert via.sent_by() == "[2001:db8::1]:5060"


def test_via_rport_flag_value_absent_rfc3581_3() -> None:
    assert parse_vias("SIP/2.0/UDP h;rport")[0].rport == ""
    assert parse_vias("SIP/2.0/UDP h ; rport")[0].rport == ""
    assert parse_vias("SIP/2.0/UDP h;rport=5061")[0].rport == "5061"
    assert parse_vias("SIP/2.0/UDP h;branch=z9hG4bK1")[0].rport is None


def test_via_several_comma_values() -> None:
    vias = parse_vias(
        "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/TCP b:5061;branch=z9hG4bK2 ,SIP/2.0/TLS [::1]"
    )
    assert [(v.transport, v.host, v.port, v.branch) for v in vias] == [
        ("UDP", "a", None, "z9hG4bK1"),
        ("TCP", "b", 5061, "z9hG4bK2"),
        ("TLS", "[::1]", None, None),
    ]


def test_via_str_round_trip() -> None:
    for value in FAST_VIAS:
        via = parse_vias(value)[0]
        assert parse_vias(str(via)) == [via]


def test_via_str_of_constructed_value() -> None:
    via = Via("UDP", "192.0.2.1", 5060, {"branch": "z9hG4bK1", "rport": None})
    assert str(via) == "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport"


def test_via_quoted_param_value() -> None:
    (via,) = parse_vias('SIP/2.0/UDP h;branch=z9hG4bK1;x="a;b"')
    assert via.params == {"branch": "z9hG4bK1", "x": '"a;b"'}


@pytest.mark.parametrize("port", ["65536", "99999", "123456", "abc", "-1"])
def test_via_bad_port(port: str) -> None:
    with pytest.raises(ParseError, match="Via"):
        parse_vias(f"SIP/2.0/UDP h:{port};branch=z9hG4bK1")
    with pytest.raises(ParseError, match="Via"):
        parse_vias(f"SIP/2.0/UDP h : {port} ;branch=z9hG4bK1")


@pytest.mark.parametrize(
    "value",
    [
        "SIP/2.0/UDP h;;branch=z9hG4bK1",
        "SIP/2.0/UDP h;branch=z9hG4bK1;",
        "SIP/2.0/UDP h;=x",
        "SIP/2.0/UDP h ; ; branch=z9hG4bK1",
        "SIP/2.0/UDP h;",
    ],
)
def test_via_empty_param_is_rejected(value: str) -> None:
    with pytest.raises(ParseError, match="Via"):
        parse_vias(value)


def test_via_lone_trailing_semicolon_with_lws_is_rejected_like_without() -> None:
    with pytest.raises(ParseError):
        parse_vias("SIP/2.0/UDP h ;")


@pytest.mark.parametrize(
    "value",
    [
        "SIP/2.0/UDP",
        "SIP/2.0 h",
        "HTTP/1.1/TCP h",
        "SIP/2.0/UDP h junk",
        "SIP/2.0/UDP h_1",
        "SIP/2.0/UDP h:5060:5061",
        "SIP/2.0/UDP [::1",
        "",
    ],
)
def test_via_malformed(value: str) -> None:
    with pytest.raises(ParseError, match="Via"):
        parse_vias(value)


def test_via_ipv6_reference_followed_by_junk_is_rejected_on_the_fast_path() -> None:
    with pytest.raises(ParseError):
        parse_vias("SIP/2.0/UDP [::1]x5060;branch=z9hG4bK1")


def test_via_colon_without_port_is_rejected_on_the_fast_path() -> None:
    with pytest.raises(ParseError):
        parse_vias("SIP/2.0/UDP host:;branch=z9hG4bK1")


# ----- name-addr / addr-spec ---------------------------------------------------------------

NAME_ADDRS = [
    # (value, display, uri, params)
    ('"Bob \\"B\\" Smith" <sip:bob@x>;tag=1', '"Bob \\"B\\" Smith"', "sip:bob@x", {"tag": "1"}),
    ('"A, B" <sip:a@b>', '"A, B"', "sip:a@b", {}),
    ('"a<b>" <sip:x@y>', '"a<b>"', "sip:x@y", {}),
    ('"Bob"<sip:bob@x>', '"Bob"', "sip:bob@x", {}),
    ("Bob Smith <sip:bob@x>;tag=1", "Bob Smith", "sip:bob@x", {"tag": "1"}),
    ("Bob<sip:b@x>", "Bob", "sip:b@x", {}),
    ("<sip:bob@x>", None, "sip:bob@x", {}),
    ("<sip:bob@x;transport=tcp;lr>;tag=1;expires=60", None, "sip:bob@x;transport=tcp;lr",
     {"tag": "1", "expires": "60"}),
    ("<sip:bob@x?subject=hi>", None, "sip:bob@x?subject=hi", {}),
    ("sip:bob@x;tag=1;Q=0.5", None, "sip:bob@x", {"tag": "1", "q": "0.5"}),
    ("sip:bob@x", None, "sip:bob@x", {}),
    ("tel:+1-555;tag=9", None, "tel:+1-555", {"tag": "9"}),
    ("<tel:+1>", None, "tel:+1", {}),
    ("<urn:service:sos>", None, "urn:service:sos", {}),
    ("<sip:a@b> ; tag = 5 ; lr", None, "sip:a@b", {"tag": "5", "lr": None}),
    ('<sip:x@y>;tag="a;b"', None, "sip:x@y", {"tag": '"a;b"'}),
    ("\t<sip:x@y>;tag=t\t", None, "sip:x@y", {"tag": "t"}),
]  # fmt: skip


@pytest.mark.parametrize(("value", "display", "uri", "params"), NAME_ADDRS)
def test_name_addr_forms_rfc3261_20_10(
    value: str, display: str | None, uri: str, params: dict[str, str | None]
) -> None:
    parsed = parse_name_addr(value, "To header")
    assert parsed == NameAddr(uri, display, params)
    assert parsed.tag == params.get("tag")


@pytest.mark.parametrize(("value", "display", "uri", "params"), NAME_ADDRS)
def test_name_addr_fast_and_general_paths_agree(
    value: str, display: str | None, uri: str, params: dict[str, str | None]
) -> None:
    slow = _parse_name_addr_slow(value, "To header")
    assert slow == NameAddr(uri, display, params)
    fast = _fast_name_addr(value, "To header")
    if fast is not None:
        assert fast == slow


def test_addr_spec_params_belong_to_the_header_rfc3261_20_10() -> None:
    parsed = parse_name_addr("sip:bob@x;transport=tcp", "Contact header")
    assert parsed.uri == "sip:bob@x"
    assert parsed.params == {"transport": "tcp"}
    inside = parse_name_addr("<sip:bob@x;transport=tcp>", "Contact header")
    assert inside.uri == "sip:bob@x;transport=tcp"
    assert inside.params == {}
    uri = inside.parsed_uri()
    assert isinstance(uri, SipUri) and uri.transport == "tcp"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("sip:a@b?x=y", "enclosed"),
        ("sip:a@b,c", "enclosed"),
        ("Bob sip:a@b", "enclosed"),
        ("<sip:a b@c>", "whitespace"),
        ('"unterminated <sip:a@b>', "unterminated"),
        ("<sip:a@b", "'<' without '>'"),
        ('"x" sip:a@b', "not followed"),
        ("Bob@home <sip:a@b>", "quoted"),
        ("<nocolon>", "scheme"),
        ("<sip:a@b>;", "empty parameter"),
        ("<sip:a@b>;;tag=1", "empty parameter"),
        ("<sip:a@b>junk", "unexpected"),
        ("<>", "<>"),
    ],
)
def test_name_addr_malformed(value: str, message: str) -> None:
    with pytest.raises(ParseError) as exc:
        parse_name_addr(value, "From header")
    assert "From header" in str(exc.value) or "scheme" in str(exc.value)
    if message != "<>":
        assert message in str(exc.value)


def test_name_addr_lone_semicolon_with_lws_is_rejected() -> None:
    with pytest.raises(ParseError):
        parse_name_addr("<sip:a@b> ;", "To header")


def test_name_addr_str() -> None:
    assert str(parse_name_addr("sip:bob@x;tag=1", "To header")) == "<sip:bob@x>;tag=1"
    assert str(NameAddr("sip:a@b", '"A"', {"tag": "t", "lr": None})) == '"A" <sip:a@b>;tag=t;lr'


# ----- Contact -------------------------------------------------------------------------------


def test_contact_wildcard_rfc3261_10_2_2() -> None:
    assert parse_contacts("*") is None
    assert parse_contacts("  *  ") is None


def test_contacts_comma_separated_with_quoted_commas() -> None:
    contacts = parse_contacts(
        '"Doe, John" <sip:j@x>;q=0.5, <sip:k@y;transport=tcp>,sip:z@w;expires=30'
    )
    assert contacts == [
        NameAddr("sip:j@x", '"Doe, John"', {"q": "0.5"}),
        NameAddr("sip:k@y;transport=tcp", None, {}),
        NameAddr("sip:z@w", None, {"expires": "30"}),
    ]


def test_contact_malformed_names_contact() -> None:
    with pytest.raises(ParseError, match="Contact header"):
        parse_contacts("<sip:a@b>, <sip:c d>")


# ----- split_commas --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("a", ["a"]),
        ("a,b", ["a", "b"]),
        ('a, "b,\\"c" , <sip:x,y>, d', ["a", ' "b,\\"c" ', " <sip:x,y>", " d"]),
        ('"x\\\\", y', ['"x\\\\"', " y"]),  # an escaped backslash closes nothing by itself
        ("<a,<b,c>>,d", ["<a,<b,c>>", "d"]),
        (",", ["", ""]),
        ("a,,b", ["a", "", "b"]),
    ],
)
def test_split_commas(value: str, parts: list[str]) -> None:
    assert split_commas(value) == parts


# ----- CSeq, numbers, tokens, option tags ------------------------------------------------


def test_parse_cseq() -> None:
    assert parse_cseq("4711 INVITE") == CSeq(4711, "INVITE")
    assert parse_cseq("  1\t  NEWMETHOD ") == CSeq(1, "NEWMETHOD")
    assert parse_cseq(f"{MAX_CSEQ} BYE").number == 2**31 - 1
    assert str(CSeq(5, "ACK")) == "5 ACK"


@pytest.mark.parametrize(
    "value",
    ["INVITE 1", "1", "1 INVITE extra", "-1 INVITE", "1.0 INVITE", f"{2**31} INVITE",
     "99999999999 INVITE", "1 IN<VITE", ""],
)  # fmt: skip
def test_parse_cseq_malformed_rfc3261_8_1_1_5(value: str) -> None:
    with pytest.raises(ParseError, match="CSeq"):
        parse_cseq(value)


def test_parse_uint() -> None:
    assert parse_uint(" 70 ", "Max-Forwards", 255) == 70
    assert parse_uint("255", "Max-Forwards", 255) == 255
    for bad in ("256", "", "+1", "1e2", "0x10"):
        with pytest.raises(ParseError, match="Max-Forwards"):
            parse_uint(bad, "Max-Forwards", 255)


def test_is_token() -> None:
    assert is_token("INVITE")
    assert is_token("a-b.c!%*_+`'~9")
    for bad in ("", "a b", "a:b", "a;b", 'a"b', "a<b", "é"):
        assert not is_token(bad), bad


def test_option_tags() -> None:
    assert parse_option_tags(["100rel, timer", " foo ", "", "a,,b"]) == [
        "100rel",
        "timer",
        "foo",
        "a",
        "b",
    ]
    assert parse_option_tags([]) == []
