"""The RTP/RTCP relay (asyncio data path): UDP sockets per leg, forwarding between the legs of
each stream, latching on the real source (symmetric RTP), counters and the no-media timeout.
Bookkeeping (ports, remotes, idleness) is delegated to the sans-I/O `MediaSession`."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from time import monotonic
from typing import Any, cast

from media.pipeline import PipelineError, StreamPipeline, StreamReport
from media.plan import LegMedia
from media.ports import PortPool
from media.session import (
    Address,
    Channel,
    Leg,
    MediaSession,
    OpenLeg,
    Retarget,
)

DEFAULT_CHECK_INTERVAL = 1.0
DEFAULT_BIND_ATTEMPTS = 16
CLOSE_WAIT = 2.0  # seconds to wait for sockets to report closed before giving ports back
# Bind errors worth retrying with another pair; others (address not local, ...) are config.
_RETRY_BIND = (errno.EADDRINUSE, errno.EACCES)


# Endpoint counters kept for sessions after they close (metrics are totals since start).
_COUNTED = ("packets", "bytes", "dropped_source", "dropped_no_remote", "send_errors")


class MediaRelayError(Exception):
    """A session the relay cannot set up or does not know."""


@dataclass(frozen=True, slots=True)
class MediaTimeout:
    """Streams of a session that carried no packet for `timeout` seconds (RTP or RTCP, either
    direction); the call controller decides whether that ends the call."""

    session: str
    streams: tuple[int, ...]
    timeout: float


@dataclass(frozen=True, slots=True)
class DtmfHeard:
    """A digit the peer on `leg` sent as RFC 4733 events, kept from the other side (which
    takes DTMF as SIP INFO): the call controller sends it on as INFO."""

    session: str
    stream: int
    leg: Leg
    digit: str
    duration_ms: int


@dataclass(frozen=True, slots=True)
class ChannelStats:
    """What one socket (RTP or RTCP of one leg) received; `packets`/`bytes` were forwarded."""

    packets: int
    bytes: int
    dropped_source: int  # from a source other than the latched or expected one
    dropped_no_remote: int  # the other leg had no address to send to yet
    send_errors: int  # ICMP errors reported for packets sent out of this socket
    remote: Address | None  # where packets for this leg go
    latched: bool
    refused: int = 0  # not forwarded by the stream's processing (SRTP refused, DTMF kept)

    @property
    def dropped(self) -> int:
        return self.dropped_source + self.dropped_no_remote


@dataclass(frozen=True, slots=True)
class LegStats:
    stream: int
    leg: Leg
    local: Address
    rtp: ChannelStats
    rtcp: ChannelStats


@dataclass(frozen=True, slots=True)
class SessionStats:
    session: str
    legs: tuple[LegStats, ...]
    streams: tuple[StreamReport, ...] = ()  # quality per stream and direction

    def leg(self, stream: int, leg: Leg) -> LegStats:
        for item in self.legs:
            if item.stream == stream and item.leg is leg:
                return item
        raise KeyError(f"media session {self.session}: no stream {stream} leg {leg.value}")


class _Unbound(asyncio.DatagramTransport):
    """Stands in for a transport not connected yet, so the hot path needs no None test."""

    def sendto(self, data: Any, addr: Any = None) -> None:
        pass

    def close(self) -> None:
        pass


_UNBOUND = _Unbound()


class _Endpoint(asyncio.DatagramProtocol):
    """One UDP socket: the RTP or RTCP port of one leg of one stream. Packets it receives go
    out of `peer` (the same channel of the other leg) toward `peer.remote`."""

    __slots__ = (
        "transport",
        "peer",
        "remote",
        "expected_host",
        "latched",
        "strict",
        "packets",
        "bytes",
        "dropped_source",
        "dropped_no_remote",
        "send_errors",
        "refused",
        "proc",
        "mux",
        "rtcp_proc",
        "rtcp_peer",
        "session",
        "stream",
        "leg",
        "channel",
        "closed",
    )

    def __init__(
        self,
        session: MediaSession,
        stream: int,
        leg: Leg,
        channel: Channel,
        strict: bool,
        closed: asyncio.Future[None],
    ) -> None:
        self.transport: asyncio.DatagramTransport = _UNBOUND
        self.peer: _Endpoint = self
        # Invariant: `remote` is None until every socket of the stream is bound, so a packet
        # is never sent through a transport that does not exist yet.
        self.remote: Address | None = None
        self.expected_host: str | None = None
        self.latched = False
        self.strict = strict
        self.packets = 0
        self.bytes = 0
        self.dropped_source = 0
        self.dropped_no_remote = 0
        self.send_errors = 0
        self.refused = 0
        # The stream's processing for packets from this leg (SRTP, statistics, DTMF).
        self.proc: Callable[[bytes], bytes | None] | None = None
        # RFC 5761 on this leg (RTP sockets only): RTCP arrives here too, is processed by
        # `rtcp_proc` and leaves through `rtcp_peer` (the other leg's RTCP or muxed RTP).
        self.mux = False
        self.rtcp_proc: Callable[[bytes], bytes | None] | None = None
        self.rtcp_peer: _Endpoint = self
        self.session = session
        self.stream = stream
        self.leg = leg
        self.channel = channel
        self.closed = closed

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.remote = None
        if not self.closed.done():
            self.closed.set_result(None)
        # Break the cycles (peer <-> peer, transport <-> protocol): the socket's objects are
        # then freed by reference counting as the session goes, instead of piling up for
        # the cyclic collector, whose pauses delay SIP (measured: 200-400 ms at 500 calls/s).
        self.peer = self.rtcp_peer = _NOWHERE
        self.transport = _UNBOUND
        self.proc = self.rtcp_proc = None

    def error_received(self, exc: Exception) -> None:
        # Linux reports an ICMP port-unreachable for an earlier sendto here; the far end
        # is gone or not listening yet. Counted, never logged per packet.
        self.send_errors += 1

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        # The hot path: attribute reads, one comparison, one sendto. No clock, no logging.
        if self.latched:
            if addr != self.remote:
                if self.strict:
                    self.dropped_source += 1
                    return
                self._latch(addr)  # not strict: follow the new source
        elif not self._first_packet(addr):
            return
        if self.mux and len(data) > 1 and 191 < data[1] < 224:  # RFC 5761 §4: RTCP
            self._muxed_rtcp(data)
            return
        peer = self.peer
        destination = peer.remote
        if destination is None:
            self.dropped_no_remote += 1
            return
        proc = self.proc
        if proc is not None:
            out = proc(data)
            if out is None:
                self.refused += 1
                return
            data = out
        self.packets += 1
        self.bytes += len(data)
        peer.transport.sendto(data, destination)

    def _muxed_rtcp(self, data: bytes) -> None:
        # The RTP path above is the same steps kept inline on purpose: a shared helper
        # would cost every RTP packet a call; RTCP (a few per second) can afford this one.
        peer = self.rtcp_peer
        destination = peer.remote
        if destination is None:
            self.dropped_no_remote += 1
            return
        proc = self.rtcp_proc
        if proc is not None:
            out = proc(data)
            if out is None:
                self.refused += 1
                return
            data = out
        self.packets += 1
        self.bytes += len(data)
        peer.transport.sendto(data, destination)

    # ------------------------------------------------------------------ latching

    def _first_packet(self, addr: tuple[str | Any, int]) -> bool:
        """Latch on the first packet from the expected IP, any port (the peer may sit behind
        a NAT that rewrote its port: TRAPS.md #8), or from anywhere when no address is known
        or the relay is not strict."""
        if self.strict and self.expected_host is not None and addr[0] != self.expected_host:
            self.dropped_source += 1
            return False
        self._latch(addr)
        return True

    def _latch(self, addr: tuple[str | Any, int]) -> None:
        # Keep the tuple as the socket gave it (4 items for IPv6) so later compares match.
        self.remote = addr
        self.latched = True
        self.session.latched(self.stream, self.leg, self.channel, (addr[0], addr[1]))

    def retarget(self, remote: Address | None, relatch: bool) -> None:
        self.expected_host = None if remote is None else remote[0]
        if relatch or not self.latched:
            self.latched = False
            self.remote = remote

    # ------------------------------------------------------------------ inspection

    @property
    def activity(self) -> int:
        """Packets from the leg's own peer (forwarded or not): proof that media flows."""
        return self.packets + self.dropped_no_remote + self.refused

    def stats(self) -> ChannelStats:
        remote = None if self.remote is None else (self.remote[0], self.remote[1])
        return ChannelStats(
            self.packets,
            self.bytes,
            self.dropped_source,
            self.dropped_no_remote,
            self.send_errors,
            remote,
            self.latched,
            self.refused,
        )

    def close(self) -> None:
        self.remote = None
        self.transport.close()
        if self.transport is _UNBOUND and not self.closed.done():
            self.closed.set_result(None)


# Where a closed endpoint's `peer` points: nothing, and no cycle.
_NOWHERE = _Endpoint.__new__(_Endpoint)
_NOWHERE.remote = None
_NOWHERE.transport = _UNBOUND
_NOWHERE.peer = _NOWHERE
_NOWHERE.proc = _NOWHERE.rtcp_proc = None
_NOWHERE.mux = False
_NOWHERE.rtcp_peer = _NOWHERE


@dataclass(slots=True)
class _LegEndpoints:
    rtp: _Endpoint
    rtcp: _Endpoint

    def __iter__(self) -> Iterator[_Endpoint]:
        return iter((self.rtp, self.rtcp))


class _Session:
    """A MediaSession and its sockets, keyed by (stream, leg)."""

    __slots__ = ("media", "legs", "pipelines")

    def __init__(self, media: MediaSession) -> None:
        self.media = media
        self.legs: dict[tuple[int, Leg], _LegEndpoints] = {}
        self.pipelines: dict[int, StreamPipeline] = {}

    def endpoints(self, stream: int | None = None) -> list[_Endpoint]:
        return [
            endpoint
            for (index, _), pair in self.legs.items()
            if stream is None or index == stream
            for endpoint in pair
        ]

    def activity(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for (index, _), pair in self.legs.items():
            counts[index] = counts.get(index, 0) + pair.rtp.activity + pair.rtcp.activity
        return counts


class MediaRelay:
    """Relays the media of many sessions on one event loop (one worker process)."""

    def __init__(
        self,
        pool: PortPool,
        *,
        timeout: float | None = 60.0,
        hold_timeout: float | None = 3600.0,
        on_timeout: Callable[[MediaTimeout], None] | None = None,
        on_dtmf: Callable[[DtmfHeard], None] | None = None,
        strict_source: bool = True,
        check_interval: float = DEFAULT_CHECK_INTERVAL,
        bind_attempts: int = DEFAULT_BIND_ATTEMPTS,
    ) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError(f"media timeout must be positive seconds or None, not {timeout}")
        if check_interval <= 0:
            raise ValueError(f"media check interval must be positive, not {check_interval}")
        self.pool = pool
        self.timeout = timeout
        # Streams on hold (a side's SDP says other than sendrecv) may carry nothing for a
        # long time: music on hold is optional. They get this limit instead (None: none).
        self.hold_timeout = hold_timeout
        self.on_timeout = on_timeout
        self.on_dtmf = on_dtmf
        self.strict_source = strict_source
        self.check_interval = check_interval
        self.bind_attempts = max(1, bind_attempts)
        self._sessions: dict[str, _Session] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._closed_counts: dict[str, int] = {}  # endpoint counters of closed sessions

    # ------------------------------------------------------------------ sessions

    # The worker pool's extras, so callers can take either (media.backend.MediaBackend).
    on_lost: Callable[[list[str], str], None] | None = None  # never called: nothing to lose

    async def start(self) -> None:
        """Nothing to start: sockets are bound per session."""

    @property
    def pairs_in_use(self) -> int:
        return self.pool.in_use

    def __contains__(self, key: str) -> bool:
        return key in self._sessions

    def __len__(self) -> int:
        return len(self._sessions)

    def session(self, key: str) -> MediaSession:
        return self._get(key).media

    async def open_session(self, key: str, streams: int, host_a: str, host_b: str) -> MediaSession:
        """Allocate and bind `streams` streams (leg a on `host_a`, the PBX-side interface's
        media address; leg b on `host_b`, the trunk side's). Nothing is forwarded until a
        remote is known or latched. Raises PortsExhausted or MediaRelayError."""
        if key in self._sessions:
            raise MediaRelayError(f"media session {key} already exists")
        loop = asyncio.get_running_loop()
        media = MediaSession(key, self.pool, host_a, host_b)
        session = _Session(media)
        self._sessions[key] = session
        try:
            await self._open(session, media.allocate(streams, loop.time()))
        except BaseException:
            await self._teardown(session)
            del self._sessions[key]
            raise
        self._arm(loop)
        return media

    async def add_streams(self, key: str, count: int) -> list[int]:
        """More m-lines for an existing session (a re-offer added some); their indices."""
        session = self._get(key)
        actions = session.media.allocate(count, asyncio.get_running_loop().time())
        indices = sorted({action.stream for action in actions})
        try:
            await self._open(session, actions)
        except BaseException:
            for index in indices:
                await self._close_stream(session, index)
            raise
        return indices

    def set_remote(
        self,
        key: str,
        stream: int,
        leg: Leg,
        remote: Address | None,
        remote_rtcp: Address | None = None,
    ) -> None:
        """The address `leg`'s side put in its SDP for `stream` (see MediaSession.set_remote)."""
        session = self._get(key)
        self._apply(session, [session.media.set_remote(stream, leg, remote, remote_rtcp)])

    def configure(self, key: str, stream: int, leg: Leg, media: LegMedia) -> None:
        """What the latest offer/answer says about `leg`'s side of `stream` (codec, SRTP
        keys, telephone-event numbers, DTMF mode). MediaRelayError when it cannot be used."""
        pipeline = self._get(key).pipelines.get(stream)
        if pipeline is None:
            raise MediaRelayError(f"media session {key}: no stream {stream}")
        try:
            pipeline.configure(leg, media)
        except PipelineError as exc:
            raise MediaRelayError(f"media session {key} stream {stream}: {exc}") from None
        self._wire_rtcp(self._get(key), stream, pipeline)

    @staticmethod
    def _wire_rtcp(session: _Session, stream: int, pipeline: StreamPipeline) -> None:
        """Where each leg's RTCP goes: a leg that agreed to rtcp-mux (RFC 5761) sends and
        takes it on its RTP port; the other leg is not concerned."""
        a, b = session.legs.get((stream, Leg.A)), session.legs.get((stream, Leg.B))
        if a is None or b is None:
            return
        for here, there, leg in ((a, b, Leg.A), (b, a, Leg.B)):
            target = there.rtp if pipeline.media[leg.other].rtcp_mux else there.rtcp
            here.rtp.mux = pipeline.media[leg].rtcp_mux
            here.rtp.rtcp_proc = pipeline.rtcp[leg]
            here.rtp.rtcp_peer = target
            here.rtcp.peer = target

    def play_dtmf(self, key: str, stream: int, leg: Leg, digit: str, duration_ms: int) -> None:
        """Play `digit` as RFC 4733 events toward `leg` (its peer expects them in RTP; the
        other side sent it as SIP INFO). MediaRelayError when that side has none."""
        session = self._get(key)
        pipeline = session.pipelines.get(stream)
        if pipeline is None:
            raise MediaRelayError(f"media session {key}: no stream {stream}")
        try:
            schedule = pipeline.play(leg, digit, duration_ms, monotonic())
        except (PipelineError, ValueError) as exc:
            raise MediaRelayError(f"media session {key} stream {stream}: {exc}") from None
        loop = asyncio.get_running_loop()
        start = monotonic()
        for send_at, data in schedule:
            loop.call_later(max(0.0, send_at - start), self._inject, session, stream, leg, data)

    def _inject(self, session: _Session, stream: int, leg: Leg, data: bytes) -> None:
        pair = session.legs.get((stream, leg))
        pipeline = session.pipelines.get(stream)
        if pair is None or pipeline is None or pair.rtp.remote is None:
            return  # the stream or the call is gone, or the peer's address is not known yet
        out = pipeline.injected(leg, data)
        if out is not None:
            pair.rtp.transport.sendto(out, pair.rtp.remote)

    def _digit_handler(self, key: str, stream: int) -> Callable[[Leg, str, int], None]:
        def heard(leg: Leg, digit: str, duration_ms: int) -> None:
            if self.on_dtmf is not None:
                self.on_dtmf(DtmfHeard(key, stream, leg, digit, duration_ms))

        return heard

    def relatch(self, key: str, leg: Leg, stream: int | None = None) -> None:
        """Latch `leg` again on its next packet from the expected IP (after a re-INVITE)."""
        session = self._get(key)
        self._apply(session, session.media.relatch(leg, stream))

    def endpoints(self, key: str, leg: Leg) -> list[Address | None]:
        return self._get(key).media.endpoints(leg)

    async def disable_stream(self, key: str, stream: int) -> None:
        """Close one stream's sockets (m-line rejected or removed); its ports go back."""
        session = self._get(key)
        session.media.stream(stream)  # raises for an unknown or already disabled stream
        await self._close_stream(session, stream)

    async def close_session(self, key: str) -> SessionStats:
        """Close every socket of the session, wait until they are closed, return the ports
        to the pool and the final counters. Unknown keys raise MediaRelayError."""
        session = self._get(key)
        del self._sessions[key]
        stats = self._stats(session)
        for pair in session.legs.values():
            for endpoint in pair:
                for name in _COUNTED:
                    self._closed_counts[name] = self._closed_counts.get(name, 0) + getattr(
                        endpoint, name
                    )
        await self._teardown(session)
        return stats

    def stats(self, key: str) -> SessionStats:
        return self._stats(self._get(key))

    def counters(self, names: Iterable[str], *, closed: bool = False) -> dict[str, int]:
        """Sums of the endpoint counters `names` over every live session (and, with
        `closed`, every session already closed): what metrics report, without the
        per-stream quality snapshots stats() builds."""
        totals = dict.fromkeys(names, 0)
        if closed:
            for name in totals:
                totals[name] += self._closed_counts.get(name, 0)
        for session in self._sessions.values():
            for pair in session.legs.values():
                for endpoint in pair:
                    for name in totals:
                        totals[name] += getattr(endpoint, name)
        return totals

    async def close(self) -> None:
        """Close every session and stop the idle timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for key in list(self._sessions):
            await self.close_session(key)

    # ------------------------------------------------------------------ set-up and teardown

    async def _open(self, session: _Session, actions: Iterable[OpenLeg]) -> None:
        opened: set[int] = set()
        for action in actions:
            session.legs[(action.stream, action.leg)] = await self._bind_leg(session, action)
            opened.add(action.stream)
        for index in sorted(opened):
            a, b = session.legs[(index, Leg.A)], session.legs[(index, Leg.B)]
            a.rtp.peer, b.rtp.peer = b.rtp, a.rtp
            a.rtcp.peer, b.rtcp.peer = b.rtcp, a.rtcp
            pipeline = StreamPipeline(self._digit_handler(session.media.key, index))
            session.pipelines[index] = pipeline
            for leg, pair in ((Leg.A, a), (Leg.B, b)):
                pair.rtp.proc = pipeline.rtp[leg]
                pair.rtcp.proc = pipeline.rtcp[leg]
            # Every socket of the stream is bound: remotes may be set from here on.
            for leg in Leg:
                state = session.media.stream(index).leg(leg)
                self._apply(
                    session,
                    [Retarget(index, leg, state.remote, state.remote_rtcp, relatch=True)],
                )

    async def _bind_leg(self, session: _Session, action: OpenLeg) -> _LegEndpoints:
        """Bind the RTP and RTCP sockets of one leg; when another program holds a port, try
        the next pair from the pool (a bounded number of times)."""
        last_error: OSError | None = None
        for _ in range(self.bind_attempts):
            rtp = await self._bind(session, action, Channel.RTP)
            if isinstance(rtp, _Endpoint):
                try:
                    rtcp = await self._bind(session, action, Channel.RTCP)
                except BaseException:
                    rtp.close()
                    raise
                if isinstance(rtcp, _Endpoint):
                    return _LegEndpoints(rtp, rtcp)
                rtp.close()
                await rtp.closed
                last_error = rtcp
            else:
                last_error = rtp
            action = session.media.replace_ports(action.stream, action.leg)
        raise MediaRelayError(
            f"media session {session.media.key}: could not bind a free RTP/RTCP port pair on"
            f" {action.host} after {self.bind_attempts} attempts (last error: {last_error});"
            " other programs use ports of media.port_range"
        )

    async def _bind(
        self, session: _Session, action: OpenLeg, channel: Channel
    ) -> _Endpoint | OSError:
        loop = asyncio.get_running_loop()
        port = action.ports.rtp if channel is Channel.RTP else action.ports.rtcp
        endpoint = _Endpoint(
            session.media,
            action.stream,
            action.leg,
            channel,
            self.strict_source,
            loop.create_future(),
        )
        # Bind the socket ourselves and hand it over: with local_addr= the loop would run
        # getaddrinfo on an address that is already a literal, four times per call.
        family = socket.AF_INET6 if ":" in action.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((action.host, port))
        except OSError as exc:
            sock.close()
            if exc.errno in _RETRY_BIND:
                return exc
            raise MediaRelayError(
                f"cannot bind media socket {action.host}:{port}: {exc}"
                " (is the interface's media_address an address of this host?)"
            ) from exc
        try:
            await loop.create_datagram_endpoint(lambda: endpoint, sock=sock)
        except BaseException:
            sock.close()
            raise
        return endpoint

    def _apply(self, session: _Session, actions: Iterable[Retarget]) -> None:
        for action in actions:
            pair = session.legs.get((action.stream, action.leg))
            if pair is None:
                continue
            pair.rtp.retarget(action.remote, action.relatch)
            pair.rtcp.retarget(action.remote_rtcp, action.relatch)

    async def _close_endpoints(self, endpoints: list[_Endpoint]) -> None:
        for endpoint in endpoints:
            endpoint.close()
        if endpoints:
            # The ports go back to the pool only once the sockets are really closed;
            # otherwise the next session could draw a pair it cannot bind yet.
            await asyncio.wait([endpoint.closed for endpoint in endpoints], timeout=CLOSE_WAIT)

    async def _close_stream(self, session: _Session, index: int) -> None:
        await self._close_endpoints(session.endpoints(index))
        for leg in Leg:
            session.legs.pop((index, leg), None)
        session.pipelines.pop(index, None)
        session.media.disable(index)

    async def _teardown(self, session: _Session) -> None:
        await self._close_endpoints(session.endpoints())
        session.legs.clear()
        session.pipelines.clear()
        session.media.release()

    def _get(self, key: str) -> _Session:
        try:
            return self._sessions[key]
        except KeyError:
            raise MediaRelayError(f"no media session {key}") from None

    def _stats(self, session: _Session) -> SessionStats:
        legs = tuple(
            LegStats(
                index,
                leg,
                session.media.stream(index).leg(leg).local,
                pair.rtp.stats(),
                pair.rtcp.stats(),
            )
            for (index, leg), pair in sorted(
                session.legs.items(), key=lambda item: (item[0][0], item[0][1].value)
            )
        )
        now = monotonic()
        streams = tuple(
            pipeline.report(index, now) for index, pipeline in sorted(session.pipelines.items())
        )
        return SessionStats(session.media.key, legs, streams)

    # ------------------------------------------------------------------ no-media timeout

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None:
            self._timer = loop.call_later(self.check_interval, self._check, loop)

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        """One timer for the whole relay: compare each stream's packet count with the last
        check; a stream whose count stood still for `timeout` seconds is reported once."""
        self._timer = loop.call_later(self.check_interval, self._check, loop)
        now = loop.time()
        clock = monotonic()
        reports: list[MediaTimeout] = []
        for key, session in list(self._sessions.items()):
            on_hold: set[int] = set()
            for index, pipeline in session.pipelines.items():
                if pipeline.listening:
                    deadline = pipeline.next_deadline()
                    if deadline is not None and deadline <= clock:
                        pipeline.on_timer(clock)  # digits whose end packets were all lost
                if pipeline.held:
                    on_hold.add(index)
            idle = session.media.check_idle(
                session.activity(), now, self.timeout, self.hold_timeout, on_hold
            )
            if idle:
                held = [i for i in idle if i in on_hold]
                limit = self.hold_timeout if held and self.hold_timeout else self.timeout
                reports.append(MediaTimeout(key, idle, limit or 0.0))
        if self.on_timeout is not None:
            for report in reports:
                self.on_timeout(report)
