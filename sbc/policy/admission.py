"""Call admission control (sans-I/O): concurrent-call and calls-per-second limits per scope
(global, trunk, PBX, source address, caller), each optionally per direction. An admitted call
holds a Ticket on the counters it took until it ends; failover moves it to another trunk."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sbc.policy.settings import DIRECTIONS, AdmissionSettings, Limit
from sbc.policy.store import Bucket, Claim, Count, StateStore
from sbc.policy.verdict import Admitted, Rejected, RequestInfo, Rule, Ticket

__all__ = ["Admission", "Demand"]

# What a call is in each scope; None: not known (yet), so limits of that scope do not apply.
_SCOPE_VALUE: dict[str, Callable[[RequestInfo], str | None]] = {
    "global": lambda info: "",
    "trunk": lambda info: info.trunk,
    "pbx": lambda info: info.pbx,
    "source": lambda info: info.source_ip,
    "caller": lambda info: info.caller,
}
_CALLS_TEXT = {"caller": "Too many calls for this user"}
KNOWN_CLAIMS = 4096


@dataclass(frozen=True, slots=True)
class Demand:
    """A claim another part of the policy (fraud budgets) adds to admission's reserve, so
    all are granted together or none."""

    rule: Rule
    claim: Claim
    detail: str


@dataclass(frozen=True, slots=True)
class _Check:
    """One rule of a Limit: its concurrent calls or its CPS, in its scope."""

    rule: Rule
    scope: str
    name: str | None  # the one trunk/PBX/source/caller it limits; None: each separately
    value_of: Callable[[RequestInfo], str | None]
    max_calls: int | None = None  # a calls check
    rate: float = 0.0  # a CPS check
    burst: int = 1
    fixed: Claim | None = None  # the claim when its key does not depend on the call
    # Claims per trunk or PBX, built once: their names come from the config, unlike
    # source addresses and callers, which are anyone's to make up.
    known: dict[str, Claim] | None = field(default=None, compare=False)

    def claim(self, info: RequestInfo) -> Claim | None:
        """This check's claim for a call, or None when it does not apply to the call."""
        value = self.value_of(info)
        if value is None or (self.name is not None and value != self.name):
            return None
        if self.fixed is not None:
            return self.fixed
        known = self.known
        if known is None:
            return self._claim(f"{self.rule.name}|{value}")
        claim = known.get(value)
        if claim is None:
            claim = self._claim(f"{self.rule.name}|{value}")
            if len(known) < KNOWN_CLAIMS:  # a safeguard: names from the config are few
                known[value] = claim
        return claim

    def _claim(self, key: str) -> Claim:
        if self.max_calls is not None:
            return Count(key, self.max_calls)
        return Bucket(key, self.rate, self.burst)

    def detail(self, info: RequestInfo) -> str:
        where = self.scope if self.scope == "global" else f"{self.scope} {self.value_of(info)}"
        if self.max_calls is not None:
            return f"{where}: {self.max_calls} concurrent calls reached"
        return f"{where}: over {self.rate:g} calls/s (burst {self.burst})"

    @classmethod
    def build(cls, limit: Limit, default_retry: int) -> list[_Check]:
        checks: list[_Check] = []
        value_of = _SCOPE_VALUE[limit.scope]
        status = limit.answer
        if limit.max_calls is not None:
            retry = limit.retry_after
            if retry is None:
                retry = default_retry if status == 503 else 0
            text = _CALLS_TEXT.get(limit.scope, "Call limit reached")
            rule = Rule(f"{limit.label}.calls", status, text, retry)
            checks.append(cls(rule, limit.scope, limit.name, value_of, max_calls=limit.max_calls))
        if limit.cps is not None:
            # Retry-After says when the next token comes, unless the limit fixes or drops it.
            when_ready = limit.retry_after is None and status == 503
            rule = Rule(
                f"{limit.label}.cps", status, "Call rate exceeded", limit.retry_after, when_ready
            )
            check = cls(
                rule, limit.scope, limit.name, value_of, rate=limit.cps, burst=limit.bucket_size
            )
            checks.append(check)
        return [check._fixed() for check in checks]

    def _fixed(self) -> _Check:
        if self.scope == "global" or self.name is not None:
            return dataclasses.replace(self, fixed=self._claim(self.rule.name))
        if self.scope in ("trunk", "pbx"):
            return dataclasses.replace(self, known={})
        return self


@dataclass(slots=True)
class _Hold:
    """What an admitted call holds: the count keys to give back when it ends."""

    info: RequestInfo
    keys: list[str]
    trunk_keys: list[str]  # held on the call's trunk: given back when it moves


class Admission:
    """Admits new calls within the configured limits, checking every scope before committing
    any, so a call refused by one limit takes nothing from the others (no token, no count)."""

    def __init__(self, settings: AdmissionSettings, store: StateStore) -> None:
        self._store = store
        self._holds: dict[int, _Hold] = {}
        self._next_ticket = 1
        self.rejections: dict[str, int] = {}
        self.admitted = 0
        self._checks: dict[str, tuple[_Check, ...]] = {}
        self._trunk_checks: dict[str, tuple[_Check, ...]] = {}
        self.reconfigure(settings)

    def reconfigure(self, settings: AdmissionSettings) -> None:
        """Apply new limits (a config reload). Live calls keep their tickets and give back
        what they took; counts carry over to limits whose rule names did not change."""
        for direction in DIRECTIONS:
            checks = tuple(
                check
                for limit in settings.limits
                if limit.direction in (None, direction)
                for check in _Check.build(limit, settings.retry_after)
            )
            self._checks[direction] = checks
            self._trunk_checks[direction] = tuple(c for c in checks if c.scope == "trunk")

    # ------------------------------------------------------------------ the call path

    def check(
        self,
        info: RequestInfo,
        now: float,
        *,
        demands: Sequence[Demand] = (),
        international: bool = False,
        max_duration: float | None = None,
    ) -> Admitted | Rejected:
        """Admit a new call, or say how to reject it. `demands` join the same all-or-nothing
        reserve; the rest is passed through to Admitted."""
        checks: list[_Check] = []
        claims: list[Claim] = []
        keys: list[str] = []
        trunk_keys: list[str] = []
        for demand in demands:
            claims.append(demand.claim)
            if isinstance(demand.claim, Count):
                keys.append(demand.claim.key)
        for check in self._checks[info.direction]:
            claim = check.claim(info)
            if claim is not None:
                checks.append(check)
                claims.append(claim)
                if check.max_calls is not None:  # a Count: held until the call ends
                    (trunk_keys if check.scope == "trunk" else keys).append(claim.key)
        shortfall = self._store.reserve(claims, now) if claims else None
        if shortfall is not None:
            index = shortfall.index
            if index < len(demands):
                demand = demands[index]
                return self._rejected(demand.rule.reject(demand.detail, shortfall.wait))
            check = checks[index - len(demands)]
            return self._rejected(check.rule.reject(check.detail(info), shortfall.wait))
        ticket = Ticket(self._next_ticket)
        self._next_ticket += 1
        self._holds[ticket.id] = _Hold(info, keys, trunk_keys)
        self.admitted += 1
        deadline = None if max_duration is None else now + max_duration
        return Admitted(ticket, international, max_duration, deadline)

    def move(self, ticket: Ticket, trunk: str, now: float) -> Rejected | None:
        """Put an admitted call on `trunk` (failover, or the first trunk once routing chose
        it): None when done, giving back the old trunk's counts; a Rejected (nothing changed)
        when the new trunk's limits refuse it. Moving to the trunk it is on does nothing."""
        hold = self._holds.get(ticket.id)
        if hold is None:
            raise LookupError(
                f"ticket {ticket.id} is not held (the call ended, or another Policy admitted "
                "it): admit the call before moving it"
            )
        if hold.info.trunk == trunk:
            return None
        info = dataclasses.replace(hold.info, trunk=trunk)
        checks: list[_Check] = []
        claims: list[Claim] = []
        for check in self._trunk_checks[info.direction]:
            claim = check.claim(info)
            if claim is not None:
                checks.append(check)
                claims.append(claim)
        shortfall = self._store.reserve(claims, now) if claims else None
        if shortfall is not None:
            check = checks[shortfall.index]
            return self._rejected(check.rule.reject(check.detail(info), shortfall.wait))
        for key in hold.trunk_keys:
            self._store.decr(key, now)
        hold.info = info
        hold.trunk_keys = [claim.key for claim in claims if isinstance(claim, Count)]
        return None

    def release(self, ticket: Ticket, now: float) -> bool:
        """Give back what the call holds; True the first time, False after (idempotent)."""
        hold = self._holds.pop(ticket.id, None)
        if hold is None:
            return False
        for key in hold.keys:
            self._store.decr(key, now)
        for key in hold.trunk_keys:
            self._store.decr(key, now)
        return True

    def held(self, ticket: Ticket) -> RequestInfo | None:
        """The call a live ticket was admitted for (its current trunk); None once released."""
        hold = self._holds.get(ticket.id)
        return None if hold is None else hold.info

    def count_rejection(self, rejected: Rejected) -> Rejected:
        """Count a rejection decided elsewhere (fraud rules) with admission's own."""
        return self._rejected(rejected)

    def _rejected(self, rejected: Rejected) -> Rejected:
        self.rejections[rejected.rule] = self.rejections.get(rejected.rule, 0) + 1
        return rejected

    # ------------------------------------------------------------------ management

    @property
    def live(self) -> int:
        """Calls admitted by this node and not yet ended."""
        return len(self._holds)

    def snapshot(self, now: float) -> dict[str, Any]:
        """Current counts per limited scope (as the store has them: all nodes sharing it),
        and this node's admissions and rejections per rule."""
        return {
            "live": self.live,
            "admitted": self.admitted,
            "counts": self._store.counters("limit.", now),
            "rejections": dict(self.rejections),
        }
