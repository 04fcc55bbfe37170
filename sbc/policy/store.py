"""The state admission control keeps, behind a small interface: concurrent counts, token buckets
and windowed sums keyed by strings. MemoryStore serves one node; a shared store (e.g. Redis with
one Lua script per method) lets several nodes enforce the same limits."""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Bucket", "Claim", "Count", "MemoryStore", "Shortfall", "StateStore"]

# Float slack when comparing clock readings: times such as i/20 added up must not lose a token.
TIME_EPSILON = 1e-9
# A counter this close to zero is zero: sums of start times never cancel out exactly.
COUNT_EPSILON = 1e-6
# A window of length W is kept as up to SLOTS sub-windows of W/SLOTS (a minute for an hour).
WINDOW_SLOTS = 60
# Entries an insertion inspects for idleness: more than one per insertion, so idle keys go
# faster than new ones come and the store stays bounded without a timer.
SWEEP_PER_INSERT = 2


@dataclass(frozen=True, slots=True)
class Count:
    """Claim one more unit of a concurrent count, granted while the count stays at or under
    `limit` (None: always granted, just counted)."""

    key: str
    limit: float | None = None


@dataclass(frozen=True, slots=True)
class Bucket:
    """Claim one token of a bucket refilled at `rate` tokens per second up to `burst` tokens
    (at least 1: a bucket that cannot hold one call admits none)."""

    key: str
    rate: float
    burst: float


Claim = Count | Bucket


@dataclass(frozen=True, slots=True)
class Shortfall:
    """Why a `reserve` was refused: the first claim that could not be granted, and how long
    until it could be (a Bucket: until its next token; a Count: 0, unknown until a call ends)."""

    index: int
    wait: float


class StateStore(Protocol):
    """Counters, token buckets and windowed sums. Every method takes the caller's clock reading
    `now` (seconds, monotonic on one node); a store shared by several nodes should read one
    clock of its own instead (Redis: TIME inside the script), as node clocks differ."""

    def reserve(self, claims: Sequence[Claim], now: float) -> Shortfall | None:
        """Grant all claims or none: check every one first, then commit them all; None when
        granted. A refused reserve changes nothing, so a rejected call costs no other scope
        a token. Must be atomic in a shared store."""
        ...

    def get(self, key: str, now: float) -> float:
        """The counter's value; 0 when absent."""
        ...

    def incr(self, key: str, now: float, amount: float = 1.0) -> float:
        """Add to a counter; returns the new value."""
        ...

    def decr(self, key: str, now: float, amount: float = 1.0) -> float:
        """Subtract from a counter, never below 0 (a counter at 0 takes no memory)."""
        ...

    def take(self, key: str, rate: float, burst: float, now: float) -> float:
        """Take one token: 0.0 when taken, else the seconds until one is there (none taken)."""
        ...

    def window_add(self, key: str, amount: float, window: float, now: float) -> None:
        """Add `amount` at `now` to a sliding-window sum over `window` seconds."""
        ...

    def window_sum(self, key: str, window: float, now: float) -> float:
        """The sum of what was added over the last `window` seconds (to one slot of it, which
        may count up to window/60 more: an over-count, never an under-count)."""
        ...

    def counters(self, prefix: str, now: float) -> dict[str, float]:
        """The counters whose key starts with `prefix` (for snapshots: not on the call path)."""
        ...

    def expire(self, now: float, limit: int | None = None) -> int:
        """Forget up to `limit` (None: all) idle buckets and windows; returns how many."""
        ...

    def size(self) -> int:
        """How many keys the store holds (counters, buckets, windows)."""
        ...


@dataclass(slots=True)
class _Window:
    """A sliding-window sum kept as per-slot amounts, oldest first: [slot number, amount]."""

    width: float  # seconds per slot
    slots: deque[list[float]]
    total: float = 0.0  # of the slots kept: read on every call, so not summed each time

    def add(self, amount: float, now: float) -> None:
        slot = math.floor(now / self.width)
        if self.slots and self.slots[-1][0] == slot:
            self.slots[-1][1] += amount
        else:
            self.slots.append([slot, amount])
        self.total += amount
        self.prune(slot)

    def prune(self, slot: int) -> None:
        # Keep the current slot and the WINDOW_SLOTS before it: the window is covered whole.
        oldest = slot - WINDOW_SLOTS
        while self.slots and self.slots[0][0] < oldest:
            self.total -= self.slots.popleft()[1]
        if not self.slots:
            self.total = 0.0  # no float residue from the subtractions

    def idle(self, now: float) -> bool:
        return not self.slots or self.slots[-1][0] < math.floor(now / self.width) - WINDOW_SLOTS


class MemoryStore:
    """A StateStore in plain dicts for one node. Counters at zero are deleted; a bucket is
    deleted once full again and a window once empty, being then the same as an absent key.
    Every insertion inspects the oldest entries (a clock sweep), so under a flood of distinct
    keys (e.g. spoofed sources) memory follows the keys active lately, not all ever seen."""

    def __init__(self) -> None:
        self._counts: dict[str, float] = {}
        # Token buckets as GCRA: the theoretical arrival time (tat) of the next call. A bucket
        # is full when tat <= now; one float per key, and a rate change keeps its meaning.
        self._buckets: OrderedDict[str, float] = OrderedDict()
        self._windows: OrderedDict[str, _Window] = OrderedDict()

    # ------------------------------------------------------------------ counts and buckets

    def reserve(self, claims: Sequence[Claim], now: float) -> Shortfall | None:
        counts = self._counts
        buckets = self._buckets
        for index, claim in enumerate(claims):
            if isinstance(claim, Count):
                if claim.limit is not None and counts.get(claim.key, 0.0) + 1.0 > claim.limit:
                    return Shortfall(index, 0.0)
            else:
                tat = buckets.get(claim.key)
                # A full bucket (tat <= now) always has a token: skip the arithmetic.
                if tat is not None and tat > now:
                    wait = _bucket_wait(tat, claim.rate, claim.burst, now)
                    if wait > 0.0:
                        return Shortfall(index, wait)
        for claim in claims:
            if isinstance(claim, Count):
                counts[claim.key] = counts.get(claim.key, 0.0) + 1.0
            else:
                self._set_tat(claim.key, claim.rate, now)
        return None

    def take(self, key: str, rate: float, burst: float, now: float) -> float:
        wait = _bucket_wait(self._buckets.get(key, now), rate, burst, now)
        if wait <= 0.0:
            self._set_tat(key, rate, now)
            return 0.0
        return wait

    def _set_tat(self, key: str, rate: float, now: float) -> None:
        tat = self._buckets.get(key)
        if tat is None:
            self._sweep(now)
            tat = now
        self._buckets[key] = max(tat, now) + 1.0 / rate

    def get(self, key: str, now: float) -> float:
        return self._counts.get(key, 0.0)

    def incr(self, key: str, now: float, amount: float = 1.0) -> float:
        value = self._counts.get(key, 0.0) + amount
        if value < COUNT_EPSILON:
            self._counts.pop(key, None)
            return 0.0
        self._counts[key] = value
        return value

    def decr(self, key: str, now: float, amount: float = 1.0) -> float:
        value = self._counts.get(key, 0.0) - amount
        if value < COUNT_EPSILON:
            self._counts.pop(key, None)
            return 0.0
        self._counts[key] = value
        return value

    def counters(self, prefix: str, now: float) -> dict[str, float]:
        return {key: value for key, value in self._counts.items() if key.startswith(prefix)}

    # ------------------------------------------------------------------ windows

    def window_add(self, key: str, amount: float, window: float, now: float) -> None:
        self._window(key, window, now).add(amount, now)

    def window_sum(self, key: str, window: float, now: float) -> float:
        entry = self._windows.get(key)
        if entry is None:
            return 0.0
        entry.prune(math.floor(now / entry.width))
        return entry.total

    def _window(self, key: str, window: float, now: float) -> _Window:
        if not window > 0:
            raise ValueError(f"window for {key!r} must be positive seconds, not {window}")
        width = window / WINDOW_SLOTS
        entry = self._windows.get(key)
        if entry is None:
            self._sweep(now)
            entry = self._windows[key] = _Window(width, deque())
        elif entry.width != width:
            # A reload changed the window: keep the total (over-count rather than forget).
            total = self.window_sum(key, entry.width * WINDOW_SLOTS, now)
            entry = self._windows[key] = _Window(width, deque())
            if total:
                entry.add(total, now)
        return entry

    # ------------------------------------------------------------------ expiry

    def expire(self, now: float, limit: int | None = None) -> int:
        budget = limit if limit is not None else len(self._buckets) + len(self._windows)
        removed = _sweep_buckets(self._buckets, now, budget)
        return removed + _sweep_windows(self._windows, now, budget - removed)

    def _sweep(self, now: float) -> None:
        _sweep_buckets(self._buckets, now, SWEEP_PER_INSERT)
        _sweep_windows(self._windows, now, SWEEP_PER_INSERT)

    def size(self) -> int:
        return len(self._counts) + len(self._buckets) + len(self._windows)


def _bucket_wait(tat: float, rate: float, burst: float, now: float) -> float:
    """Seconds until a bucket whose next theoretical arrival is `tat` has a token (<= 0: now).
    GCRA (ITU-T I.371): a call conforms when it is at most burst-1 intervals early."""
    interval = 1.0 / rate
    return max(tat, now) + interval - now - burst * interval - TIME_EPSILON


def _sweep_buckets(buckets: OrderedDict[str, float], now: float, budget: int) -> int:
    removed = 0
    for _ in range(min(budget, len(buckets))):
        key, tat = next(iter(buckets.items()))
        if tat <= now:
            del buckets[key]
            removed += 1
        else:
            buckets.move_to_end(key)  # busy: look at the next one, this one again later
    return removed


def _sweep_windows(windows: OrderedDict[str, _Window], now: float, budget: int) -> int:
    removed = 0
    for _ in range(min(budget, len(windows))):
        key, entry = next(iter(windows.items()))
        if entry.idle(now):
            del windows[key]
            removed += 1
        else:
            windows.move_to_end(key)
    return removed
