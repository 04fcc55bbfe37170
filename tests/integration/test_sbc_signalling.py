"""The real `sbc run` process answering raw SIP over UDP, TCP, TLS and IPv6: OPTIONS, parse
errors, stream framing, retransmissions, and the INVITE server transaction's ACK handling."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import (
    SbcProcess,
    StreamClient,
    UdpClient,
    ipv6_available,
    sip_request,
    tcp_exchange,
    tls_exchange,
    udp_exchange,
)
from tests.support.sipmsg import header, status_line, status_of

IPV6 = ipv6_available()
# A short T1 makes the INVITE server transaction's Timer G fire every 0.1 s at first, so a
# missing or an absorbed ACK shows within a fraction of a second.
T1 = 0.1


@pytest.fixture(scope="module")
def sbc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SbcProcess]:
    process = SbcProcess(
        tmp_path_factory.mktemp("sbc"), tls=True, ipv6=IPV6, sip={"t1": T1, "t2": 4.0}
    )
    with process:
        yield process


def call_id_of(message: bytes) -> str | None:
    return header(message, "Call-ID")


# ----------------------------------------------------------------------------- UDP


@pytest.mark.parametrize("side", ["internal", "external"])
def test_options_over_udp_gets_200_with_capabilities(sbc: SbcProcess, side: str) -> None:
    target = sbc.addr(side, "udp")
    request = sip_request("OPTIONS", target)
    reply = udp_exchange(request, target)
    assert reply is not None, sbc.log_text()
    assert status_of(reply) == 200
    assert call_id_of(reply) == call_id_of(request)
    assert "INVITE" in (header(reply, "Allow") or "")
    assert header(reply, "Accept") is not None
    assert re.search(r";tag=\S+", header(reply, "To") or "")
    # RFC 3581: the Via says where the request really came from.
    assert "received=" in (header(reply, "Via") or "")


def test_retransmitted_options_gets_the_same_response(sbc: SbcProcess) -> None:
    target = sbc.addr("internal", "udp")
    request = sip_request("OPTIONS", target, branch="z9hG4bK-retrans-1")
    with UdpClient() as client:
        client.send(request, target)
        first = client.recv()
        client.send(request, target)
        second = client.recv()
    assert first is not None and status_of(first) == 200
    # RFC 3261 §17.2.2: the server transaction resends its last response (same To tag).
    assert second == first


def test_malformed_request_gets_400_naming_the_problem(sbc: SbcProcess) -> None:
    target = sbc.addr("internal", "udp")
    request = sip_request("OPTIONS", target).replace(b"CSeq: 1 OPTIONS", b"CSeq: one OPTIONS")
    reply = udp_exchange(request, target)
    assert reply is not None
    assert status_of(reply) == 400
    assert "cseq" in status_line(reply).lower(), status_line(reply)
    assert call_id_of(reply) == call_id_of(request)


def test_unparsable_request_line_gets_400(sbc: SbcProcess) -> None:
    target = sbc.addr("internal", "udp")
    request = sip_request("OPTIONS", target).replace(b" SIP/2.0\r\n", b" SIP/2.0 junk\r\n", 1)
    reply = udp_exchange(request, target)
    assert reply is not None
    assert status_of(reply) == 400
    assert status_line(reply) != "SIP/2.0 400 Bad Request"  # the reason says what is wrong


def test_request_without_via_gets_no_answer_and_server_keeps_answering(
    sbc: SbcProcess,
) -> None:
    target = sbc.addr("internal", "udp")
    with UdpClient() as client:
        client.send(sip_request("OPTIONS", target, via=False), target)
        # Nothing may come back: there is no Via to send an answer along (RFC 3261 §18.2.2).
        assert client.recv(timeout=0.5) is None
        good = sip_request("OPTIONS", target)
        client.send(good, target)
        reply = client.recv()
    assert reply is not None and status_of(reply) == 200
    assert call_id_of(reply) == call_id_of(good)


def test_stray_response_is_dropped_and_server_keeps_answering(sbc: SbcProcess) -> None:
    target = sbc.addr("internal", "udp")
    stray = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-nobody\r\n"
        b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: stray\r\n"
        b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    with UdpClient() as client:
        client.send(stray, target)
        client.send(b"SIP/2.0 200 garbage\r\n\r\n", target)
        assert client.recv(timeout=0.3) is None
    assert status_of(udp_exchange(sip_request("OPTIONS", target), target)) == 200


def test_invite_from_unknown_source_gets_100_then_403_retransmitted_until_acked(
    sbc: SbcProcess,
) -> None:
    target = sbc.addr("internal", "udp")
    invite = sip_request("INVITE", target, branch="z9hG4bK-noack")
    with UdpClient() as client:
        client.send(invite, target)
        replies = client.recv_until(lambda data: status_of(data) == 403)
        assert [status_of(r) for r in replies] == [100, 403], replies
        # No ACK: Timer G resends the final answer (RFC 3261 §17.2.1).
        again = client.recv(timeout=10 * T1)
        assert again == replies[-1]


def test_ack_stops_final_response_retransmissions(sbc: SbcProcess) -> None:
    target = sbc.addr("internal", "udp")
    branch = "z9hG4bK-acked"
    invite = sip_request("INVITE", target, branch=branch, call_id="acked-call")
    with UdpClient() as client:
        client.send(invite, target)
        replies = client.recv_until(lambda data: status_of(data) == 403)
        assert [status_of(r) for r in replies] == [100, 403]
        to_tag = re.search(r";tag=([^;\s]+)", header(replies[-1], "To") or "")
        assert to_tag is not None
        ack = sip_request(
            "ACK",
            target,
            branch=branch,  # RFC 3261 §17.1.1.3: the ACK for a non-2xx shares the branch
            call_id="acked-call",
            to_tag=to_tag.group(1),
        )
        client.send(ack, target)
        # Timer G (T1 = 0.1 s) would have fired several times in this window.
        assert client.recv(timeout=12 * T1) is None


# ----------------------------------------------------------------------------- TCP


def test_tcp_two_requests_in_one_segment_get_two_answers(sbc: SbcProcess) -> None:
    target = sbc.addr("internal", "tcp")
    first = sip_request("OPTIONS", target, transport="TCP")
    second = sip_request("OPTIONS", target, transport="TCP")
    replies = tcp_exchange([first + second], target, expect=2)
    assert [status_of(r) for r in replies] == [200, 200]
    assert [call_id_of(r) for r in replies] == [call_id_of(first), call_id_of(second)]


def test_tcp_request_split_over_segments_gets_one_answer(sbc: SbcProcess) -> None:
    target = sbc.addr("external", "tcp")
    request = sip_request("OPTIONS", target, transport="TCP", source=("127.0.0.2", 5999))
    cut1, cut2 = 17, len(request) - 5  # inside the request line, inside the last header
    replies = tcp_exchange(
        [request[:cut1], request[cut1:cut2], request[cut2:]], target, expect=2, timeout=1.0
    )
    assert [status_of(r) for r in replies] == [200]
    assert call_id_of(replies[0]) == call_id_of(request)


def test_tcp_keepalive_ping_gets_pong_and_connection_stays_usable(sbc: SbcProcess) -> None:
    target = sbc.addr("internal", "tcp")
    with StreamClient(target) as client:
        client.send(b"\r\n\r\n")
        assert client.recv_raw() == b"\r\n"  # RFC 5626 §3.5.1
        request = sip_request("OPTIONS", target, transport="TCP")
        client.send(request)
        reply = client.recv_message()
    assert reply is not None and status_of(reply) == 200


def test_tcp_request_without_content_length_gets_400_and_close(sbc: SbcProcess) -> None:
    target = sbc.addr("internal", "tcp")
    request = sip_request("OPTIONS", target, transport="TCP", content_length=False)
    with StreamClient(target) as client:
        client.send(request)
        reply = client.recv_message()
        assert reply is not None, sbc.log_text()
        assert status_of(reply) == 400
        assert "content-length" in status_line(reply).lower()
        assert client.wait_closed()


def test_tcp_oversize_message_closes_the_connection(sbc: SbcProcess) -> None:
    target = sbc.addr("internal", "tcp")
    request = sip_request("OPTIONS", target, transport="TCP").replace(
        b"Content-Length: 0", b"Content-Length: 10000000"
    )
    with StreamClient(target) as client:
        client.send(request)
        reply = client.recv_message()
        assert reply is not None
        assert status_of(reply) == 513  # RFC 3261 §21.5.14 Message Too Large
        assert client.wait_closed()


# ----------------------------------------------------------------------------- TLS


def test_options_over_tls_with_verified_certificate(sbc: SbcProcess) -> None:
    target = sbc.addr("internal", "tls")
    assert sbc.cert is not None
    first = sip_request("OPTIONS", target, transport="TLS")
    second = sip_request("OPTIONS", target, transport="TLS")
    replies = tls_exchange(
        [first + second, sip_request("OPTIONS", target, transport="TLS")[:40]],
        target,
        expect=2,
        cafile=str(sbc.cert),
    )
    assert [status_of(r) for r in replies] == [200, 200]
    assert call_id_of(replies[1]) == call_id_of(second)


# ----------------------------------------------------------------------------- IPv6


@pytest.mark.skipif(not IPV6, reason="IPv6 loopback ::1 is not available")
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_options_over_ipv6(sbc: SbcProcess, transport: str) -> None:
    target = sbc.addr("internal6", transport)
    request = sip_request("OPTIONS", target, transport=transport.upper(), source=("::1", 5999))
    if transport == "udp":
        reply = udp_exchange(request, target)
    else:
        replies = tcp_exchange([request], target)
        reply = replies[0] if replies else None
    assert reply is not None and status_of(reply) == 200
    assert "received=::1" in (header(reply, "Via") or "") or "received=[::1]" in (
        header(reply, "Via") or ""
    )


def test_server_logged_no_errors(sbc: SbcProcess, tmp_path: Path) -> None:
    # Runs last in this module: everything above must not have produced an error line.
    assert sbc.process is not None and sbc.process.poll() is None
    errors = [line for line in sbc.log_lines() if "level=error" in line]
    assert errors == []
