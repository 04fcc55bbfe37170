"""sbc.sip.peer: received/rport stamping (RFC 3261 §18.2.1, RFC 3581 §4) and where a
response goes (RFC 3261 §18.2.2, RFC 3581 §4)."""

from __future__ import annotations

import pytest

from sbc.sip.headers import Via, parse_vias
from sbc.sip.message import Request, parse
from sbc.sip.peer import Peer, response_peer, stamp_via

OTHER_VIA = "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-upstream"


def request(via: str) -> Request:
    data = (
        "OPTIONS sip:sbc@127.0.0.1 SIP/2.0\r\n"
        f"Via: {via}\r\n"
        f"Via: {OTHER_VIA}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:a@127.0.0.10>;tag=1\r\n"
        "To: <sip:sbc@127.0.0.1>\r\n"
        "Call-ID: peer-test\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    msg = parse(data)
    assert isinstance(msg, Request)
    return msg


def via(text: str) -> Via:
    return parse_vias(text)[0]


UDP_SRC = Peer("udp", "127.0.0.10", 5999, "internal-udp")


# ----- Peer ------------------------------------------------------------------------------


def test_peer_reliable_and_str() -> None:
    assert not Peer("udp", "127.0.0.1", 5060).reliable
    assert Peer("tcp", "127.0.0.1", 5060).reliable
    assert Peer("tls", "127.0.0.1", 5061).reliable
    assert str(Peer("udp", "127.0.0.1", 5060)) == "udp:127.0.0.1:5060"
    assert str(Peer("tls", "::1", 5061)) == "tls:[::1]:5061"


# ----- stamp_via ----------------------------------------------------------------------------


def test_stamp_adds_received_when_sent_by_differs_rfc3261_18_2_1() -> None:
    req = request("SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1")
    stamp_via(req, UDP_SRC)
    assert req.via.received == "127.0.0.10"
    assert req.via.rport is None  # not asked for
    assert req.via.port == 5060 and req.via.host == "192.0.2.7"
    again = parse(bytes(req))
    assert again.header_values("via") == [
        "SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1;received=127.0.0.10",
        OTHER_VIA,
    ]


def test_stamp_adds_received_for_a_domain_name_rfc3261_18_2_1() -> None:
    req = request("SIP/2.0/UDP pbx.example.com;branch=z9hG4bK1")
    stamp_via(req, UDP_SRC)
    assert req.via.received == "127.0.0.10"


def test_stamp_leaves_same_host_without_rport_untouched() -> None:
    text = "SIP/2.0/UDP 127.0.0.10:5070;branch=z9hG4bK1"
    req = request(text)
    before = bytes(req)
    stamp_via(req, UDP_SRC)
    assert req.via.received is None
    assert bytes(req) == before


def test_stamp_fills_rport_and_received_even_for_same_host_rfc3581_4() -> None:
    req = request("SIP/2.0/UDP 127.0.0.10:5060;branch=z9hG4bK1;rport")
    stamp_via(req, UDP_SRC)
    assert req.via.rport == "5999"
    assert req.via.received == "127.0.0.10"
    assert req.via.branch == "z9hG4bK1"
    again = parse(bytes(req))
    assert again.via.rport == "5999"
    assert again.vias[1].branch == "z9hG4bK-upstream"


def test_stamp_rport_with_different_host() -> None:
    req = request("SIP/2.0/UDP 192.0.2.7;rport;branch=z9hG4bK1")
    stamp_via(req, Peer("udp", "127.0.0.20", 40000))
    assert (req.via.received, req.via.rport) == ("127.0.0.20", "40000")


def test_stamp_on_comma_separated_vias_touches_only_the_top_one() -> None:
    data = (
        "OPTIONS sip:sbc@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.7;rport;branch=z9hG4bK1, {OTHER_VIA}\r\n"
        "From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n"
    ).encode()
    req = parse(data)
    assert isinstance(req, Request)
    stamp_via(req, UDP_SRC)
    vias = parse(bytes(req)).vias
    assert [v.branch for v in vias] == ["z9hG4bK1", "z9hG4bK-upstream"]
    assert (vias[0].received, vias[0].rport) == ("127.0.0.10", "5999")
    assert (vias[1].received, vias[1].rport) == (None, None)


def test_stamp_leaves_same_ipv6_host_untouched_rfc3261_18_2_1() -> None:
    req = request("SIP/2.0/UDP [::1]:5060;branch=z9hG4bK1")
    stamp_via(req, Peer("udp", "::1", 5060))
    assert req.via.received is None


def test_stamp_ipv6_source_gives_bare_received_rfc5118_4_5() -> None:
    req = request("SIP/2.0/UDP [2001:db8::7]:5060;branch=z9hG4bK1;rport")
    stamp_via(req, Peer("udp", "::1", 5062))
    assert (req.via.received, req.via.rport) == ("::1", "5062")
    assert parse(bytes(req)).via.received == "::1"


def test_forged_received_does_not_redirect_the_response() -> None:
    req = request("SIP/2.0/UDP 127.0.0.10:5060;branch=z9hG4bK1;received=198.51.100.66")
    stamp_via(req, Peer("udp", "127.0.0.10", 5060))
    assert response_peer(req.via, Peer("udp", "127.0.0.10", 5060)).host == "127.0.0.10"


# ----- response_peer: unreliable transports ----------------------------------------------


def test_response_to_received_and_rport_rfc3581_4() -> None:
    v = via("SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1;received=127.0.0.10;rport=5999")
    assert response_peer(v, UDP_SRC) == Peer("udp", "127.0.0.10", 5999, "internal-udp")


def test_response_rport_flag_without_value_uses_source_port_rfc3581_4() -> None:
    v = via("SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1;rport")
    assert response_peer(v, UDP_SRC) == Peer("udp", "192.0.2.7", 5999, "internal-udp")


def test_response_to_received_with_sent_by_port_rfc3261_18_2_2() -> None:
    v = via("SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bK1;received=127.0.0.10")
    assert response_peer(v, UDP_SRC) == Peer("udp", "127.0.0.10", 5070, "internal-udp")


def test_response_to_received_default_port_5060_rfc3261_18_2_2() -> None:
    v = via("SIP/2.0/UDP pbx.example.com;branch=z9hG4bK1;received=127.0.0.10")
    assert response_peer(v, UDP_SRC) == Peer("udp", "127.0.0.10", 5060, "internal-udp")


def test_response_to_sent_by_rfc3261_18_2_2() -> None:
    v = via("SIP/2.0/UDP 127.0.0.10:5072;branch=z9hG4bK1")
    assert response_peer(v, UDP_SRC) == Peer("udp", "127.0.0.10", 5072, "internal-udp")


def test_response_to_sent_by_default_port_5060() -> None:
    v = via("SIP/2.0/UDP 127.0.0.10;branch=z9hG4bK1")
    assert response_peer(v, UDP_SRC).port == 5060


def test_response_to_maddr_rfc3261_18_2_2() -> None:
    v = via("SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bK1;maddr=239.255.255.1;received=127.0.0.10")
    assert response_peer(v, UDP_SRC) == Peer("udp", "239.255.255.1", 5070, "internal-udp")
    v = via("SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK1;maddr=239.255.255.1")
    assert response_peer(v, UDP_SRC).port == 5060


def test_response_to_ipv6_maddr_has_bare_host() -> None:
    v = via("SIP/2.0/UDP [::1]:5070;branch=z9hG4bK1;maddr=[::1]")
    assert response_peer(v, Peer("udp", "::1", 5999)).host == "::1"


def test_response_ipv6_sent_by_brackets_removed() -> None:
    v = via("SIP/2.0/UDP [2001:db8::7]:5070;branch=z9hG4bK1")
    assert response_peer(v, Peer("udp", "::1", 5999)) == Peer("udp", "2001:db8::7", 5070)


def test_response_ipv6_received_and_rport() -> None:
    v = via("SIP/2.0/UDP [2001:db8::7]:5070;branch=z9hG4bK1;received=::1;rport=5999")
    assert response_peer(v, Peer("udp", "::1", 5999)) == Peer("udp", "::1", 5999)
    bracketed = via("SIP/2.0/UDP h;branch=z9hG4bK1;received=[::1]")
    assert response_peer(bracketed, Peer("udp", "::1", 5999)).host == "::1"


def test_stamp_then_response_peer_goes_back_to_the_source() -> None:
    req = request("SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1;rport")
    source = Peer("udp", "127.0.0.10", 41000, "ext")
    stamp_via(req, source)
    assert response_peer(req.via, source) == source


# ----- response_peer: reliable transports --------------------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_reliable_transport_answers_on_the_source_connection_rfc3261_18_2_2(
    transport: str,
) -> None:
    source = Peer(transport, "127.0.0.10", 49152, "internal-" + transport)
    v = via(
        f"SIP/2.0/{transport.upper()} 192.0.2.7:5060;branch=z9hG4bK1;received=127.0.0.9;"
        "rport=1;maddr=239.255.255.1"
    )
    assert response_peer(v, source) is source
