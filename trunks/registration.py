"""One trunk registration as a sans-I/O SIP registration client (RFC 3261 §10.2): REGISTER,
digest answers (RFC 7616/8760), refresh before the granted expiry, back-off on failure.

The adapter drives it like a Call (sbc.b2bua.api)::

    reg = Registration(settings)
    actions = reg.start(now)
    for each SendRegister(request, dest, tag):
        key, txn_actions = transactions.send_request(request, dest, now)
        reg.request_sent(tag, key)          # before anything else reaches `reg`
    ResponseReceived(key, response) -> reg.on_response(key, response, now)   (1xx are ignored)
    TimedOut(key) / TransportFailed(key) -> reg.on_failure(key, "TimedOut", now)
    re-arm one timer at reg.next_deadline(); when it passes -> reg.on_timer(now)
    shutdown: reg.stop(now), then wait (bounded) for status 'unregistered'

Only one REGISTER is ever in flight (RFC 3261 §10.2: no new REGISTER before the final
response to the previous one). RegistrationChanged is returned whenever `state` changes,
for logging and state display. No password or digest response ever appears in a repr, a
reason or an exception message from this module.
"""

from __future__ import annotations

import enum
import math
import random
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

from sbc.sip.auth import (
    Challenge,
    ClientNonceCounter,
    DigestError,
    DigestParseError,
    NoUsableChallengeError,
    build_credentials,
    choose_challenge,
    parse_challenges,
)
from sbc.sip.errors import ParseError
from sbc.sip.headers import NameAddr
from sbc.sip.message import Request, Response, new_tag
from sbc.sip.peer import Peer
from sbc.sip.transaction import TxnKey, new_branch
from sbc.sip.uri import SipUri, parse_uri

__all__ = [
    "RegistrationAction",
    "Registration",
    "RegistrationChanged",
    "RegistrationSettings",
    "RegistrationState",
    "RegistrationStateError",
    "RegistrationStatus",
    "SendRegister",
    "backoff_delay",
    "granted_expiry",
    "refresh_delay",
]

_MAX_DELTA = 2**32 - 1  # RFC 3261 §20.19: larger Expires values are taken as 2**32-1
_MAX_CSEQ = 2**31 - 1  # RFC 3261 §8.1.1.5
_MAX_RETRY_AFTER = 86_400.0  # a day: past that a Retry-After is a misconfiguration, not advice
_MIN_RETRY_AFTER = 1.0  # 'Retry-After: 0' on every answer must not become a busy loop
_MIN_REFRESH_INTERVAL = 1.0  # never refresh sooner than this after a 2xx, whatever was granted
# Requests in one attempt: initial, proxy and registrar challenges, a stale nonce, a 423 and
# an answer after it. Past this the registrar is going round in circles.
_MAX_REQUESTS_PER_ATTEMPT = 6
_MAX_INTERVAL_RETRIES = 2  # 423 answers per attempt (Min-Expires must only ever go up)
_REASON_MAX = 120
_DELTA_RE = re.compile(r"[ \t]*([0-9]{1,12})")


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class RegistrationSettings:
    """What one registration needs, decided by config and the adapter.

    `registrar` is the Request-URI ('sip:itsp.example.com'), `aor` the To/From URI
    ('sip:+4930123@itsp.example.com'), `contact` our Contact URI on the external interface
    (the caller builds it: host, port and transport of that listener). REGISTERs go to
    `proxy` (the caller resolves the outbound proxy or registrar to an address); its
    transport is the Via transport. `local_host`/`local_port` are our Via sent-by there.
    `route` pre-loads Route headers (e.g. '<sip:proxy.itsp.example.com;lr>').

    Digest: `auth_username` defaults to `username`, which defaults to the AoR user part.
    With `realm` set, only challenges of that realm are answered.
    """

    trunk: str
    registrar: str
    aor: str
    contact: str
    proxy: Peer
    local_host: str
    local_port: int
    username: str | None = None
    auth_username: str | None = None
    password: str | None = None
    realm: str | None = None
    expires: int = 3600
    user_agent: str | None = None
    route: tuple[str, ...] = ()
    # Refresh this long before the binding expires, but at most half-way through it (see
    # refresh_delay): 120 s leaves room for a refresh that times out (Timer F, 32 s) plus a
    # retry after the minimum back-off before the binding lapses.
    refresh_margin: float = 120.0
    backoff_min: float = 30.0
    backoff_max: float = 1800.0
    backoff_jitter: float = 0.2  # up to this fraction comes off each back-off delay
    # Safety net beyond Timer F (64*T1 = 32 s by default): a REGISTER whose transaction never
    # reported back (a lost callback) must not leave the registration stuck.
    request_guard: float = 64.0

    def __post_init__(self) -> None:
        where = f"trunk {self.trunk!r} registration"
        for name in ("registrar", "aor", "contact"):
            text = getattr(self, name)
            try:
                uri = parse_uri(text)
            except ParseError as exc:
                raise ValueError(f"{where}: {name} {text[:60]!r} is not a URI: {exc}") from None
            if not isinstance(uri, SipUri):
                raise ValueError(f"{where}: {name} must be a sip: or sips: URI, got {text[:60]!r}")
        for name in ("username", "auth_username", "password", "realm", "user_agent"):
            value = getattr(self, name)
            if value is not None and any(c in value for c in "\r\n\x00"):
                # Named, never shown: the password must not reach an error message.
                raise ValueError(f"{where}: {name} must not contain a line break or NUL")
        if not 1 <= self.expires <= _MAX_DELTA:
            raise ValueError(f"{where}: expires must be 1..{_MAX_DELTA} seconds")
        if not 0 < self.local_port < 65536:
            raise ValueError(f"{where}: local_port {self.local_port} is not a port")
        if not 0 < self.backoff_min <= self.backoff_max:
            raise ValueError(f"{where}: need 0 < backoff_min <= backoff_max")
        if not 0 <= self.backoff_jitter < 1:
            raise ValueError(f"{where}: backoff_jitter must be in [0, 1)")
        if not self.refresh_margin >= 0:
            raise ValueError(f"{where}: refresh_margin must not be negative")
        if not self.request_guard > 0:
            raise ValueError(f"{where}: request_guard must be positive")

    @property
    def digest_username(self) -> str | None:
        """The username digest answers carry."""
        if self.auth_username:
            return self.auth_username
        if self.username:
            return self.username
        uri = parse_uri(self.aor)
        return uri.user if isinstance(uri, SipUri) else None

    def __repr__(self) -> str:
        # The password is masked so settings can be logged or shown in a traceback.
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "password" and value is not None:
                parts.append("password='***'")
            else:
                parts.append(f"{f.name}={value!r}")
        return f"RegistrationSettings({', '.join(parts)})"

    __str__ = __repr__


# --------------------------------------------------------------------------- state


class RegistrationStatus(enum.StrEnum):
    REGISTERING = "registering"  # a REGISTER is in flight and no binding is known to live
    REGISTERED = "registered"  # the registrar granted a binding; refreshes keep this status
    BACKOFF = "backoff"  # the last attempt failed for a passing reason (timeout, 5xx)
    FAILED = "failed"  # refused for a reason an operator must fix: credentials, 403, 404...
    UNREGISTERING = "unregistering"  # stop(): the Expires: 0 REGISTER is in flight
    UNREGISTERED = "unregistered"  # not started, or stopped


@dataclass(frozen=True, slots=True)
class RegistrationState:
    """What a display or log line shows about one registration. Times are the adapter's
    clock (the `now` given to the methods)."""

    status: RegistrationStatus
    expires_at: float | None  # when the last granted binding lapses; None: none known
    last_status: int | None  # final status of the last outcome; None: none or no response
    last_reason: str  # reason phrase, or what went wrong locally ('TimedOut', ...)
    next_attempt: float | None  # when the next REGISTER (refresh or retry) goes
    failures: int  # consecutive failed attempts; 0 after a 2xx
    granted: int | None = None  # seconds the registrar granted last time


class RegistrationStateError(RuntimeError):
    """A method was called in a state where it makes no sense (names both)."""


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class SendRegister:
    """Send `request` to `dest` in a new client transaction and report its TxnKey through
    `Registration.request_sent(tag, key)` before handing the registration anything else."""

    request: Request
    dest: Peer
    tag: str


@dataclass(frozen=True, slots=True)
class RegistrationChanged:
    """`state` differs from the last one reported (for a log line and the state display)."""

    trunk: str
    aor: str
    state: RegistrationState


RegistrationAction = SendRegister | RegistrationChanged


# --------------------------------------------------------------------------- rules


def refresh_delay(granted: float, margin: float) -> float:
    """Seconds after sending a REGISTER at which to refresh a binding granted for `granted`
    seconds: `margin` before it lapses, but never later than half-way through it.

    3600 s -> 3480 s, 600 s -> 480 s, 240 s -> 120 s, 60 s -> 30 s (margin 120 s). Half-way
    for short bindings leaves as much room for a retry as for the binding itself.
    """
    return granted - min(granted / 2.0, margin)


def backoff_delay(
    failures: int,
    *,
    minimum: float,
    maximum: float,
    jitter: float,
    rand: Callable[[], float],
) -> float:
    """Delay before the next attempt after `failures` consecutive failures (>= 1): the
    nominal delay doubles from `minimum` up to `maximum`; up to `jitter` of it is taken off
    at random so trunks that failed together (a registrar restart) do not retry together.
    The result lies in [nominal * (1 - jitter), nominal]."""
    nominal = min(maximum, minimum * 2.0 ** min(max(failures, 1) - 1, 40))
    return nominal * (1.0 - jitter * rand())


def _delta_seconds(text: str | None) -> int | None:
    """A delta-seconds value (RFC 3261 §25.1), with comments or parameters after it ignored
    (Retry-After: 120 (maintenance);duration=60)."""
    if text is None:
        return None
    match = _DELTA_RE.match(text)
    if match is None:
        return None
    return min(int(match.group(1)), _MAX_DELTA)


def granted_expiry(response: Response, contact: str, requested: int) -> int:
    """How long the registrar bound `contact`, from its 2xx to REGISTER (RFC 3261 §10.2.4):
    the expires parameter of our Contact among those listed, else the Expires header, else
    what we asked for.

    Our Contact is found by URI equivalence (§19.1.4); failing that, the one listed Contact
    with our user part (a NAT-aware registrar may have rewritten host and port).
    """
    ours = parse_uri(contact)
    try:
        listed = response.contacts or []  # None is the '*' wildcard: not a binding list
    except ParseError:
        listed = []
    matched: list[NameAddr] = []
    same_user: list[NameAddr] = []
    for entry in listed:
        try:
            theirs = parse_uri(entry.uri)
        except ParseError:
            continue
        if not isinstance(theirs, SipUri) or not isinstance(ours, SipUri):
            continue
        if ours.equivalent(theirs):
            matched.append(entry)
        elif theirs.scheme == ours.scheme and theirs.user == ours.user:
            same_user.append(entry)
    if not matched and len(same_user) == 1:
        matched = same_user
    for entry in matched:
        value = entry.params.get("expires")
        seconds = _delta_seconds(value)
        if seconds is not None:
            return seconds
    header = _delta_seconds(response.header("Expires"))
    if header is not None:
        return header
    return requested


def _is_passing(status: int) -> bool:
    """Failures that go away by themselves: the registrar is busy or unreachable. Every other
    refusal (3xx, other 4xx, 6xx) needs someone to change the configuration."""
    return status in (408, 480) or 500 <= status < 600


def _reason_text(response: Response) -> str:
    text = f"{response.status} {response.reason}"
    return "".join(c if c.isprintable() else " " for c in text)[:_REASON_MAX]


# --------------------------------------------------------------------------- the client


class _Phase(enum.Enum):
    NEW = "new"  # start() not called yet
    IDLE = "idle"  # waiting for next_attempt (a refresh or a retry)
    IN_FLIGHT = "in-flight"  # one REGISTER sent; waiting for its final response
    DONE = "done"  # stopped


# Authorization header we answer with, keyed by the status that challenged us.
_ANSWER_HEADER = {401: "Authorization", 407: "Proxy-Authorization"}
_CHALLENGE_HEADER = {401: "WWW-Authenticate", 407: "Proxy-Authenticate"}


@dataclass(slots=True)
class _StoredChallenge:
    challenge: Challenge
    used: bool = False  # answered at least once (later uses pre-authenticate)


class Registration:
    """One binding of `settings.contact` to `settings.aor` at one registrar.

    Several registrations of a trunk are several objects; each has its own Call-ID and From
    tag, kept across refreshes with the CSeq going up by one per REGISTER (RFC 3261 §10.2.4).
    `rand` (values in [0, 1)) draws the back-off jitter; tests pass their own.
    """

    def __init__(
        self, settings: RegistrationSettings, *, rand: Callable[[], float] | None = None
    ) -> None:
        self.settings = settings
        self._rand: Callable[[], float] = rand if rand is not None else random.random
        self.call_id = secrets.token_hex(16)
        self.from_tag = new_tag()
        self._cseq = 0
        self._phase = _Phase.NEW
        self._status = RegistrationStatus.UNREGISTERED
        self._stopping = False
        self._expires = settings.expires  # what we ask for; a 423 raises it for good
        self._expires_at: float | None = None
        self._granted: int | None = None
        self._next_attempt: float | None = None
        self._failures = 0
        self._last_status: int | None = None
        self._last_reason = ""
        # The REGISTER in flight.
        self._pending_tag: str | None = None
        self._pending_key: TxnKey | None = None
        self._pending_expires = 0
        self._sent_at = 0.0
        self._guard_at: float | None = None
        # One attempt: a REGISTER and the ones answering its challenges or its 423.
        self._requests = 0
        self._answered: set[str] = set()  # Authorization headers answering a challenge
        self._interval_retries = 0
        # Digest: the last challenge per header, answered again to pre-authenticate refreshes.
        self._challenges: dict[str, _StoredChallenge] = {}
        self._nonces = ClientNonceCounter()
        self._reported = self.state

    def __repr__(self) -> str:
        s = self.settings
        return f"<Registration trunk={s.trunk} aor={s.aor} status={self._status.value}>"

    # ----- what the adapter reads --------------------------------------------------------
    @property
    def state(self) -> RegistrationState:
        return RegistrationState(
            status=self._status,
            expires_at=self._expires_at,
            last_status=self._last_status,
            last_reason=self._last_reason,
            next_attempt=self._next_attempt if self._phase is _Phase.IDLE else None,
            failures=self._failures,
            granted=self._granted,
        )

    @property
    def stopped(self) -> bool:
        """True once stop() has finished (the un-REGISTER answered, failed, or not needed)."""
        return self._phase is _Phase.DONE

    def next_deadline(self) -> float | None:
        if self._phase is _Phase.IDLE:
            return self._next_attempt
        if self._phase is _Phase.IN_FLIGHT and self._guard_at is not None:
            if self._status is RegistrationStatus.REGISTERED and self._expires_at is not None:
                # The binding may lapse while the refresh is still on its way.
                return min(self._guard_at, self._expires_at)
            return self._guard_at
        return None

    # ----- inputs --------------------------------------------------------------------------
    def start(self, now: float) -> list[RegistrationAction]:
        """Send the first REGISTER. Legal before the first start and after stop() finished."""
        if self._phase not in (_Phase.NEW, _Phase.DONE):
            raise RegistrationStateError(
                f"trunk {self.settings.trunk!r} registration: start() while "
                f"{self._status.value} (phase {self._phase.value})"
            )
        self._stopping = False
        self._status = RegistrationStatus.REGISTERING
        return self._report(self._begin_attempt(now))

    def request_sent(self, tag: str, key: TxnKey) -> None:
        if tag == self._pending_tag and self._phase is _Phase.IN_FLIGHT:
            self._pending_key = key

    def on_response(self, key: TxnKey, response: Response, now: float) -> list[RegistrationAction]:
        if self._phase is not _Phase.IN_FLIGHT or key != self._pending_key:
            return []  # an answer to a REGISTER we no longer wait for
        status = response.status
        if status < 200:
            return []
        self._clear_pending()
        actions: list[RegistrationAction]
        if self._stopping and self._pending_expires != 0:
            actions = self._outcome_while_stopping(response, now)
        elif 200 <= status < 300:
            actions = self._on_success(response, now)
        elif status in _ANSWER_HEADER:
            actions = self._on_challenge(response, now)
        elif status == 423:
            actions = self._on_interval_too_brief(response, now)
        else:
            retry_after = _delta_seconds(response.header("Retry-After"))
            actions = self._fail(
                now,
                status,
                _reason_text(response),
                alarm=not _is_passing(status),
                retry_after=retry_after,
            )
        return self._report(actions)

    def on_failure(self, key: TxnKey, reason: str, now: float) -> list[RegistrationAction]:
        """The REGISTER's transaction timed out or could not be sent; `reason` is shown."""
        if self._phase is not _Phase.IN_FLIGHT or key != self._pending_key:
            return []
        self._clear_pending()
        return self._report(self._fail(now, None, reason[:_REASON_MAX], alarm=False))

    def on_timer(self, now: float) -> list[RegistrationAction]:
        actions: list[RegistrationAction] = []
        if self._phase is _Phase.IN_FLIGHT:
            if self._guard_at is not None and now >= self._guard_at:
                self._clear_pending()
                reason = f"no final response within {self.settings.request_guard:g} s"
                actions = self._fail(now, None, reason, alarm=False)
            elif (
                self._status is RegistrationStatus.REGISTERED
                and self._expires_at is not None
                and now >= self._expires_at
            ):
                self._status = RegistrationStatus.REGISTERING  # lapsed before the refresh came
        elif self._phase is _Phase.IDLE:
            if self._next_attempt is not None and now >= self._next_attempt:
                actions = self._begin_attempt(now)
        return self._report(actions)

    def stop(self, now: float) -> list[RegistrationAction]:
        """Remove our binding (Expires: 0 with our Contact, never '*': other bindings of the
        AoR belong to someone else). Nothing is sent when no binding is known to live; a
        REGISTER in flight is let finish first (RFC 3261 §10.2)."""
        if self._phase in (_Phase.NEW, _Phase.DONE) or self._stopping:
            return []
        self._stopping = True
        self._status = RegistrationStatus.UNREGISTERING
        if self._phase is _Phase.IN_FLIGHT:
            return self._report([])
        return self._report(self._unregister_or_finish(now))

    def retarget(self, proxy: Peer, now: float) -> list[RegistrationAction]:
        """Send REGISTERs to `proxy` from now on: DNS moved the registrar, or the last one
        stopped answering and the trunk has another address. The new server knows neither
        our binding nor our nonces, so stored challenges are dropped, and a live or
        pending binding is registered there at once rather than at the next refresh. A
        REGISTER in flight finishes where it went; a back-off keeps its delay."""
        if proxy == self.settings.proxy:
            return []
        self.settings = replace(self.settings, proxy=proxy)
        self._challenges.clear()
        if (
            self._phase is _Phase.IDLE
            and not self._stopping
            and self._status is RegistrationStatus.REGISTERED
        ):
            return self._report(self._begin_attempt(now))
        return []

    # ----- attempts ------------------------------------------------------------------------
    def _begin_attempt(self, now: float) -> list[RegistrationAction]:
        self._requests = 0
        self._answered.clear()
        self._interval_retries = 0
        if not self._stopping and self._status is not RegistrationStatus.REGISTERED:
            self._status = RegistrationStatus.REGISTERING
        return self._send(now)

    def _send(self, now: float, *, answering: bool = False) -> list[RegistrationAction]:
        """Send the next REGISTER of this attempt. With `answering` (a challenge has just
        come), raises DigestError when it cannot be answered; otherwise credentials that
        cannot be built are left out and the registrar will challenge."""
        s = self.settings
        expires = 0 if self._stopping else self._expires
        auth = self._auth_headers(strict=answering)
        if self._cseq >= _MAX_CSEQ:
            # Out of sequence numbers for this Call-ID: start a new one (§10.2.4 allows it).
            self.call_id = secrets.token_hex(16)
            self._cseq = 0
        self._cseq += 1
        self._requests += 1
        host = s.local_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        headers: list[tuple[str, str]] = [
            (
                "Via",
                f"SIP/2.0/{s.proxy.transport.upper()} {host}:{s.local_port};rport"
                f";branch={new_branch()}",
            ),
            ("Max-Forwards", "70"),
            *(("Route", route) for route in s.route),
            ("From", f"<{s.aor}>;tag={self.from_tag}"),
            ("To", f"<{s.aor}>"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self._cseq} REGISTER"),
            # The parameter and the header say the same: some registrars read only one.
            ("Contact", f"<{s.contact}>;expires={expires}"),
            ("Expires", str(expires)),
            *auth,
        ]
        if s.user_agent:
            headers.append(("User-Agent", s.user_agent))
        request = Request("REGISTER", s.registrar, headers)
        tag = f"register-{self._cseq}"
        self._phase = _Phase.IN_FLIGHT
        self._pending_tag = tag
        self._pending_key = None
        self._pending_expires = expires
        self._sent_at = now
        self._guard_at = now + s.request_guard
        self._next_attempt = None
        return [SendRegister(request, s.proxy, tag)]

    def _clear_pending(self) -> None:
        self._pending_tag = None
        self._pending_key = None
        self._guard_at = None

    def _auth_headers(self, *, strict: bool) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for header, stored in list(self._challenges.items()):
            challenge = stored.challenge
            if stored.used and not challenge.qop:
                # An RFC 2069 answer (no qop, no nc) is good once per nonce: wait for the
                # next challenge instead of replaying it.
                del self._challenges[header]
                continue
            try:
                value = self._answer(challenge)
            except DigestError:
                del self._challenges[header]
                if strict and not stored.used:
                    raise
                continue
            stored.used = True
            out.append((header, value))
        return out

    def _answer(self, challenge: Challenge) -> str:
        s = self.settings
        username = s.digest_username
        if username is None:
            raise DigestError("no username configured to answer the digest challenge")
        if s.password is None:
            raise DigestError("no password configured to answer the digest challenge")
        return build_credentials(
            challenge,
            username=username,
            password=s.password,
            method="REGISTER",
            uri=s.registrar,
            cnonce=secrets.token_hex(8),
            nc=self._nonces.next_nc(challenge.nonce),
        )

    # ----- outcomes ------------------------------------------------------------------------
    def _on_success(self, response: Response, now: float) -> list[RegistrationAction]:
        self._last_status, self._last_reason = response.status, _reason_text(response)
        if self._pending_expires == 0:  # our un-REGISTER
            self._expires_at = None
            self._granted = None
            return self._finish()
        # RFC 3261 §10.2.4: what the registrar granted, not what we asked (TRAPS #7).
        granted = granted_expiry(response, self.settings.contact, self._pending_expires)
        if granted <= 0:
            return self._fail(
                now, response.status, "registrar granted no binding (expires=0)", alarm=True
            )
        self._failures = 0
        self._granted = granted
        # Counted from when we sent the REGISTER: the registrar started its clock later.
        self._expires_at = self._sent_at + granted
        self._status = RegistrationStatus.REGISTERED
        self._phase = _Phase.IDLE
        refresh_at = self._sent_at + refresh_delay(granted, self.settings.refresh_margin)
        self._next_attempt = max(refresh_at, now + _MIN_REFRESH_INTERVAL)
        return []

    def _on_challenge(self, response: Response, now: float) -> list[RegistrationAction]:
        status = response.status
        header = _ANSWER_HEADER[status]
        challenge_header = _CHALLENGE_HEADER[status]
        realm = self.settings.realm
        try:
            offered = parse_challenges(response.header_values(challenge_header))
        except DigestParseError as exc:
            return self._fail(now, status, f"malformed {challenge_header}: {exc}", alarm=True)
        usable = offered if realm is None else [c for c in offered if c.realm == realm]
        if not usable:
            if offered:
                realms = ", ".join(sorted({repr(c.realm) for c in offered}))
                reason = f"challenged for realm {realms}, configured realm is {realm!r}"
            else:
                reason = f"{status} without a Digest {challenge_header}"
            return self._fail(now, status, reason, alarm=True)
        try:
            # RFC 8760 §2.4: several challenges -> the strongest algorithm we support.
            chosen = choose_challenge(usable)
        except NoUsableChallengeError as exc:
            return self._fail(now, status, str(exc), alarm=True)
        if header in self._answered and not chosen.stale:
            # We answered this kind of challenge in this attempt and are challenged again
            # without stale=true (RFC 7616 §3.3): the credentials are wrong.
            self._challenges.pop(header, None)
            reason = f"authentication failed for realm {chosen.realm!r} ({_reason_text(response)})"
            return self._fail(now, status, reason, alarm=True)
        if self._requests >= _MAX_REQUESTS_PER_ATTEMPT:
            return self._fail(now, status, "registrar keeps challenging", alarm=True)
        # stale=true: the credentials were right, only the nonce was old; answer the new one
        # without counting a failure.
        self._challenges[header] = _StoredChallenge(chosen)
        self._answered.add(header)
        try:
            return self._send(now, answering=True)
        except DigestError as exc:
            return self._fail(now, status, f"cannot answer the challenge: {exc}", alarm=True)

    def _on_interval_too_brief(self, response: Response, now: float) -> list[RegistrationAction]:
        minimum = _delta_seconds(response.header("Min-Expires"))
        if (
            self._stopping
            or minimum is None
            or minimum <= self._pending_expires
            or self._interval_retries >= _MAX_INTERVAL_RETRIES
            or self._requests >= _MAX_REQUESTS_PER_ATTEMPT
        ):
            reason = (
                f"{_reason_text(response)}: no usable Min-Expires above {self._pending_expires}"
            )
            return self._fail(now, response.status, reason, alarm=True)
        # RFC 3261 §10.2.8: ask again at once with at least Min-Expires, and keep asking for
        # that on refreshes (else every refresh would meet a 423 first).
        self._expires = minimum
        self._interval_retries += 1
        # A new request round: a one-time nonce may be challenged afresh without that
        # meaning wrong credentials.
        self._answered.clear()
        return self._send(now)

    def _outcome_while_stopping(self, response: Response, now: float) -> list[RegistrationAction]:
        """The REGISTER in flight when stop() came has its answer: learn what it tells about
        the binding and the challenge, then remove the binding if one may live."""
        status = response.status
        self._last_status, self._last_reason = status, _reason_text(response)
        if 200 <= status < 300:
            granted = granted_expiry(response, self.settings.contact, self._pending_expires)
            if granted > 0:
                self._granted = granted
                self._expires_at = self._sent_at + granted
        elif status in _ANSWER_HEADER:
            try:
                chosen = choose_challenge(
                    [
                        c
                        for c in parse_challenges(response.header_values(_CHALLENGE_HEADER[status]))
                        if self.settings.realm in (None, c.realm)
                    ]
                )
                self._challenges[_ANSWER_HEADER[status]] = _StoredChallenge(chosen)
            except DigestError:
                pass  # the un-REGISTER goes without; its own challenge is answered normally
        return self._unregister_or_finish(now)

    def _unregister_or_finish(self, now: float) -> list[RegistrationAction]:
        if self._expires_at is not None and self._expires_at > now:
            self._status = RegistrationStatus.UNREGISTERING
            return self._begin_attempt(now)
        return self._finish()

    def _finish(self) -> list[RegistrationAction]:
        self._phase = _Phase.DONE
        self._status = RegistrationStatus.UNREGISTERED
        self._next_attempt = None
        self._clear_pending()
        return []

    def _fail(
        self,
        now: float,
        status: int | None,
        reason: str,
        *,
        alarm: bool,
        retry_after: int | None = None,
    ) -> list[RegistrationAction]:
        self._last_status, self._last_reason = status, reason
        if self._stopping:
            return self._finish()  # shutting down: no retries
        self._failures += 1
        s = self.settings
        if retry_after is not None:
            # RFC 3261 §21.5.4 / §20.33: not before the registrar said; jitter only adds.
            wait = min(max(float(retry_after), _MIN_RETRY_AFTER), _MAX_RETRY_AFTER)
            delay = wait * (1.0 + s.backoff_jitter * self._rand())
        else:
            delay = backoff_delay(
                self._failures,
                minimum=s.backoff_min,
                maximum=s.backoff_max,
                jitter=s.backoff_jitter,
                rand=self._rand,
            )
        if not math.isfinite(delay) or delay < 0:
            delay = s.backoff_max
        self._phase = _Phase.IDLE
        self._next_attempt = now + delay
        self._status = RegistrationStatus.FAILED if alarm else RegistrationStatus.BACKOFF
        return []

    def _report(self, actions: list[RegistrationAction]) -> list[RegistrationAction]:
        state = self.state
        if state != self._reported:
            self._reported = state
            actions.append(RegistrationChanged(self.settings.trunk, self.settings.aor, state))
        return actions
