"""Call admission control (sbc.policy.admission): concurrent-call and CPS limits per scope and
direction, all-or-nothing across scopes, tickets released once, failover moves; virtual time."""

from __future__ import annotations

import pytest

from sbc.policy import (
    Admission,
    AdmissionSettings,
    Admitted,
    Limit,
    MemoryStore,
    Rejected,
    RequestInfo,
    Ticket,
)
from sbc.policy.verdict import reason_header


def call(
    direction: str = "outbound",
    source: str = "10.0.0.10",
    trunk: str | None = "itsp-a",
    pbx: str | None = "main",
    caller: str = "100",
) -> RequestInfo:
    return RequestInfo(direction, source, caller, "+4930123456", pbx, trunk)


def admission(*limits: Limit, retry_after: int = 5) -> Admission:
    return Admission(AdmissionSettings(limits, retry_after), MemoryStore())


def admitted(verdict: Admitted | Rejected) -> Ticket:
    assert isinstance(verdict, Admitted), verdict
    return verdict.ticket


def rejected(verdict: Admitted | Rejected | None) -> Rejected:
    assert isinstance(verdict, Rejected), verdict
    return verdict


# ---------------------------------------------------------------------- concurrent calls


def test_a_limit_of_ten_admits_ten_and_answers_the_eleventh_with_503() -> None:
    gate = admission(Limit(max_calls=10))
    tickets = [admitted(gate.check(call(), 0.0)) for _ in range(10)]
    refusal = rejected(gate.check(call(), 0.0))
    assert refusal.status == 503
    assert refusal.reason_phrase == "Service Unavailable"
    assert refusal.retry_after == 5
    assert refusal.rule == "limit.global.calls"
    assert refusal.reason_header == 'SIP;cause=503;text="Call limit reached"'
    assert refusal.headers() == [
        ("Reason", 'SIP;cause=503;text="Call limit reached"'),
        ("Retry-After", "5"),
    ]
    assert gate.release(tickets[3], 1.0) is True
    admitted(gate.check(call(), 1.0))
    rejected(gate.check(call(), 1.0))


def test_release_is_idempotent() -> None:
    gate = admission(Limit(max_calls=2))
    first = admitted(gate.check(call(), 0.0))
    admitted(gate.check(call(), 0.0))
    assert gate.release(first, 1.0) is True
    assert gate.release(first, 1.0) is False
    assert gate.release(first, 2.0) is False
    # One release frees one place, however often it is repeated.
    admitted(gate.check(call(), 2.0))
    rejected(gate.check(call(), 2.0))
    assert gate.live == 2


def test_per_direction_limits_count_only_their_direction() -> None:
    gate = admission(
        Limit(direction="outbound", max_calls=2), Limit(direction="inbound", max_calls=1)
    )
    admitted(gate.check(call("outbound"), 0.0))
    admitted(gate.check(call("outbound"), 0.0))
    assert rejected(gate.check(call("outbound"), 0.0)).rule == "limit.global.outbound.calls"
    admitted(gate.check(call("inbound"), 0.0))
    assert rejected(gate.check(call("inbound"), 0.0)).rule == "limit.global.inbound.calls"


def test_a_limit_without_direction_counts_both() -> None:
    gate = admission(Limit(max_calls=2))
    admitted(gate.check(call("outbound"), 0.0))
    admitted(gate.check(call("inbound"), 0.0))
    rejected(gate.check(call("inbound"), 0.0))


def test_per_source_limits_each_address_separately() -> None:
    gate = admission(Limit(scope="source", max_calls=1))
    admitted(gate.check(call(source="192.0.2.1"), 0.0))
    refusal = rejected(gate.check(call(source="192.0.2.1"), 0.0))
    assert refusal.rule == "limit.source.*.calls"
    assert "192.0.2.1" in refusal.detail
    admitted(gate.check(call(source="192.0.2.2"), 0.0))


def test_a_named_scope_limits_only_that_one() -> None:
    gate = admission(Limit(scope="trunk", name="itsp-a", max_calls=1))
    admitted(gate.check(call(trunk="itsp-a"), 0.0))
    assert rejected(gate.check(call(trunk="itsp-a"), 0.0)).rule == "limit.trunk.itsp-a.calls"
    for _ in range(5):
        admitted(gate.check(call(trunk="itsp-b"), 0.0))


def test_per_pbx_limits() -> None:
    gate = admission(Limit(scope="pbx", max_calls=1))
    admitted(gate.check(call(pbx="main"), 0.0))
    assert rejected(gate.check(call(pbx="main"), 0.0)).rule == "limit.pbx.*.calls"
    admitted(gate.check(call(pbx="branch"), 0.0))


def test_a_scope_not_known_yet_is_not_limited() -> None:
    gate = admission(Limit(scope="trunk", max_calls=1))
    admitted(gate.check(call(trunk=None), 0.0))
    admitted(gate.check(call(trunk=None), 0.0))


def test_per_user_caps_answer_486_or_the_configured_status() -> None:
    busy = admission(Limit(scope="caller", max_calls=1))
    admitted(busy.check(call(caller="100"), 0.0))
    refusal = rejected(busy.check(call(caller="100"), 0.0))
    assert (refusal.status, refusal.reason_phrase) == (486, "Busy Here")
    assert refusal.retry_after is None  # a 486 is about this user, not the SBC
    assert refusal.reason_header == 'SIP;cause=486;text="Too many calls for this user"'
    admitted(busy.check(call(caller="101"), 0.0))

    forbidden = admission(Limit(scope="caller", max_calls=1, status=403))
    admitted(forbidden.check(call(), 0.0))
    assert rejected(forbidden.check(call(), 0.0)).status == 403


def test_retry_after_can_be_fixed_or_left_out() -> None:
    fixed = admission(Limit(max_calls=0, retry_after=30))
    assert rejected(fixed.check(call(), 0.0)).retry_after == 30
    none = admission(Limit(max_calls=0, retry_after=0))
    refusal = rejected(none.check(call(), 0.0))
    assert refusal.retry_after is None
    assert refusal.headers() == [("Reason", refusal.reason_header)]
    default_off = admission(Limit(max_calls=0), retry_after=0)
    assert rejected(default_off.check(call(), 0.0)).retry_after is None


# ---------------------------------------------------------------------- calls per second


def test_cps_at_twice_the_rate_admits_what_the_bucket_holds() -> None:
    # 10 cps with a bucket of 10: the first second of attempts every 50 ms gets the 10 in the
    # bucket plus 9.5 refilled (19 calls); each following second exactly 10.
    gate = admission(Limit(cps=10))
    results = [gate.check(call(), i / 20) for i in range(60)]
    per_second = [
        sum(isinstance(v, Admitted) for v in results[s * 20 : s * 20 + 20]) for s in range(3)
    ]
    assert per_second == [19, 10, 10]
    refusal = next(v for v in results if isinstance(v, Rejected))
    assert refusal.status == 503
    assert refusal.rule == "limit.global.cps"
    assert refusal.retry_after == 1  # the next token comes in 50 ms: at least a second
    assert refusal.reason_header == 'SIP;cause=503;text="Call rate exceeded"'


def test_cps_burst_is_honoured() -> None:
    gate = admission(Limit(cps=2, burst=4))
    at_once = [gate.check(call(), 100.0) for _ in range(10)]
    assert sum(isinstance(v, Admitted) for v in at_once) == 4
    assert isinstance(gate.check(call(), 100.4), Rejected)
    assert isinstance(gate.check(call(), 100.5), Admitted)  # one token per 500 ms
    assert isinstance(gate.check(call(), 100.5), Rejected)


def test_cps_burst_of_one_paces_a_trunk_at_its_contracted_rate() -> None:
    gate = admission(Limit(scope="trunk", name="itsp-a", direction="outbound", cps=5, burst=1))
    results = [gate.check(call(), i / 50) for i in range(100)]  # 50 attempts per second
    assert sum(isinstance(v, Admitted) for v in results) == 10
    refusal = next(v for v in results if isinstance(v, Rejected))
    assert refusal.rule == "limit.trunk.itsp-a.outbound.cps"


def test_cps_retry_after_counts_up_to_the_next_token() -> None:
    gate = admission(Limit(cps=0.1))  # one call per 10 s
    admitted(gate.check(call(), 0.0))
    assert rejected(gate.check(call(), 2.5)).retry_after == 8


def test_per_source_cps() -> None:
    gate = admission(Limit(scope="source", cps=1, burst=1))
    admitted(gate.check(call(source="192.0.2.1"), 0.0))
    assert rejected(gate.check(call(source="192.0.2.1"), 0.5)).rule == "limit.source.*.cps"
    admitted(gate.check(call(source="192.0.2.2"), 0.5))
    admitted(gate.check(call(source="192.0.2.1"), 1.0))


# ---------------------------------------------------------------------- several scopes


def test_a_rejection_by_one_scope_consumes_no_token_of_another() -> None:
    gate = admission(Limit(cps=5), Limit(scope="trunk", name="itsp-a", max_calls=1))
    admitted(gate.check(call(trunk="itsp-a"), 0.0))
    for _ in range(3):
        assert rejected(gate.check(call(trunk="itsp-a"), 0.0)).rule == "limit.trunk.itsp-a.calls"
    # Those refusals took no global token: 4 of the 5 are still there.
    for _ in range(4):
        admitted(gate.check(call(trunk="itsp-b"), 0.0))
    assert rejected(gate.check(call(trunk="itsp-b"), 0.0)).rule == "limit.global.cps"


def test_a_rate_rejection_holds_no_call_count() -> None:
    gate = admission(Limit(max_calls=100), Limit(scope="source", cps=1, burst=1))
    admitted(gate.check(call(source="192.0.2.1"), 0.0))
    for _ in range(50):
        rejected(gate.check(call(source="192.0.2.1"), 0.0))
    assert gate.snapshot(0.0)["counts"] == {"limit.global.calls": 1}


def test_every_applying_scope_is_counted() -> None:
    gate = admission(
        Limit(max_calls=10),
        Limit(scope="pbx", name="main", max_calls=10),
        Limit(scope="trunk", max_calls=10),
        Limit(scope="source", direction="outbound", max_calls=10),
    )
    ticket = admitted(gate.check(call(), 0.0))
    assert gate.snapshot(0.0)["counts"] == {
        "limit.global.calls": 1,
        "limit.pbx.main.calls": 1,
        "limit.trunk.*.calls|itsp-a": 1,
        "limit.source.*.outbound.calls|10.0.0.10": 1,
    }
    gate.release(ticket, 1.0)
    assert gate.snapshot(1.0)["counts"] == {}


# ---------------------------------------------------------------------- failover


def test_move_puts_the_call_on_the_new_trunk() -> None:
    gate = admission(Limit(scope="trunk", max_calls=1))
    first = admitted(gate.check(call(trunk="itsp-a"), 0.0))
    assert gate.move(first, "itsp-b", 1.0) is None
    assert gate.held(first) == call(trunk="itsp-b")
    # itsp-a is free again and itsp-b full.
    admitted(gate.check(call(trunk="itsp-a"), 1.0))
    assert rejected(gate.check(call(trunk="itsp-b"), 1.0)).rule == "limit.trunk.*.calls"


def test_a_refused_move_leaves_the_call_where_it_was() -> None:
    gate = admission(Limit(scope="trunk", max_calls=1))
    on_a = admitted(gate.check(call(trunk="itsp-a"), 0.0))
    on_b = admitted(gate.check(call(trunk="itsp-b"), 0.0))
    refusal = rejected(gate.move(on_a, "itsp-b", 1.0))
    assert (refusal.status, refusal.rule) == (503, "limit.trunk.*.calls")
    assert gate.held(on_a) == call(trunk="itsp-a")
    rejected(gate.check(call(trunk="itsp-a"), 1.0))  # still counted on itsp-a
    gate.release(on_b, 2.0)
    assert gate.move(on_a, "itsp-b", 2.0) is None
    admitted(gate.check(call(trunk="itsp-a"), 2.0))
    gate.release(on_a, 3.0)
    assert gate.snapshot(3.0)["counts"] == {"limit.trunk.*.calls|itsp-a": 1}


def test_move_meters_the_new_trunks_call_rate() -> None:
    gate = admission(Limit(scope="trunk", name="itsp-b", cps=1, burst=1))
    admitted(gate.check(call(trunk="itsp-b"), 0.0))
    ticket = admitted(gate.check(call(trunk="itsp-a"), 0.0))
    assert rejected(gate.move(ticket, "itsp-b", 0.5)).rule == "limit.trunk.itsp-b.cps"
    assert gate.move(ticket, "itsp-b", 1.0) is None


def test_move_from_no_trunk_assigns_the_first_one() -> None:
    gate = admission(Limit(scope="trunk", max_calls=1))
    ticket = admitted(gate.check(call(trunk=None), 0.0))
    assert gate.move(ticket, "itsp-a", 0.0) is None
    rejected(gate.check(call(trunk="itsp-a"), 0.0))


def test_move_to_the_same_trunk_does_nothing() -> None:
    gate = admission(Limit(scope="trunk", max_calls=1, cps=1, burst=1))
    ticket = admitted(gate.check(call(trunk="itsp-a"), 0.0))
    assert gate.move(ticket, "itsp-a", 0.0) is None
    gate.release(ticket, 1.0)
    assert gate.snapshot(1.0)["counts"] == {}


def test_move_of_a_released_ticket_is_an_error() -> None:
    gate = admission(Limit(max_calls=1))
    ticket = admitted(gate.check(call(), 0.0))
    gate.release(ticket, 1.0)
    with pytest.raises(LookupError, match="not held"):
        gate.move(ticket, "itsp-b", 1.0)


# ---------------------------------------------------------------------- state


def test_per_source_state_of_a_flood_does_not_stay() -> None:
    store = MemoryStore()
    gate = Admission(
        AdmissionSettings((Limit(scope="source", max_calls=2, cps=1, burst=2),)), store
    )
    for i in range(100_000):
        source = f"198.{i >> 16}.{(i >> 8) & 255}.{i & 255}"
        gate.release(admitted(gate.check(call(source=source), i / 1000)), i / 1000)
    # The counts went with the calls. A bucket is full again a second after its call, so
    # 1000 are busy; idle ones are swept two per new key, which keeps at most as many again.
    size = store.size()
    assert 1000 <= size <= 2000
    assert store.expire(100.0 + 1.0) == size
    assert store.size() == 0


def test_nodes_sharing_a_store_share_the_limits() -> None:
    store = MemoryStore()
    settings = AdmissionSettings((Limit(max_calls=2),))
    node_a, node_b = Admission(settings, store), Admission(settings, store)
    on_a = admitted(node_a.check(call(), 0.0))
    admitted(node_b.check(call(), 0.0))
    rejected(node_a.check(call(), 0.0))
    rejected(node_b.check(call(), 0.0))
    node_a.release(on_a, 1.0)
    admitted(node_b.check(call(), 1.0))


# ---------------------------------------------------------------------- management


def test_snapshot_counts_rejections_per_rule() -> None:
    gate = admission(Limit(max_calls=1), Limit(scope="source", cps=1, burst=1))
    admitted(gate.check(call(source="192.0.2.1"), 0.0))
    rejected(gate.check(call(source="192.0.2.2"), 0.0))
    rejected(gate.check(call(source="192.0.2.1"), 0.0))
    snapshot = gate.snapshot(0.0)
    assert snapshot["live"] == 1
    assert snapshot["admitted"] == 1
    assert snapshot["rejections"] == {"limit.global.calls": 2}


def test_reconfigure_keeps_live_calls_and_unchanged_counts() -> None:
    gate = admission(Limit(max_calls=2))
    ticket = admitted(gate.check(call(), 0.0))
    admitted(gate.check(call(), 0.0))
    gate.reconfigure(AdmissionSettings((Limit(max_calls=3),)))
    admitted(gate.check(call(), 1.0))
    rejected(gate.check(call(), 1.0))
    gate.release(ticket, 2.0)
    admitted(gate.check(call(), 2.0))


def test_no_limits_admit_everything() -> None:
    gate = admission()
    for _ in range(100):
        admitted(gate.check(call(), 0.0))


# ---------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scope": "trunks", "max_calls": 1}, "scope 'trunks' is not one of global, trunk"),
        ({"name": "x", "max_calls": 1}, "global limit takes no name"),
        ({"direction": "out", "max_calls": 1}, "direction 'out' is not one of inbound"),
        ({}, "set max_calls, cps or both"),
        ({"max_calls": -1}, "max_calls must be a whole number >= 0"),
        ({"cps": 0}, "cps must be a positive number"),
        ({"max_calls": 1, "burst": 2}, "burst needs cps"),
        ({"cps": 1, "burst": 0}, "burst must be a whole number >= 1"),
        ({"max_calls": 1, "status": 404}, "status 404 is not one of 403, 480, 486, 503"),
        ({"scope": "pbx", "name": "", "max_calls": 1}, "leave it out to limit each pbx"),
    ],
)
def test_invalid_limits_say_what_to_fix(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Limit(**kwargs)  # type: ignore[arg-type]


def test_a_limit_given_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="limit.trunk.itsp-a is given twice; merge them"):
        AdmissionSettings((Limit("trunk", "itsp-a", max_calls=1), Limit("trunk", "itsp-a", cps=1)))


def test_request_info_refuses_an_unknown_direction() -> None:
    with pytest.raises(ValueError, match="'inbound' or 'outbound'"):
        RequestInfo("sideways", "10.0.0.1")


def test_reason_header_quotes_its_text() -> None:
    assert reason_header(503, 'a "b" \\ c') == 'SIP;cause=503;text="a \\"b\\" \\\\ c"'
