"""The OPTIONS prober (trunks.probing) driven sans-I/O with a virtual clock: what it sends, when,
and how answers, failures and stale reports move a gateway between up and down."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sbc.sip.message import Request, Response, make_response, parse
from sbc.sip.peer import Peer
from sbc.sip.transaction import TxnKey
from trunks.probing import (
    HealthChanged,
    ProbeAction,
    Prober,
    ProbeSettings,
    ProbeState,
    ProbeStateError,
    SendProbe,
)

GATEWAY = Peer("udp", "203.0.113.5", 5060)
SETTINGS = ProbeSettings(
    trunk="itsp-a",
    dest=GATEWAY,
    request_uri="sip:203.0.113.5:5060",
    from_uri="sip:sbc@198.51.100.7",
    to_uri="sip:203.0.113.5:5060",
    via_host="198.51.100.7",
    via_port=5080,
    user_agent="test-sbc/1",
)


class Driver:
    """Plays the adapter: keeps the clock, reports keys for sent probes and answers them."""

    def __init__(self, settings: ProbeSettings = SETTINGS) -> None:
        self.prober = Prober(settings)
        self.now = 1000.0
        self.sent: list[SendProbe] = []
        self.changes: list[HealthChanged] = []

    def take(self, actions: list[ProbeAction]) -> list[ProbeAction]:
        for action in actions:
            if isinstance(action, SendProbe):
                self.sent.append(action)
                self.prober.request_sent(action.tag, self.key())
            else:
                self.changes.append(action)
        return actions

    def start(self) -> list[ProbeAction]:
        return self.take(self.prober.start(self.now))

    def key(self, index: int = -1) -> TxnKey:
        probe = self.sent[index].request
        branch = probe.via.branch
        assert branch is not None
        return TxnKey(False, branch, "OPTIONS")

    def answer(self, status: int, index: int = -1) -> list[ProbeAction]:
        response = make_response(self.sent[index].request, status, to_tag="gw")
        return self.take(self.prober.on_response(self.key(index), response, self.now))

    def fail(self, reason: str = "TimedOut", index: int = -1) -> list[ProbeAction]:
        return self.take(self.prober.on_failure(self.key(index), reason, self.now))

    def advance(self, seconds: float) -> list[ProbeAction]:
        """Move the clock, firing the prober's timer at every deadline on the way."""
        end = self.now + seconds
        actions: list[ProbeAction] = []
        while (deadline := self.prober.next_deadline()) is not None and deadline <= end:
            self.now = max(self.now, deadline)
            actions += self.take(self.prober.on_timer(self.now))
        self.now = end
        return actions

    def cycle(self, outcome: int | str) -> list[ProbeAction]:
        """Wait for the next probe and give it `outcome`: a status, or a failure reason."""
        self.advance(self.prober.next_deadline() - self.now)  # type: ignore[operator]
        return self.answer(outcome) if isinstance(outcome, int) else self.fail(outcome)


def sends(actions: list[ProbeAction]) -> list[SendProbe]:
    return [a for a in actions if isinstance(a, SendProbe)]


def changes(actions: list[ProbeAction]) -> list[HealthChanged]:
    return [a for a in actions if isinstance(a, HealthChanged)]


# ============================================================================ the request


def test_start_sends_one_options_built_for_the_gateway() -> None:
    d = Driver()
    out = d.start()
    assert d.prober.up and d.prober.state is ProbeState.PROBING
    assert changes(out) == []  # the initial state is read from `up`, not announced
    (send,) = sends(out)
    assert send.dest == GATEWAY
    request = parse(bytes(send.request))  # survives the wire
    assert isinstance(request, Request)
    request.check()
    assert request.method == "OPTIONS" and request.uri == "sip:203.0.113.5:5060"
    (via,) = request.vias
    assert (via.transport, via.host, via.port) == ("UDP", "198.51.100.7", 5080)
    assert via.branch is not None and via.branch.startswith("z9hG4bK")
    assert via.rport == ""
    assert request.max_forwards == 70
    assert request.from_.uri == "sip:sbc@198.51.100.7" and request.from_tag
    assert request.to.uri == "sip:203.0.113.5:5060" and request.to_tag is None
    assert str(request.cseq) == "1 OPTIONS"
    assert "@" not in request.call_id
    assert request.header("Accept") == "application/sdp"
    assert request.header("User-Agent") == "test-sbc/1"
    assert request.header("Content-Length") == "0"


def test_each_probe_is_a_new_request_with_the_cseq_counting_on() -> None:
    d = Driver()
    d.start()
    d.answer(200)
    d.cycle(200)
    d.cycle(200)
    requests = [s.request for s in d.sent]
    assert [r.cseq.number for r in requests] == [1, 2, 3]
    assert len({r.call_id for r in requests}) == 3
    assert len({r.from_tag for r in requests}) == 3
    assert len({r.via.branch for r in requests}) == 3
    assert len({s.tag for s in d.sent}) == 3


def test_ipv6_via_host_is_bracketed_and_no_user_agent_when_unset() -> None:
    settings = replace(SETTINGS, via_host="2001:db8::7", via_transport="tcp", user_agent=None)
    d = Driver(settings)
    (send,) = sends(d.start())
    request = parse(bytes(send.request))
    assert request.via.host == "[2001:db8::7]" and request.via.transport == "TCP"
    assert not request.has_header("User-Agent")


# ============================================================================ timing


def test_probes_go_out_every_interval_and_one_at_a_time() -> None:
    d = Driver()
    d.start()
    d.now += 0.5
    d.answer(200)
    # Counted from when the probe left, not from its answer.
    assert d.prober.next_deadline() == d.now - 0.5 + 30
    assert d.advance(29.4) == []
    assert len(sends(d.advance(0.2))) == 1
    # Nothing of ours runs while a probe is in flight: its transaction times it out.
    assert d.prober.next_deadline() is None
    assert d.advance(300) == [] and len(d.sent) == 2
    # An answer later than the interval sends the next probe at once.
    d.answer(200)
    assert d.prober.next_deadline() == d.now
    assert len(sends(d.advance(0))) == 1


def test_timer_firing_early_or_while_probing_does_nothing() -> None:
    d = Driver()
    d.start()
    assert d.prober.on_timer(d.now + 1000) == []  # in flight: stale timer
    d.answer(200)
    assert d.prober.on_timer(d.now + 29) == []  # early
    assert len(d.sent) == 1


def test_start_delay_spreads_the_first_probe() -> None:
    d = Driver()
    assert d.take(d.prober.start(d.now, delay=7.5)) == []
    assert d.prober.next_deadline() == d.now + 7.5
    assert len(sends(d.advance(7.5))) == 1


def test_down_gateway_is_rechecked_at_the_down_interval() -> None:
    d = Driver(replace(SETTINGS, down_interval=5.0))
    d.start()
    for _ in range(2):
        d.fail()
        d.advance(30)
    sent_at = d.now
    d.fail()
    assert not d.prober.up
    assert d.prober.next_deadline() == sent_at + 5.0
    d.advance(5.0)
    d.answer(200)
    assert d.prober.next_deadline() == d.now + 5.0  # still down: one answer of two
    d.cycle(200)
    assert d.prober.up
    assert d.prober.next_deadline() == d.now + 30.0


def test_down_gateway_keeps_being_probed_at_the_interval_by_default() -> None:
    d = Driver(replace(SETTINGS, down_after=1))
    d.start()
    d.fail("TransportFailed")
    assert not d.prober.up
    for _ in range(5):
        d.cycle("TransportFailed")
    assert len(d.sent) == 6
    assert d.prober.next_deadline() == d.now + 30.0


# ============================================================================ health


def test_up_to_down_after_m_timeouts_reported_once() -> None:
    d = Driver()
    d.start()
    assert changes(d.fail()) == []
    assert changes(d.cycle("TimedOut")) == []
    assert d.prober.up
    out = d.cycle("TimedOut")
    assert changes(out) == [
        HealthChanged(
            "itsp-a",
            "udp:203.0.113.5:5060",
            False,
            "3 OPTIONS probes failed in a row, last: no answer",
        )
    ]
    assert not d.prober.up
    for _ in range(4):
        d.cycle("TimedOut")
    assert len(d.changes) == 1


@pytest.mark.parametrize("status", [503, 408])
def test_dead_statuses_count_as_failures(status: int) -> None:
    d = Driver()
    d.start()
    d.answer(status)
    d.cycle(status)
    (change,) = changes(d.cycle(status))
    assert not change.up and change.reason.endswith(f"last: {status} {Response(status).reason}")


@pytest.mark.parametrize("status", [200, 404, 405, 486, 403, 500, 603])
def test_any_other_answer_proves_the_gateway_alive(status: int) -> None:
    d = Driver()
    d.start()
    d.fail()
    d.cycle("TimedOut")
    d.cycle(status)  # breaks the run of failures
    d.cycle("TimedOut")
    d.cycle("TimedOut")
    assert d.prober.up and d.changes == []


def test_dead_statuses_are_configurable() -> None:
    d = Driver(replace(SETTINGS, dead_statuses=frozenset({404}), down_after=1))
    d.start()
    d.answer(503)
    assert d.prober.up
    d.cycle(404)
    assert not d.prober.up


def test_provisional_response_ends_nothing() -> None:
    d = Driver()
    d.start()
    assert d.answer(100) == []
    assert d.prober.state is ProbeState.PROBING and d.prober.next_deadline() is None
    d.answer(200)
    assert d.prober.next_deadline() == d.now + 30


def test_down_to_up_after_n_answers_reported_once() -> None:
    d = Driver(replace(SETTINGS, initially_up=False))
    d.start()
    assert not d.prober.up
    assert changes(d.answer(404)) == []
    (change,) = changes(d.cycle(200))
    assert change == HealthChanged(
        "itsp-a", "udp:203.0.113.5:5060", True, "2 OPTIONS probes answered in a row, last: 200 OK"
    )
    assert d.prober.up
    for _ in range(3):
        d.cycle(200)
    assert d.changes == [change]


def test_a_failure_between_answers_restarts_the_count_up() -> None:
    d = Driver(replace(SETTINGS, initially_up=False, up_after=3))
    d.start()
    d.answer(200)
    d.cycle(200)
    d.cycle("TimedOut")
    d.cycle(200)
    d.cycle(200)
    assert not d.prober.up and d.changes == []
    (change,) = changes(d.cycle(200))
    assert change.up


def test_flapping_reports_every_change_once() -> None:
    d = Driver(replace(SETTINGS, up_after=1, down_after=1, gateway="gw1"))
    d.start()
    outcomes: list[int | str] = [503, 503, 200, 200, "TimedOut", 200]
    d.answer(503)
    for outcome in outcomes[1:]:
        d.cycle(outcome)
    assert [(c.gateway, c.up) for c in d.changes] == [
        ("gw1", False),
        ("gw1", True),
        ("gw1", False),
        ("gw1", True),
    ]
    assert d.changes[0].reason == "1 OPTIONS probe failed in a row, last: 503 Service Unavailable"


# ============================================================================ stale input


def test_answer_to_an_old_probe_is_ignored() -> None:
    d = Driver(replace(SETTINGS, down_after=1))
    d.start()
    d.fail()  # probe 1 failed: down
    d.cycle("TimedOut")
    d.advance(30)  # probe 3 in flight
    assert len(d.sent) == 3 and not d.prober.up
    # A late 200 for probe 1 (and a second report on probe 2) change nothing.
    assert d.answer(200, index=0) == []
    assert d.fail(index=1) == []
    assert d.prober.state is ProbeState.PROBING and not d.prober.up
    d.answer(200)
    d.cycle(200)
    assert d.prober.up


def test_unknown_key_and_stale_tag_are_ignored() -> None:
    d = Driver()
    out = d.prober.start(d.now)
    (send,) = sends(out)
    stranger = TxnKey(False, "z9hG4bKstranger", "OPTIONS")
    d.prober.request_sent("options-99", stranger)  # not the tag in flight
    assert d.prober.on_failure(stranger, "TimedOut", d.now) == []
    response = make_response(send.request, 503)
    assert d.prober.on_response(stranger, response, d.now) == []
    # Before its key is reported, even the real probe's answer cannot be matched.
    d.sent.append(send)
    assert d.prober.on_response(d.key(), response, d.now) == []
    d.prober.request_sent(send.tag, d.key())
    assert d.prober.on_response(d.key(), response, d.now) == []
    assert d.prober.state is ProbeState.WAITING


# ============================================================================ lifecycle


def test_stop_stops_probing_and_ignores_the_probe_in_flight() -> None:
    d = Driver(replace(SETTINGS, down_after=1))
    d.start()
    d.prober.stop()
    assert d.prober.state is ProbeState.STOPPED
    assert d.prober.next_deadline() is None
    assert d.fail() == []
    assert d.prober.up
    assert d.advance(3600) == [] and len(d.sent) == 1
    assert d.prober.on_timer(d.now) == []
    d.prober.stop()  # twice is harmless


def test_stop_while_waiting_cancels_the_next_probe() -> None:
    d = Driver()
    d.start()
    d.answer(200)
    d.prober.stop()
    assert d.advance(3600) == [] and len(d.sent) == 1


def test_start_twice_or_after_stop_is_an_error() -> None:
    d = Driver()
    d.start()
    with pytest.raises(ProbeStateError, match="'probing' cannot handle 'start'"):
        d.prober.start(d.now)
    d.prober.stop()
    with pytest.raises(ProbeStateError, match="'stopped'"):
        d.prober.start(d.now)


@pytest.mark.parametrize(
    "change",
    [
        {"interval": 0},
        {"down_interval": -1.0},
        {"up_after": 0},
        {"down_after": 0},
    ],
)
def test_nonsense_settings_are_rejected(change: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        replace(SETTINGS, **change)  # type: ignore[arg-type]
