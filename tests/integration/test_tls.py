"""SIP over TLS through the TransportLayer with real TLS sockets on loopback: mutual TLS on a
listener (client certificates checked against the interface's CA), the inbound handshake
timeout, and the server name checked when we connect out to a trunk by IP address."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest

from sbc.sip.framing import FramedMessage, StreamFramer
from sbc.sip.peer import Peer
from sbc.transport import TransportLayer, TransportLimits
from tests.support import free_port, make_self_signed_cert, sip_request
from tests.support.certs import make_ca, make_signed_cert
from tests.support.layer import (
    LOOPS,
    Inbox,
    Runner,
    interface,
    loop_runner,
    read_until_closed,
    start_layer,
    tls_settings,
    watch_log,
)

HOST = "127.0.0.1"
TRUNK_NAME = "trunk.example.test"
OTHER_NAME = "other.example.test"
OK = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"

Pair = tuple[Path, Path]


@dataclass(frozen=True)
class Pki:
    ca: Pair
    server: Pair  # signed by ca, valid for TRUNK_NAME only (no IP address)
    client: Pair  # signed by ca: what a trunk or PBX presents for mutual TLS
    rogue: Pair  # self-signed: a client certificate from nobody we trust


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca(directory)
    return Pki(
        ca=ca,
        server=make_signed_cert(directory, ca, "server", (TRUNK_NAME,)),
        client=make_signed_cert(directory, ca, "client", ("pbx.example.test",)),
        rogue=make_self_signed_cert(directory, "rogue", ("pbx.example.test",)),
    )


@pytest.fixture(params=LOOPS)
def run(request: pytest.FixtureRequest) -> Runner:
    return loop_runner(request.param)


def client_context(pki: Pki, cert: Pair | None = None) -> ssl.SSLContext:
    """A Python TLS client trusting our CA, presenting `cert` when given."""
    context = ssl.create_default_context(cafile=str(pki.ca[0]))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


async def mutual_tls_listener(
    pki: Pki, inbox: Inbox, **options: object
) -> tuple[TransportLayer, int]:
    """A TLS listener with the server certificate that requires client certificates."""
    port = free_port(HOST)
    settings = tls_settings(*pki.server, pki.ca[0], verify_peer=True)
    layer = await start_layer(
        interface("external", HOST, f"tls:{port}", tls=settings), inbox=inbox, **options
    )
    return layer, port


async def refused_client(port: int, context: ssl.SSLContext) -> None:
    """Connect, send a request and see the server end the connection. With TLS 1.3 the
    client's side of the handshake completes before the server checks the client's
    certificate, so the refusal may come at connect or at the first read."""
    try:
        reader, writer = await asyncio.open_connection(
            HOST, port, ssl=context, server_hostname=TRUNK_NAME
        )
    except (ssl.SSLError, ConnectionResetError):
        return
    try:
        writer.write(sip_request("OPTIONS", (HOST, port), transport="TLS"))
        assert await read_until_closed(reader) == b""
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


# ----------------------------------------------------------------------------- mutual TLS


def test_mutual_tls_refuses_a_client_without_a_certificate(run: Runner, pki: Pki) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        layer, port = await mutual_tls_listener(pki, inbox)
        try:
            with watch_log() as watcher:
                await refused_client(port, client_context(pki))
                failed = await watcher.wait_for("tls.handshake_failed")
            assert "certificate" in failed["reason"].lower(), failed
            assert failed["peer"].startswith(f"tls:{HOST}:")
            assert layer.counters.tls_handshake_failures == 1
            assert inbox.messages == []
            assert layer.connection_count == 0
            assert layer.connections_from(HOST) == 0
        finally:
            await layer.close()

    run(scenario)


def test_mutual_tls_refuses_a_certificate_from_an_untrusted_issuer(run: Runner, pki: Pki) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        layer, port = await mutual_tls_listener(pki, inbox)
        try:
            with watch_log() as watcher:
                await refused_client(port, client_context(pki, pki.rogue))
                failed = await watcher.wait_for("tls.handshake_failed")
            assert "certificate verify failed" in failed["reason"], failed
            assert inbox.messages == []
        finally:
            await layer.close()

    run(scenario)


def test_mutual_tls_accepts_a_client_with_a_ca_signed_certificate(run: Runner, pki: Pki) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        layer, port = await mutual_tls_listener(pki, inbox)
        try:
            reader, writer = await asyncio.open_connection(
                HOST, port, ssl=client_context(pki, pki.client), server_hostname=TRUNK_NAME
            )
            request = sip_request("OPTIONS", (HOST, port), transport="TLS")
            writer.write(request)
            await inbox.wait(lambda: len(inbox.messages) == 1)
            data, source = inbox.messages[0]
            assert data == request
            assert source.transport == "tls"
            layer.send(source, OK)
            assert await asyncio.wait_for(reader.readexactly(len(OK)), 3) == OK
            assert layer.counters.tls_handshake_failures == 0
            writer.close()
        finally:
            await layer.close()

    run(scenario)


def test_tls_handshake_that_never_starts_is_cut_off(run: Runner, pki: Pki) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        layer, port = await mutual_tls_listener(
            pki, inbox, limits=TransportLimits(handshake_timeout=0.3)
        )
        loop = asyncio.get_running_loop()
        try:
            with watch_log() as watcher:
                # Plain TCP to the TLS port, then silence: no ClientHello ever comes.
                reader, writer = await asyncio.open_connection(HOST, port)
                started = loop.time()
                assert layer.limits.handshake_timeout == 0.3
                assert await read_until_closed(reader) == b""
                failed = await watcher.wait_for("tls.handshake_failed")
            assert loop.time() - started >= 0.25
            assert layer.counters.tls_handshake_failures == 1
            assert failed["reason"]
            assert layer.connections_from(HOST) == 0
            writer.close()
        finally:
            await layer.close()

    run(scenario)


# ----------------------------------------------------------------------------- server names


class TlsTrunk:
    """A TLS server standing in for a trunk gateway: its certificate names TRUNK_NAME only;
    it records the SNI names clients sent and the SIP messages they delivered."""

    def __init__(self, pki: Pki) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(str(pki.server[0]), str(pki.server[1]))
        self.context.sni_callback = self._sni
        self.server_names: list[str | None] = []
        self.received: list[bytes] = []
        self._arrived = asyncio.Event()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = free_port(HOST)

    def _sni(self, _conn: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        self.server_names.append(name)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, HOST, self.port, ssl=self.context)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        framer = StreamFramer()
        with contextlib.suppress(OSError, ssl.SSLError):
            while data := await reader.read(65536):
                for event in framer.feed(data):
                    if isinstance(event, FramedMessage):
                        self.received.append(event.data)
                        self._arrived.set()

    async def wait_for(self, count: int) -> None:
        while len(self.received) < count:
            self._arrived.clear()
            await asyncio.wait_for(self._arrived.wait(), 3)

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()


async def sbc_side(pki: Pki, inbox: Inbox, *, verify_peer: bool = True) -> TransportLayer:
    """The SBC's external interface: TLS with the CA-signed client certificate."""
    port = free_port(HOST)
    settings = tls_settings(
        *pki.client, pki.ca[0] if verify_peer else None, verify_peer=verify_peer
    )
    return await start_layer(interface("external", HOST, f"tls:{port}", tls=settings), inbox=inbox)


def test_outbound_tls_to_an_ip_checks_the_configured_server_name(run: Runner, pki: Pki) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        trunk = TlsTrunk(pki)
        await trunk.start()
        layer = await sbc_side(pki, inbox)
        try:
            layer.set_tls_server_name(HOST, trunk.port, TRUNK_NAME)
            assert layer.tls_server_name(HOST, trunk.port) == TRUNK_NAME
            request = sip_request("OPTIONS", (HOST, trunk.port), transport="TLS")
            layer.send(Peer("tls", HOST, trunk.port), request)
            await trunk.wait_for(1)
            assert trunk.received == [request]
            assert trunk.server_names == [TRUNK_NAME], "SNI carries the trunk's name"
            assert inbox.errors == []
        finally:
            await layer.close()
            await trunk.close()

    run(scenario)


def test_outbound_tls_refuses_a_certificate_for_another_name_with_a_clear_reason(
    run: Runner, pki: Pki
) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        trunk = TlsTrunk(pki)
        await trunk.start()
        layer = await sbc_side(pki, inbox)
        try:
            layer.set_tls_server_name(HOST, trunk.port, OTHER_NAME)
            request = sip_request("OPTIONS", (HOST, trunk.port), transport="TLS")
            with watch_log() as watcher:
                layer.send(Peer("tls", HOST, trunk.port), request, "the request")
                await inbox.wait(lambda: len(inbox.errors) == 1)
                logged = await watcher.wait_for("transport.error")
            peer, reason, context = inbox.errors[0]
            assert (peer.host, peer.port, context) == (HOST, trunk.port, "the request")
            assert repr(OTHER_NAME) in reason
            assert "Hostname mismatch" in reason
            assert logged["reason"] == reason
            assert layer.connection_count == 0

            # Once the right name is set, the next request gets through.
            layer.set_tls_server_name(HOST, trunk.port, TRUNK_NAME)
            layer.send(Peer("tls", HOST, trunk.port), request)
            await trunk.wait_for(1)
            assert trunk.received == [request]
        finally:
            await layer.close()
            await trunk.close()

    run(scenario)


def test_outbound_tls_without_a_server_name_checks_the_address(run: Runner, pki: Pki) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        trunk = TlsTrunk(pki)
        await trunk.start()
        layer = await sbc_side(pki, inbox)
        try:
            layer.set_tls_server_name(HOST, trunk.port, TRUNK_NAME)
            layer.set_tls_server_name(HOST, trunk.port, None)
            assert layer.tls_server_name(HOST, trunk.port) is None
            layer.send(Peer("tls", HOST, trunk.port), b"OPTIONS")
            await inbox.wait(lambda: len(inbox.errors) == 1)
            reason = inbox.errors[0][1]
            assert repr(HOST) in reason
            assert "IP address mismatch" in reason
            assert trunk.received == []
        finally:
            await layer.close()
            await trunk.close()

    run(scenario)


def test_outbound_tls_without_verification_connects_whatever_the_name(
    run: Runner, pki: Pki
) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        trunk = TlsTrunk(pki)
        await trunk.start()
        layer = await sbc_side(pki, inbox, verify_peer=False)
        try:
            layer.set_tls_server_name(HOST, trunk.port, OTHER_NAME)
            request = sip_request("OPTIONS", (HOST, trunk.port), transport="TLS")
            layer.send(Peer("tls", HOST, trunk.port), request)
            await trunk.wait_for(1)
            assert trunk.received == [request]
            assert trunk.server_names == [OTHER_NAME]
            assert inbox.errors == []
        finally:
            await layer.close()
            await trunk.close()

    run(scenario)


def test_mutual_tls_between_two_layers_with_a_server_name(run: Runner, pki: Pki) -> None:
    """The SBC calling a trunk that requires client certificates: it presents its own."""

    async def scenario() -> None:
        trunk_inbox, sbc_inbox = Inbox(), Inbox()
        trunk, port = await mutual_tls_listener(pki, trunk_inbox)
        sbc = await sbc_side(pki, sbc_inbox)
        try:
            sbc.set_tls_server_name(HOST, port, TRUNK_NAME)
            request = sip_request("OPTIONS", (HOST, port), transport="TLS")
            sbc.send(Peer("tls", HOST, port), request)
            await trunk_inbox.wait(lambda: len(trunk_inbox.messages) == 1)
            data, source = trunk_inbox.messages[0]
            assert data == request
            trunk.send(source, OK)
            await sbc_inbox.wait(lambda: len(sbc_inbox.messages) == 1)
            assert sbc_inbox.messages[0][0] == OK
            assert sbc_inbox.errors == [] and trunk.counters.tls_handshake_failures == 0
        finally:
            await sbc.close()
            await trunk.close()

    run(scenario)
