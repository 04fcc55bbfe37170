"""What policy is asked (RequestInfo) and what it answers (Admitted with a Ticket, or Rejected
carrying the SIP answer); Rule turns a named check into that answer."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sbc.policy.settings import DIRECTIONS

__all__ = ["Admitted", "Rejected", "RequestInfo", "Rule", "Ticket", "reason_header"]

REASON_PHRASES = {
    403: "Forbidden",
    480: "Temporarily Unavailable",
    486: "Busy Here",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """A new call as policy sees it: from routing's CallSetup and the INVITE's source.

    `callee` is the number after routing's rewriting (CallSetup.callee_rewritten); `route`
    names the route that matched (routes have no names in the config: e.g. 'outbound[0]');
    `international` None lets the policy decide from FraudSettings.home_prefixes."""

    direction: str  # 'inbound' (trunk -> PBX) | 'outbound' (PBX -> trunk)
    source_ip: str
    caller: str = ""
    callee: str = ""
    pbx: str | None = None
    trunk: str | None = None
    route: str | None = None
    international: bool | None = None

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(
                f"RequestInfo.direction {self.direction!r} is not 'inbound' or 'outbound'"
            )


@dataclass(frozen=True, slots=True)
class Ticket:
    """A call's hold on the counters it was admitted under; give it back with `ended`."""

    id: int


@dataclass(frozen=True, slots=True)
class Admitted:
    """The call may proceed. When `max_duration` is set the call controller ends it at
    `deadline` (admission `now` + max_duration, on the same clock), ringing time included."""

    ticket: Ticket
    international: bool = False
    max_duration: float | None = None
    deadline: float | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """Answer the INVITE `status reason_phrase` with `reason_header` as Reason (RFC 3326) and
    Retry-After when `retry_after` is set. `rule` is a stable name for logs, CDRs and metrics;
    `detail` is for the log only (it may name numbers and trunks the caller must not learn)."""

    status: int
    reason_phrase: str
    retry_after: int | None
    rule: str
    reason_header: str
    detail: str = ""

    def headers(self) -> list[tuple[str, str]]:
        """The extra headers of the answer."""
        headers = [("Reason", self.reason_header)]
        if self.retry_after is not None:
            headers.append(("Retry-After", str(self.retry_after)))
        return headers


@dataclass(frozen=True, slots=True)
class Rule:
    """One named check and how a call failing it is answered. `text` goes to the caller in
    the Reason header, so it says what happened without naming trunks or limits."""

    name: str
    status: int
    text: str
    retry_after: int | None = None  # Retry-After (s) of the answer; None or 0: none
    retry_when_ready: bool = False  # Retry-After says when the check would pass instead
    # Built once: under a flood most INVITEs are rejected, so the rejection path is hot too.
    header: str = field(init=False, repr=False, compare=False)
    phrase: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "header", reason_header(self.status, self.text))
        object.__setattr__(self, "phrase", REASON_PHRASES.get(self.status, "Forbidden"))

    def reject(self, detail: str, wait: float = 0.0) -> Rejected:
        """The answer; `wait` is how long until the check would pass, when known."""
        retry_after = self.retry_after
        if self.retry_when_ready and wait > 0:
            retry_after = max(1, math.ceil(wait))
        return Rejected(
            status=self.status,
            reason_phrase=self.phrase,
            retry_after=retry_after or None,
            rule=self.name,
            reason_header=self.header,
            detail=detail,
        )


def reason_header(status: int, text: str) -> str:
    """A Reason header value for a SIP status (RFC 3326 §2)."""
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'SIP;cause={status};text="{quoted}"'
