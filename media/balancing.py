"""The worker pool's decisions (sans-I/O): which media worker takes a new session, and how long
a worker that keeps dying waits before its next start."""

from __future__ import annotations

import enum
import math
from collections.abc import Collection, Sequence


class BalancingPolicy(enum.StrEnum):
    LEAST_STREAMS = "least_streams"  # the worker relaying the fewest streams
    ROUND_ROBIN = "round_robin"  # each living worker in turn, whatever its load
    WEIGHTED = "weighted"  # the fewest streams per unit of configured weight


class NoWorkerAvailable(RuntimeError):
    """No living worker may take a session (all dead and restarting, or weight 0)."""


class WorkerBalancer:
    """Tracks the streams each worker relays and whether it is alive, and picks one per new
    session. Workers are numbered 0..count-1; ties go to the next worker after the last one
    chosen, so an idle pool still spreads sessions instead of filling worker 0 first."""

    __slots__ = ("policy", "weights", "_streams", "_alive", "_cursor")

    def __init__(
        self,
        count: int,
        policy: BalancingPolicy | str = BalancingPolicy.LEAST_STREAMS,
        weights: Sequence[float] | None = None,
    ) -> None:
        if count < 1:
            raise ValueError(f"media workers: need at least 1, not {count}")
        self.policy = _policy(policy)
        self.weights = _weights(count, self.policy, weights)
        self._streams = [0] * count
        self._alive = [True] * count
        self._cursor = 0

    def __len__(self) -> int:
        return len(self._streams)

    # ------------------------------------------------------------------ state

    def streams(self, index: int) -> int:
        return self._streams[index]

    def alive(self, index: int) -> bool:
        return self._alive[index]

    @property
    def living(self) -> list[int]:
        return [index for index, alive in enumerate(self._alive) if alive]

    def set_alive(self, index: int, alive: bool) -> None:
        """A dead worker's streams died with it: its count starts again from zero."""
        self._alive[index] = alive
        if not alive:
            self._streams[index] = 0

    def add(self, index: int, streams: int) -> None:
        self._streams[index] += streams

    def remove(self, index: int, streams: int) -> None:
        if streams > self._streams[index]:
            raise ValueError(
                f"media worker {index}: removing {streams} streams, it relays"
                f" {self._streams[index]} (a stream counted twice or never added)"
            )
        self._streams[index] -= streams

    # ------------------------------------------------------------------ choice

    def choose(self, streams: int = 1, exclude: Collection[int] = ()) -> int:
        """The worker for a new session of `streams` streams, skipping dead workers and
        `exclude` (workers that already refused it). NoWorkerAvailable when none is left."""
        count = len(self._streams)
        # Candidates in tie-break order: starting after the last worker chosen.
        order = [(self._cursor + step) % count for step in range(count)]
        candidates = [
            index
            for index in order
            if self._alive[index]
            and index not in exclude
            and (self.policy is not BalancingPolicy.WEIGHTED or self.weights[index] > 0)
        ]
        if not candidates:
            raise NoWorkerAvailable(self._none_left(exclude))
        if self.policy is BalancingPolicy.ROUND_ROBIN:
            chosen = candidates[0]
        elif self.policy is BalancingPolicy.LEAST_STREAMS:
            chosen = min(candidates, key=self._streams.__getitem__)
        else:
            # The load each would carry once it took the session, relative to its weight:
            # counting the new streams keeps small counts proportional too (3:1 weights give
            # 3 sessions then 1, not 1 then 1).
            chosen = min(candidates, key=lambda i: (self._streams[i] + streams) / self.weights[i])
        self._cursor = (chosen + 1) % count
        return chosen

    def _none_left(self, exclude: Collection[int]) -> str:
        count = len(self._streams)
        living = self.living
        if not living:
            return f"no media worker is running (all {count} died and are being restarted)"
        if all(index in exclude for index in living):
            return f"every running media worker ({len(living)} of {count}) refused the session"
        return (
            f"no running media worker has a weight above 0 (weights {list(self.weights)}):"
            " raise one in media.worker_weights"
        )


def _policy(policy: BalancingPolicy | str) -> BalancingPolicy:
    try:
        return BalancingPolicy(policy)
    except ValueError:
        known = ", ".join(p.value for p in BalancingPolicy)
        raise ValueError(f"media balancing policy {policy!r} is not one of {known}") from None


def _weights(
    count: int, policy: BalancingPolicy, weights: Sequence[float] | None
) -> tuple[float, ...]:
    if weights is None:
        return (1.0,) * count
    if policy is not BalancingPolicy.WEIGHTED:
        raise ValueError(
            f"media worker weights are only used by the weighted policy, not {policy.value}:"
            " set the policy to weighted or remove the weights"
        )
    if len(weights) != count:
        raise ValueError(f"media worker weights: {len(weights)} given for {count} workers")
    for index, weight in enumerate(weights):
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"media worker weights[{index}]: {weight} is not a number >= 0")
    if not any(weight > 0 for weight in weights):
        raise ValueError("media worker weights: at least one must be above 0")
    return tuple(float(weight) for weight in weights)


class RestartBackoff:
    """How long to wait before starting a dead worker again. A worker that ran at least
    `stable` seconds died of something passing (restart after `initial`); one that keeps
    dying soon after its start waits twice as long each time, up to `maximum`, so a broken
    installation does not spin the CPU forking interpreters."""

    __slots__ = ("initial", "maximum", "stable", "_next", "failures")

    def __init__(self, initial: float = 0.2, maximum: float = 30.0, stable: float = 10.0) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(
                f"worker restart delays: need 0 < initial ({initial}) <= maximum ({maximum})"
            )
        self.initial = initial
        self.maximum = maximum
        self.stable = stable
        self._next = initial
        self.failures = 0  # deaths in a row, each within `stable` seconds of its start

    def delay(self, ran_for: float) -> float:
        """The wait before the next start of a worker that died after `ran_for` seconds."""
        if ran_for >= self.stable:
            self._next = self.initial
            self.failures = 0
        delay = self._next
        self.failures += 1
        self._next = min(self._next * 2, self.maximum)
        return delay
