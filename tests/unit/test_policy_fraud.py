"""Toll-fraud rules (sbc.policy.fraud) through the Policy the call controller uses: prefix
lists, international bars, budgets, time windows and maximum durations, on virtual clocks."""

from __future__ import annotations

import datetime
import random
import zoneinfo

import pytest

from sbc.policy import (
    AdmissionSettings,
    Admitted,
    DialRule,
    FraudSettings,
    Limit,
    Policy,
    PolicySettings,
    Rejected,
    RequestInfo,
    Ticket,
    TimeWindow,
)
from sbc.policy.fraud import NumberPlan

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
NOON = datetime.datetime(2024, 1, 15, 12, 0, tzinfo=BERLIN).timestamp()  # a Monday


def policy(*rules: DialRule, limits: tuple[Limit, ...] = (), **fraud: object) -> Policy:
    settings = FraudSettings(rules, home_prefixes=("+49",), timezone="Europe/Berlin")
    if fraud:
        settings = FraudSettings(rules, **fraud)  # type: ignore[arg-type]
    return Policy(PolicySettings(AdmissionSettings(limits), settings))


def dial(
    callee: str,
    pbx: str | None = "main",
    direction: str = "outbound",
    route: str | None = "outbound[0]",
) -> RequestInfo:
    return RequestInfo(direction, "10.0.0.10", "100", callee, pbx, "itsp-a", route)


def ok(verdict: Admitted | Rejected) -> Admitted:
    assert isinstance(verdict, Admitted), verdict
    return verdict


def refused(verdict: Admitted | Rejected) -> Rejected:
    assert isinstance(verdict, Rejected), verdict
    return verdict


def at(day: int, hour: int, minute: int = 0, second: int = 0, month: int = 1) -> float:
    """UNIX time of a Berlin wall-clock time in 2024 (January 15 is a Monday)."""
    return datetime.datetime(2024, month, day, hour, minute, second, tzinfo=BERLIN).timestamp()


# ---------------------------------------------------------------------- prefixes


def test_a_denied_prefix_is_refused_with_403_and_the_rule_name() -> None:
    sbc = policy(DialRule(deny=("+882", "+979")))
    refusal = refused(sbc.admit(dial("+88216123456"), 0.0, NOON))
    assert (refusal.status, refusal.reason_phrase) == (403, "Forbidden")
    assert refusal.rule == "fraud.global.deny"
    assert refusal.reason_header == 'SIP;cause=403;text="Destination barred"'
    assert refusal.retry_after is None
    assert "+882" in refusal.detail
    ok(sbc.admit(dial("+4930123456"), 0.0, NOON))


def test_a_denied_prefix_holds_whichever_way_the_number_is_written() -> None:
    sbc = policy(DialRule(deny=("+882",)))
    refused(sbc.admit(dial("0088216123456"), 0.0, NOON))
    sbc = policy(DialRule(deny=("00979",)))
    refused(sbc.admit(dial("+97912345"), 0.0, NOON))
    refused(sbc.admit(dial("0097912345"), 0.0, NOON))


def test_an_allow_list_admits_only_its_prefixes() -> None:
    sbc = policy(DialRule(scope="pbx", name="lobby", allow=("+49", "0")))
    ok(sbc.admit(dial("+4930123456", pbx="lobby"), 0.0, NOON))
    ok(sbc.admit(dial("030123456", pbx="lobby"), 0.0, NOON))
    ok(sbc.admit(dial("004930123456", pbx="lobby"), 0.0, NOON))
    refusal = refused(sbc.admit(dial("+33123456789", pbx="lobby"), 0.0, NOON))
    assert refusal.rule == "fraud.pbx.lobby.allow"
    assert refusal.reason_header == 'SIP;cause=403;text="Destination not allowed"'
    # Other PBXs are not bound by the lobby's list.
    ok(sbc.admit(dial("+33123456789", pbx="main"), 0.0, NOON))


def test_deny_wins_over_allow() -> None:
    sbc = policy(
        DialRule(allow=("+49",)),
        DialRule(scope="route", name="outbound[0]", deny=("+49900", "+49137")),
    )
    assert refused(sbc.admit(dial("+49900123"), 0.0, NOON)).rule == "fraud.route.outbound[0].deny"
    assert refused(sbc.admit(dial("+3312345"), 0.0, NOON)).rule == "fraud.global.allow"
    ok(sbc.admit(dial("+4930123"), 0.0, NOON))
    ok(sbc.admit(dial("+49900123", route="outbound[1]"), 0.0, NOON))


def test_deny_wins_within_one_rule() -> None:
    sbc = policy(DialRule(allow=("+49",), deny=("+49900",)))
    assert refused(sbc.admit(dial("+49900123"), 0.0, NOON)).rule == "fraud.global.deny"


def test_rules_apply_to_their_direction_only() -> None:
    sbc = policy(DialRule(deny=("+49",)), DialRule(direction="inbound", deny=("+1",)))
    refused(sbc.admit(dial("+4930123"), 0.0, NOON))
    ok(sbc.admit(dial("+4930123", direction="inbound"), 0.0, NOON))
    ok(sbc.admit(dial("+12125550100"), 0.0, NOON))
    rule = refused(sbc.admit(dial("+12125550100", direction="inbound"), 0.0, NOON)).rule
    assert rule == "fraud.global.inbound.deny"


def test_a_fraud_rejection_takes_nothing_from_admission() -> None:
    sbc = policy(DialRule(deny=("+882",)), limits=(Limit(max_calls=1, cps=1, burst=1),))
    for _ in range(5):
        refused(sbc.admit(dial("+882123"), 0.0, NOON))
    ok(sbc.admit(dial("+4930123"), 0.0, NOON))
    snapshot = sbc.snapshot(0.0)
    assert snapshot["rejections"] == {"fraud.global.deny": 5}
    assert snapshot["counts"] == {"limit.global.calls": 1}


# ---------------------------------------------------------------------- international


@pytest.mark.parametrize(
    ("number", "international"),
    [
        ("+4930123456", False),
        ("004930123456", False),
        ("030123456", False),
        ("110", False),
        ("alice", False),
        ("+33123456789", True),
        ("0033123456789", True),
        ("+88216123456", True),
    ],
)
def test_what_counts_as_international(number: str, international: bool) -> None:
    assert NumberPlan(("00",), ("+49",)).is_international(number) is international
    assert policy().is_international(number) is international


def test_the_home_country_can_be_written_with_the_international_prefix() -> None:
    plan = NumberPlan(("011",), ("0111",))  # the NANP, written 011 1...
    assert not plan.is_international("+12125550100")
    assert plan.is_international("01144201234567")


def test_international_calls_can_be_barred_per_pbx() -> None:
    sbc = policy(DialRule(scope="pbx", name="lobby", international=False))
    refusal = refused(sbc.admit(dial("+33123", pbx="lobby"), 0.0, NOON))
    assert refusal.rule == "fraud.pbx.lobby.international"
    ok(sbc.admit(dial("+4930123", pbx="lobby"), 0.0, NOON))
    ok(sbc.admit(dial("+33123", pbx="main"), 0.0, NOON))


def test_the_caller_may_decide_what_is_international() -> None:
    sbc = policy(DialRule(international=False))
    info = RequestInfo("outbound", "10.0.0.10", "100", "+4930123", "main", international=True)
    refused(sbc.admit(info, 0.0, NOON))


def test_concurrent_international_calls_are_capped_per_pbx() -> None:
    sbc = policy(DialRule(scope="pbx", max_international_calls=2))
    first = ok(sbc.admit(dial("+33123"), 0.0, NOON))
    assert first.international
    ok(sbc.admit(dial("+33124"), 0.0, NOON))
    refusal = refused(sbc.admit(dial("+33125"), 0.0, NOON))
    assert refusal.rule == "fraud.pbx.*.intl_calls"
    assert refusal.reason_header == 'SIP;cause=403;text="International call limit reached"'
    ok(sbc.admit(dial("+4930123"), 0.0, NOON))  # national calls are not counted
    ok(sbc.admit(dial("+33125", pbx="branch"), 0.0, NOON))  # each PBX has its own
    assert sbc.snapshot(0.0)["counts"] == {
        "fraud.pbx.*.intl_calls|main": 2,
        "fraud.pbx.*.intl_calls|branch": 1,
    }
    assert sbc.ended(first.ticket, 60.0)
    ok(sbc.admit(dial("+33125"), 60.0, NOON))


def test_live_calls_count_toward_the_minutes_per_hour() -> None:
    sbc = policy(DialRule(scope="pbx", name="main", international_minutes_per_hour=10))
    first = ok(sbc.admit(dial("+33123"), 0.0, NOON))
    assert first.max_duration == 600
    # Five minutes into the first call, half the budget is gone although nothing ended.
    second = ok(sbc.admit(dial("+33124"), 300.0, NOON))
    assert second.max_duration == pytest.approx(300)
    assert second.deadline == pytest.approx(600)
    refusal = refused(sbc.admit(dial("+33125"), 600.0, NOON))
    assert refusal.rule == "fraud.pbx.main.intl_minutes"
    assert refusal.reason_header == 'SIP;cause=403;text="International minutes exhausted"'
    ok(sbc.admit(dial("+4930123"), 600.0, NOON))  # national calls are not budgeted


def test_ended_calls_leave_the_budget_an_hour_later() -> None:
    sbc = policy(DialRule(scope="pbx", international_minutes_per_hour=10))
    call = ok(sbc.admit(dial("+33123"), 0.0, NOON))
    assert sbc.ended(call.ticket, 600.0)
    refused(sbc.admit(dial("+33123"), 601.0, NOON))
    refused(sbc.admit(dial("+33123"), 600.0 + 3600.0, NOON))  # counted to the minute
    again = ok(sbc.admit(dial("+33123"), 600.0 + 3660.0, NOON))
    assert again.max_duration == 600


def test_the_budget_is_split_among_the_concurrent_calls_it_allows() -> None:
    sbc = policy(
        DialRule(scope="pbx", max_international_calls=3, international_minutes_per_hour=60)
    )
    calls = [ok(sbc.admit(dial("+33123"), 0.0, NOON)) for _ in range(3)]
    assert [c.max_duration for c in calls] == [1200, 1200, 1200]
    for c in calls:  # all three run until the controller ends them at their deadline
        assert c.deadline is not None
        sbc.ended(c.ticket, c.deadline)
    refused(sbc.admit(dial("+33123"), 1200.0, NOON))
    ok(sbc.admit(dial("+33123"), 1200.0 + 3660.0, NOON))


def test_ended_is_idempotent_for_the_budgets() -> None:
    sbc = policy(
        DialRule(scope="pbx", max_international_calls=1, international_minutes_per_hour=10)
    )
    call = ok(sbc.admit(dial("+33123"), 0.0, NOON))
    assert sbc.ended(call.ticket, 60.0) is True
    assert sbc.ended(call.ticket, 120.0) is False
    assert sbc.ended(call.ticket, 180.0) is False
    # One minute was used, once: nine are left for the single concurrent call.
    assert ok(sbc.admit(dial("+33123"), 180.0, NOON)).max_duration == pytest.approx(540)


def test_a_burst_of_long_calls_never_outruns_the_budget() -> None:
    # Random arrivals, each call lasting as long as it likes up to its deadline: whatever
    # the pattern, no hour holds more international minutes than the budget.
    budget_minutes, concurrent = 30, 4
    sbc = policy(
        DialRule(
            scope="pbx",
            max_international_calls=concurrent,
            international_minutes_per_hour=budget_minutes,
        )
    )
    rng = random.Random(20240115)
    live: list[tuple[float, Ticket]] = []  # (end, ticket)
    spans: list[tuple[float, float]] = []
    now = 0.0
    while now < 6 * 3600:
        now += rng.expovariate(1 / 20)  # an attempt every 20 s on average
        for end, ticket in [c for c in live if c[0] <= now]:
            sbc.ended(ticket, end)
            live.remove((end, ticket))
        verdict = sbc.admit(dial("+33123"), now, NOON)
        if isinstance(verdict, Admitted):
            assert verdict.deadline is not None
            end = min(now + rng.expovariate(1 / 900), verdict.deadline)
            live.append((end, verdict.ticket))
            spans.append((now, end))
    assert len(spans) > 20
    for t in range(0, 7 * 3600, 30):
        used = sum(max(0.0, min(e, t) - max(s, t - 3600)) for s, e in spans)
        assert used <= budget_minutes * 60 + 1e-6


# ---------------------------------------------------------------------- time windows


def test_international_calls_only_in_office_hours() -> None:
    sbc = policy(DialRule(international_hours=(TimeWindow("07:00", "20:00"),)))
    refusal = refused(sbc.admit(dial("+33123"), 0.0, at(15, 6, 59, 59)))
    assert refusal.rule == "fraud.global.intl_hours"
    assert "06:59:59" in refusal.detail
    ok(sbc.admit(dial("+4930123"), 0.0, at(15, 6, 59, 59)))  # national: any time
    ok(sbc.admit(dial("+33123"), 0.0, at(15, 7, 0)))
    ok(sbc.admit(dial("+33123"), 0.0, at(15, 19, 59, 59)))
    refused(sbc.admit(dial("+33123"), 0.0, at(15, 20, 0)))
    # Summer time: 06:30 in Berlin is 04:30 UTC, still too early.
    refused(sbc.admit(dial("+33123"), 0.0, at(15, 6, 30, month=7)))
    ok(sbc.admit(dial("+33123"), 0.0, at(15, 7, 30, month=7)))


def test_a_window_across_midnight_belongs_to_the_day_it_starts() -> None:
    # Night service on Friday nights only: Friday 22:00 to Saturday 06:00.
    sbc = policy(DialRule(hours=(TimeWindow("22:00", "06:00", days=("fri",)),)))
    friday, saturday, sunday = 19, 20, 21
    ok(sbc.admit(dial("+4930123"), 0.0, at(friday, 22, 0)))
    ok(sbc.admit(dial("+4930123"), 0.0, at(friday, 23, 59, 59)))
    ok(sbc.admit(dial("+4930123"), 0.0, at(saturday, 0, 0)))
    ok(sbc.admit(dial("+4930123"), 0.0, at(saturday, 5, 59, 59)))
    refusal = refused(sbc.admit(dial("+4930123"), 0.0, at(saturday, 6, 0)))
    assert refusal.rule == "fraud.global.hours"
    assert refusal.reason_header == 'SIP;cause=403;text="Calls not allowed at this time"'
    refused(sbc.admit(dial("+4930123"), 0.0, at(friday, 5, 0)))  # Thursday's night
    refused(sbc.admit(dial("+4930123"), 0.0, at(saturday, 23, 0)))
    refused(sbc.admit(dial("+4930123"), 0.0, at(sunday, 1, 0)))


def test_any_of_several_windows_will_do() -> None:
    sbc = policy(
        DialRule(
            international_hours=(
                TimeWindow("08:00", "12:00", ("mon", "tue", "wed", "thu", "fri")),
                TimeWindow("10:00", "11:00", ("sat",)),
            )
        )
    )
    ok(sbc.admit(dial("+33123"), 0.0, at(15, 9)))  # Monday
    ok(sbc.admit(dial("+33123"), 0.0, at(20, 10, 30)))  # Saturday
    refused(sbc.admit(dial("+33123"), 0.0, at(20, 9)))
    refused(sbc.admit(dial("+33123"), 0.0, at(21, 10, 30)))  # Sunday


# ---------------------------------------------------------------------- durations


def test_the_shortest_applying_max_duration_is_returned() -> None:
    sbc = policy(
        DialRule(max_duration=7200, max_international_duration=3600),
        DialRule(scope="pbx", name="lobby", max_duration=900),
    )
    national = ok(sbc.admit(dial("+4930123"), 100.0, NOON))
    assert (national.max_duration, national.deadline) == (7200, 7300)
    international = ok(sbc.admit(dial("+33123"), 100.0, NOON))
    assert (international.max_duration, international.deadline) == (3600, 3700)
    lobby = ok(sbc.admit(dial("+33123", pbx="lobby"), 100.0, NOON))
    assert lobby.max_duration == 900


def test_no_rules_no_cap() -> None:
    call = ok(policy().admit(dial("+88216123456"), 0.0, NOON))
    assert (call.max_duration, call.deadline) == (None, None)


# ---------------------------------------------------------------------- policy as a whole


def test_failover_keeps_the_fraud_budget_and_moves_the_trunk_count() -> None:
    sbc = policy(
        DialRule(scope="pbx", max_international_calls=1),
        limits=(Limit(scope="trunk", max_calls=1),),
    )
    call = ok(sbc.admit(dial("+33123"), 0.0, NOON))
    assert sbc.move(call.ticket, "itsp-b", 1.0) is None
    assert sbc.snapshot(1.0)["counts"] == {
        "limit.trunk.*.calls|itsp-b": 1,
        "fraud.pbx.*.intl_calls|main": 1,
    }
    assert sbc.ended(call.ticket, 2.0)
    assert sbc.snapshot(2.0)["counts"] == {}


def test_reconfigure_applies_new_rules_and_keeps_live_calls() -> None:
    sbc = policy(DialRule(scope="pbx", max_international_calls=1))
    call = ok(sbc.admit(dial("+33123"), 0.0, NOON))
    sbc.reconfigure(
        PolicySettings(
            fraud=FraudSettings(
                (DialRule(scope="pbx", max_international_calls=1, deny=("+882",)),),
                home_prefixes=("+49",),
            )
        )
    )
    refused(sbc.admit(dial("+882123"), 1.0, NOON))
    refused(sbc.admit(dial("+33123"), 1.0, NOON))  # the live call still counts
    assert sbc.ended(call.ticket, 2.0)
    ok(sbc.admit(dial("+33123"), 2.0, NOON))


def test_a_bad_reload_changes_nothing() -> None:
    sbc = policy(DialRule(deny=("+882",)))
    with pytest.raises(ValueError, match="not a known IANA zone"):
        sbc.reconfigure(PolicySettings(fraud=FraudSettings(timezone="Europe/Berln")))
    refused(sbc.admit(dial("+882123"), 0.0, NOON))


# ---------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DialRule(scope="trunk"), "scope 'trunk' is not one of global, pbx, route"),
        (lambda: DialRule(deny=("882x",)), "deny prefix '882x' must be digits"),
        (lambda: DialRule(allow=("+",)), "allow prefix '\\+' must be digits"),
        (lambda: DialRule(max_duration=0), "max_duration must be a positive number"),
        (lambda: TimeWindow("7:00", "20:00"), "write 'HH:MM'"),
        (lambda: TimeWindow("07:00", "24:01"), "between 00:00 and 24:00"),
        (lambda: TimeWindow("07:00", "07:00"), "for the whole day write 00:00-24:00"),
        (lambda: TimeWindow(days=("monday",)), "days 'monday' is not one of mon"),
        (lambda: FraudSettings(home_prefixes=("49",)), "must start with '\\+'"),
        (
            lambda: FraudSettings((DialRule(deny=("+1",)), DialRule(allow=("+4",)))),
            "fraud.global is given twice; merge them",
        ),
    ],
)
def test_invalid_fraud_settings_say_what_to_fix(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]
