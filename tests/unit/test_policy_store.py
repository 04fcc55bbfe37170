"""The policy state store (sbc.policy.store): counters, all-or-nothing reserves, token buckets,
sliding-window sums, and expiry that keeps memory bounded, all on a virtual clock."""

from __future__ import annotations

import pytest

from sbc.policy.store import Bucket, Claim, Count, MemoryStore, Shortfall, StateStore


def test_memory_store_satisfies_the_interface() -> None:
    store: StateStore = MemoryStore()
    assert store.size() == 0


def test_counters_count_up_and_down_and_free_their_key_at_zero() -> None:
    store = MemoryStore()
    assert store.incr("calls", 0.0) == 1
    assert store.incr("calls", 0.0, 2) == 3
    assert store.decr("calls", 0.0) == 2
    assert store.get("calls", 0.0) == 2
    assert store.decr("calls", 0.0, 2) == 0
    assert store.size() == 0
    # A release that was never taken (e.g. after a store flush) cannot go negative.
    assert store.decr("calls", 0.0) == 0
    assert store.get("calls", 0.0) == 0
    assert store.size() == 0


def test_counters_lists_keys_by_prefix() -> None:
    store = MemoryStore()
    store.incr("limit.a", 0.0)
    store.incr("limit.b", 0.0, 3)
    store.incr("other", 0.0)
    assert store.counters("limit.", 0.0) == {"limit.a": 1, "limit.b": 3}


def test_reserve_grants_counts_up_to_their_limit() -> None:
    store = MemoryStore()
    claims = [Count("calls", 2)]
    assert store.reserve(claims, 0.0) is None
    assert store.reserve(claims, 0.0) is None
    assert store.reserve(claims, 0.0) == Shortfall(0, 0.0)
    assert store.get("calls", 0.0) == 2


def test_reserve_counts_without_a_limit() -> None:
    store = MemoryStore()
    for _ in range(1000):
        assert store.reserve([Count("calls")], 0.0) is None
    assert store.get("calls", 0.0) == 1000


def test_a_refused_reserve_takes_nothing_from_the_other_claims() -> None:
    store = MemoryStore()
    store.incr("full", 0.0)
    claims: list[Claim] = [Bucket("cps", rate=1, burst=1), Count("other", 5), Count("full", 1)]
    assert store.reserve(claims, 0.0) == Shortfall(2, 0.0)
    assert store.get("other", 0.0) == 0
    # The token is still there for a claim that fits.
    assert store.take("cps", 1, 1, 0.0) == 0.0


def test_reserve_reports_how_long_until_a_token() -> None:
    store = MemoryStore()
    assert store.reserve([Bucket("cps", rate=4, burst=1)], 10.0) is None
    shortfall = store.reserve([Count("x"), Bucket("cps", rate=4, burst=1)], 10.1)
    assert shortfall is not None
    assert shortfall.index == 1
    assert shortfall.wait == pytest.approx(0.15)


def test_bucket_holds_burst_tokens_and_refills_at_rate() -> None:
    store = MemoryStore()
    taken = [store.take("b", 10, 5, 0.0) for _ in range(6)]
    assert taken[:5] == [0.0] * 5
    assert taken[5] == pytest.approx(0.1)
    assert store.take("b", 10, 5, 0.05) > 0  # half a token only
    assert store.take("b", 10, 5, 0.1) == 0.0
    # Refilled to the burst, never beyond: a long pause buys 5 calls, not 100.
    admitted = sum(store.take("b", 10, 5, 10.0) == 0.0 for _ in range(100))
    assert admitted == 5


def test_bucket_paces_exactly_on_float_clock_readings() -> None:
    # 20 attempts per second at 10 per second with no burst: every other one, although
    # times like 3/20 are not exact in binary.
    store = MemoryStore()
    admitted = sum(store.take("b", 10, 1, i / 20) == 0.0 for i in range(200))
    assert admitted == 100


def test_window_sums_the_last_window_only() -> None:
    store = MemoryStore()
    store.window_add("min", 100, 3600, 0.0)
    store.window_add("min", 50, 3600, 1800.0)
    assert store.window_sum("min", 3600, 1800.0) == 150
    assert store.window_sum("min", 3600, 3599.0) == 150
    # Kept to one slot (a minute) more than the hour: an over-count, never an under-count.
    assert store.window_sum("min", 3600, 3600 + 59.0) == 150
    assert store.window_sum("min", 3600, 3600 + 60.0) == 50
    assert store.window_sum("min", 3600, 1800 + 3660.0) == 0


def test_window_of_an_unknown_key_is_empty() -> None:
    assert MemoryStore().window_sum("nothing", 3600, 0.0) == 0


def test_window_length_change_keeps_the_total() -> None:
    store = MemoryStore()
    store.window_add("min", 30, 3600, 0.0)
    store.window_add("min", 12, 7200, 10.0)
    assert store.window_sum("min", 7200, 10.0) == 42


def test_window_rejects_a_length_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        MemoryStore().window_add("min", 1, 0, 0.0)


def test_expire_forgets_idle_buckets_and_windows() -> None:
    store = MemoryStore()
    store.take("busy", 1, 1, 0.0)
    store.take("idle", 100, 1, 0.0)
    store.window_add("w", 1, 60, 0.0)
    assert store.size() == 3
    assert store.expire(0.5) == 1  # 'idle' refilled after 10 ms; 'busy' needs 1 s
    assert store.expire(1.0) == 1
    assert store.expire(61.0) == 1
    assert store.size() == 0


def test_expire_honours_its_limit() -> None:
    store = MemoryStore()
    for i in range(10):
        store.take(f"k{i}", 1, 1, 0.0)
    assert store.expire(5.0, limit=3) == 3
    assert store.size() == 7


def test_a_flood_of_distinct_sources_does_not_stay_in_memory() -> None:
    store = MemoryStore()
    for i in range(100_000):
        assert (
            store.reserve([Bucket(f"src|10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", 5, 5)], 0.0)
            is None
        )
    assert store.size() == 100_000
    assert store.expire(1.0) == 100_000
    assert store.size() == 0


def test_new_keys_sweep_idle_ones_without_a_timer() -> None:
    store = MemoryStore()
    for i in range(100_000):
        store.take(f"old{i}", 1, 1, 0.0)
    # Much later a second wave of distinct keys: each insertion retires two idle ones.
    for i in range(50_000):
        store.take(f"new{i}", 1, 1, 100.0)
    assert store.size() == 50_000


def test_busy_keys_survive_the_sweep() -> None:
    store = MemoryStore()
    store.take("busy", 0.01, 1, 0.0)  # refills only after 100 s
    for i in range(1000):
        store.take(f"k{i}", 1, 1, 50.0 + i / 100)  # each sweep meets 'busy' again
    assert store.take("busy", 0.01, 1, 60.0) == pytest.approx(40.0)  # still empty
