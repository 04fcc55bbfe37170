"""The one thing the call controller asks about a new call: fraud rules, then admission
limits, granted all together or not at all; and what it tells when the call moves or ends."""

from __future__ import annotations

from typing import Any

from sbc.policy.admission import Admission
from sbc.policy.fraud import FraudHold, FraudRules
from sbc.policy.settings import PolicySettings
from sbc.policy.store import MemoryStore, StateStore
from sbc.policy.verdict import Admitted, Rejected, RequestInfo, Ticket

__all__ = ["Policy"]


class Policy:
    """Call admission control and toll-fraud rules over one StateStore.

    Per call: `admit` once routing has chosen the PBX, route and first trunk; `move` when
    failover tries another trunk; `ended` once when the call is over (whatever way it ended,
    including a failed setup). `now` is the monotonic clock of the rest of the SBC; `wall`
    is UNIX time, read only for the time-of-day windows."""

    def __init__(self, settings: PolicySettings, store: StateStore | None = None) -> None:
        self.store: StateStore = store if store is not None else MemoryStore()
        self.admission = Admission(settings.admission, self.store)
        self.fraud = FraudRules(settings.fraud, self.store)
        self._fraud_holds: dict[int, FraudHold] = {}

    def reconfigure(self, settings: PolicySettings) -> None:
        """Apply new settings (a config reload); live calls keep their tickets. Raises
        ValueError (nothing changed) when the new settings cannot be used."""
        fraud = FraudRules(settings.fraud, self.store)  # validates before anything changes
        self.admission.reconfigure(settings.admission)
        self.fraud = fraud

    def admit(self, info: RequestInfo, now: float, wall: float) -> Admitted | Rejected:
        """Admit a new call or say how to reject it. Admitted carries the Ticket to give back
        and, when a rule caps the call, its max_duration and deadline (on the `now` clock)."""
        screening = self.fraud.screen(info, now, wall)
        if isinstance(screening, Rejected):
            return self.admission.count_rejection(screening)
        verdict = self.admission.check(
            info,
            now,
            demands=screening.demands,
            international=screening.international,
            max_duration=screening.max_duration,
        )
        if isinstance(verdict, Admitted):
            hold = self.fraud.started(screening, now)
            if hold is not None:
                self._fraud_holds[verdict.ticket.id] = hold
        return verdict

    def move(self, ticket: Ticket, trunk: str, now: float) -> Rejected | None:
        """Put an admitted call on another trunk (failover): None when done, else the
        rejection (the call stays counted on its old trunk: try the next one, or end it)."""
        return self.admission.move(ticket, trunk, now)

    def ended(self, ticket: Ticket, now: float) -> bool:
        """The call is over: give back what it holds and count its international minutes.
        True the first time; later calls for the same ticket do nothing."""
        if not self.admission.release(ticket, now):
            return False
        hold = self._fraud_holds.pop(ticket.id, None)
        if hold is not None:
            self.fraud.ended(hold, now)
        return True

    def is_international(self, number: str) -> bool:
        """Whether a number leaves the home country (FraudSettings.home_prefixes)."""
        return self.fraud.plan.is_international(number)

    def snapshot(self, now: float) -> dict[str, Any]:
        """For the management API: live calls and admissions of this node, current counts
        per limited scope and per international budget (from the store, so all nodes
        sharing it), and rejections per rule on this node."""
        snapshot = self.admission.snapshot(now)
        budgets = self.store.counters("fraud.", now)
        snapshot["counts"].update(
            (key, value) for key, value in budgets.items() if ".intl_calls" in key
        )
        return snapshot
