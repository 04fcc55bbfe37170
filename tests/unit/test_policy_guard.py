"""sbc.policy.guard: flood, brute-force and scanner defence, driven with a virtual clock."""

from __future__ import annotations

import ipaddress
import timeit

import pytest

from sbc.policy.guard import (
    AuthLockoutSettings,
    Blocked,
    BlockKind,
    EdgeGuard,
    FloodSettings,
    GuardSettings,
    Reason,
    ScannerSettings,
    Unblocked,
    Verdict,
)
from sbc.sip.peer import Peer

ATTACKER = "203.0.113.66"
PHONE = "198.51.100.7"
PBX = "10.9.9.10"
T0 = 1000.0  # loop.time() is rarely near zero


def send(guard: EdgeGuard, host: str, count: int, start: float, duration: float) -> list[bool]:
    """`count` messages from `host`, evenly spread over [start, start + duration)."""
    step = duration / count
    return [guard.admit(host, start + i * step) for i in range(count)]


def blocked_events(events: object) -> list[Blocked]:
    assert isinstance(events, list | tuple)
    return [e for e in events if isinstance(e, Blocked)]


def run_timer(guard: EdgeGuard, until: float) -> list[object]:
    """Fire on_timer at each deadline up to `until`, as the app's one timer would."""
    events: list[object] = []
    while (deadline := guard.next_deadline()) is not None and deadline <= until:
        guard.on_timer(deadline)
        events.extend(guard.take_events())
        later = guard.next_deadline()
        assert later is None or later > deadline, f"on_timer({deadline}) did not move on"
    guard.on_timer(until)
    events.extend(guard.take_events())
    return events


def run_until_idle(guard: EdgeGuard, give_up: float) -> None:
    """Fire on_timer only at the deadlines the guard asks for, until it asks for none: the
    timer alone must clean up, whatever the times happen to be."""
    while (deadline := guard.next_deadline()) is not None:
        assert deadline <= give_up, f"still busy at {deadline}: {guard.state_size()} records"
        guard.on_timer(deadline)
        guard.take_events()
        later = guard.next_deadline()
        assert later is None or later > deadline, f"on_timer({deadline}) did not move on"


# ---------------------------------------------------------------------- flood


def test_source_at_twice_the_limit_is_blocked_within_the_window_and_dropped_after() -> None:
    guard = EdgeGuard(GuardSettings(flood=FloodSettings(window=2.0, max_requests=100)))
    results = send(guard, ATTACKER, 200, T0, 2.0)
    first_refused = results.index(False)
    assert first_refused == 100  # the 101st message of the window is the first one dropped
    assert not any(results[first_refused:])
    later = send(guard, ATTACKER, 20, T0 + 10.0, 10.0)  # slow now, but still blocked
    assert later == [False] * 20
    events = guard.take_events()
    assert len(events) == 1
    (event,) = events
    assert isinstance(event, Blocked)
    assert (event.key, event.kind, event.reason) == (ATTACKER, BlockKind.SOURCE, Reason.FLOOD)
    assert event.until >= T0 + 300.0
    assert guard.take_events() == ()


def test_well_behaved_source_alongside_a_flood_is_never_blocked() -> None:
    guard = EdgeGuard()
    now = T0
    phone_results = []
    for tick in range(6000):  # 60 s: the attacker sends 200/s, the phone 10/s
        now = T0 + tick * 0.01
        guard.admit(ATTACKER, now)
        if tick % 10 == 0:
            phone_results.append(guard.admit(PHONE, now))
        if tick % 100 == 0:
            guard.on_timer(now)
    assert all(phone_results)
    assert [e.key for e in blocked_events(guard.take_events())] == [ATTACKER]


def test_steady_rate_just_under_the_limit_is_never_blocked() -> None:
    guard = EdgeGuard()
    # 90 messages per 2 s window for a minute, offset so windows and sends do not align
    assert all(send(guard, PHONE, 2700, T0 + 0.37, 60.0))
    assert guard.take_events() == ()


def test_burst_straddling_the_window_boundary_is_caught() -> None:
    guard = EdgeGuard()
    guard.admit(PHONE, T0)  # starts the first interval at T0
    # 90 in the last 0.2 s of one interval and 90 in the first 0.2 s of the next: no single
    # interval goes over 100, but 180 messages in 0.4 s is twice the allowed density.
    before = send(guard, ATTACKER, 90, T0 + 1.8, 0.2)
    after = send(guard, ATTACKER, 90, T0 + 2.0, 0.2)
    assert all(before)
    assert False in after
    assert [e.reason for e in blocked_events(guard.take_events())] == [Reason.FLOOD]


def test_trusted_sources_are_never_blocked_by_the_flood_detector() -> None:
    settings = GuardSettings(trusted=("192.0.2.0/24",))
    guard = EdgeGuard(settings, trusted=[ipaddress.ip_network("10.9.9.0/24")])
    assert all(send(guard, PBX, 1000, T0, 2.0))  # 10x the limit, from the PBX network
    assert all(send(guard, "192.0.2.200", 1000, T0, 2.0))
    assert guard.take_events() == ()
    assert not all(send(guard, ATTACKER, 1000, T0, 2.0))


def test_set_trusted_replaces_the_extra_addresses() -> None:
    guard = EdgeGuard(trusted=["198.51.100.7"])
    assert guard.is_trusted(PHONE)
    guard.set_trusted(["198.51.100.8"])
    assert not guard.is_trusted(PHONE)
    assert guard.is_trusted("198.51.100.8")
    assert not guard.is_trusted("not-an-address")
    with pytest.raises(ValueError, match="guard.trusted: 'example.com'"):
        guard.set_trusted(["example.com"])


def test_block_expires_after_the_cooling_period_with_one_unblocked_event() -> None:
    guard = EdgeGuard(GuardSettings(block_time=300.0))
    send(guard, ATTACKER, 200, T0, 2.0)
    blocked = blocked_events(guard.take_events())
    assert len(blocked) == 1
    until = blocked[0].until
    assert guard.next_deadline() is not None
    assert run_timer(guard, until - 0.001) == []
    assert guard.admit(ATTACKER, until - 0.001) is False
    events = run_timer(guard, until + 50.0)
    assert len(events) == 1
    (event,) = events
    assert isinstance(event, Unblocked)
    assert (event.key, event.reason, event.manual) == (ATTACKER, Reason.FLOOD, False)
    assert event.hits == 101  # 100 in the flood window (the first refused included), 1 after
    assert guard.admit(ATTACKER, until + 50.0) is True
    assert run_timer(guard, until + 1000.0) == []  # no second Unblocked
    assert guard.next_deadline() is None


def test_expired_block_frees_the_source_before_the_timer_runs() -> None:
    guard = EdgeGuard(GuardSettings(block_time=60.0))
    guard.inspect(ATTACKER, "sipcli", None, T0)
    guard.take_events()
    assert guard.admit(ATTACKER, T0 + 59.0) is False
    assert guard.admit(ATTACKER, T0 + 61.0) is True  # the timer is late; the block is not
    # Flooding again before the sweep: the old block is closed and a new one opened, so
    # the log still pairs every Blocked with one Unblocked.
    send(guard, ATTACKER, 300, T0 + 62.0, 1.0)
    events = guard.take_events()
    assert [(type(e), e.reason) for e in events] == [
        (Unblocked, Reason.SCANNER),
        (Blocked, Reason.FLOOD),
    ]
    assert run_timer(guard, T0 + 100.0) == []


def test_block_is_extended_while_the_source_keeps_flooding() -> None:
    guard = EdgeGuard(GuardSettings(block_time=300.0))
    events: list[object] = []
    now = T0
    for _ in range(250):  # 500 s of 2x flooding, in 2 s bursts
        send(guard, ATTACKER, 200, now, 2.0)
        now += 2.0
        events.extend(run_timer(guard, now))
    assert len(blocked_events(events)) == 1  # one Blocked, however long it lasted
    assert not any(isinstance(e, Unblocked) for e in events)  # 500 s > 300 s: extended
    (info,) = guard.blocks(now)
    assert info.until > now + 290.0
    # The flood stops: the block ends 300 s after the last flooding, once.
    last_flood = now
    assert guard.admit(ATTACKER, last_flood + 299.0) is False
    ended = run_timer(guard, last_flood + 301.0)
    assert [type(e) for e in ended] == [Unblocked]
    assert guard.admit(ATTACKER, last_flood + 301.0) is True


def test_flood_detection_off_with_zero_limit() -> None:
    guard = EdgeGuard(GuardSettings(flood=FloodSettings(max_requests=0), block_time=60.0))
    assert all(send(guard, ATTACKER, 10_000, T0, 1.0))
    # A block for another reason still ends on time: traffic does not count as flooding.
    guard.inspect(PHONE, "sipcli", None, T0)
    assert not any(send(guard, PHONE, 10, T0 + 50.0, 1.0))
    assert [info.until for info in guard.blocks(T0 + 51.0)] == [T0 + 60.0]


# ---------------------------------------------------------------------- digest failures


def test_source_locked_out_after_n_failures_within_the_window() -> None:
    guard = EdgeGuard(GuardSettings(auth=AuthLockoutSettings(window=60.0, max_source_failures=5)))
    verdicts = [guard.auth_result(ATTACKER, f"20{i}", False, T0 + i * 10.0) for i in range(5)]
    assert verdicts == [Verdict.PASS] * 4 + [Verdict.DROP]
    (event,) = guard.take_events()
    assert isinstance(event, Blocked)
    assert (event.key, event.kind, event.reason) == (
        ATTACKER,
        BlockKind.SOURCE,
        Reason.AUTH_FAILURES,
    )
    assert guard.admit(ATTACKER, T0 + 41.0) is False  # silent drop from now on
    assert guard.admit(PHONE, T0 + 41.0) is True


def test_failures_spread_wider_than_the_window_do_not_lock_out() -> None:
    guard = EdgeGuard()
    verdicts = [guard.auth_result(ATTACKER, "201", False, T0 + i * 16.0) for i in range(20)]
    assert set(verdicts) == {Verdict.PASS}  # 5 failures always span 64 s > 60 s
    assert guard.take_events() == ()


def test_source_lockout_expires() -> None:
    guard = EdgeGuard(GuardSettings(block_time=20.0))
    for i in range(5):
        guard.auth_result(ATTACKER, "201", False, T0 + i)
    guard.take_events()
    assert guard.admit(ATTACKER, T0 + 20.0) is False
    events = run_timer(guard, T0 + 30.0)
    assert [(type(e), getattr(e, "key", None)) for e in events] == [(Unblocked, ATTACKER)]
    assert guard.admit(ATTACKER, T0 + 30.0) is True
    # Counting starts afresh after a lockout: the failures that caused it, still within
    # the 60 s window, do not lock the source again at its next mistake.
    assert guard.auth_result(ATTACKER, "201", False, T0 + 31.0) is Verdict.PASS


def test_username_locked_by_distributed_guessing() -> None:
    settings = GuardSettings(
        auth=AuthLockoutSettings(max_source_failures=5, max_username_failures=10)
    )
    guard = EdgeGuard(settings)
    # Ten bots, two guesses each: no source reaches 5, the username reaches 10.
    verdicts = [
        guard.auth_result(f"203.0.113.{bot}", "201", False, T0 + bot + guess * 0.5)
        for bot in range(10)
        for guess in range(2)
    ]
    assert Verdict.DROP not in verdicts
    assert verdicts[-1] is Verdict.FORBID
    assert verdicts.index(Verdict.FORBID) == 9  # the 10th failure locks it
    (event,) = guard.take_events()
    assert isinstance(event, Blocked)
    assert (event.key, event.kind) == ("201", BlockKind.USERNAME)
    # Locked: even the right password gets 403, from anywhere; other users are untouched.
    assert guard.auth_result(PHONE, "201", True, T0 + 20.0) is Verdict.FORBID
    assert guard.username_locked("201", T0 + 20.0)
    assert guard.auth_result(PHONE, "202", True, T0 + 20.0) is Verdict.PASS
    assert guard.admit(PHONE, T0 + 20.0) is True  # a username lock is no source block


def test_username_lock_expires() -> None:
    settings = GuardSettings(auth=AuthLockoutSettings(username_lock_time=100.0))
    guard = EdgeGuard(settings)
    for bot in range(10):
        guard.auth_result(f"203.0.113.{bot}", "201", False, T0 + bot)
    guard.take_events()
    assert guard.auth_result(PHONE, "201", True, T0 + 50.0) is Verdict.FORBID
    events = run_timer(guard, T0 + 120.0)
    assert len(events) == 1
    (event,) = events
    assert isinstance(event, Unblocked)
    # refused: the failure that locked it, and the right password during the lock
    assert (event.key, event.kind, event.hits) == ("201", BlockKind.USERNAME, 2)
    assert guard.auth_result(PHONE, "201", True, T0 + 120.0) is Verdict.PASS


def test_unknown_usernames_are_not_tracked() -> None:
    guard = EdgeGuard()
    for i in range(4):  # the caller passes None for a user that does not exist
        assert guard.auth_result(f"203.0.113.{i}", None, False, T0 + i) is Verdict.PASS
    assert guard.blocks(T0 + 10.0) == []


def test_success_does_not_reset_other_sources_counters() -> None:
    settings = GuardSettings(auth=AuthLockoutSettings(success_clears_source=True))
    guard = EdgeGuard(settings)
    for i in range(4):
        guard.auth_result(ATTACKER, "201", False, T0 + i)
    assert guard.auth_result(PHONE, "201", True, T0 + 5.0) is Verdict.PASS
    assert guard.auth_result(ATTACKER, "201", False, T0 + 6.0) is Verdict.DROP


def test_success_clears_only_its_own_source_when_configured() -> None:
    def fifth_failure_after_success(clears: bool) -> Verdict:
        guard = EdgeGuard(GuardSettings(auth=AuthLockoutSettings(success_clears_source=clears)))
        for i in range(4):
            guard.auth_result(PHONE, "201", False, T0 + i)
        guard.auth_result(PHONE, "201", True, T0 + 5.0)
        return guard.auth_result(PHONE, "201", False, T0 + 6.0)

    assert fifth_failure_after_success(clears=False) is Verdict.DROP
    assert fifth_failure_after_success(clears=True) is Verdict.PASS


def test_trusted_source_is_not_locked_out_but_its_username_is_counted() -> None:
    guard = EdgeGuard(trusted=["10.9.9.0/24"])
    verdicts = [guard.auth_result(PBX, "201", False, T0 + i) for i in range(10)]
    assert Verdict.DROP not in verdicts
    assert verdicts[-1] is Verdict.FORBID
    assert guard.admit(PBX, T0 + 11.0) is True


# ---------------------------------------------------------------------- scanners


@pytest.mark.parametrize(
    "user_agent",
    [
        "friendly-scanner",
        "Friendly-Scanner",
        "sipvicious 0.3.4",
        "SIPCLI/v1.8",
        "VaxSIPUserAgent/3.1",
    ],
)
def test_scanner_user_agent_is_blocked_at_once(user_agent: str) -> None:
    guard = EdgeGuard(GuardSettings(block_time=300.0))
    assert guard.inspect(ATTACKER, user_agent, "<sip:100@203.0.113.66>;tag=1", T0) is Verdict.DROP
    (event,) = guard.take_events()
    assert isinstance(event, Blocked)
    assert (event.key, event.reason, event.until) == (ATTACKER, Reason.SCANNER, T0 + 300.0)
    assert "User-Agent" in event.detail
    assert guard.admit(ATTACKER, T0 + 1.0) is False
    assert guard.admit(ATTACKER, T0 + 299.0) is False
    # Seen again (a caller that inspects before admitting): still one block, one event.
    assert guard.inspect(ATTACKER, user_agent, None, T0 + 2.0) is Verdict.DROP
    assert guard.take_events() == ()
    assert [info.until for info in guard.blocks(T0 + 3.0)] == [T0 + 302.0]


def test_scanner_in_from_display_name_is_blocked() -> None:
    guard = EdgeGuard()
    from_value = '"sipvicious" <sip:100@1.1.1.1>;tag=3961653'
    assert guard.inspect(ATTACKER, None, from_value, T0) is Verdict.DROP
    (event,) = guard.take_events()
    assert isinstance(event, Blocked)
    assert "From display name" in event.detail


@pytest.mark.parametrize(
    ("user_agent", "from_value"),
    [
        ("Yealink SIP-T46S 66.86.0.15", '"Reception" <sip:201@pbx.example>;tag=a'),
        ("Asterisk PBX 20.5.0", "<sip:kiwar@pbx.example>;tag=b"),  # 'iwar' only in the URI
        (None, "sip:iwar@pbx.example;tag=c"),  # no display name at all
        (None, None),
    ],
)
def test_normal_requests_pass_inspection(user_agent: str | None, from_value: str | None) -> None:
    guard = EdgeGuard()
    assert guard.inspect(PHONE, user_agent, from_value, T0) is Verdict.PASS
    assert guard.take_events() == ()


def test_scanner_from_a_trusted_network_is_not_blocked() -> None:
    guard = EdgeGuard(trusted=["10.9.9.0/24"])
    assert guard.inspect(PBX, "friendly-scanner", None, T0) is Verdict.PASS
    assert guard.admit(PBX, T0) is True


def test_scanner_list_is_configurable() -> None:
    guard = EdgeGuard(GuardSettings(scanners=ScannerSettings(user_agents=("EvilTool",))))
    assert guard.inspect(PHONE, "friendly-scanner", None, T0) is Verdict.PASS
    assert guard.inspect(ATTACKER, "eviltool/2", None, T0) is Verdict.DROP
    off = EdgeGuard(GuardSettings(scanners=ScannerSettings(user_agents=())))
    assert off.inspect(ATTACKER, "friendly-scanner", None, T0) is Verdict.PASS


def test_unknown_user_rate_blocks_the_source() -> None:
    settings = GuardSettings(
        scanners=ScannerSettings(max_unknown_users=10, unknown_user_window=60.0)
    )
    guard = EdgeGuard(settings)
    verdicts = [guard.unknown_user(ATTACKER, T0 + i * 5.0) for i in range(10)]
    assert verdicts == [Verdict.PASS] * 9 + [Verdict.DROP]
    (event,) = guard.take_events()
    assert isinstance(event, Blocked)
    assert event.reason is Reason.UNKNOWN_USERS
    assert guard.admit(ATTACKER, T0 + 50.0) is False
    # A slow dialler hitting a wrong number now and then is no scanner.
    slow = [guard.unknown_user(PHONE, T0 + i * 7.0) for i in range(30)]
    assert set(slow) == {Verdict.PASS}


# ---------------------------------------------------------------------- unknown sources


def test_unknown_sources_get_no_answer_on_quiet_interfaces_only() -> None:
    guard = EdgeGuard(GuardSettings(quiet_interfaces=("external",)))
    asked: list[Peer] = []

    def knows(peer: Peer) -> bool:
        asked.append(peer)
        return peer.host == "192.0.2.50"  # the trunk

    stranger = Peer("udp", ATTACKER, 5060, "external/udp/0.0.0.0:5060")
    trunk = Peer("udp", "192.0.2.50", 5060, "external/udp/0.0.0.0:5060")
    inside = Peer("udp", ATTACKER, 5060, "internal")
    assert guard.drops_unknown(stranger, knows) is True
    assert guard.drops_unknown(trunk, knows) is False
    assert guard.drops_unknown(inside, knows) is False
    assert [p.host for p in asked] == [ATTACKER, "192.0.2.50"]  # never asked for 'internal'
    assert EdgeGuard().drops_unknown(stranger, knows) is False


# ---------------------------------------------------------------------- visibility, expiry, memory


def test_blocks_lists_live_blocks_and_unblock_lifts_them() -> None:
    guard = EdgeGuard(GuardSettings(block_time=300.0))
    guard.inspect(ATTACKER, "friendly-scanner", None, T0)
    for bot in range(10):
        guard.auth_result(f"203.0.113.{bot}", "201", False, T0 + bot)
    guard.admit(ATTACKER, T0 + 20.0)
    guard.admit(ATTACKER, T0 + 21.0)
    guard.take_events()
    infos = guard.blocks(T0 + 30.0)
    assert [(i.key, i.kind, i.reason) for i in infos] == [
        (ATTACKER, BlockKind.SOURCE, Reason.SCANNER),
        ("201", BlockKind.USERNAME, Reason.AUTH_FAILURES),
    ]
    # refused: the scanner's own request and the two messages after it
    assert (infos[0].since, infos[0].until, infos[0].hits) == (T0, T0 + 300.0, 3)
    assert guard.unblock(ATTACKER) is True
    (event,) = guard.take_events()
    assert isinstance(event, Unblocked)
    assert (event.key, event.manual, event.hits) == (ATTACKER, True, 3)
    assert guard.admit(ATTACKER, T0 + 31.0) is True
    assert guard.unblock(ATTACKER) is False
    assert guard.unblock("201", BlockKind.USERNAME) is True
    assert [type(e) for e in guard.take_events()] == [Unblocked]
    assert guard.blocks(T0 + 31.0) == []
    # The lifted blocks leave nothing behind for the timer.
    assert [e for e in run_timer(guard, T0 + 1000.0) if isinstance(e, Unblocked)] == []


def test_stale_or_early_timer_does_nothing() -> None:
    guard = EdgeGuard()
    guard.on_timer(T0)  # nothing stored
    assert guard.take_events() == ()
    assert guard.next_deadline() is None
    guard.inspect(ATTACKER, "sipcli", None, T0)
    guard.take_events()
    guard.on_timer(T0 + 1.0)  # well before the block ends
    guard.on_timer(T0 + 1.0)
    assert guard.take_events() == ()
    assert guard.next_deadline() == T0 + 300.0


def test_memory_is_bounded_one_off_sources_are_forgotten() -> None:
    guard = EdgeGuard()
    now = T0
    for i in range(100_000):  # a spoofed-source spray: 100k addresses, one message each
        now = T0 + i * 0.00005
        assert guard.admit(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", now)
    assert guard.state_size() >= 40_000  # the last two intervals' worth
    run_until_idle(guard, give_up=now + 10.0)
    assert guard.state_size() == 0


def test_memory_is_bounded_one_off_failures_are_forgotten() -> None:
    guard = EdgeGuard()
    for i in range(50_000):  # one-off digest failures and unknown users, 50k sources each
        now = T0 + i * 0.001
        guard.auth_result(f"172.16.{i >> 8}.{i & 255}", f"user{i}", False, now)
        guard.unknown_user(f"172.17.{i >> 8}.{i & 255}", now)
    assert guard.state_size() >= 100_000
    run_until_idle(guard, give_up=T0 + 200.0)
    assert guard.state_size() == 0


def test_per_message_check_is_cheap() -> None:
    guard = EdgeGuard()
    hosts = [f"198.51.100.{i}" for i in range(256)]
    for host in hosts:
        guard.admit(host, T0)
    admit = guard.admit
    calls = 20_000

    def well_behaved() -> None:
        for i in range(calls):
            admit(hosts[i & 255], T0 + 0.5)

    def loop_only() -> None:
        for i in range(calls):
            (hosts[i & 255], T0 + 0.5)

    send(guard, ATTACKER, 200, T0, 0.5)  # now blocked: the drop path

    def blocked() -> None:
        for _ in range(calls):
            admit(ATTACKER, T0 + 0.5)

    overhead = min(timeit.repeat(loop_only, number=1, repeat=5)) / calls
    cost = min(timeit.repeat(well_behaved, number=1, repeat=5)) / calls - overhead
    drop = min(timeit.repeat(blocked, number=1, repeat=5)) / calls - overhead
    inspect = (
        min(
            timeit.repeat(
                lambda: guard.inspect(
                    PHONE, "Yealink SIP-T46S 66.86.0.15", '"Desk" <sip:201@pbx>', T0
                ),
                number=calls,
                repeat=5,
            )
        )
        / calls
    )
    print(
        f"\nEdgeGuard.admit: {cost * 1e9:.0f} ns per message, {drop * 1e9:.0f} ns per drop;"
        f" inspect: {inspect * 1e9:.0f} ns per request"
    )
    assert cost < 1e-6
    assert drop < 1e-6
    assert inspect < 5e-6  # once per parsed request, not per packet: a looser bound


# ---------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("build", "named"),
    [
        (lambda: FloodSettings(window=0.0), "guard.flood.window"),
        (lambda: FloodSettings(max_requests=-1), "guard.flood.max_requests"),
        (lambda: AuthLockoutSettings(window=-5.0), "guard.auth.window"),
        (lambda: ScannerSettings(user_agents=("",)), "guard.scanners.user_agents"),
        (lambda: GuardSettings(block_time=0.0), "guard.block_time"),
    ],
)
def test_bad_settings_name_the_field(build: object, named: str) -> None:
    assert callable(build)
    with pytest.raises(ValueError, match=named):
        build()


def test_default_settings() -> None:
    settings = GuardSettings()
    assert (settings.flood.window, settings.flood.max_requests) == (2.0, 100)
    assert settings.block_time == 300.0
    assert (settings.auth.max_source_failures, settings.auth.window) == (5, 60.0)
    assert "friendly-scanner" in settings.scanners.user_agents
