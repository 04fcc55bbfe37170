"""sbc.sip.uri: SIP/SIPS/tel/other URIs and RFC 3261 §19.1.4 comparison."""

from __future__ import annotations

import pytest

from sbc.sip.message import ParseError
from sbc.sip.uri import (
    OtherUri,
    SipUri,
    TelUri,
    format_params,
    parse_params,
    parse_uri,
    split_scheme,
)


def sip(text: str) -> SipUri:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri), text
    return uri


# ----- parsing --------------------------------------------------------------------------


def test_plain_sip_uri() -> None:
    uri = sip("sip:alice@atlanta.example.com")
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sip",
        "alice",
        None,
        "atlanta.example.com",
        None,
    )
    assert uri.params == {}
    assert uri.headers == ""
    assert uri.transport is None
    assert uri.host_port() == "atlanta.example.com"


def test_sips_and_upper_case_scheme() -> None:
    assert sip("sips:bob@biloxi.example.com").scheme == "sips"
    upper = sip("SIP:Alice@HOST")
    assert upper.scheme == "sip"
    assert (upper.user, upper.host) == ("Alice", "HOST")  # kept as written


def test_host_only_uri() -> None:
    uri = sip("sip:192.0.2.1:5070")
    assert (uri.user, uri.host, uri.port) == (None, "192.0.2.1", 5070)
    assert uri.host_port() == "192.0.2.1:5070"


@pytest.mark.parametrize(
    ("text", "user"),
    [
        ("sip:alice;day=tuesday@atlanta.com", "alice;day=tuesday"),  # RFC 3261 §19.1.1
        ("sip:a?b@h", "a?b"),
        ("sip:a/b/c@h", "a/b/c"),
        ("sip:+1-212-555-1212;isub=1@gw.com;user=phone", "+1-212-555-1212;isub=1"),
        ("sip:%61lice@h", "%61lice"),  # kept escaped
    ],
)
def test_user_part_may_hold_semicolon_question_mark_slash_rfc3261_25_1(
    text: str, user: str
) -> None:
    uri = sip(text)
    assert uri.user == user
    assert uri.host in ("atlanta.com", "h", "gw.com")


def test_user_with_semicolon_and_uri_params() -> None:
    uri = sip("sip:+1-212-555-1212;isub=1@gw.com;user=phone")
    assert uri.params == {"user": "phone"}


def test_password() -> None:
    uri = sip("sip:alice:se%40cret@h:5070")
    assert (uri.user, uri.password, uri.port) == ("alice", "se%40cret", 5070)
    empty = sip("sip:alice:@h")
    assert (empty.user, empty.password) == ("alice", "")


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("sip:[2001:db8::1]", "[2001:db8::1]", None),
        ("sip:[2001:db8::1]:5070;transport=tcp", "[2001:db8::1]", 5070),
        ("sip:alice@[::1]:5060", "[::1]", 5060),
        ("sip:[::ffff:192.0.2.1]", "[::ffff:192.0.2.1]", None),
    ],
)
def test_ipv6_reference_host_rfc5118(text: str, host: str, port: int | None) -> None:
    uri = sip(text)
    assert (uri.host, uri.port) == (host, port)


@pytest.mark.parametrize(("port", "ok"), [("0", True), ("5060", True), ("65535", True),
                                          ("65536", False), ("99999", False), ("", False),
                                          ("5060a", False), ("-1", False), ("1234567", False)])  # fmt: skip
def test_port_range(port: str, ok: bool) -> None:
    text = f"sip:alice@h:{port};transport=udp"
    if ok:
        assert sip(text).port == int(port)
    else:
        with pytest.raises(ParseError, match="port"):
            parse_uri(text)


def test_params_and_transport_property() -> None:
    uri = sip("sip:h;Transport=TCP;lr;maddr=239.255.255.1;ttl=15;method=INVITE")
    assert uri.params == {
        "transport": "TCP",
        "lr": None,
        "maddr": "239.255.255.1",
        "ttl": "15",
        "method": "INVITE",
    }
    assert uri.transport == "tcp"
    assert sip("sip:h;transport").transport is None


def test_headers_component() -> None:
    uri = sip("sips:alice@h;lr?subject=project%20x&priority=urgent")
    assert uri.params == {"lr": None}
    assert uri.headers == "subject=project%20x&priority=urgent"


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@atlanta.com",
        "sips:alice:pw@[2001:db8::1]:5061;transport=tls;lr?h=v&x=y",
        "sip:alice;day=tue@h;maddr=1.2.3.4",
        "sip:h:5060",
    ],
)
def test_str_round_trip(text: str) -> None:
    assert str(parse_uri(text)) == text


def test_tel_uri_rfc3966() -> None:
    uri = parse_uri("tel:+1-201-555-0123;Phone-Context=example.com;ext=12")
    assert isinstance(uri, TelUri)
    assert uri.scheme == "tel"
    assert uri.number == "+1-201-555-0123"
    assert uri.params == {"phone-context": "example.com", "ext": "12"}
    assert str(parse_uri("tel:+1555;ext=1")) == "tel:+1555;ext=1"
    with pytest.raises(ParseError, match="tel"):
        parse_uri("tel:;ext=1")


@pytest.mark.parametrize(("text", "scheme", "rest"), [("mailto:a@b", "mailto", "a@b"),
                                                      ("urn:service:sos", "urn", "service:sos"),
                                                      ("HTTP://x/y", "http", "//x/y"),
                                                      ("im:a+b.c-d@e", "im", "a+b.c-d@e")])  # fmt: skip
def test_other_schemes_are_opaque(text: str, scheme: str, rest: str) -> None:
    uri = parse_uri(text)
    assert isinstance(uri, OtherUri)
    assert (uri.scheme, uri.rest) == (scheme, rest)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nocolon",
        "1sip:h",
        ":h",
        "sip: h",
        "sip:h\r\n",
        "sip:",
        "sip:@h",
        "sip:a@",
        "sip:h_x",
        "sip:[::1",
        "sip:[::1]x",
        "sip:h:5060:5061",
    ],
)
def test_malformed_uris(text: str) -> None:
    with pytest.raises(ParseError):
        parse_uri(text)


def test_split_scheme() -> None:
    assert split_scheme("SIPS:x") == ("sips", "x")
    assert split_scheme("a+b.c-d:rest:more") == ("a+b.c-d", "rest:more")
    for bad in ("x", ":x", "9a:x", "a b:x"):
        with pytest.raises(ParseError, match="scheme"):
            split_scheme(bad)


def test_parse_and_format_params() -> None:
    params = parse_params("A=1; b ;c= x ", "test")
    assert params == {"a": "1", "b": None, "c": "x"}
    assert format_params(params) == ";a=1;b;c=x"
    assert parse_params("", "test") == {}
    with pytest.raises(ParseError, match="test: empty parameter"):
        parse_params("a;;b", "test")


# ----- equivalence, RFC 3261 §19.1.4 ----------------------------------------------------

EQUIVALENT = [
    # the RFC's own examples
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
    ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
    ("sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
     "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"),
    ("sip:alice@atlanta.com?subject=project%20x&priority=urgent",
     "sip:alice@atlanta.com?priority=urgent&subject=project%20x"),
    # more
    ("sip:%41@h", "sip:%41@h"),
    ("sip:a:p%61ss@h", "sip:a:pass@h"),
    ("sip:h;lr", "sip:h;LR"),
    ("sip:h;maddr=%31.1.1.1", "sip:h;maddr=1.1.1.1"),
    ("sip:h;user=Phone", "sip:h;user=phone"),
    ("sip:h?Subject=x", "sip:h?subject=x"),
    ("sip:[2001:DB8::1]", "sip:[2001:db8::1]"),
]  # fmt: skip

NOT_EQUIVALENT = [
    # the RFC's own examples
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
    ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
    # user, ttl, method, maddr and transport must match when present in either
    ("sip:h;user=phone", "sip:h"),
    ("sip:h;ttl=1", "sip:h"),
    ("sip:h;method=INVITE", "sip:h"),
    ("sip:h;maddr=1.1.1.1", "sip:h"),
    ("sip:h;transport=tcp", "sip:h;transport=tls"),
    # scheme, user, password, headers
    ("sip:a@h", "sips:a@h"),
    ("sip:a@h", "sip:h"),
    ("sip:a:x@h", "sip:a@h"),
    ("sip:a:x@h", "sip:a:y@h"),
    ("sip:h?a=1", "sip:h?a=1&b=2"),
    ("sip:h?a=1", "sip:h?a=2"),
]  # fmt: skip


@pytest.mark.parametrize(("a", "b"), EQUIVALENT)
def test_equivalent_rfc3261_19_1_4(a: str, b: str) -> None:
    assert sip(a).equivalent(sip(b))
    assert sip(b).equivalent(sip(a))


@pytest.mark.parametrize(("a", "b"), NOT_EQUIVALENT)
def test_not_equivalent_rfc3261_19_1_4(a: str, b: str) -> None:
    assert not sip(a).equivalent(sip(b))
    assert not sip(b).equivalent(sip(a))


def test_equivalent_is_reflexive_and_rejects_other_types() -> None:
    uri = sip("sip:alice@h:5060;transport=udp?x=y")
    assert uri.equivalent(uri)
    assert not uri.equivalent(parse_uri("tel:+1555"))
    assert not uri.equivalent("sip:alice@h:5060;transport=udp?x=y")
