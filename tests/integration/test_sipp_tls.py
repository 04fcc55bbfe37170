"""SIPp calls whose PBX leg is carried over mutual TLS. Debian's SIPp has no TLS, so the PBX
SIPp speaks TCP through TLS bridges next to it (what stunnel does for real PBXs without
TLS): one carries the PBX's connections to the SBC (the SBC sees a TLS connection with the
PBX's client certificate from the PBX's address), the other is the PBX's TLS listener the SBC
connects to (the SBC presents its certificate and checks the PBX's). The ITSP is a SIPp on
UDP."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import pytest

from tests.support import StreamClient, free_port, sip_request
from tests.support.calls import (
    PBX_HOST,
    PBX_X_HEADER,
    SBC_INTERNAL,
    CallLab,
    CallOutcome,
    SippSide,
)
from tests.support.certs import make_ca, make_signed_cert
from tests.support.sipmsg import status_of
from tests.support.sipp import SCENARIOS, SIPP
from tests.support.tlsbridge import TlsBridge

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")

SBC_NAME = "sbc.example.test"


class TlsPbxLab(CallLab):
    """The CallLab with the internal interface on TLS only (client certificates required both
    ways) and the PBX SIPp on TCP behind two TlsBridges: `pbx_out` (PBX → SBC) and `pbx_in`
    (SBC → PBX, the PBX's configured TLS address)."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.ca = make_ca(tmp_path)
        self.server_cert = make_signed_cert(tmp_path, self.ca, "sbc", (SBC_NAME, SBC_INTERNAL))
        self.pbx_cert = make_signed_cert(tmp_path, self.ca, "pbx", ("pbx.example.test", PBX_HOST))
        self.out_port = free_port(PBX_HOST, avoid={self.pbx_port})
        self.tls_port = free_port(PBX_HOST, avoid={self.pbx_port, self.out_port})

    def config_text(self) -> str:
        text = super().config_text()
        udp = f'listen: ["udp:{SBC_INTERNAL}:{self.internal_port}"]'
        tls = (
            f'listen: ["tls:{SBC_INTERNAL}:{self.internal_port}"], '
            f"tls: {{cert: {self.server_cert[0]}, key: {self.server_cert[1]}, "
            f"ca: {self.ca[0]}, verify_peer: true}}"
        )
        pbx = f'address: "{PBX_HOST}:{self.pbx_port}"'
        assert udp in text and pbx in text, text
        return text.replace(udp, tls).replace(
            pbx, f'address: "{PBX_HOST}:{self.tls_port}", transport: tls'
        )

    @property
    def internal_addr(self) -> tuple[str, int]:
        return (PBX_HOST, self.out_port)  # the PBX SIPp's way in: its bridge

    def pbx_side(self, scenario: str, **keys: str) -> SippSide:
        side = super().pbx_side(scenario, tls_port=str(self.tls_port), **keys)
        side.transport = "t1"
        return side

    def pbx_out(self, *, certificate: bool = True) -> TlsBridge:
        context = ssl.create_default_context(cafile=str(self.ca[0]))
        if certificate:
            context.load_cert_chain(str(self.pbx_cert[0]), str(self.pbx_cert[1]))
        return TlsBridge(
            (PBX_HOST, self.out_port),
            (SBC_INTERNAL, self.internal_port),
            connect_tls=context,
            server_name=SBC_NAME,
        )

    def pbx_in(self) -> TlsBridge:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.ca[0]))
        context.load_cert_chain(str(self.pbx_cert[0]), str(self.pbx_cert[1]))
        context.verify_mode = ssl.CERT_REQUIRED  # the SBC must show its certificate
        return TlsBridge((PBX_HOST, self.tls_port), (PBX_HOST, self.pbx_port), accept_tls=context)


def _tls_scenario(tmp_path: Path, name: str) -> str:
    """`name` with the PBX's Contact on its TLS address, as a PBX behind TLS advertises it
    (the SBC's in-dialog requests go there, over the connection it already has)."""
    text = (SCENARIOS / name).read_text()
    plain = "[local_ip]:[local_port];transport=[transport]"
    assert plain in text, name
    path = tmp_path / name.replace(".xml", "_tls.xml")
    path.write_text(text.replace(plain, "[local_ip]:[tls_port];transport=tls"))
    return str(path)


def _check_pbx_leg(outcome: CallOutcome, log: str, *, requests_in: tuple[str, ...]) -> None:
    assert outcome.ok, outcome.describe()
    source = rf"source=tls:{re.escape(PBX_HOST)}:\d+"
    for method in requests_in:
        assert re.search(rf"event=sip\.request_received method={method} {source}", log), log
    for message in outcome.itsp.received:
        head = message.text.split("\n\n")[0]
        assert PBX_HOST not in message.text and PBX_X_HEADER not in message.text, message.text
        assert "TLS" not in head.upper(), head


def test_sipp_call_from_the_pbx_over_mutual_tls_to_a_udp_trunk(tmp_path: Path) -> None:
    lab = TlsPbxLab(tmp_path)
    with lab, lab.pbx_out() as bridge:
        outcome = lab.run_outbound("call_out_pbx.xml", "call_out_itsp.xml", pbx_args=("-d", "200"))
        log = lab.log_text()
    # INVITE, ACK and BYE crossed the one TLS connection the PBX opened, the responses came
    # back on it (RFC 3261 §18.2.2).
    assert bridge.connections == 1, bridge.errors
    _check_pbx_leg(outcome, log, requests_in=("INVITE", "BYE"))
    assert len(outcome.pbx.received_responses("BYE", 200)) == 1, outcome.describe()
    assert len(outcome.itsp.received_requests("ACK")) == 1, outcome.describe()
    assert len(outcome.itsp.received_requests("BYE")) == 1, outcome.describe()


def test_sipp_call_from_a_udp_trunk_to_the_pbx_over_mutual_tls(tmp_path: Path) -> None:
    # The SBC opens the TLS connection to the PBX's configured address (checking its
    # certificate for 127.0.0.10, presenting its own), and sends ACK and the carrier's BYE to
    # the PBX's Contact over that same connection.
    lab = TlsPbxLab(tmp_path)
    with lab, lab.pbx_in() as bridge:
        outcome = lab.run_inbound(
            "call_in_itsp.xml", _tls_scenario(tmp_path, "call_in_pbx.xml"), itsp_args=("-d", "200")
        )
        log = lab.log_text()
    assert bridge.connections == 1, bridge.errors
    _check_pbx_leg(outcome, log, requests_in=())
    pbx_requests = [m.method for m in outcome.pbx.received if m.is_request]
    assert pbx_requests == ["INVITE", "ACK", "BYE"], outcome.describe()
    assert len(outcome.itsp.received_responses("BYE", 200)) == 1, outcome.describe()
    for message in outcome.pbx.received:
        if message.is_request:
            assert message.headers("Via")[0].startswith("SIP/2.0/TLS "), message.text


def test_the_pbx_is_refused_without_a_client_certificate(tmp_path: Path) -> None:
    # The PBX's bridge without the PBX's certificate: the SBC (verify_peer) refuses the
    # handshake and no call reaches the ITSP, so the passing call really went over mutual
    # TLS and not around it.
    lab = TlsPbxLab(tmp_path)
    with lab, lab.pbx_out(certificate=False):
        pair = lab.start_outbound("call_out_pbx.xml", "call_out_itsp.xml", timeout=4.0)
        outcome = pair.wait(callee_grace=1.0)
        log = lab.log_text()
    assert not outcome.pbx.ok
    assert outcome.itsp.received_requests("INVITE") == []
    # With TLS 1.3 the client's handshake ends before the server has checked its
    # certificate, so the refusal is seen on the SBC's side.
    assert "event=tls.handshake_failed" in log, log
    assert "event=sip.request_received" not in log, log


def _served_certificate(lab: TlsPbxLab, context: ssl.SSLContext) -> tuple[StreamClient, bytes]:
    """A TLS connection from the PBX's address and the certificate the SBC showed on it."""
    client = StreamClient((SBC_INTERNAL, lab.internal_port), source_host=PBX_HOST)
    secure = context.wrap_socket(client.sock, server_hostname=SBC_NAME)
    client.sock = secure
    certificate = secure.getpeercert(binary_form=True)
    assert certificate is not None
    return client, certificate


def _options(client: StreamClient, lab: TlsPbxLab) -> int | None:
    target = (SBC_INTERNAL, lab.internal_port)
    client.send(sip_request("OPTIONS", target, transport="TLS", source=(PBX_HOST, 5061)))
    return status_of(client.recv_message(5.0))


def test_a_reload_serves_a_renewed_certificate_to_new_connections(tmp_path: Path) -> None:
    # certbot-style renewal: new files at the same paths, then `systemctl reload` (SIGHUP).
    # New connections get the new certificate, the open one carries on with its session,
    # calls keep working; a broken key file refuses the reload and the last good one stays.
    lab = TlsPbxLab(tmp_path)
    context = ssl.create_default_context(cafile=str(lab.ca[0]))
    context.load_cert_chain(str(lab.pbx_cert[0]), str(lab.pbx_cert[1]))
    with lab:
        assert lab.sbc is not None
        old_connection, first = _served_certificate(lab, context)
        with old_connection:
            renewal = tmp_path / "renewal"
            renewal.mkdir()
            renewed = make_signed_cert(renewal, lab.ca, "sbc", (SBC_NAME, SBC_INTERNAL))
            for new, live in zip(renewed, lab.server_cert, strict=True):
                live.write_bytes(new.read_bytes())
            reloaded = lab.reload(lab.config_text(), r"event=config\.(reloaded|reload_refused) ")
            assert "event=config.reloaded " in reloaded, reloaded
            fresh, second = _served_certificate(lab, context)
            with fresh:
                assert _options(fresh, lab) == 200
            assert _options(old_connection, lab) == 200  # opened before: still served
        with lab.pbx_out() as bridge:
            outcome = lab.run_outbound("call_out_pbx.xml", "call_out_itsp.xml")
        lab.server_cert[1].write_text("not a key\n")
        refused = lab.reload(lab.config_text(), r"event=config\.(reloaded|reload_refused) ")
        after, third = _served_certificate(lab, context)
        after.close()
    assert first != second, "the renewed certificate was not served after the reload"
    assert outcome.ok and bridge.connections == 1, outcome.describe()
    assert "event=config.reload_refused " in refused, refused
    assert "interfaces.internal.tls" in refused, refused
    assert third == second  # the last good certificate stays


def test_a_sips_call_is_refused_when_the_trunk_is_not_tls(tmp_path: Path) -> None:
    # The PBX asks for SIPS (TLS on every hop) over its TLS connection; the only trunk is
    # UDP: 480 with Warning 380 instead of a call quietly carried in the clear.
    lab = TlsPbxLab(tmp_path)
    context = ssl.create_default_context(cafile=str(lab.ca[0]))
    context.load_cert_chain(str(lab.pbx_cert[0]), str(lab.pbx_cert[1]))
    with lab:
        client, _ = _served_certificate(lab, context)
        with client:
            target = (SBC_INTERNAL, lab.internal_port)
            request = sip_request("INVITE", target, transport="TLS", source=(PBX_HOST, 5061))
            request = request.replace(b"INVITE sip:sbc@", b"INVITE sips:15551234567@", 1)
            client.send(request)
            answer = b""
            while (status := status_of(answer)) is None or status < 200:
                data = client.recv_message(5.0)
                assert data is not None, lab.log_text()
                answer = data
        log = lab.log_text()
    assert status == 480, answer
    assert b'Warning: 380 test-sbc "SIPS Not Allowed"' in answer, answer
    assert "event=call.new" not in log
