"""Media session bookkeeping for one call (sans-I/O): the port pairs of every stream on both
legs, the remote each side's SDP announced, what the data path latched, and idle detection.
Methods return plain data (`OpenLeg`, `Retarget`, `CloseLeg`) that the relay applies."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import Enum

from media.ports import PortPair, PortPool

Address = tuple[str, int]


class Leg(Enum):
    """'a' faces the PBX, 'b' faces the trunk."""

    A = "a"
    B = "b"

    @property
    def other(self) -> Leg:
        return Leg.B if self is Leg.A else Leg.A


class Channel(Enum):
    RTP = "rtp"
    RTCP = "rtcp"


class LatchState(Enum):
    """Where the data path sends packets meant for a leg."""

    UNKNOWN = "unknown"  # no SDP address yet, nothing received: packets for the leg are dropped
    EXPECTED = "expected"  # to the SDP address, until the first packet from that IP arrives
    LATCHED = "latched"  # to the real source of that packet (symmetric RTP, RFC 4961)


class MediaSessionError(Exception):
    """A request that does not fit the session (unknown stream, session released, ...)."""


# ---------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class OpenLeg:
    """Bind the RTP and RTCP sockets of one leg of one stream."""

    stream: int
    leg: Leg
    host: str
    ports: PortPair
    remote: Address | None
    remote_rtcp: Address | None


@dataclass(frozen=True, slots=True)
class Retarget:
    """Send to a new expected remote on one leg; with `relatch`, forget the latched source
    and latch again on the next packet from the expected IP."""

    stream: int
    leg: Leg
    remote: Address | None
    remote_rtcp: Address | None
    relatch: bool


@dataclass(frozen=True, slots=True)
class CloseLeg:
    """Close the sockets of one leg of one stream; its ports are back in the pool."""

    stream: int
    leg: Leg
    ports: PortPair


# ---------------------------------------------------------------------------- state


@dataclass(slots=True)
class LegState:
    """One leg of one stream: our local pair and what we know about the far side."""

    host: str
    ports: PortPair
    remote: Address | None = None
    remote_rtcp: Address | None = None
    latched: Address | None = None
    latched_rtcp: Address | None = None

    @property
    def local(self) -> Address:
        return (self.host, self.ports.rtp)

    @property
    def latch(self) -> LatchState:
        if self.latched is not None:
            return LatchState.LATCHED
        return LatchState.UNKNOWN if self.remote is None else LatchState.EXPECTED


@dataclass(slots=True)
class StreamState:
    """One m-line: leg a, leg b and when media last moved (for the no-media timeout)."""

    index: int
    a: LegState
    b: LegState
    last_active: float
    last_count: int = 0
    idle_reported: bool = False

    def leg(self, leg: Leg) -> LegState:
        return self.a if leg is Leg.A else self.b


def normalize_address(address: Address | None) -> Address | None:
    """The canonical spelling of an IP literal (so '::0001' from SDP matches '::1' from the
    socket); host names pass unchanged."""
    if address is None:
        return None
    host, port = address
    if not 0 < port <= 65535:
        raise MediaSessionError(f"remote media port {port} of {host} is out of range 1-65535")
    return (_canonical_host(host), port)


def _reachable(remote: Address | None, local: str) -> Address | None:
    """`remote` if our socket on `local` can send to it, else None (the leg then waits to
    latch on what it hears, as for a peer that gave no address): an SDP may name a host
    name or an address of the other IP family, which a socket cannot send to."""
    if remote is None or _ip_version(remote[0]) != _ip_version(local):
        return None
    return remote


@functools.lru_cache(maxsize=4096)
def _ip_version(host: str) -> int:
    """4 or 6, or 0 for what is not an IP literal (a host name)."""
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return 0


@functools.lru_cache(maxsize=4096)  # the same few peer addresses on every call
def _canonical_host(host: str) -> str:
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host


class MediaSession:
    """The media of one call. `key` names it to the relay (e.g. the call id)."""

    __slots__ = ("key", "_pool", "_hosts", "_streams", "_released")

    def __init__(self, key: str, pool: PortPool, host_a: str, host_b: str) -> None:
        self.key = key
        self._pool = pool
        # The local media address of each side: the interface's media_address.
        self._hosts = {Leg.A: host_a, Leg.B: host_b}
        # Index = m-line index; None for a stream rejected with port 0 (RFC 3264 §6).
        self._streams: list[StreamState | None] = []
        self._released = False

    # ------------------------------------------------------------------ queries

    @property
    def streams(self) -> list[StreamState | None]:
        return list(self._streams)

    @property
    def released(self) -> bool:
        return self._released

    def stream(self, index: int) -> StreamState:
        if not 0 <= index < len(self._streams):
            raise MediaSessionError(
                f"media session {self.key}: no stream {index} (it has {len(self._streams)})"
            )
        stream = self._streams[index]
        if stream is None:
            raise MediaSessionError(f"media session {self.key}: stream {index} is disabled")
        return stream

    def endpoints(self, leg: Leg) -> list[Address | None]:
        """Our address per m-line as that leg's side must see it in SDP; None for a disabled
        stream (write port 0)."""
        return [None if s is None else s.leg(leg).local for s in self._streams]

    def ports(self) -> list[PortPair]:
        """Every pair this session holds."""
        return [s.leg(leg).ports for s in self._streams if s is not None for leg in Leg]

    # ------------------------------------------------------------------ allocation

    def allocate(self, count: int, now: float) -> list[OpenLeg]:
        """Add `count` streams (the next m-line indices; a re-offer may add m-lines), a port
        pair per leg each. All or nothing: on PortsExhausted what was taken is given back."""
        self._check_open()
        if count < 1:
            raise MediaSessionError(f"media session {self.key}: cannot allocate {count} streams")
        taken: list[PortPair] = []
        try:
            for _ in range(2 * count):
                taken.append(self._pool.allocate())
        except BaseException:
            for pair in taken:
                self._pool.release(pair)
            raise
        actions: list[OpenLeg] = []
        for offset in range(count):
            index = len(self._streams)
            a = LegState(self._hosts[Leg.A], taken[2 * offset])
            b = LegState(self._hosts[Leg.B], taken[2 * offset + 1])
            self._streams.append(StreamState(index, a, b, last_active=now))
            actions += [self._open(index, Leg.A, a), self._open(index, Leg.B, b)]
        return actions

    def replace_ports(self, index: int, leg: Leg) -> OpenLeg:
        """A fresh pair for one leg (the relay could not bind the old one: another program
        holds it). The old pair goes back to the end of the pool's queue."""
        self._check_open()
        state = self.stream(index).leg(leg)
        fresh = self._pool.allocate()
        self._pool.release(state.ports)
        state.ports = fresh
        return self._open(index, leg, state)

    def disable(self, index: int) -> list[CloseLeg]:
        """A stream rejected (port 0) or removed by a re-offer: free its ports; the index
        stays so later m-lines keep theirs."""
        self._check_open()
        stream = self.stream(index)
        self._streams[index] = None
        return self._close(stream)

    def release(self) -> list[CloseLeg]:
        """Give every port back. Releasing twice does nothing the second time."""
        if self._released:
            return []
        self._released = True
        actions: list[CloseLeg] = []
        for stream in self._streams:
            if stream is not None:
                actions += self._close(stream)
        self._streams = [None] * len(self._streams)
        return actions

    # ------------------------------------------------------------------ remotes and latching

    def set_remote(
        self, index: int, leg: Leg, remote: Address | None, remote_rtcp: Address | None = None
    ) -> Retarget:
        """The address that leg's side announced in its SDP (offer or answer, re-INVITE
        included). RTCP defaults to RTP port + 1 (RFC 3550 §11) unless `a=rtcp` (RFC 3605)
        gave another. A changed address makes the leg latch again: the peer moved
        (TRAPS.md #8); an unchanged one keeps the latch (a NAT'd source port stays valid)."""
        self._check_open()
        state = self.stream(index).leg(leg)
        local = self._hosts[leg]
        remote = _reachable(normalize_address(remote), local)
        if remote_rtcp is None and remote is not None:
            remote_rtcp = (remote[0], remote[1] + 1) if remote[1] < 65535 else None
        else:
            remote_rtcp = _reachable(normalize_address(remote_rtcp), local)
        moved = (remote, remote_rtcp) != (state.remote, state.remote_rtcp)
        state.remote, state.remote_rtcp = remote, remote_rtcp
        if moved:
            state.latched = state.latched_rtcp = None
        return Retarget(index, leg, remote, remote_rtcp, relatch=moved)

    def relatch(self, leg: Leg, index: int | None = None) -> list[Retarget]:
        """Forget what `leg` latched to (every stream, or one), e.g. after a re-INVITE."""
        self._check_open()
        chosen = [self.stream(index)] if index is not None else self._active()
        actions: list[Retarget] = []
        for stream in chosen:
            state = stream.leg(leg)
            state.latched = state.latched_rtcp = None
            actions.append(Retarget(stream.index, leg, state.remote, state.remote_rtcp, True))
        return actions

    def latched(self, index: int, leg: Leg, channel: Channel, source: Address) -> None:
        """The data path latched `leg` to `source` (reported once per latch, not per packet)."""
        if self._released or not 0 <= index < len(self._streams):
            return  # a report racing a teardown: nothing left to record
        stream = self._streams[index]
        if stream is None:
            return
        state = stream.leg(leg)
        if channel is Channel.RTP:
            state.latched = source
        else:
            state.latched_rtcp = source

    # ------------------------------------------------------------------ no-media timeout

    def check_idle(
        self,
        counts: Mapping[int, int],
        now: float,
        timeout: float | None,
        hold_timeout: float | None = None,
        on_hold: Collection[int] = (),
    ) -> tuple[int, ...]:
        """Streams that went quiet for `timeout` seconds (`hold_timeout` for the streams in
        `on_hold`; None: no limit), each reported once until media moves again.
        `counts[index]` is a counter the data path raises with every packet accepted on the
        stream (both legs, RTP and RTCP); an unchanged count means silence, so the
        per-packet path never reads a clock."""
        idle: list[int] = []
        for stream in self._active():
            count = counts.get(stream.index, stream.last_count)
            limit = hold_timeout if stream.index in on_hold else timeout
            if count != stream.last_count:
                stream.last_count = count
                stream.last_active = now
                stream.idle_reported = False
            elif limit is None:
                continue
            elif not stream.idle_reported and now - stream.last_active >= limit:
                stream.idle_reported = True
                idle.append(stream.index)
        return tuple(idle)

    # ------------------------------------------------------------------ helpers

    def _active(self) -> list[StreamState]:
        return [s for s in self._streams if s is not None]

    def _open(self, index: int, leg: Leg, state: LegState) -> OpenLeg:
        return OpenLeg(index, leg, state.host, state.ports, state.remote, state.remote_rtcp)

    def _close(self, stream: StreamState) -> list[CloseLeg]:
        actions = []
        for leg in Leg:
            pair = stream.leg(leg).ports
            self._pool.release(pair)
            actions.append(CloseLeg(stream.index, leg, pair))
        return actions

    def _check_open(self) -> None:
        if self._released:
            raise MediaSessionError(f"media session {self.key} was released")
