"""WorkerPool with real worker processes and real UDP on loopback: sessions spread over two
workers, RTP relayed through a worker, the no-media timeout as an event, a worker killed
mid-call (its sessions reported, new ones routed to the survivor, the worker restarted on
its slice), a hung worker, start failure, and a clean shutdown that frees the ports."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest

from media.backend import MediaBackend
from media.pool import WorkerInfo, WorkerLost, WorkerPool, WorkerSession
from media.relay import MediaRelay, MediaRelayError, MediaTimeout
from media.rtp import build_rtp
from media.session import Leg, MediaSessionError

uvloop = pytest.importorskip("uvloop")

PBX_HOST = "127.0.0.1"  # leg a: the SBC's internal media address and the PBX
TRUNK_HOST = "127.0.0.2"  # leg b: the SBC's external media address and the ITSP
Address = tuple[str, int]


def run(scenario: Callable[[], Awaitable[None]], limit: float = 20.0) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(scenario(), limit)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(bounded())


def port_range() -> tuple[int, int]:
    """1000 ports at a random place in 30000-40000, so parallel runs rarely meet (and when
    they do, a worker moves to the next pair)."""
    base = random.randrange(30000, 39000, 2)
    return base, base + 999


@asynccontextmanager
async def running_pool(**options: Any) -> AsyncIterator[WorkerPool]:
    pool = WorkerPool(port_range(), workers=2, **options)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


class Peer(asyncio.DatagramProtocol):
    """A PBX or ITSP media socket: sends datagrams, queues what arrives."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def bind(cls, host: str) -> Peer:
        loop = asyncio.get_running_loop()
        _, peer = await loop.create_datagram_endpoint(cls, local_addr=(host, 0))
        return peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is no subclass

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.received.put_nowait((data, (addr[0], addr[1])))

    @property
    def addr(self) -> Address:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def send(self, data: bytes, to: Address | None) -> None:
        assert self.transport is not None and to is not None
        self.transport.sendto(data, to)

    async def recv(self) -> tuple[bytes, Address]:
        return await asyncio.wait_for(self.received.get(), 2.0)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def in_slice(pool: WorkerPool, session: WorkerSession) -> bool:
    low, high = pool.slices[session.worker]
    ports = [end[1] for end in session.endpoints_a + session.endpoints_b if end is not None]
    return all(low <= port and port + 1 <= high for port in ports)


async def relay_both_ways(pool: WorkerPool, key: str) -> None:
    """A packet each way through the session's worker, arriving from the relay's ports."""
    pbx, trunk = await Peer.bind(PBX_HOST), await Peer.bind(TRUNK_HOST)
    try:
        pool.set_remote(key, 0, Leg.A, pbx.addr)
        pool.set_remote(key, 0, Leg.B, trunk.addr)
        # Updates of one session run in order on its worker: once stats is answered, both
        # remotes are in place.
        await pool.stats(key)
        a_side, b_side = pool.endpoints(key, Leg.A)[0], pool.endpoints(key, Leg.B)[0]
        outbound = build_rtp(0, 1, 160, 0xABCD, b"\x01" * 160)
        pbx.send(outbound, a_side)
        assert await trunk.recv() == (outbound, b_side)
        inbound = build_rtp(0, 7, 1120, 0x1234, b"\x02" * 160)
        trunk.send(inbound, b_side)
        assert await pbx.recv() == (inbound, a_side)
    finally:
        pbx.close()
        trunk.close()


def test_both_the_relay_and_the_pool_are_media_backends() -> None:
    # Checked by mypy: sbc.calls can hold either behind the MediaBackend protocol.
    backends: list[type[MediaBackend]] = [MediaRelay, WorkerPool]
    assert len(backends) == 2


def test_sessions_spread_evenly_over_two_workers_each_on_its_own_ports() -> None:
    async def scenario() -> None:
        async with running_pool() as pool:
            assert [info.alive for info in pool.workers] == [True, True]
            keys = [f"call-{i}" for i in range(200)]
            sessions = await asyncio.gather(
                *(pool.open_session(key, 1, PBX_HOST, TRUNK_HOST) for key in keys)
            )
            placed = Counter(session.worker for session in sessions)
            assert all(abs(placed[index] - 100) <= 10 for index in (0, 1)), placed
            assert len(pool) == 200 and pool.pairs_in_use == 400
            assert all(in_slice(pool, session) for session in sessions)
            ends = [s.endpoints_a[0] for s in sessions] + [s.endpoints_b[0] for s in sessions]
            assert len(set(ends)) == 400
            assert all(end is not None and end[0] == PBX_HOST for end in ends[:200])
            assert pool.endpoints("call-7", Leg.B) == list(sessions[7].endpoints_b)
            health = await pool.health()
            assert sum(h["sessions"] for h in health.values()) == 200
            finals = await asyncio.gather(*(pool.close_session(key) for key in keys))
            assert [stats.session for stats in finals] == keys
            assert len(pool) == 0 and pool.pairs_in_use == 0
            assert "call-1" not in pool

    run(scenario)


def test_rtp_is_relayed_through_a_worker_and_streams_come_and_go() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        counted: asyncio.Future[None] = loop.create_future()
        async with running_pool(heartbeat=0.05, stats_interval=0.05) as pool:

            def deltas(worker: int, delta: Any) -> None:
                if pool.counters.get("packets", 0) >= 2 and not counted.done():
                    counted.set_result(None)

            pool.on_stats = deltas
            key = "call-rtp"
            await pool.open_session(key, 1, PBX_HOST, TRUNK_HOST)
            await relay_both_ways(pool, key)
            # Workers report counter deltas (for metrics) and heartbeats on their own.
            await asyncio.wait_for(counted, 2.0)
            assert pool.counters["packets"] == 2 and pool.counters["bytes"] == 2 * 172
            assert any(info.health.get("sessions") == 1 for info in pool.workers)
            assert await pool.add_streams(key, 1) == [1]
            assert len(pool.endpoints(key, Leg.A)) == 2
            assert pool.pairs_in_use == 4
            # Requests of one session run in order on the worker, even when the first must
            # wait (binding sockets) and the second could answer at once: stream 2 exists
            # by the time its remote is set.
            pool.apply_nowait(key, "add_streams", count=1)
            pool.set_remote(key, 2, Leg.A, ("127.0.0.10", 6000))
            stats = await pool.stats(key)
            assert stats.leg(2, Leg.A).rtp.remote == ("127.0.0.10", 6000)
            assert len(pool.endpoints(key, Leg.B)) == 3 and pool.pairs_in_use == 6
            await pool.disable_stream(key, 2)
            await pool.disable_stream(key, 1)
            assert pool.endpoints(key, Leg.B)[1] is None and pool.pairs_in_use == 2
            # The worker's own errors come back as the relay's exceptions.
            with pytest.raises(MediaSessionError, match="stream 1 is disabled"):
                await pool.disable_stream(key, 1)
            with pytest.raises(MediaRelayError, match="already exists"):
                await pool.open_session(key, 1, PBX_HOST, TRUNK_HOST)
            stats = await pool.close_session(key)
            assert stats.leg(0, Leg.A).rtp.packets == 1 and stats.leg(0, Leg.B).rtp.packets == 1
            assert stats.leg(0, Leg.A).rtp.latched
            with pytest.raises(MediaRelayError, match="no media session call-rtp"):
                pool.set_remote(key, 0, Leg.A, ("127.0.0.1", 4000))

    run(scenario)


def test_media_timeout_arrives_as_an_event() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        timed_out: asyncio.Future[MediaTimeout] = loop.create_future()
        async with running_pool(timeout=0.3, check_interval=0.05) as pool:
            pool.on_timeout = timed_out.set_result
            await pool.open_session("call-quiet", 1, PBX_HOST, TRUNK_HOST)
            timeout = await asyncio.wait_for(timed_out, 3.0)
            assert timeout == MediaTimeout("call-quiet", (0,), 0.3)

    run(scenario)


def test_a_killed_worker_loses_exactly_its_sessions_and_comes_back() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[tuple[list[str], str]] = loop.create_future()
        restarted: asyncio.Future[WorkerInfo] = loop.create_future()

        def started(info: WorkerInfo) -> None:
            if info.restarts and not restarted.done():
                restarted.set_result(info)

        async with running_pool(restart_delay=0.5) as pool:
            pool.on_lost = lambda keys, reason: lost.set_result((keys, reason))
            pool.on_started = started
            sessions = await asyncio.gather(
                *(pool.open_session(f"call-{i}", 1, PBX_HOST, TRUNK_HOST) for i in range(20))
            )
            victim = sessions[0].worker
            survivor = 1 - victim
            victim_keys = {s.key for s in sessions if s.worker == victim}
            victim_pid = pool.workers[victim].pid
            assert victim_pid is not None

            os.kill(victim_pid, signal.SIGKILL)
            keys, reason = await asyncio.wait_for(lost, 3.0)
            assert sorted(keys) == sorted(victim_keys)
            assert reason.startswith(f"media worker {victim} (pid {victim_pid}) lost: ")
            assert not any(key in pool for key in victim_keys)
            assert len(pool) == 20 - len(victim_keys)
            with pytest.raises(MediaRelayError, match="no media session"):
                await pool.close_session(sessions[0].key)

            # While it is down, new sessions go to the survivor.
            for i in range(5):
                session = await pool.open_session(f"new-{i}", 1, PBX_HOST, TRUNK_HOST)
                assert session.worker == survivor

            info = await asyncio.wait_for(restarted, 5.0)
            assert info.index == victim and info.pid != victim_pid and info.restarts == 1
            assert info.ports == pool.slices[victim]
            # Empty again, it takes the next sessions (least streams), on its own slice.
            again = [
                await pool.open_session(f"again-{i}", 1, PBX_HOST, TRUNK_HOST) for i in range(3)
            ]
            assert {session.worker for session in again} == {victim}
            assert all(in_slice(pool, session) for session in again)
            await relay_both_ways(pool, "again-0")

    run(scenario)


def test_a_hung_worker_is_killed_and_its_waiting_requests_fail_clearly() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[tuple[list[str], str]] = loop.create_future()
        async with running_pool(heartbeat=0.1, hang_after=0.6) as pool:
            pool.on_lost = lambda keys, reason: lost.set_result((keys, reason))
            session = await pool.open_session("call-hung", 1, PBX_HOST, TRUNK_HOST)
            pid = pool.workers[session.worker].pid
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)  # alive, but answers nothing
            waiting = asyncio.ensure_future(pool.stats("call-hung"))
            keys, reason = await asyncio.wait_for(lost, 3.0)
            assert keys == ["call-hung"] and "no heartbeat" in reason
            with pytest.raises(
                WorkerLost,
                match=rf"media worker {session.worker} \(pid {pid}\) died before"
                r" answering stats for call-hung: no heartbeat",
            ):
                await waiting

    run(scenario)


def test_close_stops_the_workers_cleanly_and_frees_their_ports() -> None:
    async def scenario() -> None:
        pool = WorkerPool(port_range(), workers=2)
        await pool.start()
        session = await pool.open_session("call-open", 1, PBX_HOST, TRUNK_HOST)
        pids = [info.pid for info in pool.workers]
        await pool.close()
        assert [info.returncode for info in pool.workers] == [0, 0]
        for pid in pids:
            assert pid is not None
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        end = session.endpoints_a[0]
        assert end is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(end)  # the worker closed it on its way out

    run(scenario)


def test_a_worker_that_cannot_start_fails_start_with_the_reason() -> None:
    async def scenario() -> None:
        pool = WorkerPool(port_range(), workers=1, python="/nonexistent/python3")
        with pytest.raises(MediaRelayError, match="cannot run /nonexistent/python3"):
            await pool.start()

    run(scenario)
