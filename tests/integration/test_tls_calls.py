"""The real `sbc run` process with a mutual-TLS interface toward the PBX: a Python TLS client
(the installed SIPp has no TLS) as the PBX, a UDP responder as the ITSP. OPTIONS, a request
with too many headers (400 on the same connection), and a whole call: INVITE, 200, ACK, BYE.
"""

from __future__ import annotations

import re
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sbc.sip import parse
from sbc.sip.message import Request, Response, make_response
from tests.support import SbcProcess, StreamClient, free_port, sip_request
from tests.support.certs import make_ca, make_signed_cert
from tests.support.net import UdpResponder
from tests.support.sipmsg import status_line, status_of

SBC_INTERNAL = "127.0.0.1"
SBC_EXTERNAL = "127.0.0.2"
PBX_HOST = "127.0.0.10"
ITSP_HOST = "127.0.0.20"
SBC_NAME = "sbc.example.test"
NUMBER = "15551234567"


class Itsp(UdpResponder):
    """Answers INVITE with 200 and an SDP answer, BYE and OPTIONS with 200; counts methods."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.methods: list[str] = []
        self.bye = threading.Event()
        self._lock = threading.Lock()

    def answer(self, data: bytes) -> bytes | None:
        message = parse(data)
        if not isinstance(message, Request):
            return None
        with self._lock:
            self.methods.append(message.method)
        if message.method == "BYE":
            self.bye.set()
        if message.method == "ACK":
            return None
        if message.method != "INVITE":
            return bytes(make_response(message, 200, to_tag="itsp"))
        host, port = self._address
        sdp = (
            f"v=0\r\no=itsp 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
            "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
        )
        return bytes(
            make_response(
                message,
                200,
                to_tag="itsp",
                headers=(
                    ("Contact", f"<sip:itsp@{host}:{port}>"),
                    ("Content-Type", "application/sdp"),
                ),
                body=sdp.encode(),
            )
        )

    @property
    def _address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def seen(self) -> list[str]:
        with self._lock:
            return list(self.methods)


class TlsPbx(StreamClient):
    """The PBX: a TCP connection from PBX_HOST upgraded to TLS with a client certificate."""

    def __init__(self, addr: tuple[str, int], context: ssl.SSLContext) -> None:
        super().__init__(addr, source_host=PBX_HOST)
        self.sock = context.wrap_socket(self.sock, server_hostname=SBC_NAME)


class Lab:
    def __init__(self, tmp_path: Path) -> None:
        self.ca = make_ca(tmp_path)
        server = make_signed_cert(tmp_path, self.ca, "sbc", (SBC_NAME, SBC_INTERNAL))
        self.pbx_cert = make_signed_cert(tmp_path, self.ca, "pbx", ("pbx.example.test",))
        self.tls_port = free_port(SBC_INTERNAL)
        external = free_port(SBC_EXTERNAL)
        self.itsp_port = free_port(ITSP_HOST)
        low = 32000 + (self.tls_port % 50) * 100
        config = (
            "node: test-sbc\n"
            "log: {level: debug, format: kv}\n"
            "interfaces:\n"
            "  internal:\n"
            f'    listen: ["tls:{SBC_INTERNAL}:{self.tls_port}"]\n'
            f"    media_address: {SBC_INTERNAL}\n"
            f"    tls: {{cert: {server[0]}, key: {server[1]}, ca: {self.ca[0]}, "
            "verify_peer: true}\n"
            "  external:\n"
            f'    listen: ["udp:{SBC_EXTERNAL}:{external}"]\n'
            f"    advertise: {SBC_EXTERNAL}\n"
            f"    media_address: {SBC_EXTERNAL}\n"
            f'pbxs: [{{name: pbx, interface: internal, address: "{PBX_HOST}:5061", '
            f"transport: tls, trusted_sources: [{PBX_HOST}/32]}}]\n"
            "trunks: [{name: itsp, interface: external, "
            f'proxy: "sip:{ITSP_HOST}:{self.itsp_port}", codecs: [PCMU, telephone-event]}}]\n'
            "routes:\n"
            "  outbound: [{match: '^\\+?\\d+$', trunks: [itsp]}]\n"
            "  inbound: [{match: '.*', pbx: pbx}]\n"
            f"media: {{port_range: [{low}, {low + 99}], timeout: 60}}\n"
        )
        self.sbc = SbcProcess(tmp_path, config_text=config)
        self.itsp = Itsp(ITSP_HOST, self.itsp_port)

    @property
    def target(self) -> tuple[str, int]:
        return (SBC_INTERNAL, self.tls_port)

    def pbx(self) -> TlsPbx:
        context = ssl.create_default_context(cafile=str(self.ca[0]))
        context.load_cert_chain(str(self.pbx_cert[0]), str(self.pbx_cert[1]))
        return TlsPbx(self.target, context)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path)
    with lab.itsp, lab.sbc:
        yield lab


def final_response(client: StreamClient, timeout: float = 5.0) -> bytes:
    """The first final (>= 200) response on the connection; provisional ones are skipped."""
    while True:
        reply = client.recv_message(timeout)
        assert reply is not None, "no final response"
        status = status_of(reply)
        if status is not None and status >= 200:
            return reply


def in_dialog(method: str, answer: Response, invite: Request, cseq: int) -> bytes:
    """ACK or BYE from the PBX inside the dialog the 200 `answer` set up (RFC 3261 §12.2.1.1:
    the remote target is the 200's Contact, the To tag its tag)."""
    contact = answer.header("Contact") or ""
    match = re.search(r"<([^>]+)>", contact)
    target = match.group(1) if match else contact.strip()
    local = f"{PBX_HOST}:5061"
    lines = [
        f"{method} {target} SIP/2.0",
        f"Via: SIP/2.0/TLS {local};branch=z9hG4bK-{method.lower()}-{cseq};rport",
        "Max-Forwards: 70",
        f"From: {invite.header('From')}",
        f"To: {answer.header('To')}",
        f"Call-ID: {invite.call_id}",
        f"CSeq: {cseq if method != 'ACK' else 1} {method}",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_options_and_too_many_headers_over_mutual_tls(lab: Lab) -> None:
    with lab.pbx() as pbx:
        pbx.send(sip_request("OPTIONS", lab.target, transport="TLS", source=(PBX_HOST, 5061)))
        reply = pbx.recv_message(5.0)
        assert status_of(reply) == 200, lab.sbc.log_text()

        crowded = sip_request(
            "OPTIONS",
            lab.target,
            transport="TLS",
            source=(PBX_HOST, 5061),
            headers=tuple((f"X-Filler-{n}", "x") for n in range(150)),
        )
        pbx.send(crowded)
        reply = pbx.recv_message(5.0)
        assert reply is not None
        assert status_line(reply) == "SIP/2.0 400 Too many headers"

        # The message was framed: the connection carries on.
        pbx.send(sip_request("OPTIONS", lab.target, transport="TLS", source=(PBX_HOST, 5061)))
        assert status_of(pbx.recv_message(5.0)) == 200


def test_call_from_the_pbx_over_mutual_tls_to_a_udp_trunk(lab: Lab) -> None:
    sdp = (
        f"v=0\r\no=pbx 1 1 IN IP4 {PBX_HOST}\r\ns=-\r\nc=IN IP4 {PBX_HOST}\r\nt=0 0\r\n"
        "m=audio 41000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    ).encode()
    raw_invite = sip_request(
        "INVITE",
        lab.target,
        transport="TLS",
        source=(PBX_HOST, 5061),
        headers=(("Content-Type", "application/sdp"),),
        body=sdp,
    ).replace(b"sip:sbc@", f"sip:{NUMBER}@".encode(), 2)
    invite = parse(raw_invite)
    assert isinstance(invite, Request)
    with lab.pbx() as pbx:
        pbx.send(raw_invite)
        answer = parse(final_response(pbx))
        assert isinstance(answer, Response)
        assert answer.status == 200, lab.sbc.log_text()
        assert answer.to.tag is not None
        assert b"m=audio" in answer.body
        pbx.send(in_dialog("ACK", answer, invite, 1))
        pbx.send(in_dialog("BYE", answer, invite, 2))
        bye_reply = final_response(pbx)
        assert status_of(bye_reply) == 200, lab.sbc.log_text()
    assert lab.itsp.bye.wait(5.0), lab.sbc.log_text()
    seen = lab.itsp.seen()
    assert seen[:1] == ["INVITE"] and "ACK" in seen and "BYE" in seen, seen
