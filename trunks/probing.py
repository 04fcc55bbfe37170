"""OPTIONS health probing of one trunk gateway (sans-I/O): a probe every interval, a gateway
marked down after M failed probes in a row and up again after N answered ones."""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass

from sbc.sip.message import Request, Response, new_tag
from sbc.sip.peer import Peer
from sbc.sip.transaction import TxnKey, new_branch

# ----- settings and actions -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    """How one gateway of a trunk is probed. The transaction layer owns the probe's timeout
    (Timer F, 64*T1): the prober learns of it through `Prober.on_failure`."""

    trunk: str  # trunk name from config, carried in HealthChanged
    dest: Peer  # the gateway's address (one address: a trunk with several gets one prober each)
    request_uri: str  # e.g. 'sip:203.0.113.5:5060'
    from_uri: str  # our identity toward the trunk, e.g. 'sip:sbc@198.51.100.7'
    to_uri: str  # usually the request URI
    via_host: str  # our address on the interface facing the trunk (topology hiding)
    via_port: int
    via_transport: str = "udp"
    user_agent: str | None = None  # User-Agent header; None: none
    gateway: str = ""  # label in HealthChanged and logs; '': str(dest)
    interval: float = 30.0  # seconds from one probe to the next
    down_interval: float | None = None  # recheck interval while down; None: `interval`
    up_after: int = 2  # answered probes in a row that bring a down gateway up
    down_after: int = 3  # failed probes in a row that bring an up gateway down
    # Answers that count as failed probes. Any other final response, 4xx and 5xx included,
    # proves that the gateway's SIP stack is running: many ITSPs answer OPTIONS with 404, 405
    # or 403 and still take calls. 503 is the RFC 3261 §21.5.4 "not taking requests now";
    # 408 comes from a proxy in front of the gateway that got no answer from it.
    dead_statuses: frozenset[int] = frozenset({408, 503})
    # Optimistic by default: after a start or a reload every trunk would otherwise refuse
    # calls for up_after * interval (a minute) until probes vouch for it, while a trunk
    # that is really dead costs one failed attempt per call that failover absorbs
    # (TRAPS #11) until down_after probes have failed.
    initially_up: bool = True

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ValueError(f"probe interval must be positive, not {self.interval}")
        if self.down_interval is not None and self.down_interval <= 0:
            raise ValueError(f"probe down_interval must be positive, not {self.down_interval}")
        if self.up_after < 1 or self.down_after < 1:
            raise ValueError(
                f"probe up_after and down_after must be at least 1, "
                f"not {self.up_after} and {self.down_after}"
            )


@dataclass(frozen=True, slots=True)
class SendProbe:
    """Send `request` in a new non-INVITE client transaction to `dest`. The driver reports
    the transaction's key through `Prober.request_sent(tag, key)` before it hands the prober
    anything else, then every final response (`on_response`), or the timeout or transport
    error (`on_failure`), of that transaction."""

    request: Request
    dest: Peer
    tag: str


@dataclass(frozen=True, slots=True)
class HealthChanged:
    """The gateway went up or down; `reason` says why, for the log line."""

    trunk: str
    gateway: str
    up: bool
    reason: str


ProbeAction = SendProbe | HealthChanged


# ----- state machine ------------------------------------------------------------------------


class ProbeState(enum.Enum):
    IDLE = "idle"  # built, not started
    WAITING = "waiting"  # the next probe goes out at the deadline
    PROBING = "probing"  # one probe in flight; no deadline of ours (the transaction's runs)
    STOPPED = "stopped"


class ProbeEvent(enum.Enum):
    START = "start"
    SEND = "probe due"
    ANSWER = "probe answered or failed"
    STOP = "stop"


_TRANSITIONS: dict[tuple[ProbeState, ProbeEvent], ProbeState] = {
    (ProbeState.IDLE, ProbeEvent.START): ProbeState.WAITING,
    (ProbeState.WAITING, ProbeEvent.SEND): ProbeState.PROBING,
    (ProbeState.PROBING, ProbeEvent.ANSWER): ProbeState.WAITING,
    (ProbeState.IDLE, ProbeEvent.STOP): ProbeState.STOPPED,
    (ProbeState.WAITING, ProbeEvent.STOP): ProbeState.STOPPED,
    (ProbeState.PROBING, ProbeEvent.STOP): ProbeState.STOPPED,
    (ProbeState.STOPPED, ProbeEvent.STOP): ProbeState.STOPPED,
}


class ProbeStateError(RuntimeError):
    def __init__(self, state: ProbeState, event: ProbeEvent) -> None:
        super().__init__(f"prober in state {state.value!r} cannot handle {event.value!r}")
        self.state = state
        self.event = event


_FAILURE_TEXT = {"TimedOut": "no answer", "TransportFailed": "transport error"}


class Prober:
    """Probes one gateway with OPTIONS (RFC 3261 §11), one probe in flight at a time.

    Drive it like the other sans-I/O cores: `start(now)`, carry out the actions returned,
    report `request_sent`, feed responses and failures of the probe's transaction, and call
    `on_timer(now)` at `next_deadline()`. Anything about a probe other than the current one
    (a late answer, a stale tag, anything after `stop()`) is ignored.
    """

    def __init__(self, settings: ProbeSettings) -> None:
        self.settings = settings
        self.gateway = settings.gateway or str(settings.dest)
        self.state = ProbeState.IDLE
        self._up = settings.initially_up
        self._streak = 0  # probes in a row whose outcome contradicts `_up`
        self._cseq = 0
        self._due: float | None = None
        self._sent_at = 0.0
        self._tag: str | None = None  # tag of the probe in flight until its key is reported
        self._key: TxnKey | None = None  # transaction of the probe in flight

    @property
    def up(self) -> bool:
        return self._up

    # ----- inputs ---------------------------------------------------------------------------
    def start(self, now: float, delay: float = 0.0) -> list[ProbeAction]:
        """Begin probing; the first probe goes out after `delay` seconds (an owner of many
        probers spreads them over the interval so their OPTIONS do not leave in bursts).
        No HealthChanged is returned for the initial state: the owner reads `up`."""
        self._move(ProbeEvent.START)
        self._due = now + delay
        return self.on_timer(now)

    def stop(self) -> None:
        """Stop probing. A probe in flight runs out in the transaction layer; its outcome is
        ignored."""
        self._move(ProbeEvent.STOP)
        self._due = None
        self._tag = self._key = None

    def request_sent(self, tag: str, key: TxnKey) -> None:
        if self.state is ProbeState.PROBING and tag == self._tag:
            self._key = key
            self._tag = None

    def on_response(self, key: TxnKey, response: Response, now: float) -> list[ProbeAction]:
        if not self._current(key) or response.status < 200:
            # A provisional response ends nothing: Timer F still runs (RFC 3261 §17.1.2.2).
            return []
        status = f"{response.status} {response.reason}".rstrip()
        return self._outcome(response.status not in self.settings.dead_statuses, status, now)

    def on_failure(self, key: TxnKey, reason: str, now: float) -> list[ProbeAction]:
        """The probe's transaction timed out or the transport could not deliver it; `reason`
        is the transaction layer's event name ('TimedOut', 'TransportFailed')."""
        if not self._current(key):
            return []
        return self._outcome(False, _FAILURE_TEXT.get(reason, reason), now)

    def next_deadline(self) -> float | None:
        return self._due if self.state is ProbeState.WAITING else None

    def on_timer(self, now: float) -> list[ProbeAction]:
        if self.state is not ProbeState.WAITING or self._due is None or now < self._due:
            return []  # early, stale or cancelled timer
        self._move(ProbeEvent.SEND)
        self._due = None
        self._sent_at = now
        self._cseq += 1
        self._tag = f"options-{self._cseq}"
        self._key = None
        return [SendProbe(self._build_options(), self.settings.dest, self._tag)]

    # ----- internals ------------------------------------------------------------------------
    def _move(self, event: ProbeEvent) -> None:
        target = _TRANSITIONS.get((self.state, event))
        if target is None:
            raise ProbeStateError(self.state, event)
        self.state = target

    def _current(self, key: TxnKey) -> bool:
        return self.state is ProbeState.PROBING and self._key is not None and key == self._key

    def _outcome(self, alive: bool, detail: str, now: float) -> list[ProbeAction]:
        self._move(ProbeEvent.ANSWER)
        self._key = None
        actions: list[ProbeAction] = []
        settings = self.settings
        if alive == self._up:
            self._streak = 0
        else:
            self._streak += 1
            needed = settings.up_after if alive else settings.down_after
            if self._streak >= needed:
                self._up = alive
                self._streak = 0
                what = "answered" if alive else "failed"
                noun = "probe" if needed == 1 else "probes"
                reason = f"{needed} OPTIONS {noun} {what} in a row, last: {detail}"
                actions.append(HealthChanged(settings.trunk, self.gateway, alive, reason))
        interval = settings.interval
        if not self._up and settings.down_interval is not None:
            interval = settings.down_interval
        # Cadence counts from when the probe left; an answer later than that (a timeout
        # takes 64*T1 = 32 s, longer than the default interval) sends the next one at once.
        self._due = max(self._sent_at + interval, now)
        return actions

    def _build_options(self) -> Request:
        settings = self.settings
        host = settings.via_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        headers = [
            (
                "Via",
                f"SIP/2.0/{settings.via_transport.upper()} {host}:{settings.via_port}"
                f";rport;branch={new_branch()}",
            ),
            ("Max-Forwards", "70"),
            # Each probe is a new request outside any dialog, so it gets a new From tag
            # and Call-ID (RFC 3261 §8.1.1.3, §8.1.1.4); the CSeq keeps counting anyway, so
            # a trace shows which probe of the series it is. The Call-ID has no host part:
            # nothing of ours to leak (as the B2BUA's leg B).
            ("From", f"<{settings.from_uri}>;tag={new_tag()}"),
            ("To", f"<{settings.to_uri}>"),
            ("Call-ID", secrets.token_hex(16)),
            ("CSeq", f"{self._cseq} OPTIONS"),
            ("Accept", "application/sdp"),  # RFC 3261 §11.1: SHOULD be present
        ]
        if settings.user_agent:
            headers.append(("User-Agent", settings.user_agent))
        return Request("OPTIONS", settings.request_uri, headers)
