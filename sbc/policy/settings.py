"""Settings of call admission control and toll-fraud rules: frozen dataclasses of plain types
(str, int, float, tuples), so the config loader builds them straight from YAML. Every default
means "no limit"; invalid values raise ValueError naming the field and what to write instead."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = [
    "DAYS",
    "DIRECTIONS",
    "FRAUD_SCOPES",
    "LIMIT_SCOPES",
    "REJECT_STATUSES",
    "AdmissionSettings",
    "DialRule",
    "FraudSettings",
    "Limit",
    "PolicySettings",
    "TimeWindow",
    "parse_clock",
]

# global: all calls; trunk / pbx: the call's trunk or PBX; source: the address the INVITE came
# from; caller: the calling user (From user part), for per-user caps.
LIMIT_SCOPES = ("global", "trunk", "pbx", "source", "caller")
# Trunks are left out: failover changes a call's trunk after these rules have been applied.
FRAUD_SCOPES = ("global", "pbx", "route")
DIRECTIONS = ("inbound", "outbound")
# 403 Forbidden, 480 Temporarily Unavailable, 486 Busy Here, 503 Service Unavailable.
REJECT_STATUSES = (403, 480, 486, 503)
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `max_calls` concurrent calls and `cps` new calls per second in one scope.

    `name` picks one trunk, PBX, source address or caller; None applies the limit to each one
    separately (e.g. every source address at most 5 cps). `direction` None counts the calls of
    both directions together. CPS is a token bucket holding `burst` calls (None: one second's
    worth, ceil(cps)): a carrier counting calls per sliding second can see up to
    cps + burst - 1 in one second, so for a trunk's contracted rate (TRAPS #12) set burst 1.

    A rejection answers `status` (None: 503, and 486 for the caller scope) with Retry-After
    `retry_after` seconds (None: AdmissionSettings.retry_after for max_calls, the time to the
    next token for cps; 0: no Retry-After). Beware of 503 + Retry-After toward a carrier:
    RFC 3261 §21.5.4 lets it avoid this SBC for that long for every call, not just this scope.
    """

    scope: str = "global"
    name: str | None = None
    direction: str | None = None
    max_calls: int | None = None
    cps: float | None = None
    burst: int | None = None
    status: int | None = None
    retry_after: int | None = None

    def __post_init__(self) -> None:
        what = self.label
        _one_of(what, "scope", self.scope, LIMIT_SCOPES)
        if self.scope == "global" and self.name is not None:
            raise ValueError(f"{what}: a global limit takes no name (got {self.name!r})")
        if self.name == "":
            raise ValueError(f"{what}: name is empty; leave it out to limit each {self.scope}")
        if self.direction is not None:
            _one_of(what, "direction", self.direction, DIRECTIONS)
        if self.max_calls is None and self.cps is None:
            raise ValueError(f"{what}: set max_calls, cps or both")
        _at_least(what, "max_calls", self.max_calls, 0)
        if self.cps is not None and not (self.cps > 0 and math.isfinite(self.cps)):
            raise ValueError(f"{what}: cps must be a positive number, not {self.cps}")
        if self.burst is not None and self.cps is None:
            raise ValueError(f"{what}: burst needs cps")
        _at_least(what, "burst", self.burst, 1)
        if self.status is not None:
            _one_of(what, "status", self.status, REJECT_STATUSES)
        _at_least(what, "retry_after", self.retry_after, 0)

    @property
    def label(self) -> str:
        """The stem of this limit's rule names, e.g. 'limit.trunk.itsp-a.outbound'."""
        parts = ["limit", self.scope]
        if self.scope != "global":
            parts.append(self.name if self.name is not None else "*")
        if self.direction is not None:
            parts.append(self.direction)
        return ".".join(parts)

    @property
    def bucket_size(self) -> int:
        """Calls the CPS bucket holds."""
        if self.burst is not None:
            return self.burst
        return max(1, math.ceil(self.cps or 1))

    @property
    def answer(self) -> int:
        """The status a rejection by this limit answers."""
        if self.status is not None:
            return self.status
        return 486 if self.scope == "caller" else 503


@dataclass(frozen=True, slots=True)
class AdmissionSettings:
    """The limits every new call must fit in; all of them apply (none: admit everything)."""

    limits: tuple[Limit, ...] = ()
    retry_after: int = 5  # Retry-After (s) of a 503 for max_calls; 0: none

    def __post_init__(self) -> None:
        _at_least("admission", "retry_after", self.retry_after, 0)
        seen: set[str] = set()
        for limit in self.limits:
            if not isinstance(limit, Limit):
                raise ValueError(f"admission.limits: {limit!r} is not a Limit")
            # Two limits of one stem would share counters and rule names: merge them instead.
            if limit.label in seen:
                raise ValueError(f"admission.limits: {limit.label} is given twice; merge them")
            seen.add(limit.label)


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """A daily time span in FraudSettings.timezone, `start` to `end` ('HH:MM' or 'HH:MM:SS',
    end up to '24:00'; end before start runs past midnight into the next day) on `days`
    ('mon'..'sun'; a span past midnight belongs to the day it starts; (): every day)."""

    start: str = "00:00"
    end: str = "24:00"
    days: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        start = parse_clock(self.start, "start")
        end = parse_clock(self.end, "end")
        if start == end:
            raise ValueError(
                f"time window {self.start}-{self.end}: start equals end; "
                "for the whole day write 00:00-24:00"
            )
        if start == 24 * 3600:
            raise ValueError(f"time window {self.start}-{self.end}: start must be before 24:00")
        for day in self.days:
            _one_of(f"time window {self.start}-{self.end}", "days", day, DAYS)


@dataclass(frozen=True, slots=True)
class DialRule:
    """Toll-fraud rules for the calls of one scope and direction.

    Numbers are matched after routing's rewriting, as prefixes ('+882', '0900'); a prefix
    written with an international prefix ('00882') and one written with '+' ('+882') are the
    same, as are the numbers, so dialling 00882... does not get around a deny of +882.
    Deny wins over allow; a non-empty allow list admits only numbers matching one of it.
    International calls (FraudSettings.home_prefixes) can be barred (`international` false),
    restricted to `international_hours`, and budgeted per scope value: at most
    `max_international_calls` at once and `international_minutes_per_hour` minutes in any hour.

    The minutes budget is a hard bound when `max_international_calls` is set too: each call
    then gets a maximum duration of (minutes left) / max_international_calls (see fraud.py).
    Without it, a call may run as long as the minutes left when it started, so concurrent
    calls can overshoot.
    """

    scope: str = "global"
    name: str | None = None  # the PBX or route; None: each one separately
    direction: str | None = "outbound"  # None: both directions
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    international: bool = True
    hours: tuple[TimeWindow, ...] = ()  # (): any time
    international_hours: tuple[TimeWindow, ...] = ()  # (): any time
    max_duration: float | None = None  # seconds from admission
    max_international_duration: float | None = None
    max_international_calls: int | None = None
    international_minutes_per_hour: float | None = None

    def __post_init__(self) -> None:
        what = self.label
        _one_of(what, "scope", self.scope, FRAUD_SCOPES)
        if self.scope == "global" and self.name is not None:
            raise ValueError(f"{what}: a global rule takes no name (got {self.name!r})")
        if self.direction is not None:
            _one_of(what, "direction", self.direction, DIRECTIONS)
        for key, prefixes in (("allow", self.allow), ("deny", self.deny)):
            for prefix in prefixes:
                _check_prefix(what, key, prefix)
        for key, value in (
            ("max_duration", self.max_duration),
            ("max_international_duration", self.max_international_duration),
            ("international_minutes_per_hour", self.international_minutes_per_hour),
        ):
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{what}: {key} must be a positive number, not {value}")
        _at_least(what, "max_international_calls", self.max_international_calls, 0)
        for window in self.hours + self.international_hours:
            if not isinstance(window, TimeWindow):
                raise ValueError(f"{what}: {window!r} is not a TimeWindow")

    @property
    def label(self) -> str:
        """The stem of this rule's names: 'fraud.pbx.main' for outbound calls (the usual
        case), 'fraud.pbx.main.inbound' or 'fraud.pbx.main.any' for the others."""
        parts = ["fraud", self.scope]
        if self.scope != "global":
            parts.append(self.name if self.name is not None else "*")
        if self.direction != "outbound":
            parts.append(self.direction or "any")
        return ".".join(parts)


@dataclass(frozen=True, slots=True)
class FraudSettings:
    """Toll-fraud rules (all that apply to a call are enforced) and the numbering plan.

    A number is international when, written with '+' for an international prefix (so '0049..'
    reads '+49..'), it starts with '+' but none of `home_prefixes` (e.g. '+49'). Numbers
    without either ('030..', '110', 'alice') are national. Time windows are read in `timezone`
    (an IANA name, via zoneinfo)."""

    rules: tuple[DialRule, ...] = ()
    home_prefixes: tuple[str, ...] = ()
    international_prefixes: tuple[str, ...] = ("00",)  # NANP: ('011',)
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        for prefix in self.international_prefixes:
            if not prefix.isdigit():
                raise ValueError(
                    f"fraud.international_prefixes: {prefix!r} must be digits, e.g. '00'"
                )
        for prefix in self.home_prefixes:
            if not (prefix.startswith("+") or prefix.startswith(self.international_prefixes)):
                raise ValueError(
                    f"fraud.home_prefixes: {prefix!r} must start with '+' (e.g. '+49' for "
                    "Germany): national numbers are never international anyway"
                )
            _check_prefix("fraud", "home_prefixes", prefix)
        seen: set[str] = set()
        for rule in self.rules:
            if not isinstance(rule, DialRule):
                raise ValueError(f"fraud.rules: {rule!r} is not a DialRule")
            # Two rules of one stem would share budget counters: merge them instead.
            if rule.label in seen:
                raise ValueError(f"fraud.rules: {rule.label} is given twice; merge them")
            seen.add(rule.label)


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """Everything sbc.policy.Policy is built from."""

    admission: AdmissionSettings = field(default_factory=AdmissionSettings)
    fraud: FraudSettings = field(default_factory=FraudSettings)


def parse_clock(text: str, key: str = "time") -> int:
    """Seconds after midnight of 'HH:MM' or 'HH:MM:SS' (up to '24:00')."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(len(p) == 2 and p.isdigit() for p in parts):
        raise ValueError(f"{key}: {text!r} is not a time of day; write 'HH:MM', e.g. '07:30'")
    hours, minutes, seconds = (int(p) for p in (*parts, "00")[:3])
    if minutes > 59 or seconds > 59 or hours > 24 or (hours == 24 and minutes + seconds):
        raise ValueError(f"{key}: {text!r} is not a time of day between 00:00 and 24:00")
    return hours * 3600 + minutes * 60 + seconds


def _check_prefix(what: str, key: str, prefix: str) -> None:
    digits = prefix[1:] if prefix.startswith("+") else prefix
    if not digits or not all(c.isdigit() or c in "*#" for c in digits):
        raise ValueError(
            f"{what}: {key} prefix {prefix!r} must be digits, optionally after '+' "
            "(e.g. '+882', '00', '0900')"
        )


def _one_of(what: str, key: str, value: object, allowed: tuple[object, ...]) -> None:
    if value not in allowed:
        choices = ", ".join(str(a) for a in allowed)
        raise ValueError(f"{what}: {key} {value!r} is not one of {choices}")


def _at_least(what: str, key: str, value: int | None, lowest: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        raise ValueError(f"{what}: {key} must be a whole number >= {lowest}, not {value!r}")
