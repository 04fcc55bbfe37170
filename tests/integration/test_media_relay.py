"""MediaRelay on loopback with real UDP sockets: the PBX side on 127.0.0.1, the trunk side on
127.0.0.2. Forwarding both ways, latching behind NAT, strangers, relatching, RTCP, the
no-media timeout, port reuse after close; on asyncio's loop and on uvloop."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from media.plan import LegMedia
from media.ports import PortPair, PortPool, PortsExhausted
from media.relay import MediaRelay, MediaRelayError, MediaTimeout
from media.rtp import build_rtcp_bye, build_rtp, parse_rtcp, parse_rtp
from media.session import LatchState, Leg, MediaSessionError

PBX_HOST = "127.0.0.1"  # leg a: the SBC's internal media address and the PBX
TRUNK_HOST = "127.0.0.2"  # leg b: the SBC's external media address and the ITSP
OTHER_HOST = "127.0.0.3"
KEY = "call-1"

Address = tuple[str, int]
Runner = Callable[[Callable[[], Awaitable[None]]], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    else:
        factory = asyncio.new_event_loop

    def runner(scenario: Callable[[], Awaitable[None]]) -> None:
        async def bounded() -> None:
            await asyncio.wait_for(scenario(), 10)

        with asyncio.Runner(loop_factory=factory) as loop_runner:
            loop_runner.run(bounded())

    return runner


def fresh_pool() -> PortPool:
    """A range below the ephemeral ports, at a random place so parallel runs rarely meet
    (and when they do, the relay moves to the next pair)."""
    base = random.randrange(20000, 31000, 2)
    return PortPool(base, base + 199)


class Peer(asyncio.DatagramProtocol):
    """A PBX or ITSP media socket: sends datagrams, queues what arrives."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def bind(cls, host: str, port: int = 0) -> Peer:
        loop = asyncio.get_running_loop()
        _, peer = await loop.create_datagram_endpoint(cls, local_addr=(host, port))
        return peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.queue.put_nowait((data, (addr[0], addr[1])))

    @property
    def addr(self) -> Address:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return (host, port)

    def send(self, data: bytes, to: Address) -> None:
        assert self.transport is not None
        self.transport.sendto(data, to)

    async def recv(self, timeout: float = 2.0) -> tuple[bytes, Address]:
        return await asyncio.wait_for(self.queue.get(), timeout)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def bind_pair(host: str) -> tuple[Peer, Peer]:
    """Two peers on ports p and p+1 (RTP and RTCP as SDP implies them without a=rtcp)."""
    for _ in range(50):
        rtp = await Peer.bind(host)
        try:
            rtcp = await Peer.bind(host, rtp.addr[1] + 1)
        except OSError:
            rtp.close()
            continue
        return rtp, rtcp
    raise RuntimeError(f"no adjacent UDP port pair free on {host}")


def packet(seq: int, payload: bytes | None = None) -> bytes:
    return build_rtp(0, seq, 160 * seq, 0x1234, payload or bytes([seq % 256]) * 160)


async def until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    """Wait for a counter the relay exposes (it fires no event when it drops a packet)."""

    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.001)

    await asyncio.wait_for(poll(), timeout)


async def open_relay(
    pool: PortPool | None = None, streams: int = 1, **options: Any
) -> tuple[MediaRelay, Address, Address]:
    relay = MediaRelay(pool or fresh_pool(), **options)
    await relay.open_session(KEY, streams, PBX_HOST, TRUNK_HOST)
    a, b = relay.endpoints(KEY, Leg.A)[0], relay.endpoints(KEY, Leg.B)[0]
    assert a is not None and b is not None
    return relay, a, b


def test_rtp_flows_both_ways_with_payload_intact(run: Runner) -> None:
    async def scenario() -> None:
        relay, sbc_a, sbc_b = await open_relay()
        pbx, itsp = await Peer.bind(PBX_HOST), await Peer.bind(TRUNK_HOST)
        relay.set_remote(KEY, 0, Leg.A, pbx.addr)
        relay.set_remote(KEY, 0, Leg.B, itsp.addr)
        assert sbc_a[0] == PBX_HOST and sbc_b[0] == TRUNK_HOST

        payload = random.randbytes(160)
        pbx.send(packet(1, payload), sbc_a)
        data, source = await itsp.recv()
        # The trunk sees only the SBC's external address, and the packet as sent.
        assert source == sbc_b and data == packet(1, payload)
        assert parse_rtp(data).sequence == 1

        itsp.send(packet(2), sbc_b)
        data, source = await pbx.recv()
        assert source == sbc_a and data == packet(2)

        stats = relay.stats(KEY)
        assert stats.leg(0, Leg.A).rtp.packets == 1 and stats.leg(0, Leg.A).rtp.bytes == 172
        assert stats.leg(0, Leg.B).rtp.packets == 1
        assert stats.leg(0, Leg.A).rtp.latched and stats.leg(0, Leg.A).rtp.remote == pbx.addr
        # Totals for metrics outlive the session (counters never go down).
        assert relay.counters(("packets", "bytes"))["packets"] == 2
        await relay.close()
        assert relay.counters(("packets",))["packets"] == 0
        assert relay.counters(("packets", "bytes"), closed=True) == {"packets": 2, "bytes": 344}

    run(scenario)


def test_packets_are_dropped_and_counted_until_the_other_leg_has_an_address(run: Runner) -> None:
    async def scenario() -> None:
        relay, sbc_a, sbc_b = await open_relay()
        pbx, itsp = await Peer.bind(PBX_HOST), await Peer.bind(TRUNK_HOST)
        # No SDP on either side yet: the PBX's packet latches leg a but has nowhere to go.
        pbx.send(packet(1), sbc_a)
        await until(lambda: relay.stats(KEY).leg(0, Leg.A).rtp.dropped_no_remote == 1)
        assert itsp.queue.empty()
        # The trunk answers (its SDP arrives) and sends: leg a is latched, so this reaches
        # the PBX, and the PBX's next packet now reaches the trunk.
        relay.set_remote(KEY, 0, Leg.B, itsp.addr)
        itsp.send(packet(2), sbc_b)
        data, _ = await pbx.recv()
        assert data == packet(2)
        pbx.send(packet(3), sbc_a)
        data, _ = await itsp.recv()
        assert data == packet(3) and itsp.queue.empty()
        await relay.close()

    run(scenario)


def test_latches_on_the_real_source_port_of_a_pbx_behind_nat(run: Runner) -> None:
    async def scenario() -> None:
        relay, sbc_a, sbc_b = await open_relay()
        announced = await Peer.bind(PBX_HOST)  # the port in the PBX's SDP
        natted = await Peer.bind(PBX_HOST)  # where its packets really come from
        itsp = await Peer.bind(TRUNK_HOST)
        relay.set_remote(KEY, 0, Leg.A, announced.addr)
        relay.set_remote(KEY, 0, Leg.B, itsp.addr)

        natted.send(packet(1), sbc_a)
        assert (await itsp.recv())[0] == packet(1)
        itsp.send(packet(2), sbc_b)
        data, source = await natted.recv()
        assert data == packet(2) and source == sbc_a
        assert announced.queue.empty()  # loopback delivers in order: nothing went there

        leg = relay.session(KEY).stream(0).leg(Leg.A)
        assert leg.latch is LatchState.LATCHED and leg.latched == natted.addr
        await relay.close()

    run(scenario)


def test_strangers_are_dropped_before_and_after_latching(run: Runner) -> None:
    async def scenario() -> None:
        relay, sbc_a, _ = await open_relay()
        pbx, itsp = await Peer.bind(PBX_HOST), await Peer.bind(TRUNK_HOST)
        elsewhere = await Peer.bind(OTHER_HOST)
        same_ip = await Peer.bind(PBX_HOST)
        relay.set_remote(KEY, 0, Leg.A, pbx.addr)
        relay.set_remote(KEY, 0, Leg.B, itsp.addr)

        elsewhere.send(packet(1), sbc_a)  # wrong IP: may not latch
        pbx.send(packet(2), sbc_a)  # latches
        same_ip.send(packet(3), sbc_a)  # right IP, other port: after the latch, a stranger
        pbx.send(packet(4), sbc_a)
        assert (await itsp.recv())[0] == packet(2)
        assert (await itsp.recv())[0] == packet(4)
        assert itsp.queue.empty()
        stats = relay.stats(KEY).leg(0, Leg.A).rtp
        assert stats.dropped_source == 2 and stats.packets == 2
        assert stats.remote == pbx.addr
        await relay.close()

    run(scenario)


def test_without_strict_source_any_source_is_accepted_and_followed(run: Runner) -> None:
    async def scenario() -> None:
        relay, sbc_a, sbc_b = await open_relay(strict_source=False)
        pbx, itsp = await Peer.bind(PBX_HOST), await Peer.bind(TRUNK_HOST)
        moved = await Peer.bind(OTHER_HOST)
        relay.set_remote(KEY, 0, Leg.A, pbx.addr)
        relay.set_remote(KEY, 0, Leg.B, itsp.addr)

        pbx.send(packet(1), sbc_a)
        moved.send(packet(2), sbc_a)
        assert (await itsp.recv())[0] == packet(1)
        assert (await itsp.recv())[0] == packet(2)
        itsp.send(packet(3), sbc_b)
        assert (await moved.recv())[0] == packet(3)
        assert pbx.queue.empty()
        await relay.close()

    run(scenario)


def test_relatch_follows_the_pbx_after_a_reinvite_moves_its_media(run: Runner) -> None:
    async def scenario() -> None:
        relay, sbc_a, sbc_b = await open_relay()
        old, itsp = await Peer.bind(PBX_HOST), await Peer.bind(TRUNK_HOST)
        new = await Peer.bind(OTHER_HOST)
        relay.set_remote(KEY, 0, Leg.A, old.addr)
        relay.set_remote(KEY, 0, Leg.B, itsp.addr)
        old.send(packet(1), sbc_a)
        assert (await itsp.recv())[0] == packet(1)

        # A re-INVITE from the PBX announces media on another host: leg a relatches.
        relay.set_remote(KEY, 0, Leg.A, new.addr)
        old.send(packet(2), sbc_a)  # the old source is a stranger now
        new.send(packet(3), sbc_a)
        assert (await itsp.recv())[0] == packet(3)
        itsp.send(packet(4), sbc_b)
        assert (await new.recv())[0] == packet(4)
        assert old.queue.empty() and itsp.queue.empty()

        # Same SDP address but a new NAT binding: an explicit relatch picks up the new port.
        rebound = await Peer.bind(OTHER_HOST)
        relay.relatch(KEY, Leg.A)
        rebound.send(packet(5), sbc_a)
        assert (await itsp.recv())[0] == packet(5)
        itsp.send(packet(6), sbc_b)
        assert (await rebound.recv())[0] == packet(6)
        assert new.queue.empty()
        await relay.close()

    run(scenario)


def test_rtcp_is_relayed_between_the_rtcp_ports(run: Runner) -> None:
    async def scenario() -> None:
        relay, sbc_a, sbc_b = await open_relay()
        pbx_rtp, pbx_rtcp = await bind_pair(PBX_HOST)
        itsp_rtp, itsp_rtcp = await bind_pair(TRUNK_HOST)
        relay.set_remote(KEY, 0, Leg.A, pbx_rtp.addr)  # RTCP implied at port + 1
        relay.set_remote(KEY, 0, Leg.B, itsp_rtp.addr)
        sbc_a_rtcp, sbc_b_rtcp = (sbc_a[0], sbc_a[1] + 1), (sbc_b[0], sbc_b[1] + 1)

        pbx_rtcp.send(build_rtcp_bye(0xAAAA), sbc_a_rtcp)
        data, source = await itsp_rtcp.recv()
        assert source == sbc_b_rtcp and parse_rtcp(data).ssrc == 0xAAAA
        itsp_rtcp.send(build_rtcp_bye(0xBBBB), sbc_b_rtcp)
        data, source = await pbx_rtcp.recv()
        assert source == sbc_a_rtcp and parse_rtcp(data).ssrc == 0xBBBB
        # RTCP never leaks onto the RTP ports, and RTP counters did not move.
        assert pbx_rtp.queue.empty() and itsp_rtp.queue.empty()
        stats = relay.stats(KEY).leg(0, Leg.A)
        assert stats.rtcp.packets == 1 and stats.rtp.packets == 0
        await relay.close()

    run(scenario)


def test_rtcp_mux_leg_sends_and_takes_rtcp_on_its_rtp_port_rfc5761(run: Runner) -> None:
    # The PBX agreed to rtcp-mux, the carrier did not: RTCP from the PBX's RTP socket reaches
    # the carrier's RTCP port, and the carrier's RTCP comes back to the PBX's RTP port;
    # RTP still flows between the RTP ports.
    async def scenario() -> None:
        relay, sbc_a, sbc_b = await open_relay()
        pbx = await Peer.bind(PBX_HOST)
        itsp_rtp, itsp_rtcp = await bind_pair(TRUNK_HOST)
        relay.set_remote(KEY, 0, Leg.A, pbx.addr)
        relay.set_remote(KEY, 0, Leg.B, itsp_rtp.addr)
        relay.configure(KEY, 0, Leg.A, LegMedia(rtcp_mux=True))
        sbc_b_rtcp = (sbc_b[0], sbc_b[1] + 1)
        pbx.send(build_rtcp_bye(0xAAAA), sbc_a)
        data, source = await itsp_rtcp.recv()
        assert source == sbc_b_rtcp and parse_rtcp(data).ssrc == 0xAAAA
        itsp_rtcp.send(build_rtcp_bye(0xBBBB), sbc_b_rtcp)
        data, source = await pbx.recv()
        assert source == sbc_a and parse_rtcp(data).ssrc == 0xBBBB
        pbx.send(packet(7), sbc_a)
        data, source = await itsp_rtp.recv()
        assert source == sbc_b and parse_rtp(data).sequence == 7
        assert itsp_rtcp.queue.empty() and pbx.queue.empty()
        await relay.close()

    run(scenario)


def test_idle_streams_are_reported_through_the_callback(run: Runner) -> None:
    timeout = 0.3

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        reports: asyncio.Queue[tuple[float, MediaTimeout]] = asyncio.Queue()
        relay = MediaRelay(
            fresh_pool(),
            timeout=timeout,
            check_interval=0.02,
            on_timeout=lambda report: reports.put_nowait((loop.time(), report)),
        )
        opened = loop.time()
        await relay.open_session(KEY, 2, PBX_HOST, TRUNK_HOST)
        sbc_a = relay.endpoints(KEY, Leg.A)[0]
        assert sbc_a is not None
        pbx = await Peer.bind(PBX_HOST)
        # Stream 0 carries one packet halfway through the timeout (nowhere to forward it:
        # still proof that the PBX sends); stream 1 stays silent.
        sent_at = asyncio.Event()

        def send_once() -> None:
            pbx.send(packet(1), sbc_a)
            sent_at.set()

        loop.call_later(timeout / 2, send_once)

        first_at, first = await asyncio.wait_for(reports.get(), 3)
        assert first.session == KEY and first.streams == (1,) and first.timeout == timeout
        assert first_at - opened >= timeout
        assert sent_at.is_set()
        second_at, second = await asyncio.wait_for(reports.get(), 3)
        assert second.streams == (0,) and second_at - opened >= 1.5 * timeout - 0.005
        await relay.close()

    run(scenario)


def test_a_stream_on_hold_is_not_timed_out_by_the_plain_limit(run: Runner) -> None:
    # Hold with no music: silence on stream 0 (on hold) is fine for hold_timeout, while
    # silent stream 1 (not on hold) times out after the plain limit.
    timeout = 0.2

    async def scenario() -> None:
        reports: asyncio.Queue[MediaTimeout] = asyncio.Queue()
        relay = MediaRelay(
            fresh_pool(),
            timeout=timeout,
            hold_timeout=30 * timeout,
            check_interval=0.02,
            on_timeout=reports.put_nowait,
        )
        await relay.open_session(KEY, 2, PBX_HOST, TRUNK_HOST)
        relay.configure(KEY, 0, Leg.A, LegMedia(direction="sendonly"))
        first = await asyncio.wait_for(reports.get(), 3)
        assert first.streams == (1,) and first.timeout == timeout
        # Nothing to await for an absence: watch five plain limits pass without a report.
        await asyncio.sleep(5 * timeout)
        assert reports.empty(), reports.get_nowait()
        await relay.close()

    run(scenario)


def test_closing_returns_the_ports_and_closes_the_sockets(run: Runner) -> None:
    async def scenario() -> None:
        pool = fresh_pool()
        relay, sbc_a, sbc_b = await open_relay(pool, streams=2)
        relay.set_remote(KEY, 0, Leg.B, (TRUNK_HOST, 9))
        local = [
            (host, port + offset)
            for leg in Leg
            for address in relay.endpoints(KEY, leg)
            if address is not None
            for host, port in [address]
            for offset in (0, 1)
        ]
        assert len(local) == 8 and pool.in_use == 4

        stats = await relay.close_session(KEY)
        assert KEY not in relay and pool.in_use == 0
        assert len(stats.legs) == 4
        for address in local:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind(address)  # raises EADDRINUSE if the relay still held it
        with pytest.raises(MediaRelayError, match="no media session"):
            await relay.close_session(KEY)
        await relay.close()

    run(scenario)


def test_a_port_held_by_another_program_is_skipped(run: Runner) -> None:
    async def scenario() -> None:
        base = random.randrange(20000, 31000, 2)
        pool = PortPool(base, base + 19)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
            squatter.bind((PBX_HOST, base + 1))  # the RTCP port of the first pair
            relay = MediaRelay(pool)
            await relay.open_session(KEY, 1, PBX_HOST, TRUNK_HOST)
            sbc_a = relay.endpoints(KEY, Leg.A)[0]
            assert sbc_a is not None and sbc_a[1] != base
            assert not pool.is_in_use(PortPair(base)) and pool.in_use == 2
            await relay.close()
        assert pool.in_use == 0

    run(scenario)


def test_exhausted_pool_refuses_the_session_without_leaking(run: Runner) -> None:
    async def scenario() -> None:
        base = random.randrange(20000, 31000, 2)
        pool = PortPool(base, base + 5)  # 3 pairs: one stream needs 2
        relay = MediaRelay(pool)
        await relay.open_session("first", 1, PBX_HOST, TRUNK_HOST)
        with pytest.raises(PortsExhausted):
            await relay.open_session(KEY, 1, PBX_HOST, TRUNK_HOST)
        assert KEY not in relay and pool.in_use == 2
        with pytest.raises(MediaRelayError, match="already exists"):
            await relay.open_session("first", 1, PBX_HOST, TRUNK_HOST)
        await relay.close()
        assert pool.in_use == 0

    run(scenario)


def test_a_media_address_that_is_not_local_is_a_clear_error(run: Runner) -> None:
    async def scenario() -> None:
        pool = fresh_pool()
        relay = MediaRelay(pool)
        with pytest.raises(MediaRelayError, match="media_address"):
            await relay.open_session(KEY, 1, PBX_HOST, "192.0.2.1")  # TEST-NET: not ours
        assert pool.in_use == 0 and KEY not in relay

    run(scenario)


def test_streams_added_by_a_reoffer_relay_and_a_disabled_one_frees_its_ports(run: Runner) -> None:
    async def scenario() -> None:
        pool = fresh_pool()
        relay, old_a, _ = await open_relay(pool)
        assert await relay.add_streams(KEY, 1) == [1]
        assert pool.in_use == 4
        pbx, itsp = await Peer.bind(PBX_HOST), await Peer.bind(TRUNK_HOST)
        relay.set_remote(KEY, 1, Leg.B, itsp.addr)
        new_a = relay.endpoints(KEY, Leg.A)[1]
        assert new_a is not None
        pbx.send(packet(7), new_a)
        assert (await itsp.recv())[0] == packet(7)

        await relay.disable_stream(KEY, 0)
        assert relay.endpoints(KEY, Leg.A)[0] is None and pool.in_use == 2
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(old_a)  # closed before its ports went back to the pool
        with pytest.raises(MediaSessionError, match="disabled"):
            await relay.disable_stream(KEY, 0)
        pbx.send(packet(8), new_a)  # the remaining stream is untouched
        assert (await itsp.recv())[0] == packet(8)
        await relay.close()
        assert pool.in_use == 0

    run(scenario)
