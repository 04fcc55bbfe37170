"""Media session bookkeeping (sans-I/O) with a virtual clock: allocation per m-line and leg,
SDP remotes and relatching, endpoints for SDP rewriting, idle detection, no port leaks."""

from __future__ import annotations

import pytest

from media.ports import PortPair, PortPool, PortsExhausted
from media.session import (
    Channel,
    CloseLeg,
    LatchState,
    Leg,
    MediaSession,
    MediaSessionError,
    OpenLeg,
    Retarget,
)

PBX_SIDE = "10.0.0.1"
TRUNK_SIDE = "192.0.2.1"


def make(pool: PortPool | None = None, key: str = "call-1") -> tuple[MediaSession, PortPool]:
    pool = pool or PortPool(20000, 20099)
    return MediaSession(key, pool, PBX_SIDE, TRUNK_SIDE), pool


def test_allocate_gives_each_stream_a_pair_per_leg_on_that_sides_address() -> None:
    session, pool = make()
    actions = session.allocate(2, now=0.0)
    assert [(a.stream, a.leg) for a in actions] == [
        (0, Leg.A),
        (0, Leg.B),
        (1, Leg.A),
        (1, Leg.B),
    ]
    assert all(isinstance(a, OpenLeg) and a.remote is None for a in actions)
    assert {a.host for a in actions if a.leg is Leg.A} == {PBX_SIDE}
    assert {a.host for a in actions if a.leg is Leg.B} == {TRUNK_SIDE}
    pairs = [a.ports for a in actions]
    assert len(set(pairs)) == 4 and all(pool.is_in_use(p) for p in pairs)
    assert session.endpoints(Leg.A) == [(PBX_SIDE, pairs[0].rtp), (PBX_SIDE, pairs[2].rtp)]
    assert session.endpoints(Leg.B) == [(TRUNK_SIDE, pairs[1].rtp), (TRUNK_SIDE, pairs[3].rtp)]


def test_a_later_allocation_appends_m_lines() -> None:
    session, _ = make()
    session.allocate(1, now=0.0)
    added = session.allocate(1, now=5.0)
    assert {a.stream for a in added} == {1}
    assert len(session.endpoints(Leg.A)) == 2


def test_allocation_is_all_or_nothing_when_the_pool_runs_out() -> None:
    pool = PortPool(20000, 20009)  # 5 pairs: enough for 2 streams, not 3
    session, _ = make(pool)
    with pytest.raises(PortsExhausted):
        session.allocate(3, now=0.0)
    assert pool.in_use == 0 and session.endpoints(Leg.A) == []
    session.allocate(2, now=0.0)
    assert pool.in_use == 4


def test_release_returns_every_port_and_is_idempotent() -> None:
    pool = PortPool(20000, 20099)
    sessions = [make(pool, f"call-{i}")[0] for i in range(5)]
    for count, session in enumerate(sessions, start=1):
        session.allocate(count, now=0.0)
    session = sessions[0]
    session.allocate(1, now=1.0)
    assert pool.in_use == 2 * (1 + 2 + 3 + 4 + 5 + 1)
    closes = [close for s in sessions for close in s.release()]
    assert all(isinstance(c, CloseLeg) for c in closes)
    assert len({c.ports for c in closes}) == len(closes) == 32
    assert pool.in_use == 0 and pool.available == pool.capacity
    assert sessions[0].release() == []
    with pytest.raises(MediaSessionError, match="released"):
        sessions[0].allocate(1, now=2.0)


def test_set_remote_defaults_rtcp_to_port_plus_one_and_accepts_a_rtcp_attribute() -> None:
    session, _ = make()
    session.allocate(1, now=0.0)
    action = session.set_remote(0, Leg.B, ("198.51.100.7", 40000))
    assert action == Retarget(0, Leg.B, ("198.51.100.7", 40000), ("198.51.100.7", 40001), True)
    action = session.set_remote(0, Leg.A, ("10.0.0.9", 5004), ("10.0.0.9", 6000))
    assert action.remote_rtcp == ("10.0.0.9", 6000)
    assert session.stream(0).leg(Leg.A).latch is LatchState.EXPECTED


def test_remote_ipv6_literal_is_normalised_so_it_matches_socket_addresses() -> None:
    session = MediaSession("call-6", PortPool(20000, 20099), PBX_SIDE, "2001:db8::53")
    session.allocate(1, now=0.0)
    action = session.set_remote(0, Leg.B, ("2001:db8:0:0::0001", 40000))
    assert action.remote == ("2001:db8::1", 40000)


@pytest.mark.parametrize("host", ["2001:db8::1", "media.example.com"])
def test_a_remote_our_socket_cannot_send_to_is_treated_as_unknown(host: str) -> None:
    # An IPv6 address (or a host name) in the SDP of a leg relayed from an IPv4 address:
    # no destination until the peer's packets are heard (latching), never a send that the
    # socket refuses packet after packet.
    session, _ = make()
    session.allocate(1, now=0.0)
    action = session.set_remote(0, Leg.B, (host, 40000), (host, 40001))
    assert action.remote is None and action.remote_rtcp is None
    assert session.stream(0).leg(Leg.B).latch is LatchState.UNKNOWN


@pytest.mark.parametrize("port", [0, 70000])
def test_a_remote_port_out_of_range_is_an_error(port: int) -> None:
    session, _ = make()
    session.allocate(1, now=0.0)
    with pytest.raises(MediaSessionError, match=str(port)):
        session.set_remote(0, Leg.B, ("198.51.100.7", port))


def test_latch_is_recorded_and_kept_when_the_sdp_address_does_not_change() -> None:
    session, _ = make()
    session.allocate(1, now=0.0)
    session.set_remote(0, Leg.A, ("10.0.0.9", 5004))
    session.latched(0, Leg.A, Channel.RTP, ("10.0.0.9", 31234))  # NAT'd source port
    session.latched(0, Leg.A, Channel.RTCP, ("10.0.0.9", 31235))
    leg = session.stream(0).leg(Leg.A)
    assert leg.latch is LatchState.LATCHED and leg.latched == ("10.0.0.9", 31234)
    again = session.set_remote(0, Leg.A, ("10.0.0.9", 5004))  # same answer in a re-INVITE
    assert again.relatch is False and leg.latched == ("10.0.0.9", 31234)


def test_a_moved_sdp_address_asks_for_a_relatch() -> None:
    session, _ = make()
    session.allocate(1, now=0.0)
    session.set_remote(0, Leg.B, ("198.51.100.7", 40000))
    session.latched(0, Leg.B, Channel.RTP, ("198.51.100.7", 40000))
    moved = session.set_remote(0, Leg.B, ("198.51.100.8", 42000))
    assert moved.relatch is True
    assert session.stream(0).leg(Leg.B).latch is LatchState.EXPECTED


def test_relatch_forgets_latched_sources_of_one_leg_only() -> None:
    session, _ = make()
    session.allocate(2, now=0.0)
    for index in (0, 1):
        for leg in Leg:
            session.latched(index, leg, Channel.RTP, ("203.0.113.5", 7000 + index))
    actions = session.relatch(Leg.A)
    assert [(a.stream, a.leg, a.relatch) for a in actions] == [(0, Leg.A, True), (1, Leg.A, True)]
    assert session.stream(0).leg(Leg.A).latch is LatchState.UNKNOWN
    assert session.stream(1).leg(Leg.B).latch is LatchState.LATCHED
    assert [a.stream for a in session.relatch(Leg.B, 1)] == [1]
    assert session.stream(0).leg(Leg.B).latch is LatchState.LATCHED


def test_disable_frees_a_streams_ports_and_leaves_a_hole_for_sdp() -> None:
    session, pool = make()
    session.allocate(3, now=0.0)
    middle = [session.stream(1).leg(leg).ports for leg in Leg]
    closes = session.disable(1)
    assert [c.ports for c in closes] == middle
    assert not any(pool.is_in_use(p) for p in middle)
    assert session.endpoints(Leg.A)[1] is None and session.endpoints(Leg.A)[2] is not None
    with pytest.raises(MediaSessionError, match="stream 1 is disabled"):
        session.set_remote(1, Leg.A, ("10.0.0.9", 5004))
    with pytest.raises(MediaSessionError, match="no stream 3"):
        session.stream(3)
    session.release()
    assert pool.in_use == 0


def test_replace_ports_swaps_in_a_fresh_pair_and_frees_the_old_one() -> None:
    session, pool = make()
    session.allocate(1, now=0.0)
    old = session.stream(0).leg(Leg.B).ports
    action = session.replace_ports(0, Leg.B)
    assert action.ports != old and pool.is_in_use(action.ports) and not pool.is_in_use(old)
    assert session.endpoints(Leg.B) == [(TRUNK_SIDE, action.ports.rtp)]
    session.release()
    assert pool.in_use == 0


def test_late_latch_report_after_release_is_ignored() -> None:
    session, _ = make()
    session.allocate(1, now=0.0)
    session.release()
    session.latched(0, Leg.A, Channel.RTP, ("10.0.0.9", 5004))  # must not raise


def test_idle_streams_are_reported_once_after_the_timeout_and_rearmed_by_media() -> None:
    session, _ = make()
    session.allocate(2, now=100.0)
    assert session.check_idle({0: 0, 1: 0}, now=104.0, timeout=5.0) == ()
    assert session.check_idle({0: 10, 1: 0}, now=105.0, timeout=5.0) == (1,)
    assert session.check_idle({0: 10, 1: 0}, now=106.0, timeout=5.0) == ()  # once only
    assert session.check_idle({0: 10, 1: 0}, now=110.0, timeout=5.0) == (0,)
    # Stream 1 comes back, then falls silent again: reported again after a full timeout.
    assert session.check_idle({0: 10, 1: 3}, now=111.0, timeout=5.0) == ()
    assert session.check_idle({0: 10, 1: 3}, now=115.9, timeout=5.0) == ()
    assert session.check_idle({0: 10, 1: 3}, now=116.0, timeout=5.0) == (1,)


def test_streams_on_hold_get_the_hold_limit_and_none_means_never() -> None:
    session, _ = make()
    session.allocate(2, now=100.0)
    # Stream 1 is on hold: a side said sendonly/inactive and may send nothing for long.
    assert session.check_idle({}, now=105.0, timeout=5.0, hold_timeout=50.0, on_hold={1}) == (0,)
    assert session.check_idle({}, now=149.0, timeout=5.0, hold_timeout=50.0, on_hold={1}) == ()
    assert session.check_idle({}, now=150.0, timeout=5.0, hold_timeout=50.0, on_hold={1}) == (1,)
    other, _ = make()
    other.allocate(1, now=100.0)
    assert other.check_idle({}, now=10_000.0, timeout=5.0, hold_timeout=None, on_hold={0}) == ()
    assert other.check_idle({}, now=10_000.0, timeout=None) == ()


def test_disabled_streams_are_never_reported_idle() -> None:
    session, _ = make()
    session.allocate(2, now=0.0)
    session.disable(0)
    assert session.check_idle({}, now=100.0, timeout=5.0) == (1,)


def test_ports_lists_every_pair_held() -> None:
    session, pool = make()
    session.allocate(2, now=0.0)
    held = session.ports()
    assert len(held) == 4 and all(isinstance(p, PortPair) and pool.is_in_use(p) for p in held)
