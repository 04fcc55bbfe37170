"""RFC 4475 torture messages through the parser and the request checks (no sockets)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sbc.sip.body import find_part
from sbc.sip.message import Request, Response, parse
from sbc.sip.uri import SipUri, parse_uri
from tests.conformance.rfc4475 import CORPUS as CORPUS_DIR
from tests.conformance.rfc4475 import EXPECTED, Case, handle, manifest

CASES = manifest()


def test_expectations_cover_exactly_the_manifest() -> None:
    assert sorted(EXPECTED) == sorted(c.file for c in CASES)
    assert len(CASES) == 49


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_handled_as_manifest_says(case: Case) -> None:
    expected = EXPECTED[case.file]
    outcome = handle(case.data)
    assert outcome.kind == expected, case.handling
    if case.validity == "invalid" and case.file != "baddate.dat":
        # (baddate may be processed ignoring its Date header, RFC 4475 §3.1.2.12)
        assert outcome.kind != "process", "an invalid message must never be processed"
    if isinstance(expected, int):
        answer = outcome.answer
        assert answer is not None
        # The answer itself is a well-formed response that survives our own parser.
        again = parse(bytes(answer))
        assert isinstance(again, Response) and again.status == expected
        assert again.header_values("via"), "a response must carry the request's Via"
        assert "\r" not in again.reason and "\n" not in again.reason


# ----- what "parses correctly" means for the valid messages -------------------------------


def _wsinv(msg: Request | Response) -> None:
    assert isinstance(msg, Request)
    assert msg.to.tag == "1918181833n"
    assert msg.from_.tag == "98asjd8"
    assert msg.from_.display == '"J Rosenberg \\\\\\""'
    assert msg.max_forwards == 68
    assert msg.cseq == (9, "INVITE")
    assert [v.host for v in msg.vias] == ["192.0.2.2", "spindle.example.com", "192.168.255.111"]
    assert [v.branch for v in msg.vias] == ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"]
    assert msg.header("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.header("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert msg.header("s") == ""
    contacts = msg.contacts
    assert contacts is not None and contacts[0].params == {
        "newparam": "newvalue",
        "secondparam": None,
        "q": "0.33",
    }
    assert len(msg.body) == 150


def _intmeth(msg: Request | Response) -> None:
    assert isinstance(msg, Request)
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    uri = msg.ruri
    assert isinstance(uri, SipUri) and uri.host == "example.com"
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert msg.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert msg.from_.tag == "_token~1'+`*%!-."
    assert msg.header("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def _esc01(msg: Request | Response) -> None:
    assert isinstance(msg, Request)
    # RFC 3261 §19.1.4: escaped and unescaped forms compare equal.
    to = msg.to.parsed_uri()
    assert isinstance(to, SipUri) and to.equivalent(parse_uri("sip:user@example.com"))
    assert not to.equivalent(parse_uri("sip:users@example.com"))
    ruri = msg.ruri
    assert isinstance(ruri, SipUri) and ruri.user == "sips%3Auser%40example.com"
    contacts = msg.contacts
    assert contacts is not None
    contact = contacts[0].parsed_uri()
    assert contact.equivalent(parse_uri("sip:caller@host5.example.net;lr;name=value%25%34%31"))


def _escnull(msg: Request | Response) -> None:
    assert msg.to.uri == "sip:null-%00-null@example.com"
    contacts = msg.contacts
    assert contacts is not None and [c.uri for c in contacts] == [
        "sip:%00@host5.example.com",
        "sip:%00%00@host5.example.com",
    ]


def _esc02(msg: Request | Response) -> None:
    assert isinstance(msg, Request) and msg.method == "RE%47IST%45R"
    assert msg.to.display == '"%Z%45"'
    assert msg.header("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert len(msg.header_values("contact")) == 2


def _lwsdisp(msg: Request | Response) -> None:
    assert msg.from_.display == "caller" and msg.from_.uri == "sip:caller@example.com"


def _longreq(msg: Request | Response) -> None:
    assert len(msg.vias) == 34
    assert msg.to.display is not None and "extremeextremeextreme" in msg.to.display
    to_uri = msg.to.parsed_uri()
    assert isinstance(to_uri, SipUri) and to_uri.port == 6000
    assert (to_uri.params["unknownparam1"] or "").endswith("longlongvalue")
    assert len(to_uri.params) == 3
    assert (
        msg.from_.uri.endswith("amazinglylongcallername@example.net") and len(msg.from_.uri) == 131
    )
    name = "Unknown-" + "Long" * 20 + "-Name"
    assert len(msg.header(name) or "") == 306


def _dblreq(msg: Request | Response) -> None:
    assert isinstance(msg, Request) and msg.method == "REGISTER" and msg.body == b""
    data = (CORPUS_DIR / "dblreq.dat").read_bytes()
    assert bytes(msg) == data[: data.find(b"\r\n\r\n") + 4], "trailing octets are not ours"


def _semiuri(msg: Request | Response) -> None:
    assert isinstance(msg, Request)
    uri = msg.ruri
    assert isinstance(uri, SipUri)
    assert uri.user == "user;par=u%40example.net" and uri.host == "example.com"
    assert uri.params == {}


def _transports(msg: Request | Response) -> None:
    assert [v.transport for v in msg.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def _mpart01(msg: Request | Response) -> None:
    data = (CORPUS_DIR / "mpart01.dat").read_bytes()
    assert msg.body == data[data.find(b"\r\n\r\n") + 4 :]
    assert find_part(msg.header("content-type"), msg.body, "text/plain") == b"Hello"
    assert find_part(msg.header("content-type"), msg.body, "application/sdp") is None
    assert bytes(msg) == data


def _unreason(msg: Request | Response) -> None:
    assert isinstance(msg, Response) and msg.status == 200
    assert msg.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"


def _noreason(msg: Request | Response) -> None:
    assert isinstance(msg, Response) and msg.status == 100 and msg.reason == ""


def _unksm2(msg: Request | Response) -> None:
    assert msg.to.uri == "isbn:2983792873"
    assert msg.from_.uri == "http://www.example.com"
    contacts = msg.contacts
    assert contacts is not None and contacts[0].uri == "name:John_Smith"


def _cparam01(msg: Request | Response) -> None:
    contacts = msg.contacts
    assert contacts is not None
    # addr-spec form: ;unknownparam belongs to the header, not to the URI (RFC 3261 §20.10)
    assert contacts[0].params == {"unknownparam": None}
    uri = contacts[0].parsed_uri()
    assert isinstance(uri, SipUri) and uri.params == {}


def _cparam02(msg: Request | Response) -> None:
    contacts = msg.contacts
    assert contacts is not None and contacts[0].params == {}
    uri = contacts[0].parsed_uri()
    assert isinstance(uri, SipUri) and uri.params == {"unknownparam": None}


def _regescrt(msg: Request | Response) -> None:
    contacts = msg.contacts
    assert contacts is not None
    uri = contacts[0].parsed_uri()
    assert isinstance(uri, SipUri) and uri.headers == "Route=%3Csip:sip.example.com%3E"
    assert not msg.has_header("route"), "the escaped header never becomes a real header"


def _inv2543(msg: Request | Response) -> None:
    assert msg.via.branch is None and msg.from_.tag is None
    assert msg.max_forwards is None
    assert msg.body.startswith(b"v=0")


def _badbranch(msg: Request | Response) -> None:
    assert msg.via.branch == "z9hG4bK"


CHECKS: dict[str, Callable[[Request | Response], None]] = {
    "wsinv.dat": _wsinv,
    "intmeth.dat": _intmeth,
    "esc01.dat": _esc01,
    "escnull.dat": _escnull,
    "esc02.dat": _esc02,
    "lwsdisp.dat": _lwsdisp,
    "longreq.dat": _longreq,
    "dblreq.dat": _dblreq,
    "semiuri.dat": _semiuri,
    "transports.dat": _transports,
    "mpart01.dat": _mpart01,
    "unreason.dat": _unreason,
    "noreason.dat": _noreason,
    "unksm2.dat": _unksm2,
    "cparam01.dat": _cparam01,
    "cparam02.dat": _cparam02,
    "regescrt.dat": _regescrt,
    "inv2543.dat": _inv2543,
    "badbranch.dat": _badbranch,
}


@pytest.mark.parametrize("case", [c for c in CASES if c.file in CHECKS], ids=lambda c: c.id)
def test_valid_message_parsed_correctly(case: Case) -> None:
    msg = parse(case.data)
    msg.check()
    CHECKS[case.file](msg)


@pytest.mark.parametrize("case", [c for c in CASES if c.validity == "valid"], ids=lambda c: c.id)
def test_valid_message_serializes_byte_for_byte(case: Case) -> None:
    msg = parse(case.data)
    out = bytes(msg)
    assert case.data.lstrip(b"\r\n").startswith(out)
    # Changing one header rebuilds the message; every other line stays as received.
    msg.add_header("X-Test", "1")
    rebuilt = bytes(msg)
    again = parse(rebuilt)
    assert again.header("x-test") == "1"
    head = case.data.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n")[1:]:
        if not line[:1].isspace():
            assert line in rebuilt


def test_RFC4475_3_3_11_zero_max_forwards_gets_483_unless_we_are_the_target() -> None:
    data = next(c for c in CASES if c.file == "zeromf.dat").data
    assert handle(data, local_target=True).kind == "process"
    assert handle(data, local_target=False).kind == 483


def test_RFC4475_3_3_1_missing_headers_are_named() -> None:
    outcome = handle(next(c for c in CASES if c.file == "insuf.dat").data)
    assert outcome.answer is not None
    for name in ("To", "From", "Call-ID"):
        assert name in outcome.answer.reason


def test_RFC4475_3_3_5_unsupported_lists_every_unknown_option() -> None:
    outcome = handle(next(c for c in CASES if c.file == "bext01.dat").data)
    assert outcome.answer is not None
    tags = outcome.answer.option_tags("unsupported")
    assert sorted(tags) == sorted(
        [
            "nothingSupportsThis",
            "nothingSupportsThisEither",
            "noProxiesSupportThis",
            "norDoAnyProxiesSupportThis",
        ]
    )


def test_RFC4475_3_3_6_unsupported_media_type_lists_accept() -> None:
    outcome = handle(next(c for c in CASES if c.file == "invut.dat").data)
    assert outcome.answer is not None and "application/sdp" in (
        outcome.answer.header("accept") or ""
    )
