"""Toll-fraud rules (sans-I/O): allow and deny lists of number prefixes, time-of-day windows,
maximum call durations, and international budgets (concurrent calls, minutes per hour).

The minutes budget of a scope (e.g. a PBX) counts, over a sliding hour, the minutes of the
international calls that ended in it (added when a call ends, as a whole) plus the time the
live ones have run so far (kept as a count k and a sum S of start times: k*now - S). A call is
refused once that reaches the budget. That alone would let a burst of long calls started
together run on past it, so each call also gets a maximum duration of R / C, R being the
seconds left when it starts and C the scope's max_international_calls. The live calls then
never outrun the budget: each call's remaining time shrinks by one second per second while
R / C shrinks by k / C <= 1, so the remaining times of the live calls add up to at most
k * R / C <= R. (Without max_international_calls, C is taken as 1: a soft bound.) Time
counts from admission, ringing included, so the bound holds when the call controller ends
each call at Admitted.deadline; a cap counted from the answer lets a call overrun by its
ringing time.
"""

from __future__ import annotations

import datetime
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sbc.policy.admission import Demand
from sbc.policy.settings import DAYS, DIRECTIONS, DialRule, FraudSettings, TimeWindow, parse_clock
from sbc.policy.store import Count, StateStore
from sbc.policy.verdict import Rejected, RequestInfo, Rule

__all__ = ["BudgetKeys", "FraudHold", "FraudRules", "NumberPlan", "Screening"]

HOUR = 3600.0
# A call that could not even last this long is refused instead of being cut at once.
SHORTEST_USEFUL_CALL = 1.0
FORBIDDEN = 403
BUDGET_CACHE_SIZE = 4096

_SCOPE_VALUE: dict[str, Callable[[RequestInfo], str | None]] = {
    "global": lambda info: "",
    "pbx": lambda info: info.pbx,
    "route": lambda info: info.route,
}


class NumberPlan:
    """Reads numbers one way: an international prefix ('00') is written '+', so prefixes and
    numbers compare whatever form the PBX dialled; and tells international from national."""

    def __init__(self, international_prefixes: Sequence[str], home_prefixes: Sequence[str]) -> None:
        # Longest first: with '00' and '000' both given, '000..' must lose all three digits.
        self._international = tuple(sorted(international_prefixes, key=len, reverse=True))
        self._home = tuple(self.canonical(prefix) for prefix in home_prefixes)

    def canonical(self, number: str) -> str:
        if number.startswith(self._international):
            for prefix in self._international:
                if number.startswith(prefix):
                    return "+" + number[len(prefix) :]
        return number

    def is_international(self, number: str) -> bool:
        """Whether a number (in any form) leaves the home country."""
        return self._canonical_international(self.canonical(number))

    def _canonical_international(self, canonical: str) -> bool:
        return canonical.startswith("+") and not (self._home and canonical.startswith(self._home))


@dataclass(frozen=True, slots=True)
class _Span:
    """A TimeWindow in seconds after local midnight; weekdays 0 (Monday) to 6, empty: all."""

    start: int
    end: int
    days: frozenset[int]

    @classmethod
    def of(cls, window: TimeWindow) -> _Span:
        days = frozenset(DAYS.index(day) for day in window.days)
        return cls(parse_clock(window.start), parse_clock(window.end), days)

    def contains(self, weekday: int, second: int) -> bool:
        if self.start < self.end:
            return self._on(weekday) and self.start <= second < self.end
        # Past midnight: the early hours belong to the span that began the evening before.
        if second >= self.start:
            return self._on(weekday)
        return second < self.end and self._on((weekday - 1) % 7)

    def _on(self, weekday: int) -> bool:
        return not self.days or weekday in self.days


@dataclass(frozen=True, slots=True)
class BudgetKeys:
    """The store keys of one scope value's international budget."""

    calls: str  # live international calls (a count admission holds)
    started: str  # sum of their start times
    seconds: str  # windowed sum of the seconds of those that ended


@dataclass(frozen=True, slots=True)
class _DialCheck:
    """A DialRule compiled: canonical prefixes, spans in seconds, and its named rules."""

    rule: DialRule
    value_of: Callable[[RequestInfo], str | None]
    allow: tuple[str, ...]
    deny: tuple[str, ...]
    hours: tuple[_Span, ...]
    international_hours: tuple[_Span, ...]
    budget_seconds: float | None  # international seconds per hour
    denied: Rule
    not_allowed: Rule
    barred: Rule
    off_hours: Rule
    off_international_hours: Rule
    too_many: Rule
    exhausted: Rule
    # Per scope value: built once, as they are the same on every call.
    budgets: dict[str, tuple[BudgetKeys, Demand]] = field(default_factory=dict, compare=False)

    @classmethod
    def build(cls, rule: DialRule, plan: NumberPlan) -> _DialCheck:
        label = rule.label

        def named(check: str, text: str) -> Rule:
            return Rule(f"{label}.{check}", FORBIDDEN, text)

        minutes = rule.international_minutes_per_hour
        return cls(
            rule=rule,
            value_of=_SCOPE_VALUE[rule.scope],
            allow=tuple(plan.canonical(p) for p in rule.allow),
            deny=tuple(plan.canonical(p) for p in rule.deny),
            hours=tuple(_Span.of(w) for w in rule.hours),
            international_hours=tuple(_Span.of(w) for w in rule.international_hours),
            budget_seconds=None if minutes is None else minutes * 60.0,
            denied=named("deny", "Destination barred"),
            not_allowed=named("allow", "Destination not allowed"),
            barred=named("international", "International calls barred"),
            off_hours=named("hours", "Calls not allowed at this time"),
            off_international_hours=named(
                "intl_hours", "International calls not allowed at this time"
            ),
            too_many=named("intl_calls", "International call limit reached"),
            exhausted=named("intl_minutes", "International minutes exhausted"),
        )

    def value(self, info: RequestInfo) -> str | None:
        """The scope value a call has under this rule, or None when the rule does not apply."""
        value = self.value_of(info)
        if value is None or (self.rule.name is not None and value != self.rule.name):
            return None
        return value

    @property
    def budgeted(self) -> bool:
        return self.rule.max_international_calls is not None or self.budget_seconds is not None

    def budget(self, value: str) -> tuple[BudgetKeys, Demand]:
        """The budget keys of a scope value, and the concurrent-call claim on them."""
        found = self.budgets.get(value)
        if found is not None:
            return found
        stem = self.rule.label
        suffix = "" if self.rule.name is not None or self.rule.scope == "global" else f"|{value}"
        keys = BudgetKeys(
            f"{stem}.intl_calls{suffix}",
            f"{stem}.intl_started{suffix}",
            f"{stem}.intl_seconds{suffix}",
        )
        limit = self.rule.max_international_calls
        detail = f"{value or 'all'}: {limit} concurrent international calls reached"
        found = keys, Demand(self.too_many, Count(keys.calls, limit), detail)
        # Values are PBX and route names from the config; the bound is only a safeguard.
        if len(self.budgets) < BUDGET_CACHE_SIZE:
            self.budgets[value] = found
        return found


@dataclass(frozen=True, slots=True)
class Screening:
    """A call the fraud rules let through so far: the budget counts it must still be granted
    together with admission's (`demands`), its duration cap, and the budgets it counts in."""

    international: bool
    max_duration: float | None
    demands: tuple[Demand, ...] = ()
    budgets: tuple[BudgetKeys, ...] = ()


@dataclass(frozen=True, slots=True)
class FraudHold:
    """An admitted international call's share of its budgets: given back by `ended`."""

    started: float
    budgets: tuple[BudgetKeys, ...]


class FraudRules:
    """The toll-fraud rules of FraudSettings; every rule matching a call applies.

    Clocks: `now` is the monotonic clock the rest of the SBC runs on (budgets, durations);
    `wall` is UNIX time, read only for time-of-day windows (a wall clock may step, which must
    not bend durations)."""

    def __init__(self, settings: FraudSettings, store: StateStore) -> None:
        self._store = store
        self.reconfigure(settings)

    def reconfigure(self, settings: FraudSettings) -> None:
        """Apply new rules (a config reload); live calls give back what they took."""
        try:
            self._zone = zoneinfo.ZoneInfo(settings.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"fraud.timezone {settings.timezone!r} is not a known IANA zone (e.g. "
                "'Europe/Berlin'); check the spelling, or install tzdata on this host"
            ) from exc
        self._last_local: tuple[int, tuple[int, int]] = (-1, (0, 0))
        self._plain: dict[tuple[bool, float | None], Screening] = {}
        self.plan = NumberPlan(settings.international_prefixes, settings.home_prefixes)
        checks = [_DialCheck.build(rule, self.plan) for rule in settings.rules]
        self._checks = {
            direction: tuple(c for c in checks if c.rule.direction in (None, direction))
            for direction in DIRECTIONS
        }

    def screen(self, info: RequestInfo, now: float, wall: float) -> Screening | Rejected:
        """Check a new call against every rule that applies: prefixes (any deny first), the
        international bar, time windows, then the budgets. Reads the store, changes nothing."""
        checks = self._checks[info.direction]
        if not checks:
            return self._screening(self._international(info, info.callee), None)
        number = self.plan.canonical(info.callee)
        international = self._international(info, number)
        applying = [(check, value) for check in checks if (value := check.value(info)) is not None]
        for check, _ in applying:
            if check.deny and number.startswith(check.deny):
                prefix = next(p for p in check.deny if number.startswith(p))
                return check.denied.reject(f"callee {info.callee} matches denied {prefix}")
        local: tuple[int, int] | None = None
        for check, _ in applying:
            if check.allow and not number.startswith(check.allow):
                return check.not_allowed.reject(f"callee {info.callee} matches no allowed prefix")
            if international and not check.rule.international:
                return check.barred.reject(f"callee {info.callee} is international")
            if check.hours or (international and check.international_hours):
                local = local or self._local(wall)
                refused = _outside(check, international, *local)
                if refused is not None:
                    return refused.reject(f"callee {info.callee} at {_clock(local[1])} local")
        return self._budgets(info, international, applying, now)

    def _budgets(
        self,
        info: RequestInfo,
        international: bool,
        applying: list[tuple[_DialCheck, str]],
        now: float,
    ) -> Screening | Rejected:
        max_duration: float | None = None
        demands: list[Demand] = []
        budgets: list[BudgetKeys] = []
        for check, value in applying:
            rule = check.rule
            max_duration = _least(max_duration, rule.max_duration)
            if not international:
                continue
            max_duration = _least(max_duration, rule.max_international_duration)
            if not check.budgeted:
                continue
            keys, demand = check.budget(value)
            if check.budget_seconds is not None:
                left = check.budget_seconds - self.used_seconds(keys, now)
                # Each call may use its share of what is left: see the module docstring.
                share = left / max(1, rule.max_international_calls or 1)
                if share < SHORTEST_USEFUL_CALL:
                    used = (check.budget_seconds - left) / 60
                    return check.exhausted.reject(f"{value or 'all'}: {used:.1f} min this hour")
                max_duration = _least(max_duration, share)
            demands.append(demand)
            budgets.append(keys)
        if not demands:
            return self._screening(international, max_duration)
        return Screening(international, max_duration, tuple(demands), tuple(budgets))

    def _screening(self, international: bool, max_duration: float | None) -> Screening:
        """A Screening without budgets: one of a few (durations come from the config), so
        built once each rather than on every call."""
        key = (international, max_duration)
        screening = self._plain.get(key)
        if screening is None:
            screening = self._plain[key] = Screening(international, max_duration)
        return screening

    def used_seconds(self, keys: BudgetKeys, now: float) -> float:
        """International seconds of one budget in the last hour: ended calls plus live ones."""
        store = self._store
        ended = store.window_sum(keys.seconds, HOUR, now)
        live = store.get(keys.calls, now)
        running = live * now - store.get(keys.started, now) if live > 0 else 0.0
        return ended + max(0.0, running)

    def started(self, screening: Screening, now: float) -> FraudHold | None:
        """Count an admitted call's start in its budgets (after admission granted the
        demands); None when it counts in none."""
        if not screening.budgets:
            return None
        for keys in screening.budgets:
            self._store.incr(keys.started, now, now)
        return FraudHold(now, screening.budgets)

    def ended(self, hold: FraudHold, now: float) -> None:
        """Move an ended call's seconds from the live sums to the hour's window (admission
        gives back its count)."""
        elapsed = max(0.0, now - hold.started)
        for keys in hold.budgets:
            self._store.decr(keys.started, now, hold.started)
            self._store.window_add(keys.seconds, elapsed, HOUR, now)

    def _international(self, info: RequestInfo, number: str) -> bool:
        if info.international is not None:
            return info.international
        return self.plan.is_international(number)

    def _local(self, wall: float) -> tuple[int, int]:
        """(weekday, second of the day) of a UNIX time in the configured zone."""
        second = int(wall)
        if self._last_local[0] == second:  # calls come many to a second
            return self._last_local[1]
        moment = datetime.datetime.fromtimestamp(second, self._zone)
        local = moment.weekday(), moment.hour * 3600 + moment.minute * 60 + moment.second
        self._last_local = second, local
        return local


def _outside(check: _DialCheck, international: bool, weekday: int, second: int) -> Rule | None:
    """The rule a call at this local time breaks, if any."""
    if check.hours and not any(span.contains(weekday, second) for span in check.hours):
        return check.off_hours
    spans = check.international_hours
    if international and spans and not any(span.contains(weekday, second) for span in spans):
        return check.off_international_hours
    return None


def _least(current: float | None, candidate: float | None) -> float | None:
    if candidate is None:
        return current
    return candidate if current is None else min(current, candidate)


def _clock(second: int) -> str:
    return f"{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}"
