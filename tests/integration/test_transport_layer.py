"""TransportLayer in-process on loopback: listener naming, connection reuse, the RFC 3261
§18.1.1 switch to TCP for large requests, transport errors, idle close, bind failures."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sbc.config import Interface, ListenAddress, TlsSettings
from sbc.sip.framing import FramedMessage, StreamFramer
from sbc.sip.message import Request, parse
from sbc.sip.peer import Peer
from sbc.transport import ListenerError, TransportLayer
from tests.support import free_port, ipv6_available, make_self_signed_cert, sip_request
from tests.support.layer import Inbox, Runner

HOST = "127.0.0.1"


def interface(name: str, *listen: str, host: str = HOST) -> Interface:
    addresses = []
    for item in listen:
        transport, _, port = item.partition(":")
        addresses.append(ListenAddress(transport, host, int(port)))
    return Interface(name, tuple(addresses), None, host)


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    """Runs a scenario on the stock asyncio loop and on uvloop (what `sbc run` uses)."""
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    else:
        factory = asyncio.new_event_loop

    def runner(scenario: Callable[[], Awaitable[None]]) -> None:
        async def bounded() -> None:
            await asyncio.wait_for(scenario(), 20)

        with asyncio.Runner(loop_factory=factory) as loop_runner:
            loop_runner.run(bounded())

    return runner


async def start_layer(*interfaces: Interface, inbox: Inbox, **options: Any) -> TransportLayer:
    layer = TransportLayer(
        interfaces, inbox.on_message, on_transport_error=inbox.on_error, **options
    )
    await layer.start()
    return layer


class TcpPeer:
    """A plain asyncio TCP server standing in for a remote SIP element."""

    def __init__(self) -> None:
        self.accepted = 0
        self.received: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.arrived = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.start_server(self._serve, host, port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.writers.append(writer)
        framer = StreamFramer()
        while data := await reader.read(65536):
            for event in framer.feed(data):
                if isinstance(event, FramedMessage):
                    self.received.append(event.data)
                    self.arrived.set()

    async def wait_for(self, count: int) -> None:
        while len(self.received) < count:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 3)

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            self.server.close()


def test_listener_names_and_udp_delivery_with_source_peer(run: Runner) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        port = free_port(HOST)
        layer = await start_layer(interface("internal", f"udp:{port}", f"tcp:{port}"), inbox=inbox)
        try:
            assert list(layer.listeners) == [
                f"internal/udp:{HOST}:{port}",
                f"internal/tcp:{HOST}:{port}",
            ]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.bind((HOST, 0))
                data = sip_request("OPTIONS", (HOST, port))
                client.sendto(data, (HOST, port))
                await inbox.wait(lambda: len(inbox.messages) == 1)
                received, source = inbox.messages[0]
                assert received == data
                assert source == Peer(
                    "udp", HOST, client.getsockname()[1], f"internal/udp:{HOST}:{port}"
                )
                # Sending back to that peer leaves from the same socket (same source port).
                layer.send(source, b"SIP/2.0 200 OK\r\n\r\n")
                client.settimeout(3)
                reply, sender = await asyncio.to_thread(client.recvfrom, 65535)
                assert reply == b"SIP/2.0 200 OK\r\n\r\n"
                assert sender == (HOST, port)
        finally:
            await layer.close()

    run(scenario)


def test_crlf_keepalive_datagrams_are_not_delivered(run: Runner) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        port = free_port(HOST)
        layer = await start_layer(interface("internal", f"udp:{port}"), inbox=inbox)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.sendto(b"\r\n\r\n", (HOST, port))
                data = sip_request("OPTIONS", (HOST, port))
                client.sendto(data, (HOST, port))
                await inbox.wait(lambda: len(inbox.messages) >= 1)
                assert [m for m, _ in inbox.messages] == [data]
        finally:
            await layer.close()

    run(scenario)


def test_outbound_tcp_connection_is_opened_once_and_reused(run: Runner) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        port, remote_port = free_port(HOST), free_port(HOST)
        remote = TcpPeer()
        await remote.start(HOST, remote_port)
        layer = await start_layer(interface("internal", f"tcp:{port}"), inbox=inbox)
        try:
            peer = Peer("tcp", HOST, remote_port, f"internal/tcp:{HOST}:{port}")
            first = sip_request("OPTIONS", (HOST, remote_port), transport="TCP")
            second = sip_request("OPTIONS", (HOST, remote_port), transport="TCP")
            # Both writes happen before the connection is up: the second is queued too.
            layer.send(peer, first)
            layer.send(peer, second)
            await remote.wait_for(2)
            layer.send(peer, first)
            await remote.wait_for(3)
            assert remote.received == [first, second, first]
            assert remote.accepted == 1
            assert layer.connection_count == 1
        finally:
            await layer.close()
            await remote.close()

    run(scenario)


def test_connection_opened_by_the_peer_is_reused_for_sending_to_it(run: Runner) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        port = free_port(HOST)
        layer = await start_layer(interface("internal", f"tcp:{port}"), inbox=inbox)
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            data = sip_request("OPTIONS", (HOST, port), transport="TCP")
            writer.write(data)
            await inbox.wait(lambda: len(inbox.messages) == 1)
            _, source = inbox.messages[0]
            assert source.transport == "tcp"
            assert source.port == writer.get_extra_info("sockname")[1]
            # A new request to the peer's address (no listener given) rides the same connection.
            request = sip_request("OPTIONS", (HOST, source.port), transport="TCP")
            layer.send(Peer("tcp", source.host, source.port), request)
            received = await asyncio.wait_for(reader.readexactly(len(request)), 3)
            assert received == request
            assert layer.connection_count == 1
            writer.close()
        finally:
            await layer.close()

    run(scenario)


def test_rfc3261_18_1_1_large_udp_request_goes_over_tcp_with_via_rewritten(run: Runner) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        port, remote_port = free_port(HOST), free_port(HOST)
        tcp_port = free_port(HOST, avoid=(port, remote_port))
        remote = TcpPeer()
        await remote.start(HOST, remote_port)
        layer = await start_layer(
            interface("internal", f"udp:{port}", f"tcp:{tcp_port}"), inbox=inbox
        )
        try:
            big = sip_request(
                "MESSAGE",
                (HOST, remote_port),
                source=(HOST, port),
                headers=(("Content-Type", "text/plain"),),
                body=b"x" * 1400,
            )
            request = parse(big)
            assert isinstance(request, Request)
            udp_peer = Peer("udp", HOST, remote_port, f"internal/udp:{HOST}:{port}")
            layer.send_message(udp_peer, request)
            await remote.wait_for(1)
            arrived = parse(remote.received[0])
            assert arrived.via.transport == "TCP"
            assert arrived.via.port == tcp_port, "sent-by names where TCP reaches us"
            assert arrived.via.branch == parse(big).via.branch
            assert arrived.body == b"x" * 1400
            # A small request still goes over UDP.
            small = parse(sip_request("OPTIONS", (HOST, remote_port), source=(HOST, port)))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as catcher:
                catcher.bind((HOST, 0))
                catcher.settimeout(3)
                layer.send_message(
                    Peer("udp", HOST, catcher.getsockname()[1], udp_peer.listener), small
                )
                data, _ = await asyncio.to_thread(catcher.recvfrom, 65535)
            assert parse(data).via.transport == "UDP"
        finally:
            await layer.close()
            await remote.close()

    run(scenario)


def test_large_udp_request_stays_on_udp_without_a_tcp_listener(run: Runner) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        port = free_port(HOST)
        layer = await start_layer(interface("internal", f"udp:{port}"), inbox=inbox)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as catcher:
                catcher.bind((HOST, 0))
                catcher.settimeout(3)
                big = parse(sip_request("MESSAGE", (HOST, port), body=b"y" * 2000))
                peer = Peer("udp", HOST, catcher.getsockname()[1], f"internal/udp:{HOST}:{port}")
                layer.send_message(peer, big)
                data, _ = await asyncio.to_thread(catcher.recvfrom, 65535)
            assert parse(data).via.transport == "UDP"
            assert len(data) > 2000
        finally:
            await layer.close()

    run(scenario)


def test_failed_connect_is_reported_with_the_message_that_was_not_delivered(run: Runner) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        port, dead_port = free_port(HOST), free_port(HOST)
        layer = await start_layer(interface("internal", f"tcp:{port}"), inbox=inbox)
        try:
            message = parse(sip_request("OPTIONS", (HOST, dead_port), transport="TCP"))
            layer.send_message(Peer("tcp", HOST, dead_port), message)
            await inbox.wait(lambda: len(inbox.errors) == 1)
            peer, reason, context = inbox.errors[0]
            assert (peer.host, peer.port) == (HOST, dead_port)
            assert "connect" in reason
            assert context is message
            assert layer.connection_count == 0
        finally:
            await layer.close()

    run(scenario)


def test_idle_connections_are_closed(run: Runner) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        port = free_port(HOST)
        layer = await start_layer(
            interface("internal", f"tcp:{port}"), inbox=inbox, idle_timeout=0.2
        )
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(sip_request("OPTIONS", (HOST, port), transport="TCP"))
            await inbox.wait(lambda: len(inbox.messages) == 1)
            assert layer.connection_count == 1
            # The server closes: read() returns EOF.
            assert await asyncio.wait_for(reader.read(), 3) == b""
            assert layer.connection_count == 0
            writer.close()
        finally:
            await layer.close()

    run(scenario)


def test_connection_cap_refuses_extra_inbound_connections(run: Runner) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        port = free_port(HOST)
        layer = await start_layer(
            interface("internal", f"tcp:{port}"), inbox=inbox, max_connections=1
        )
        try:
            _, first = await asyncio.open_connection(HOST, port)
            first.write(sip_request("OPTIONS", (HOST, port), transport="TCP"))
            await inbox.wait(lambda: len(inbox.messages) == 1)
            reader, second = await asyncio.open_connection(HOST, port)
            assert await asyncio.wait_for(reader.read(), 3) == b""
            assert layer.connection_count == 1
            first.close()
            second.close()
        finally:
            await layer.close()

    run(scenario)


def test_handler_exception_does_not_kill_the_udp_listener(run: Runner) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        calls = 0

        def flaky(data: bytes, source: Peer) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("bug in the handler")
            inbox.on_message(data, source)

        port = free_port(HOST)
        layer = TransportLayer([interface("internal", f"udp:{port}")], flaky)
        await layer.start()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.sendto(sip_request("OPTIONS", (HOST, port)), (HOST, port))
                client.sendto(sip_request("OPTIONS", (HOST, port)), (HOST, port))
                await inbox.wait(lambda: len(inbox.messages) == 1)
            assert calls == 2
        finally:
            await layer.close()

    run(scenario)


def test_bind_failure_names_the_listener_and_releases_the_others(run: Runner) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        good, busy = free_port(HOST), free_port(HOST)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocker:
            blocker.bind((HOST, busy))
            layer = TransportLayer(
                [interface("internal", f"udp:{good}"), interface("external", f"udp:{busy}")],
                inbox.on_message,
            )
            with pytest.raises(ListenerError) as caught:
                await layer.start()
        assert caught.value.listener.name == f"external/udp:{HOST}:{busy}"
        assert f"external/udp:{HOST}:{busy}" in str(caught.value)
        assert layer.listeners == {}
        # The listener that did bind was closed again: its port is free.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((HOST, good))

    run(scenario)


@pytest.mark.skipif(not ipv6_available(), reason="IPv6 loopback ::1 is not available")
def test_ipv6_listener_name_and_delivery(run: Runner) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        port = free_port("::1")
        layer = await start_layer(interface("internal6", f"udp:{port}", host="::1"), inbox=inbox)
        try:
            assert list(layer.listeners) == [f"internal6/udp:[::1]:{port}"]
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as client:
                client.sendto(sip_request("OPTIONS", ("::1", port)), ("::1", port))
                await inbox.wait(lambda: len(inbox.messages) == 1)
            assert inbox.messages[0][1].host == "::1"
        finally:
            await layer.close()

    run(scenario)


def tls_interface(name: str, port: int, cert: Path, key: Path, ca: Path | None) -> Interface:
    return Interface(
        name,
        (ListenAddress("tls", HOST, port),),
        None,
        HOST,
        TlsSettings(str(cert), str(key), str(ca) if ca else None, verify_peer=ca is not None),
    )


def test_outbound_tls_verifies_the_server_against_the_configured_ca(
    run: Runner, tmp_path: Path
) -> None:
    cert, key = make_self_signed_cert(tmp_path, "server")

    async def scenario() -> None:
        server_inbox, client_inbox = Inbox(), Inbox()
        server_port, client_port = free_port(HOST), free_port(HOST)
        server = await start_layer(
            tls_interface("external", server_port, cert, key, None), inbox=server_inbox
        )
        client = await start_layer(
            tls_interface("internal", client_port, cert, key, cert), inbox=client_inbox
        )
        try:
            request = sip_request("OPTIONS", (HOST, server_port), transport="TLS")
            client.send(Peer("tls", HOST, server_port), request)
            await server_inbox.wait(lambda: len(server_inbox.messages) == 1)
            data, source = server_inbox.messages[0]
            assert data == request
            assert source.transport == "tls"
            # The answer rides back on the connection the client opened.
            server.send(source, b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n")
            await client_inbox.wait(lambda: len(client_inbox.messages) == 1)
            assert client_inbox.messages[0][0].startswith(b"SIP/2.0 200 OK")
            assert client.connection_count == 1
            assert client_inbox.errors == []
        finally:
            await client.close()
            await server.close()

    run(scenario)


def test_outbound_tls_to_an_untrusted_server_is_a_transport_error(
    run: Runner, tmp_path: Path
) -> None:
    cert, key = make_self_signed_cert(tmp_path, "server")
    other_ca, _ = make_self_signed_cert(tmp_path, "other-ca")

    async def scenario() -> None:
        server_inbox, client_inbox = Inbox(), Inbox()
        server_port, client_port = free_port(HOST), free_port(HOST)
        server = await start_layer(
            tls_interface("external", server_port, cert, key, None), inbox=server_inbox
        )
        client = await start_layer(
            tls_interface("internal", client_port, cert, key, other_ca), inbox=client_inbox
        )
        try:
            message = parse(sip_request("OPTIONS", (HOST, server_port), transport="TLS"))
            client.send_message(Peer("tls", HOST, server_port), message)
            await client_inbox.wait(lambda: len(client_inbox.errors) == 1)
            _, reason, context = client_inbox.errors[0]
            assert "certificate verify failed" in reason
            assert context is message
            assert server_inbox.messages == []
        finally:
            await client.close()
            await server.close()

    run(scenario)
