"""The media port pool: even/odd pairs inside the range, O(1) reuse order, exhaustion,
release errors, reservation and splitting among workers."""

from __future__ import annotations

import pytest

from media.ports import PortPair, PortPool, PortPoolError, PortsExhausted


def drain(pool: PortPool) -> list[PortPair]:
    pairs = []
    for _ in range(pool.capacity + 1):
        try:
            pairs.append(pool.allocate())
        except PortsExhausted:
            break
    return pairs


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (20000, 20009, [20000, 20002, 20004, 20006, 20008]),
        (20001, 20009, [20002, 20004, 20006, 20008]),  # odd low: first pair starts above it
        (20000, 20008, [20000, 20002, 20004, 20006]),  # even high: 20008 has no RTCP port
        (20000, 20001, [20000]),
    ],
)
def test_pairs_are_even_rtp_with_rtcp_next_inside_the_range(
    low: int, high: int, expected: list[int]
) -> None:
    pool = PortPool(low, high)
    pairs = drain(pool)
    assert [p.rtp for p in pairs] == expected
    assert all(p.rtcp == p.rtp + 1 and low <= p.rtp and p.rtcp <= high for p in pairs)
    assert pool.capacity == len(expected)


@pytest.mark.parametrize(("low", "high"), [(20001, 20001), (20001, 20002), (0, 10), (65534, 65536)])
def test_ranges_without_a_pair_or_out_of_bounds_are_refused(low: int, high: int) -> None:
    with pytest.raises(PortPoolError, match=f"{low}-{high}"):
        PortPool(low, high)


def test_no_pair_is_handed_out_twice_and_exhaustion_says_what_to_do() -> None:
    pool = PortPool(30000, 30099)
    pairs = drain(pool)
    assert len(pairs) == 50 == len(set(pairs))
    assert pool.available == 0 and pool.in_use == 50
    with pytest.raises(PortsExhausted, match=r"30000-30099.*all 50 pairs.*port_range"):
        pool.allocate()


def test_released_pair_is_reused_last() -> None:
    pool = PortPool(30000, 30007)  # 4 pairs
    first, second = pool.allocate(), pool.allocate()
    pool.release(first)
    # The two never-used pairs come before the one just released.
    assert [pool.allocate().rtp for _ in range(3)] == [30004, 30006, first.rtp]
    pool.release(second)
    assert pool.allocate() == second
    with pytest.raises(PortsExhausted):
        pool.allocate()


def test_release_of_a_pair_not_in_use_is_an_error() -> None:
    pool = PortPool(30000, 30009)
    pair = pool.allocate()
    pool.release(pair)
    with pytest.raises(PortPoolError, match="released twice"):
        pool.release(pair)
    with pytest.raises(PortPoolError, match="not in use"):
        pool.release(PortPair(40000))
    assert pool.in_use == 0 and pool.available == 5


def test_reserve_takes_a_given_pair_out_until_released() -> None:
    pool = PortPool(30000, 30005)  # 30000, 30002, 30004
    assert pool.reserve(PortPair(30002)) == PortPair(30002)
    assert pool.is_in_use(PortPair(30002))
    assert sorted(p.rtp for p in drain(pool)) == [30000, 30004]
    with pytest.raises(PortPoolError, match="already in use"):
        pool.reserve(PortPair(30002))
    pool.release(PortPair(30002))
    assert pool.allocate() == PortPair(30002)


@pytest.mark.parametrize("rtp", [30001, 29998, 30006])
def test_reserve_refuses_pairs_that_are_not_pairs_of_the_range(rtp: int) -> None:
    pool = PortPool(30000, 30005)
    with pytest.raises(PortPoolError, match="not a pair"):
        pool.reserve(PortPair(rtp))


@pytest.mark.parametrize("parts", [1, 2, 3, 7])
def test_split_covers_every_pair_once_in_near_equal_disjoint_parts(parts: int) -> None:
    pool = PortPool(20000, 20041)  # 21 pairs
    pools = pool.split(parts)
    assert len(pools) == parts
    sizes = [p.capacity for p in pools]
    assert sum(sizes) == 21 and max(sizes) - min(sizes) <= 1
    handed = [pair.rtp for p in pools for pair in drain(p)]
    assert sorted(handed) == list(range(20000, 20042, 2))
    for left, right in zip(pools, pools[1:], strict=False):
        assert left.high < right.low


def test_split_keeps_pairs_in_use_in_use_in_the_part_covering_them() -> None:
    pool = PortPool(20000, 20015)  # 8 pairs
    pool.reserve(PortPair(20010))
    first, second = pool.split(2)
    assert second.is_in_use(PortPair(20010)) and not first.is_in_use(PortPair(20010))
    assert PortPair(20010) not in drain(second)
    second.release(PortPair(20010))  # the part owns it now


@pytest.mark.parametrize("parts", [0, 6])
def test_split_into_impossible_parts_is_refused(parts: int) -> None:
    with pytest.raises(PortPoolError, match=f"into {parts} parts"):
        PortPool(20000, 20009).split(parts)
