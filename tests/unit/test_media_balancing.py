"""Choosing a media worker per session (sans-I/O): least streams, round robin and weights;
dead and refusing workers skipped; configuration errors; the restart back-off."""

from __future__ import annotations

from collections import Counter

import pytest

from media.balancing import BalancingPolicy, NoWorkerAvailable, RestartBackoff, WorkerBalancer


def place(balancer: WorkerBalancer, sessions: int, streams: int = 1) -> Counter[int]:
    """Open `sessions` sessions the way the pool does: choose, then count the streams."""
    placed: Counter[int] = Counter()
    for _ in range(sessions):
        index = balancer.choose(streams)
        balancer.add(index, streams)
        placed[index] += 1
    return placed


# ---------------------------------------------------------------------------- least streams


def test_least_streams_is_the_default_and_picks_the_least_loaded() -> None:
    balancer = WorkerBalancer(3)
    assert balancer.policy is BalancingPolicy.LEAST_STREAMS
    balancer.add(0, 5)
    balancer.add(1, 2)
    balancer.add(2, 7)
    assert balancer.choose() == 1


def test_least_streams_spreads_evenly_and_counts_streams_not_sessions() -> None:
    balancer = WorkerBalancer(2)
    assert place(balancer, 200) == {0: 100, 1: 100}
    balancer.add(0, 4)  # one session with 4 streams (audio, video, ...) lands on 0
    assert balancer.choose() == 1


def test_ties_rotate_instead_of_filling_worker_0() -> None:
    balancer = WorkerBalancer(4)
    # Nothing is counted (e.g. sessions closed as fast as they open): still all four used.
    assert [balancer.choose() for _ in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]


def test_streams_going_away_make_a_worker_preferred_again() -> None:
    balancer = WorkerBalancer(2)
    place(balancer, 10)
    balancer.remove(1, 3)
    assert balancer.choose() == 1


def test_removing_more_than_was_added_is_a_bug_said_out_loud() -> None:
    balancer = WorkerBalancer(2)
    balancer.add(0, 1)
    with pytest.raises(ValueError, match="removing 2 streams, it relays 1"):
        balancer.remove(0, 2)


# ---------------------------------------------------------------------------- dead workers


@pytest.mark.parametrize("policy", list(BalancingPolicy))
def test_a_dead_worker_is_skipped_by_every_policy(policy: BalancingPolicy) -> None:
    balancer = WorkerBalancer(3, policy)
    balancer.set_alive(1, False)
    assert 1 not in {balancer.choose() for _ in range(30)}


def test_a_dead_worker_forgets_its_streams_and_returns_at_zero() -> None:
    balancer = WorkerBalancer(2)
    place(balancer, 10)
    balancer.set_alive(0, False)
    assert balancer.streams(0) == 0
    assert place(balancer, 4) == {1: 4}
    balancer.set_alive(0, True)
    # The restarted worker is empty: it takes the new sessions until it catches up.
    assert place(balancer, 9) == {0: 9}


def test_no_living_worker_says_so() -> None:
    balancer = WorkerBalancer(2)
    balancer.set_alive(0, False)
    balancer.set_alive(1, False)
    assert balancer.living == []
    with pytest.raises(NoWorkerAvailable, match="all 2 died and are being restarted"):
        balancer.choose()


def test_workers_that_refused_are_excluded() -> None:
    balancer = WorkerBalancer(3)
    balancer.add(0, 1)
    assert balancer.choose(exclude=[1]) == 2
    with pytest.raises(NoWorkerAvailable, match=r"every running media worker \(3 of 3\) refused"):
        balancer.choose(exclude=[0, 1, 2])


# ---------------------------------------------------------------------------- round robin


def test_round_robin_cycles_through_living_workers_whatever_their_load() -> None:
    balancer = WorkerBalancer(3, "round_robin")
    balancer.add(0, 100)
    assert [balancer.choose() for _ in range(6)] == [0, 1, 2, 0, 1, 2]
    balancer.set_alive(1, False)
    assert [balancer.choose() for _ in range(4)] == [0, 2, 0, 2]


# ---------------------------------------------------------------------------- weighted


def test_weights_share_sessions_in_proportion() -> None:
    balancer = WorkerBalancer(2, BalancingPolicy.WEIGHTED, [3, 1])
    assert place(balancer, 400) == {0: 300, 1: 100}


def test_weights_are_proportional_from_the_first_sessions() -> None:
    balancer = WorkerBalancer(2, "weighted", [3.0, 1.0])
    assert place(balancer, 4) == {0: 3, 1: 1}


def test_weights_follow_the_load_not_only_the_count() -> None:
    balancer = WorkerBalancer(2, "weighted", [1, 1])
    balancer.add(0, 10)  # long calls piled up on 0
    assert place(balancer, 10) == {1: 10}


def test_weight_zero_drains_a_worker() -> None:
    balancer = WorkerBalancer(3, "weighted", [1, 0, 2])
    assert 1 not in place(balancer, 30)


def test_only_zero_weights_left_alive_is_explained() -> None:
    balancer = WorkerBalancer(2, "weighted", [1, 0])
    balancer.set_alive(0, False)
    with pytest.raises(NoWorkerAvailable, match="weight above 0"):
        balancer.choose()


def test_weighted_without_weights_weighs_all_alike() -> None:
    balancer = WorkerBalancer(2, "weighted")
    assert balancer.weights == (1.0, 1.0)
    assert place(balancer, 10) == {0: 5, 1: 5}


@pytest.mark.parametrize(
    ("count", "policy", "weights", "error"),
    [
        (2, "weighted", [1], "1 given for 2 workers"),
        (2, "weighted", [1, -1], r"weights\[1\]: -1 is not a number >= 0"),
        (2, "weighted", [1, float("nan")], r"weights\[1\]"),
        (2, "weighted", [0, 0], "at least one must be above 0"),
        (2, "least_streams", [1, 2], "only used by the weighted policy"),
        (2, "fastest", None, "'fastest' is not one of least_streams, round_robin, weighted"),
        (0, "least_streams", None, "at least 1"),
    ],
)
def test_bad_configuration_is_refused_with_the_reason(
    count: int, policy: str, weights: list[float] | None, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        WorkerBalancer(count, policy, weights)


# ---------------------------------------------------------------------------- restarts


def test_a_worker_dying_young_waits_longer_each_time_up_to_the_maximum() -> None:
    backoff = RestartBackoff(initial=0.5, maximum=4.0, stable=10.0)
    assert [backoff.delay(ran_for=1.0) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.failures == 6


def test_a_worker_that_ran_a_while_restarts_at_once_again() -> None:
    backoff = RestartBackoff(initial=0.5, maximum=4.0, stable=10.0)
    for _ in range(4):
        backoff.delay(ran_for=0.1)
    assert backoff.delay(ran_for=3600.0) == 0.5
    assert backoff.failures == 1


def test_restart_delays_must_make_sense() -> None:
    with pytest.raises(ValueError, match="initial"):
        RestartBackoff(initial=0, maximum=1)
    with pytest.raises(ValueError, match="initial"):
        RestartBackoff(initial=5, maximum=1)
