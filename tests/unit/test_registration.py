"""Trunk registration client (trunks.registration) driven with a virtual clock against a
fake registrar built from sbc.sip.message and the server side of sbc.sip.auth."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from sbc.sip.auth import (
    DigestServer,
    VerifyResult,
    VerifyStatus,
    parse_credentials,
)
from sbc.sip.message import Request, Response, make_response, parse
from sbc.sip.peer import Peer
from sbc.sip.transaction import MAGIC_COOKIE, TxnKey
from trunks.registration import (
    Registration,
    RegistrationAction,
    RegistrationChanged,
    RegistrationSettings,
    RegistrationState,
    RegistrationStateError,
    RegistrationStatus,
    SendRegister,
    backoff_delay,
    granted_expiry,
    refresh_delay,
)

T0 = 1_000.0
PASSWORD = "s3cr3t-Pa55word!"
REALM = "itsp.example.com"
PROXY_REALM = "proxy.example.com"
SECRET = b"registration-test-secret-0123456789"
PROXY = Peer("udp", "192.0.2.20", 5060)
AOR = "sip:+4930123@itsp.example.com"
CONTACT = "sip:+4930123@203.0.113.2:5060"
REGISTRAR = "sip:itsp.example.com"

Headers = Sequence[tuple[str, str]]


def make_settings(**overrides: Any) -> RegistrationSettings:
    values: dict[str, Any] = {
        "trunk": "itsp",
        "registrar": REGISTRAR,
        "aor": AOR,
        "contact": CONTACT,
        "proxy": PROXY,
        "local_host": "203.0.113.2",
        "local_port": 5060,
        "password": PASSWORD,
        "user_agent": "sbc-test",
    }
    values.update(overrides)
    return RegistrationSettings(**values)


class Harness:
    """Plays the adapter: assigns transaction keys, keeps what was sent and reported."""

    def __init__(self, reg: Registration) -> None:
        self.reg = reg
        self.sent: list[tuple[TxnKey, Request]] = []
        self.changes: list[RegistrationState] = []
        self.actions: list[RegistrationAction] = []

    def take(self, actions: list[RegistrationAction]) -> list[Request]:
        new: list[Request] = []
        for action in actions:
            self.actions.append(action)
            if isinstance(action, SendRegister):
                assert action.dest == self.reg.settings.proxy
                key = TxnKey(False, action.request.via.branch or "", "REGISTER")
                self.reg.request_sent(action.tag, key)
                # What the far end sees: the serialized request, parsed again.
                wire = parse(bytes(action.request))
                assert isinstance(wire, Request)
                wire.check()
                self.sent.append((key, wire))
                new.append(wire)
            else:
                assert isinstance(action, RegistrationChanged)
                assert action.trunk == self.reg.settings.trunk
                self.changes.append(action.state)
        return new

    def start(self, now: float = T0) -> Request:
        sent = self.take(self.reg.start(now))
        assert len(sent) == 1
        return sent[0]

    @property
    def last(self) -> Request:
        return self.sent[-1][1]

    @property
    def key(self) -> TxnKey:
        return self.sent[-1][0]

    def respond(
        self, status: int, now: float, headers: Headers = (), reason: str | None = None
    ) -> list[Request]:
        request = self.last
        response = make_response(request, status, reason, to_tag="reg1", headers=headers)
        wire = parse(bytes(response))
        assert isinstance(wire, Response)
        return self.take(self.reg.on_response(self.key, wire, now))

    def fail(self, now: float, reason: str = "TimedOut") -> list[Request]:
        return self.take(self.reg.on_failure(self.key, reason, now))

    def timer(self, now: float) -> list[Request]:
        return self.take(self.reg.on_timer(now))

    @property
    def state(self) -> RegistrationState:
        return self.reg.state


class Registrar:
    """Answers REGISTERs like a registrar with digest authentication (DigestServer)."""

    def __init__(
        self,
        *,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        qop: Sequence[str] = ("auth",),
        password: str = PASSWORD,
        realm: str = REALM,
        nonce_lifetime: float = 300.0,
        grant: int | None = None,
        proxy: bool = False,
    ) -> None:
        self.server = DigestServer(
            realm,
            SECRET,
            algorithms=algorithms,
            qop=qop,
            accept_no_qop=not qop,
            nonce_lifetime=nonce_lifetime,
        )
        self.password = password
        self.grant = grant
        self.status = 407 if proxy else 401
        self.challenge_header = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        self.credentials_header = "Proxy-Authorization" if proxy else "Authorization"
        self.results: list[VerifyResult] = []

    def lookup(self, username: str, realm: str) -> str | None:
        return self.password if username == "+4930123" else None

    def check(self, request: Request, now: float) -> tuple[int, list[tuple[str, str]]] | None:
        """None when the request is authenticated; else the challenge to answer with."""
        value = request.header(self.credentials_header)
        if value is None:
            return self.status, self.challenge(now)
        result = self.server.verify(
            value,
            method=request.method,
            request_uri=request.uri,
            now=now,
            password_lookup=self.lookup,
        )
        self.results.append(result)
        if result.status is VerifyStatus.STALE:
            return self.status, self.challenge(now, stale=True)
        if not result.ok:
            return self.status, self.challenge(now)
        return None

    def challenge(self, now: float, *, stale: bool = False) -> list[tuple[str, str]]:
        return [(self.challenge_header, v) for v in self.server.challenge(now, stale=stale)]

    def ok(self, request: Request) -> tuple[int, list[tuple[str, str]]]:
        expires = request.header("Expires") or "0"
        granted = expires if self.grant is None or expires == "0" else str(self.grant)
        return 200, [("Contact", f"<{CONTACT}>;expires={granted}")]

    def handle(self, request: Request, now: float) -> tuple[int, list[tuple[str, str]]]:
        return self.check(request, now) or self.ok(request)


def exchange(h: Harness, registrars: Iterable[Registrar], now: float, limit: int = 8) -> int:
    """Let the registration talk to the chain (proxy first) until it stops sending; returns
    how many requests went."""
    chain = list(registrars)
    count = 0
    while count < limit:
        request = h.last
        count += 1
        answer: tuple[int, list[tuple[str, str]]] | None = None
        for hop in chain:
            answer = hop.check(request, now)
            if answer is not None:
                break
        status, headers = answer if answer is not None else chain[-1].ok(request)
        if not h.respond(status, now, headers):
            return count
    raise AssertionError("registration kept sending")


def registered(h: Harness, registrar: Registrar | None = None, now: float = T0) -> Registrar:
    registrar = registrar or Registrar()
    h.start(now)
    exchange(h, [registrar], now)
    assert h.state.status is RegistrationStatus.REGISTERED
    return registrar


def creds_of(request: Request, header: str = "Authorization") -> Any:
    value = request.header(header)
    assert value is not None, f"no {header} in the REGISTER"
    return parse_credentials(value)


# --------------------------------------------------------------------------- the request


def test_register_request_rfc3261_10_2() -> None:
    h = Harness(Registration(make_settings(route=("<sip:edge.itsp.example.com;lr>",))))
    req = h.start()
    assert req.method == "REGISTER"
    assert req.uri == REGISTRAR  # §10.2: the registrar's domain, no user part
    assert req.to.uri == AOR and req.to.tag is None
    assert req.from_.uri == AOR and req.from_tag
    assert req.call_id == h.reg.call_id
    assert (req.cseq.number, req.cseq.method) == (1, "REGISTER")
    (contact,) = req.contacts or []
    assert contact.uri == CONTACT and contact.params["expires"] == "3600"
    assert req.header("Expires") == "3600"
    via = req.via
    assert (via.transport, via.host, via.port) == ("UDP", "203.0.113.2", 5060)
    assert via.branch is not None and via.branch.startswith(MAGIC_COOKIE)
    assert "rport" in via.params
    assert req.max_forwards == 70
    assert req.header("User-Agent") == "sbc-test"
    assert req.header("Route") == "<sip:edge.itsp.example.com;lr>"
    assert not req.has_header("Allow")
    assert not req.has_header("Authorization")
    assert req.body == b""


def test_via_transport_follows_the_proxy_and_ipv6_is_bracketed() -> None:
    settings = make_settings(
        proxy=Peer("tls", "192.0.2.20", 5061),
        local_host="2001:db8::2",
        local_port=5061,
        contact="sip:+4930123@[2001:db8::2]:5061;transport=tls",
        user_agent=None,
    )
    req = Harness(Registration(settings)).start()
    assert (req.header("Via") or "").startswith("SIP/2.0/TLS [2001:db8::2]:5061;rport")
    assert not req.has_header("User-Agent")


def test_start_reports_registering_and_arms_the_guard() -> None:
    h = Harness(Registration(make_settings()))
    assert h.state.status is RegistrationStatus.UNREGISTERED
    h.start()
    assert [s.status for s in h.changes] == [RegistrationStatus.REGISTERING]
    assert h.reg.next_deadline() == T0 + 64.0
    assert h.state.next_attempt is None


def test_start_twice_names_the_state() -> None:
    h = Harness(Registration(make_settings()))
    h.start()
    with pytest.raises(RegistrationStateError, match="start\\(\\) while registering"):
        h.reg.start(T0)


def test_two_registrations_never_share_call_id_or_tag() -> None:
    a, b = Registration(make_settings()), Registration(make_settings())
    assert a.call_id != b.call_id
    assert a.from_tag != b.from_tag
    ra, rb = Harness(a).start(), Harness(b).start()
    assert ra.call_id != rb.call_id and ra.from_tag != rb.from_tag
    assert ra.via.branch != rb.via.branch


# --------------------------------------------------------------------------- digest


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_digest_answer_verified_by_server_qop_auth(algorithm: str) -> None:
    registrar = Registrar(algorithms=(algorithm,))
    h = Harness(Registration(make_settings()))
    h.start()
    assert exchange(h, [registrar], T0) == 2
    assert [r.status for r in registrar.results] == [VerifyStatus.OK]
    creds = creds_of(h.last)
    assert creds.algorithm == algorithm
    assert (creds.qop, creds.nc, creds.username, creds.realm) == (
        "auth",
        "00000001",
        "+4930123",
        REALM,
    )
    assert creds.uri == REGISTRAR
    assert h.last.cseq.number == 2 and h.last.call_id == h.sent[0][1].call_id
    assert h.state.status is RegistrationStatus.REGISTERED


def test_strongest_challenge_answered_first_rfc8760_2_4() -> None:
    server = DigestServer(REALM, SECRET, algorithms=("MD5", "SHA-256", "SHA-512-256"))
    offered = server.challenge(T0)
    h = Harness(Registration(make_settings()))
    h.start()
    # Weakest first on the wire: the client must still pick SHA-512-256.
    h.respond(401, T0, [("WWW-Authenticate", v) for v in reversed(offered)])
    creds = creds_of(h.last)
    assert creds.algorithm == "SHA-512-256"
    result = server.verify(
        h.last.header("Authorization") or "",
        method="REGISTER",
        request_uri=h.last.uri,
        now=T0,
        password_lookup=lambda u, r: PASSWORD,
    )
    assert result.ok


def test_challenge_without_qop_rfc2069_answered_but_not_reused() -> None:
    registrar = Registrar(algorithms=("MD5",), qop=(), grant=600)
    h = Harness(Registration(make_settings()))
    registered(h, registrar)
    creds = creds_of(h.last)
    assert creds.qop is None and creds.nc is None
    assert registrar.results[-1].ok
    refresh = h.timer(T0 + 480)[0]
    # Without nc a nonce answers once: the refresh waits for a fresh challenge.
    assert not refresh.has_header("Authorization")


def test_proxy_407_then_registrar_401_both_answered() -> None:
    proxy = Registrar(realm=PROXY_REALM, proxy=True)
    registrar = Registrar()
    h = Harness(Registration(make_settings()))
    h.start()
    assert exchange(h, [proxy, registrar], T0) == 3
    last = h.last
    assert creds_of(last, "Proxy-Authorization").realm == PROXY_REALM
    assert creds_of(last, "Proxy-Authorization").nc == "00000002"  # same proxy nonce again
    assert creds_of(last).realm == REALM
    assert all(r.ok for r in proxy.results + registrar.results)
    assert h.state.status is RegistrationStatus.REGISTERED
    assert h.state.failures == 0


def test_configured_realm_picks_that_challenge() -> None:
    other = DigestServer("evil.example.net", SECRET, algorithms=("SHA-512-256",))
    ours = DigestServer(REALM, SECRET, algorithms=("MD5",))
    h = Harness(Registration(make_settings(realm=REALM)))
    h.start()
    headers = [("WWW-Authenticate", v) for v in other.challenge(T0) + ours.challenge(T0)]
    h.respond(401, T0, headers)
    assert creds_of(h.last).realm == REALM


def test_challenge_for_another_realm_only_is_a_failure() -> None:
    other = DigestServer("evil.example.net", SECRET)
    h = Harness(Registration(make_settings(realm=REALM)))
    h.start()
    assert h.respond(401, T0, [("WWW-Authenticate", v) for v in other.challenge(T0)]) == []
    state = h.state
    assert state.status is RegistrationStatus.FAILED and state.last_status == 401
    assert "evil.example.net" in state.last_reason and REALM in state.last_reason


def test_unsupported_algorithm_only_is_a_failure() -> None:
    h = Harness(Registration(make_settings()))
    h.start()
    h.respond(401, T0, [("WWW-Authenticate", 'Digest realm="x", nonce="n", algorithm=SHA-1')])
    assert h.state.status is RegistrationStatus.FAILED
    assert "no usable Digest challenge" in h.state.last_reason


def test_401_without_digest_challenge_is_a_failure() -> None:
    h = Harness(Registration(make_settings()))
    h.start()
    h.respond(401, T0, [("WWW-Authenticate", 'Basic realm="x"')])
    assert h.state.status is RegistrationStatus.FAILED
    assert "without a Digest WWW-Authenticate" in h.state.last_reason


def test_challenged_without_password_is_a_failure() -> None:
    h = Harness(Registration(make_settings(password=None)))
    h.start()
    assert h.respond(401, T0, Registrar().challenge(T0)) == []
    assert h.state.status is RegistrationStatus.FAILED
    assert "no password configured" in h.state.last_reason


def test_challenged_without_any_username_is_a_failure() -> None:
    h = Harness(Registration(make_settings(aor="sip:itsp.example.com")))
    h.start()
    assert h.respond(401, T0, Registrar().challenge(T0)) == []
    assert h.state.status is RegistrationStatus.FAILED
    assert "cannot answer the challenge: no username" in h.state.last_reason


def test_auth_username_overrides_aor_user() -> None:
    h = Harness(Registration(make_settings(username="trunk1", auth_username="auth-007")))
    h.start()
    h.respond(401, T0, Registrar().challenge(T0))
    assert creds_of(h.last).username == "auth-007"
    h2 = Harness(Registration(make_settings(username="trunk1")))
    h2.start()
    h2.respond(401, T0, Registrar().challenge(T0))
    assert creds_of(h2.last).username == "trunk1"


def test_stale_nonce_answered_without_counting_a_failure_rfc7616_3_3() -> None:
    registrar = Registrar(nonce_lifetime=300.0)
    h = Harness(Registration(make_settings()))
    h.start(T0)
    h.respond(401, T0, registrar.challenge(T0))
    first = creds_of(h.last)
    # The answer reaches the registrar after the nonce expired: right password, old nonce.
    late = T0 + 400
    assert exchange(h, [registrar], late) == 2
    assert [r.status for r in registrar.results] == [VerifyStatus.STALE, VerifyStatus.OK]
    second = creds_of(h.last)
    assert second.nonce != first.nonce and second.nc == "00000001"
    assert h.state.status is RegistrationStatus.REGISTERED
    assert h.state.failures == 0
    assert RegistrationStatus.FAILED not in {s.status for s in h.changes}


def test_endless_stale_challenges_end_in_failure() -> None:
    registrar = Registrar()
    h = Harness(Registration(make_settings()))
    h.start()
    for _ in range(10):
        if not h.respond(401, T0, registrar.challenge(T0, stale=True)):
            break
    assert len(h.sent) <= 6
    assert h.state.status is RegistrationStatus.FAILED
    assert "keeps challenging" in h.state.last_reason


# --------------------------------------------------------------------------- wrong credentials


def test_wrong_password_second_401_is_failed_with_backoff() -> None:
    registrar = Registrar(password="the-right-one")
    h = Harness(Registration(make_settings(), rand=lambda: 0.0))
    h.start()
    assert exchange(h, [registrar], T0) == 2
    state = h.state
    assert state.status is RegistrationStatus.FAILED
    assert state.last_status == 401
    assert "authentication failed" in state.last_reason
    assert state.failures == 1
    assert state.next_attempt == T0 + 30.0
    assert h.reg.next_deadline() == T0 + 30.0


def test_wrong_password_delays_grow_to_the_cap_with_jitter_bounds() -> None:
    draws = iter([0.0, 0.999, 0.5, 0.0, 0.999, 0.5, 0.0, 0.999, 0.5, 0.0])
    registrar = Registrar(password="the-right-one")
    h = Harness(Registration(make_settings(), rand=lambda: next(draws)))
    now = T0
    h.start(now)
    delays: list[float] = []
    for _ in range(10):
        assert exchange(h, [registrar], now) == 2  # each retry starts unauthenticated
        state = h.state
        assert state.status is RegistrationStatus.FAILED
        assert state.next_attempt is not None
        delays.append(state.next_attempt - now)
        now = state.next_attempt
        assert h.timer(now - 0.001) == []  # early timer: nothing
        assert len(h.timer(now)) == 1
        assert not h.last.has_header("Authorization")  # the rejected challenge is dropped
    nominal = [30, 60, 120, 240, 480, 960, 1800, 1800, 1800, 1800]
    assert h.reg.state.failures == 10
    for delay, base in zip(delays, nominal, strict=True):
        assert base * 0.8 <= delay <= base
    assert delays[0] == 30 and delays[1] == pytest.approx(60 * (1 - 0.2 * 0.999))
    assert delays[6] == 1800 and delays[7] == pytest.approx(1800 * (1 - 0.2 * 0.999))


def test_backoff_delay_bounds_with_a_real_random_source() -> None:
    rng = random.Random(7)
    for failures in range(1, 40):
        nominal = min(1800.0, 30.0 * 2 ** (failures - 1))
        delay = backoff_delay(failures, minimum=30.0, maximum=1800.0, jitter=0.2, rand=rng.random)
        assert nominal * 0.8 <= delay <= nominal


def test_success_resets_failures() -> None:
    h = Harness(Registration(make_settings(), rand=lambda: 0.0))
    h.start()
    h.fail(T0)
    h.timer(T0 + 30)
    h.fail(T0 + 30)
    assert h.state.failures == 2 and h.state.next_attempt == T0 + 30 + 60
    h.timer(T0 + 90)
    exchange(h, [Registrar()], T0 + 90)
    assert h.state.status is RegistrationStatus.REGISTERED
    assert h.state.failures == 0 and h.state.last_status == 200


# --------------------------------------------------------------------------- granted expiry


def test_granted_expiry_from_our_contact_not_what_we_asked_rfc3261_10_2_4() -> None:
    h = Harness(Registration(make_settings()))
    h.start(T0)
    h.respond(
        200,
        T0 + 0.2,
        [
            ("Contact", "<sip:desk@198.51.100.7:5060>;expires=100"),
            ("Contact", f"<{CONTACT}>;expires=600"),
            ("Expires", "1200"),
        ],
    )
    state = h.state
    assert state.status is RegistrationStatus.REGISTERED
    assert state.granted == 600
    assert state.expires_at == T0 + 600  # counted from sending: the safe side
    assert state.next_attempt == T0 + 480  # 120 s margin
    assert h.reg.next_deadline() == T0 + 480


def test_granted_expiry_from_expires_header_when_contact_has_none() -> None:
    h = Harness(Registration(make_settings()))
    h.start(T0)
    h.respond(200, T0, [("Contact", f"<{CONTACT}>"), ("Expires", "300")])
    assert h.state.granted == 300 and h.state.next_attempt == T0 + 180


def test_granted_expiry_falls_back_to_what_we_asked() -> None:
    h = Harness(Registration(make_settings(expires=1800)))
    h.start(T0)
    h.respond(200, T0)
    assert h.state.granted == 1800 and h.state.next_attempt == T0 + 1680


def test_granted_expiry_of_a_contact_rewritten_by_the_registrar() -> None:
    request = Harness(Registration(make_settings())).start()
    response = make_response(
        request,
        200,
        headers=[
            ("Contact", "<sip:+4930123@198.51.100.99:40000>;expires=900"),
            ("Contact", "<sip:desk@198.51.100.7>;expires=100"),
            ("Expires", "3600"),
        ],
    )
    assert granted_expiry(response, CONTACT, 3600) == 900


def test_granted_expiry_ignores_garbage() -> None:
    request = Harness(Registration(make_settings())).start()
    response = make_response(
        request, 200, headers=[("Contact", f"<{CONTACT}>;expires=soon"), ("Expires", "x")]
    )
    assert granted_expiry(response, CONTACT, 3600) == 3600
    huge = make_response(request, 200, headers=[("Expires", "99999999999")])
    assert granted_expiry(huge, CONTACT, 3600) == 2**32 - 1


def test_granted_zero_is_a_failure_not_a_refresh_loop() -> None:
    h = Harness(Registration(make_settings()))
    h.start(T0)
    h.respond(200, T0, [("Contact", f"<{CONTACT}>;expires=0")])
    assert h.state.status is RegistrationStatus.FAILED
    assert h.state.next_attempt is not None and h.state.next_attempt >= T0 + 24


@pytest.mark.parametrize(
    ("granted", "expected"),
    [(3600, 3480), (600, 480), (240, 120), (120, 60), (60, 30), (10, 5)],
)
def test_refresh_margin_rule(granted: int, expected: float) -> None:
    assert refresh_delay(granted, 120.0) == expected


def test_refresh_keeps_call_id_and_from_tag_and_increments_cseq_rfc3261_10_2_4() -> None:
    registrar = Registrar(grant=600)
    h = Harness(Registration(make_settings()))
    registered(h, registrar)
    first = h.last
    assert h.timer(T0 + 479.9) == []
    (refresh,) = h.timer(T0 + 480)
    assert refresh.call_id == first.call_id
    assert refresh.from_tag == first.from_tag
    assert refresh.cseq.number == first.cseq.number + 1
    assert refresh.via.branch != first.via.branch
    assert refresh.header("Expires") == "3600"  # we keep asking for what is configured
    assert h.state.status is RegistrationStatus.REGISTERED  # a refresh keeps the status


def test_refresh_preauthenticates_with_nc_incremented() -> None:
    registrar = Registrar(grant=600, nonce_lifetime=100_000.0)
    h = Harness(Registration(make_settings()))
    registered(h, registrar)
    nonce = creds_of(h.last).nonce
    h.timer(T0 + 480)
    creds = creds_of(h.last)
    assert (creds.nonce, creds.nc) == (nonce, "00000002")
    assert exchange(h, [registrar], T0 + 480) == 1  # accepted without a new challenge
    assert registrar.results[-1].ok
    assert h.state.expires_at == T0 + 480 + 600


def test_challenged_refresh_is_answered_normally() -> None:
    registrar = Registrar(grant=600, nonce_lifetime=300.0)
    h = Harness(Registration(make_settings()))
    registered(h, registrar)
    h.timer(T0 + 480)
    # The nonce aged out: the pre-authenticated refresh gets stale=true, is answered.
    assert exchange(h, [registrar], T0 + 480) == 2
    assert registrar.results[-2].status is VerifyStatus.STALE and registrar.results[-1].ok
    # A registrar that forgot the nonce challenges without stale: still no failure.
    h.timer(T0 + 960)
    assert h.respond(401, T0 + 960, registrar.challenge(T0 + 960))
    exchange(h, [registrar], T0 + 960)
    assert h.state.status is RegistrationStatus.REGISTERED and h.state.failures == 0
    assert RegistrationStatus.FAILED not in {s.status for s in h.changes}


def test_refresh_failure_keeps_the_binding_time_and_retries_before_it_lapses() -> None:
    h = Harness(Registration(make_settings(), rand=lambda: 0.0))
    registered(h, Registrar(grant=600))
    h.timer(T0 + 480)
    h.fail(T0 + 512, "TimedOut")
    state = h.state
    assert state.status is RegistrationStatus.BACKOFF
    assert state.expires_at == T0 + 600
    assert state.next_attempt == T0 + 542 < T0 + 600


def test_binding_lapsing_while_the_refresh_is_in_flight() -> None:
    h = Harness(Registration(make_settings()))
    registered(h, Registrar(grant=60))
    h.timer(T0 + 30)
    assert h.reg.next_deadline() == T0 + 60  # expiry comes before the guard
    h.timer(T0 + 60)
    assert h.state.status is RegistrationStatus.REGISTERING
    assert h.changes[-1].status is RegistrationStatus.REGISTERING


# --------------------------------------------------------------------------- 423


def test_423_retried_at_once_with_min_expires_rfc3261_10_2_8() -> None:
    registrar = Registrar()
    h = Harness(Registration(make_settings(expires=60)))
    h.start(T0)
    h.respond(401, T0, registrar.challenge(T0))
    first_call_id = h.last.call_id
    (retry,) = h.respond(423, T0, [("Min-Expires", "600")])
    assert retry.header("Expires") == "600"
    assert (retry.contacts or [])[0].params["expires"] == "600"
    assert retry.call_id == first_call_id and retry.cseq.number == 3
    assert creds_of(retry).nc == "00000002"  # still authenticated
    exchange(h, [registrar], T0)
    assert h.state.status is RegistrationStatus.REGISTERED and h.state.granted == 600
    assert h.state.failures == 0
    (refresh,) = h.timer(T0 + 480)
    assert refresh.header("Expires") == "600"  # keeps asking for at least Min-Expires


@pytest.mark.parametrize("headers", [[], [("Min-Expires", "30")], [("Min-Expires", "bad")]])
def test_423_without_a_usable_min_expires_is_a_failure(headers: list[tuple[str, str]]) -> None:
    h = Harness(Registration(make_settings(expires=60)))
    h.start(T0)
    assert h.respond(423, T0, headers) == []
    assert h.state.status is RegistrationStatus.FAILED and h.state.last_status == 423


def test_423_that_keeps_rising_is_bounded() -> None:
    h = Harness(Registration(make_settings(expires=60)))
    h.start(T0)
    for minimum in range(100, 1000, 100):
        if not h.respond(423, T0, [("Min-Expires", str(minimum))]):
            break
    assert len(h.sent) == 3
    assert h.state.status is RegistrationStatus.FAILED


# --------------------------------------------------------------------------- other failures


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (403, RegistrationStatus.FAILED),
        (404, RegistrationStatus.FAILED),
        (400, RegistrationStatus.FAILED),
        (302, RegistrationStatus.FAILED),
        (603, RegistrationStatus.FAILED),
        (408, RegistrationStatus.BACKOFF),
        (480, RegistrationStatus.BACKOFF),
        (500, RegistrationStatus.BACKOFF),
        (503, RegistrationStatus.BACKOFF),
    ],
)
def test_final_failures_back_off(status: int, expected: RegistrationStatus) -> None:
    h = Harness(Registration(make_settings(), rand=lambda: 0.0))
    h.start(T0)
    assert h.respond(status, T0 + 1) == []
    state = h.state
    assert state.status is expected
    assert state.last_status == status and state.last_reason.startswith(str(status))
    assert state.next_attempt == T0 + 1 + 30
    assert state.failures == 1


@pytest.mark.parametrize("status", [503, 500, 480, 404])
def test_retry_after_honoured_rfc3261_20_33(status: int) -> None:
    h = Harness(Registration(make_settings(), rand=lambda: 0.0))
    h.start(T0)
    h.respond(status, T0, [("Retry-After", "120 (maintenance);duration=600")])
    assert h.state.next_attempt == T0 + 120
    assert h.timer(T0 + 119) == []
    assert len(h.timer(T0 + 120)) == 1


def test_retry_after_jitter_only_adds() -> None:
    h = Harness(Registration(make_settings(), rand=lambda: 0.999))
    h.start(T0)
    h.respond(503, T0, [("Retry-After", "5")])
    attempt = h.state.next_attempt
    assert attempt is not None and T0 + 5 <= attempt <= T0 + 6


@pytest.mark.parametrize(("value", "wait"), [("999999999", 86_400.0), ("0", 1.0)])
def test_absurd_retry_after_is_clamped(value: str, wait: float) -> None:
    h = Harness(Registration(make_settings(), rand=lambda: 0.0))
    h.start(T0)
    h.respond(503, T0, [("Retry-After", value)])
    assert h.state.next_attempt == T0 + wait


@pytest.mark.parametrize("reason", ["TimedOut", "TransportFailed"])
def test_timeout_and_transport_failure_back_off(reason: str) -> None:
    h = Harness(Registration(make_settings(), rand=lambda: 0.0))
    h.start(T0)
    h.fail(T0 + 32, reason)
    state = h.state
    assert state.status is RegistrationStatus.BACKOFF
    assert (state.last_status, state.last_reason) == (None, reason)
    assert state.next_attempt == T0 + 62
    (retry,) = h.timer(T0 + 62)
    h.fail(T0 + 94, reason)
    assert h.state.next_attempt == T0 + 94 + 60 and h.state.failures == 2
    assert retry.call_id == h.sent[0][1].call_id


def test_guard_when_the_transaction_never_reports_back() -> None:
    h = Harness(Registration(make_settings(), rand=lambda: 0.0))
    h.start(T0)
    stale_key = h.key
    assert h.timer(T0 + 63) == []
    h.timer(T0 + 64)
    assert h.state.status is RegistrationStatus.BACKOFF
    assert "no final response" in h.state.last_reason
    # A very late answer to the abandoned REGISTER changes nothing.
    late = make_response(h.last, 200, headers=[("Expires", "3600")])
    assert h.reg.on_response(stale_key, late, T0 + 65) == []
    assert h.state.status is RegistrationStatus.BACKOFF


def test_provisional_and_unknown_responses_are_ignored() -> None:
    h = Harness(Registration(make_settings()))
    h.start(T0)
    assert h.respond(100, T0) == []
    other = TxnKey(False, "z9hG4bKother", "REGISTER")
    assert h.reg.on_response(other, make_response(h.last, 200), T0) == []
    assert h.reg.on_failure(other, "TimedOut", T0) == []
    assert h.state.status is RegistrationStatus.REGISTERING


def test_changes_reported_only_when_the_state_changes() -> None:
    h = Harness(Registration(make_settings()))
    registered(h, Registrar(grant=600))
    # registering -> registered; answering the challenge changed nothing visible.
    assert [s.status for s in h.changes] == [
        RegistrationStatus.REGISTERING,
        RegistrationStatus.REGISTERED,
    ]
    assert h.take(h.reg.on_timer(T0 + 100)) == [] and len(h.changes) == 2


# --------------------------------------------------------------------------- stop


def test_stop_removes_our_binding_with_expires_0_rfc3261_10_2_2() -> None:
    registrar = Registrar(grant=600, nonce_lifetime=100_000.0)
    h = Harness(Registration(make_settings()))
    registered(h, registrar)
    before = h.last
    (unreg,) = h.take(h.reg.stop(T0 + 10))
    assert h.changes[-1].status is RegistrationStatus.UNREGISTERING
    assert unreg.header("Expires") == "0"
    (contact,) = unreg.contacts or []
    assert contact.uri == CONTACT and contact.params["expires"] == "0"  # never '*'
    assert unreg.call_id == before.call_id and unreg.cseq.number == before.cseq.number + 1
    assert creds_of(unreg).nc == "00000002"
    assert exchange(h, [registrar], T0 + 10) == 1
    assert h.state.status is RegistrationStatus.UNREGISTERED and h.reg.stopped
    assert h.state.expires_at is None
    assert h.reg.next_deadline() is None
    assert h.reg.on_timer(T0 + 10_000) == []
    assert h.reg.stop(T0 + 11) == []


def test_stop_when_not_registered_sends_nothing() -> None:
    reg = Registration(make_settings())
    assert reg.stop(T0) == []  # never started
    h = Harness(reg)
    h.start(T0)
    h.respond(403, T0)
    h.take(reg.stop(T0 + 1))
    assert len([a for a in h.actions if isinstance(a, SendRegister)]) == 1
    assert reg.stopped and h.state.status is RegistrationStatus.UNREGISTERED
    assert len(h.take(reg.start(T0 + 2))) == 1  # a stopped registration may start again


def test_stop_challenged_unregister_is_answered() -> None:
    registrar = Registrar(grant=600, nonce_lifetime=300.0)
    h = Harness(Registration(make_settings()))
    registered(h, registrar)
    h.take(h.reg.stop(T0 + 400))
    assert exchange(h, [registrar], T0 + 400) == 2  # stale nonce, answered
    assert h.last.header("Expires") == "0"
    assert h.reg.stopped and h.state.last_status == 200


def test_stop_while_register_in_flight_waits_then_unregisters() -> None:
    h = Harness(Registration(make_settings()))
    h.start(T0)
    assert h.take(h.reg.stop(T0 + 0.1)) == []  # §10.2: one REGISTER at a time
    assert h.state.status is RegistrationStatus.UNREGISTERING
    (unreg,) = h.respond(200, T0 + 0.2, [("Contact", f"<{CONTACT}>;expires=3600")])
    assert unreg.header("Expires") == "0"
    h.respond(200, T0 + 0.3)
    assert h.reg.stopped


def test_stop_while_initial_register_is_challenged_ends_without_more() -> None:
    h = Harness(Registration(make_settings()))
    h.start(T0)
    h.take(h.reg.stop(T0))
    assert h.respond(401, T0, Registrar().challenge(T0)) == []
    assert h.reg.stopped and len(h.sent) == 1


def test_stop_while_refresh_is_challenged_unregisters_with_that_challenge() -> None:
    registrar = Registrar(grant=600)
    h = Harness(Registration(make_settings()))
    registered(h, registrar)
    h.timer(T0 + 480)
    h.take(h.reg.stop(T0 + 480))
    (unreg,) = h.respond(401, T0 + 480, registrar.challenge(T0 + 480))
    assert unreg.header("Expires") == "0"
    assert exchange(h, [registrar], T0 + 480) == 1
    assert registrar.results[-1].ok and h.reg.stopped


def test_unregister_failure_still_finishes() -> None:
    h = Harness(Registration(make_settings()))
    registered(h, Registrar(grant=600, nonce_lifetime=100_000.0))
    h.take(h.reg.stop(T0 + 1))
    h.fail(T0 + 33)
    assert h.reg.stopped and h.state.last_reason == "TimedOut"
    assert h.reg.next_deadline() is None


# --------------------------------------------------------------------------- secrets


def test_password_and_digest_never_in_repr_or_state() -> None:
    settings = make_settings()
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)
    assert "password='***'" in repr(settings)
    assert "password=None" in repr(make_settings(password=None))
    registrar = Registrar(password="wrong-one")
    h = Harness(Registration(settings))
    h.start(T0)
    exchange(h, [registrar], T0)  # ends in an authentication failure
    digest = creds_of(h.last).response
    texts = [repr(h.reg), str(h.reg), repr(h.state), h.state.last_reason]
    texts += [repr(a) for a in h.actions] + [str(a) for a in h.actions]
    for text in texts:
        assert PASSWORD not in text
        assert digest not in text


def test_settings_errors_never_show_the_password() -> None:
    with pytest.raises(ValueError, match="password must not contain") as info:
        make_settings(password=PASSWORD + "\r\nX-Injected: 1")
    assert PASSWORD not in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"registrar": "itsp.example.com"}, "registrar"),
        ({"aor": "tel:+4930123"}, "aor must be a sip"),
        ({"expires": 0}, "expires"),
        ({"backoff_min": 60.0, "backoff_max": 30.0}, "backoff_min"),
        ({"backoff_jitter": 1.0}, "backoff_jitter"),
        ({"local_port": 0}, "local_port"),
    ],
)
def test_settings_validation(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_settings(**overrides)


# --------------------------------------------------------------------------- moving registrar


def test_retarget_registers_at_once_at_the_new_address_without_old_nonces() -> None:
    h = Harness(Registration(make_settings()))
    registered(h)
    sent_before = len(h.sent)
    moved = Peer("udp", "192.0.2.99", 5080)
    new = h.take(h.reg.retarget(moved, T0 + 10))
    # A new server knows neither our binding nor our nonces: REGISTER now, unauthenticated.
    assert len(new) == 1 and len(h.sent) == sent_before + 1
    assert h.reg.settings.proxy == moved
    assert new[0].header("Authorization") is None
    exchange(h, [Registrar()], T0 + 10)
    assert h.state.status is RegistrationStatus.REGISTERED


def test_retarget_to_the_same_address_does_nothing() -> None:
    h = Harness(Registration(make_settings()))
    registered(h)
    assert h.reg.retarget(PROXY, T0 + 10) == []


def test_retarget_during_backoff_keeps_the_delay() -> None:
    h = Harness(Registration(make_settings(), rand=lambda: 0.0))
    h.start()
    h.fail(T0 + 1)
    state = h.state
    assert state.status is RegistrationStatus.BACKOFF and state.next_attempt is not None
    moved = Peer("udp", "192.0.2.99", 5080)
    assert h.take(h.reg.retarget(moved, T0 + 2)) == []
    assert h.state.next_attempt == state.next_attempt
    again = h.timer(state.next_attempt)
    assert len(again) == 1 and h.reg.settings.proxy == moved
