"""Which trunks a new call tries, in what order (priority, weighted, round robin, least calls),
given trunk health and live call counts; and which answers move a call on to the next one."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

HealthView = Callable[[str], bool] | Mapping[str, bool]
CallCounts = Callable[[str], int]


class Strategy(enum.Enum):
    PRIORITY = "priority"  # in the order listed
    WEIGHTED = "weighted"  # in proportion to weight, spread evenly (smooth weighted round robin)
    ROUND_ROBIN = "round_robin"  # each call starts one trunk further along
    LEAST_CALLS = "least_calls"  # fewest live calls first


@dataclass(frozen=True, slots=True)
class TrunkCandidate:
    """One trunk of a route. Its priority is its position in the route's list."""

    name: str
    # Share of first attempts under 'weighted'. 0: never first while a trunk of positive
    # weight is eligible, a standby only.
    weight: float = 1
    max_calls: int | None = None  # live calls at which the trunk takes no more; None: no limit

    def __post_init__(self) -> None:
        if not (self.weight >= 0 and math.isfinite(self.weight)):
            raise ValueError(f"trunk {self.name!r}: weight must be 0 or more, not {self.weight}")
        if self.max_calls is not None and self.max_calls < 0:
            raise ValueError(
                f"trunk {self.name!r}: max_calls must be 0 or more, not {self.max_calls}"
            )


class TrunkSelector:
    """Orders the trunks of one route for each new call. One per route: the round-robin
    position is the route's own, while health and call counts are views shared by all
    routes (a trunk's limits are the trunk's, whichever route fills it).

    `health` maps a trunk name to up/down: a callable, or a mapping where a trunk missing
    counts as up (a trunk nobody probes is assumed to work). `calls` gives a trunk's live
    calls.
    """

    def __init__(
        self,
        candidates: Sequence[TrunkCandidate],
        strategy: Strategy | str,
        health: HealthView,
        calls: CallCounts,
        *,
        last_resort: bool = True,
    ) -> None:
        if not candidates:
            raise ValueError("a route needs at least one trunk")
        names = [c.name for c in candidates]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"trunks listed twice in a route: {', '.join(duplicates)}")
        try:
            self.strategy = Strategy(strategy)
        except ValueError:
            known = ", ".join(s.value for s in Strategy)
            raise ValueError(f"unknown trunk strategy {strategy!r} (known: {known})") from None
        self.candidates = tuple(candidates)
        if isinstance(health, Mapping):
            view = health
            self._is_up: Callable[[str], bool] = lambda name: view.get(name, True)
        else:
            self._is_up = health
        self._calls = calls
        self._credit = {c.name: 0.0 for c in candidates}  # weighted: smooth round robin
        # When no trunk of the route is up, try them all anyway (still in strategy order,
        # still within max_calls): every gateway down at once is more likely a probing
        # problem (OPTIONS filtered, our own uplink flapping) than every carrier failing,
        # and the call fails anyway if we do not try. False: refuse the call instead.
        self.last_resort = last_resort
        self._next = 0  # round robin: index of the trunk the next call starts with

    def order(self) -> list[str]:
        """The trunks to try, in order, for one new call (call it once per call: it moves
        the round-robin position). Empty when every trunk is at max_calls, or when none is
        up and `last_resort` is off."""
        calls = {c.name: self._calls(c.name) for c in self.candidates}
        ranked = self._ranked(calls)
        full = {c.name for c in ranked if c.max_calls is not None and calls[c.name] >= c.max_calls}
        up = [c for c in ranked if self._is_up(c.name)]
        # A trunk that is down stays out while another is up, even after those fail: its
        # INVITE would most likely wait out Timer B (32 s) before the caller hears anything.
        pool = up if up or not self.last_resort else ranked
        chosen = [c for c in pool if c.name not in full]
        if chosen and self.strategy is Strategy.WEIGHTED:
            first = self._weighted_pick(chosen)
            chosen = [first, *(c for c in chosen if c is not first)]
        if chosen and self.strategy is Strategy.ROUND_ROBIN:
            # Move past the trunk that took this call, not merely one step: skipped trunks
            # would otherwise hand their turns to the trunk after them.
            self._next = (self.candidates.index(chosen[0]) + 1) % len(self.candidates)
        return [c.name for c in chosen]

    def _ranked(self, calls: Mapping[str, int]) -> list[TrunkCandidate]:
        candidates = list(self.candidates)
        strategy = self.strategy
        if strategy is Strategy.PRIORITY:
            return candidates
        if strategy is Strategy.ROUND_ROBIN:
            return candidates[self._next :] + candidates[: self._next]
        if strategy is Strategy.LEAST_CALLS:
            return sorted(candidates, key=lambda c: calls[c.name])  # stable: ties by priority
        # Weighted: the first trunk is picked in order() among those that can take the call;
        # the fallbacks follow by weight (standbys with weight 0 last), ties in list order.
        return sorted(candidates, key=lambda c: -c.weight)

    def _weighted_pick(self, eligible: Sequence[TrunkCandidate]) -> TrunkCandidate:
        """Smooth weighted round robin among the trunks that can take this call: each gains
        its weight in credit, the richest takes the call and pays the total. Over any run of
        calls each trunk gets its exact share, spread out (3:1 gives a a b a, a a b a...)
        rather than drawn at random, so a short burst does not land on one trunk."""
        paying = [c for c in eligible if c.weight > 0]
        if not paying:
            return eligible[0]  # only standbys left
        credit = self._credit
        total = 0.0
        best = paying[0]
        for candidate in paying:
            credit[candidate.name] += candidate.weight
            total += candidate.weight
            if credit[candidate.name] > credit[best.name]:
                best = candidate
        credit[best.name] -= total
        return best


def counts_as_trunk_failure(status: int, six_xx_fails: bool) -> bool:
    """Whether a final response from a trunk moves the call to the next trunk (TRAPS #11).

    408 and every 5xx say the trunk could not handle the call: another may. 486 Busy, 404,
    484 and the rest of 4xx are the callee's answer (or ours to fix): every trunk would give
    the same, and trying on turns a busy line into minutes of ringing. 6xx are definitive
    answers (RFC 3261 §21.6: "should not be tried elsewhere"), yet some carriers send 603 for
    their own trouble, hence `six_xx_fails`. Timeouts and transport errors have no status:
    they are failures, and so is a local 408 standing for a timeout.
    """
    if status < 200:
        return False  # not an answer yet
    if status == 408:
        return True
    if status < 500:
        return False
    if status < 600:
        return True
    if status < 700:
        return six_xx_fails
    # No class beyond 6xx is defined (RFC 3261 §21); the parser lets 7xx-9xx through. It is
    # no answer from the callee, so another trunk may do better.
    return True
