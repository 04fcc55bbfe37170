"""Trunk selection (trunks.selection): the order in which a new call tries a route's trunks under
each strategy, with health and call limits; and which answers count as trunk failures."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection

import pytest

from trunks.selection import (
    Strategy,
    TrunkCandidate,
    TrunkSelector,
    counts_as_trunk_failure,
)

ABC = [TrunkCandidate("a"), TrunkCandidate("b"), TrunkCandidate("c")]


def selector(
    strategy: Strategy | str,
    candidates: list[TrunkCandidate] = ABC,
    down: Collection[str] = (),
    calls: dict[str, int] | None = None,
    last_resort: bool = True,
) -> TrunkSelector:
    live = calls if calls is not None else {}
    return TrunkSelector(
        candidates,
        strategy,
        lambda name: name not in down,
        lambda name: live.get(name, 0),
        last_resort=last_resort,
    )


# ============================================================================ strategies


def test_priority_order_is_the_listed_order_every_time() -> None:
    s = selector("priority")
    assert all(s.order() == ["a", "b", "c"] for _ in range(10))


def test_round_robin_rotates() -> None:
    s = selector(Strategy.ROUND_ROBIN)
    assert [s.order() for _ in range(4)] == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
    ]


def test_round_robin_shares_evenly_around_a_down_trunk() -> None:
    s = selector("round_robin", down={"b"})
    firsts = [s.order()[0] for _ in range(6)]
    assert firsts == ["a", "c", "a", "c", "a", "c"]


def test_least_calls_picks_the_idlest_ties_by_position() -> None:
    calls = {"a": 5, "b": 2, "c": 2}
    s = selector("least_calls", calls=calls)
    assert s.order() == ["b", "c", "a"]
    calls["b"] = 9
    assert s.order() == ["c", "a", "b"]
    calls.update(a=0, c=0)
    assert s.order() == ["a", "c", "b"]


def test_weighted_three_to_one_is_exact_and_spread_out() -> None:
    s = selector("weighted", [TrunkCandidate("big", weight=3), TrunkCandidate("small")])
    orders = [s.order() for _ in range(4000)]
    firsts = [order[0] for order in orders]
    assert Counter(firsts) == {"big": 3000, "small": 1000}
    # Smooth: never more than three in a row on the big one, never two on the small one.
    assert "small,small" not in ",".join(firsts)
    assert "big,big,big,big" not in ",".join(firsts)
    # The other trunk always follows as the fallback.
    assert all(sorted(order) == ["big", "small"] for order in orders)


def test_weighted_shares_among_healthy_trunks_only() -> None:
    candidates = [TrunkCandidate("x", weight=6), TrunkCandidate("y", weight=3), TrunkCandidate("z")]
    s = selector("weighted", candidates, down={"x"})
    firsts = Counter(s.order()[0] for _ in range(4000))
    assert firsts == {"y": 3000, "z": 1000}


def test_weighted_fallbacks_follow_by_weight() -> None:
    candidates = [TrunkCandidate("x", weight=6), TrunkCandidate("y", weight=3), TrunkCandidate("z")]
    s = selector("weighted", candidates)
    orders = [tuple(s.order()) for _ in range(1000)]
    assert Counter(o[0] for o in orders) == {"x": 600, "y": 300, "z": 100}
    assert set(orders) == {("x", "y", "z"), ("y", "x", "z"), ("z", "x", "y")}


def test_weight_zero_is_a_standby_only() -> None:
    candidates = [TrunkCandidate("standby", weight=0), TrunkCandidate("p"), TrunkCandidate("q")]
    s = selector("weighted", candidates)
    assert all(s.order()[-1] == "standby" for _ in range(200))
    s = selector("weighted", candidates, down={"p", "q"}, last_resort=False)
    assert s.order() == ["standby"]


# ============================================================================ health and limits


@pytest.mark.parametrize("strategy", list(Strategy))
def test_down_trunks_are_skipped(strategy: Strategy) -> None:
    s = selector(strategy, down={"b"})
    for _ in range(20):
        order = s.order()
        assert sorted(order) == ["a", "c"]


@pytest.mark.parametrize("strategy", list(Strategy))
def test_all_down_tries_them_all_anyway_in_strategy_order(strategy: Strategy) -> None:
    everyone = {"a", "b", "c"}
    healthy = selector(strategy)
    dark = selector(strategy, down=everyone)
    for _ in range(5):
        assert dark.order() == healthy.order()


def test_all_down_without_last_resort_gives_nothing() -> None:
    s = selector("priority", down={"a", "b", "c"}, last_resort=False)
    assert s.order() == []


def test_down_trunk_stays_out_while_another_is_up_even_if_that_one_is_full() -> None:
    # Someone being up means probing works: the down one is really down.
    candidates = [TrunkCandidate("a", max_calls=1), TrunkCandidate("b")]
    s = selector("priority", candidates, down={"b"}, calls={"a": 1})
    assert s.order() == []


def test_trunk_at_max_calls_is_skipped() -> None:
    calls = {"a": 2}
    candidates = [TrunkCandidate("a", max_calls=2), TrunkCandidate("b", max_calls=None)]
    s = selector("priority", candidates, calls=calls, down=set())
    assert s.order() == ["b"]
    calls["a"] = 1
    assert s.order() == ["a", "b"]


def test_max_calls_holds_for_the_last_resort_too() -> None:
    candidates = [TrunkCandidate("a", max_calls=2), TrunkCandidate("b", max_calls=0)]
    s = selector("priority", candidates, calls={"a": 2}, down={"a", "b"})
    assert s.order() == []
    s = selector("priority", candidates, calls={"a": 1}, down={"a", "b"})
    assert s.order() == ["a"]


def test_health_mapping_counts_unknown_trunks_as_up() -> None:
    s = TrunkSelector(ABC, "priority", {"a": False, "b": True}, lambda name: 0)
    assert s.order() == ["b", "c"]


# ============================================================================ configuration


def test_bad_configuration_is_rejected_with_a_reason() -> None:
    with pytest.raises(ValueError, match="unknown trunk strategy 'random'"):
        selector("random")
    with pytest.raises(ValueError, match="at least one trunk"):
        selector("priority", [])
    with pytest.raises(ValueError, match="listed twice in a route: a"):
        selector("priority", [TrunkCandidate("a"), TrunkCandidate("a")])
    with pytest.raises(ValueError, match="'x': weight"):
        TrunkCandidate("x", weight=-1)
    with pytest.raises(ValueError, match="'x': max_calls"):
        TrunkCandidate("x", max_calls=-1)


# ============================================================================ failover


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504, 580, 700])
def test_trunk_failures(status: int) -> None:
    assert counts_as_trunk_failure(status, six_xx_fails=False)


@pytest.mark.parametrize("status", [180, 200, 302, 403, 404, 480, 484, 486, 487, 488])
def test_answers_are_not_trunk_failures(status: int) -> None:
    assert not counts_as_trunk_failure(status, six_xx_fails=True)


@pytest.mark.parametrize("status", [600, 603, 604, 606])
def test_six_xx_fails_only_when_configured(status: int) -> None:
    assert not counts_as_trunk_failure(status, six_xx_fails=False)
    assert counts_as_trunk_failure(status, six_xx_fails=True)
