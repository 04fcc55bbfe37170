"""The media port pool: hands out RTP/RTCP port pairs (RTP even, RTCP = RTP + 1, RFC 3550
§11) from a configured range, in O(1), and divides a range among worker processes."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

MIN_PORT = 1
MAX_PORT = 65535


class PortPoolError(ValueError):
    """A misuse of the pool: a bad range, releasing a pair it never handed out, ..."""


class PortsExhausted(RuntimeError):
    """Every pair of the range is in use; the call must be refused (e.g. 503) or the range
    in `media.port_range` widened."""


@dataclass(frozen=True, slots=True, order=True)
class PortPair:
    """An RTP port (even) and its RTCP port (the next one, odd)."""

    rtp: int

    @property
    def rtcp(self) -> int:
        return self.rtp + 1


class PortPool:
    """The pairs of `low..high` (both included) whose RTP port is even and whose RTCP port
    is still inside the range.

    A released pair goes to the back of the queue, so a pair just freed is reused as late
    as possible: stray packets of the previous call then rarely reach the next one."""

    __slots__ = ("low", "high", "_free", "_in_use")

    def __init__(self, low: int, high: int) -> None:
        if not (MIN_PORT <= low <= MAX_PORT and MIN_PORT <= high <= MAX_PORT):
            raise PortPoolError(
                f"media port range {low}-{high}: ports must be between {MIN_PORT} and {MAX_PORT}"
            )
        first = low + (low % 2)
        if first + 1 > high:
            raise PortPoolError(
                f"media port range {low}-{high} holds no even/odd pair (RTP even, RTCP = RTP+1):"
                " widen it"
            )
        self.low = low
        self.high = high
        # OrderedDict: O(1) pop from the front, append at the back and removal by key.
        self._free: OrderedDict[int, None] = OrderedDict(
            (port, None) for port in range(first, high, 2)
        )
        self._in_use: set[int] = set()

    # ------------------------------------------------------------------ queries

    @property
    def capacity(self) -> int:
        """How many pairs the range holds."""
        return len(self._free) + len(self._in_use)

    @property
    def available(self) -> int:
        return len(self._free)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def is_in_use(self, pair: PortPair) -> bool:
        return pair.rtp in self._in_use

    def __repr__(self) -> str:
        return f"PortPool({self.low}-{self.high}, {self.in_use}/{self.capacity} pairs in use)"

    # ------------------------------------------------------------------ allocation

    def allocate(self) -> PortPair:
        """The pair free for the longest time; PortsExhausted when none is left."""
        if not self._free:
            raise PortsExhausted(
                f"no free media port pair in {self.low}-{self.high}: all {self.capacity} pairs"
                " are in use (widen media.port_range or lower the call limit)"
            )
        port, _ = self._free.popitem(last=False)
        self._in_use.add(port)
        return PortPair(port)

    def reserve(self, pair: PortPair) -> PortPair:
        """Take one given pair out of circulation (a port another service holds, or a pair a
        restarted worker still uses); it comes back with `release`."""
        self._check_member(pair)
        if pair.rtp in self._in_use:
            raise PortPoolError(f"media ports {pair.rtp}/{pair.rtcp} are already in use")
        del self._free[pair.rtp]
        self._in_use.add(pair.rtp)
        return pair

    def release(self, pair: PortPair) -> None:
        """Give a pair back; it becomes the last one handed out again."""
        if pair.rtp not in self._in_use:
            raise PortPoolError(
                f"media ports {pair.rtp}/{pair.rtcp} released but not in use in"
                f" {self.low}-{self.high} (released twice, or from another pool)"
            )
        self._in_use.remove(pair.rtp)
        self._free[pair.rtp] = None

    # ------------------------------------------------------------------ workers

    def split(self, parts: int) -> list[PortPool]:
        """Divide the range into `parts` pools of (nearly) equal size and disjoint ports, one
        per worker process. Pairs in use here stay in use in the part that covers them."""
        pairs = sorted(list(self._free) + list(self._in_use))
        if not 1 <= parts <= len(pairs):
            raise PortPoolError(
                f"cannot split media port range {self.low}-{self.high} ({len(pairs)} pairs)"
                f" into {parts} parts: need between 1 and {len(pairs)}"
            )
        size, extra = divmod(len(pairs), parts)
        pools: list[PortPool] = []
        start = 0
        for index in range(parts):
            count = size + (1 if index < extra else 0)
            chunk = pairs[start : start + count]
            start += count
            pool = PortPool(chunk[0], chunk[-1] + 1)
            for port in chunk:
                if port in self._in_use:
                    pool.reserve(PortPair(port))
            pools.append(pool)
        return pools

    def _check_member(self, pair: PortPair) -> None:
        if pair.rtp % 2 or not (self.low <= pair.rtp and pair.rtcp <= self.high):
            raise PortPoolError(
                f"media ports {pair.rtp}/{pair.rtcp} are not a pair of {self.low}-{self.high}"
                " (the RTP port must be even and both ports inside the range)"
            )
