"""TransportLayer resource limits on loopback: connections per source IP and in total (inbound
refused at accept, outbound not opened), the idle and message timeouts (slowloris), and the
cap on a partial message. Timeouts are shortened so the set runs in a few seconds."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from sbc.sip.peer import Peer
from sbc.transport import TransportLayer, TransportLimits
from tests.support import free_port, sip_request
from tests.support.layer import (
    LOOPS,
    Inbox,
    Runner,
    interface,
    loop_runner,
    read_until_closed,
    start_layer,
    watch_log,
)

HOST = "127.0.0.1"
CLIENT_A = "127.0.0.5"
CLIENT_B = "127.0.0.6"


@pytest.fixture(params=LOOPS)
def run(request: pytest.FixtureRequest) -> Runner:
    return loop_runner(request.param)


def options(port: int) -> bytes:
    return sip_request("OPTIONS", (HOST, port), transport="TCP")


async def tcp_layer(inbox: Inbox, **options: object) -> tuple[TransportLayer, int]:
    port = free_port(HOST)
    layer = await start_layer(interface("internal", HOST, f"tcp:{port}"), inbox=inbox, **options)
    return layer, port


async def dribble(writer: asyncio.StreamWriter, data: bytes, gap: float) -> None:
    """Write `data` a byte at a time, `gap` seconds apart (the attack's pace, not a wait
    for anything), until it is all out or the connection goes."""
    for index in range(len(data)):
        if writer.is_closing():
            return
        writer.write(data[index : index + 1])
        await asyncio.sleep(gap)


def test_limits_have_sensible_defaults_and_reject_nonsense() -> None:
    limits = TransportLimits()
    assert limits.max_connections == 4096
    assert limits.max_connections_per_ip == 64
    assert limits.idle_timeout == 300.0
    assert limits.message_timeout == 10.0
    assert limits.handshake_timeout == 10.0
    assert limits.max_headers == 100
    with pytest.raises(ValueError, match="max_connections_per_ip"):
        TransportLimits(max_connections_per_ip=0)
    with pytest.raises(ValueError, match="idle_timeout"):
        TransportLimits(idle_timeout=-1.0)


def test_65th_connection_from_one_ip_is_closed_while_another_ip_connects(run: Runner) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        layer, port = await tcp_layer(inbox)
        assert layer.limits.max_connections_per_ip == 64
        writers: list[asyncio.StreamWriter] = []
        try:
            readers = []
            for _ in range(64):
                reader, writer = await asyncio.open_connection(HOST, port, local_addr=(CLIENT_A, 0))
                writer.write(options(port))
                readers.append(reader)
                writers.append(writer)
            await inbox.wait(lambda: len(inbox.messages) == 64)
            assert layer.connections_from(CLIENT_A) == 64

            with watch_log() as watcher:
                reader, writer = await asyncio.open_connection(HOST, port, local_addr=(CLIENT_A, 0))
                writers.append(writer)
                assert await read_until_closed(reader) == b""
                refused = await watcher.wait_for("connection.refused")
            assert refused["reason"] == "per-IP connection limit"
            assert layer.counters.refused_per_ip_limit == 1
            assert layer.connections_from(CLIENT_A) == 64

            # Another address still gets in.
            _, other = await asyncio.open_connection(HOST, port, local_addr=(CLIENT_B, 0))
            writers.append(other)
            other.write(options(port))
            await inbox.wait(lambda: len(inbox.messages) == 65)
            assert inbox.messages[-1][1].host == CLIENT_B

            # A connection of the first address that goes (here: closed by the server for
            # an unframeable message) frees its slot.
            writers[0].write(b"GARBAGE sip:x SIP/2.0\r\n\r\n")
            assert await read_until_closed(readers[0]) == b""
            assert layer.connections_from(CLIENT_A) == 63
            _, again = await asyncio.open_connection(HOST, port, local_addr=(CLIENT_A, 0))
            writers.append(again)
            again.write(options(port))
            await inbox.wait(lambda: len(inbox.messages) == 66)
            assert inbox.messages[-1][1].host == CLIENT_A
            assert layer.counters.refused_per_ip_limit == 1
        finally:
            for writer in writers:
                writer.close()
            await layer.close()

    run(scenario)


def test_total_connection_limit_refuses_inbound_and_outbound_until_a_slot_frees(
    run: Runner,
) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        layer, port = await tcp_layer(
            inbox, limits=TransportLimits(max_connections=1, idle_timeout=0.3)
        )
        writers: list[asyncio.StreamWriter] = []
        try:
            first_reader, first = await asyncio.open_connection(HOST, port)
            writers.append(first)
            first.write(options(port))
            await inbox.wait(lambda: len(inbox.messages) == 1)

            reader, second = await asyncio.open_connection(HOST, port)
            writers.append(second)
            assert await read_until_closed(reader) == b""
            assert layer.counters.refused_connection_limit == 1

            # Nor is a connection opened toward anyone: that is a transport error.
            far = free_port(HOST)
            layer.send(Peer("tcp", HOST, far), options(far), "context")
            await inbox.wait(lambda: len(inbox.errors) == 1)
            _, reason, context = inbox.errors[0]
            assert "connection limit of 1" in reason
            assert context == "context"
            assert layer.counters.refused_outbound_limit == 1

            # The first connection idles out; its slot is free again.
            assert await read_until_closed(first_reader) == b""
            assert layer.counters.idle_closed == 1
            _, third = await asyncio.open_connection(HOST, port)
            writers.append(third)
            third.write(options(port))
            await inbox.wait(lambda: len(inbox.messages) == 2)
            assert layer.connection_count == 1
        finally:
            for writer in writers:
                writer.close()
            await layer.close()

    run(scenario)


def test_idle_connection_is_closed_after_the_configured_timeout(run: Runner) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        layer, port = await tcp_layer(
            inbox, limits=TransportLimits(idle_timeout=0.3, message_timeout=5.0)
        )
        loop = asyncio.get_running_loop()
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(options(port))
            await inbox.wait(lambda: len(inbox.messages) == 1)
            delivered = loop.time()
            assert await read_until_closed(reader) == b""
            assert loop.time() - delivered >= 0.25
            assert layer.counters.idle_closed == 1
            assert layer.counters.message_timeouts == 0
            assert layer.connection_count == 0
            writer.close()
        finally:
            await layer.close()

    run(scenario)


def test_connection_that_only_pings_is_cut_off_at_the_first_message_timeout(
    run: Runner,
) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        layer, port = await tcp_layer(
            inbox, limits=TransportLimits(idle_timeout=30.0, message_timeout=0.4)
        )
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            # Keep-alives are answered but buy no time: a message must come.
            writer.write(b"\r\n\r\n")
            assert await asyncio.wait_for(reader.readexactly(2), 3) == b"\r\n"
            assert await read_until_closed(reader) == b""
            assert layer.counters.message_timeouts == 1
            assert layer.counters.idle_closed == 0
            assert inbox.messages == []
            writer.close()
        finally:
            await layer.close()

    run(scenario)


@pytest.mark.parametrize("after_a_message", [False, True], ids=["first", "later"])
def test_slowloris_dribbling_a_message_is_cut_off_at_the_message_timeout(
    run: Runner, after_a_message: bool
) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        # Each byte keeps the connection from ever being idle (0.03 s < 0.2 s), yet the
        # message does not complete within message_timeout.
        layer, port = await tcp_layer(
            inbox, limits=TransportLimits(idle_timeout=0.2, message_timeout=0.5)
        )
        loop = asyncio.get_running_loop()
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            if after_a_message:
                writer.write(options(port))
                await inbox.wait(lambda: len(inbox.messages) == 1)
            started = loop.time()
            with watch_log() as watcher:
                attack = asyncio.ensure_future(dribble(writer, options(port), 0.03))
                try:
                    assert await read_until_closed(reader) == b""
                finally:
                    attack.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await attack
                logged = await watcher.wait_for("connection.message_timeout")
            assert loop.time() - started >= 0.45
            assert logged["first"] is not after_a_message
            assert logged["buffered"] > 0
            assert layer.counters.message_timeouts == 1
            assert layer.counters.idle_closed == 0
            assert len(inbox.messages) == (1 if after_a_message else 0)
            writer.close()
        finally:
            await layer.close()

    run(scenario)


def test_partial_message_over_the_size_cap_is_cut_off(run: Runner) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        layer, port = await tcp_layer(
            inbox, max_message_size=2000, limits=TransportLimits(message_timeout=30.0)
        )
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            # A header block that never ends: 400-byte lines, written one at a time.
            writer.write(b"OPTIONS sip:sbc@127.0.0.1 SIP/2.0\r\n")
            line = b"X-Filler: " + b"a" * 388 + b"\r\n"
            for _ in range(6):
                writer.write(line)
                await writer.drain()
            assert await read_until_closed(reader) == b"", "no head: nothing to answer"
            assert layer.counters.framing_errors == 1
            assert inbox.messages == []
            assert layer.connection_count == 0
            writer.close()
        finally:
            await layer.close()

    run(scenario)


def test_busy_connection_is_neither_idle_nor_slow(run: Runner) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        layer, port = await tcp_layer(
            inbox, limits=TransportLimits(idle_timeout=0.25, message_timeout=0.25)
        )
        loop = asyncio.get_running_loop()
        try:
            _, writer = await asyncio.open_connection(HOST, port)
            started = loop.time()
            # A message every 0.1 s for over twice both timeouts, each in two writes.
            sent = 0
            while loop.time() - started < 0.6:
                data = options(port)
                writer.write(data[:50])
                await asyncio.sleep(0.02)
                writer.write(data[50:])
                sent += 1
                await inbox.wait(lambda count=sent: len(inbox.messages) == count)
                await asyncio.sleep(0.08)
            assert layer.connection_count == 1
            assert layer.counters.idle_closed == layer.counters.message_timeouts == 0
            writer.close()
        finally:
            await layer.close()

    run(scenario)
