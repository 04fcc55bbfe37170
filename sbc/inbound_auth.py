"""Digest authentication of PBX users toward the SBC (RFC 3261 §22, RFC 7616/8760): who may
call or register without coming from a trusted source. Sans-I/O: takes the request and the
clock, says what to answer. Nonces are the DigestServer's: HMAC-stamped, expiring, and
refused when replayed."""

from __future__ import annotations

import os
from dataclasses import dataclass

from sbc.config import Pbx
from sbc.sip.auth import DigestError, DigestServer, VerifyStatus, parse_credentials
from sbc.sip.errors import ParseError
from sbc.sip.message import Request
from sbc.sip.uri import SipUri, parse_uri


@dataclass(frozen=True, slots=True)
class Challenge:
    """Answer 401 (REGISTER) or 407 (anything else) with these headers."""

    status: int
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Refused:
    """Answer 403: wrong password or unknown user (counted by the security policy), or 400
    for credentials that do not parse or name another Request-URI."""

    status: int
    username: str | None
    why: str


@dataclass(frozen=True, slots=True)
class Accepted:
    username: str


Outcome = Challenge | Refused | Accepted


class InboundAuth:
    """One DigestServer per PBX with `auth` users; `check()` decides about one request."""

    def __init__(self, pbxs: tuple[Pbx, ...], secret: bytes | None = None) -> None:
        key = secret or os.urandom(32)
        self.secret = key  # kept across a config reload: nonces already issued stay valid
        self._servers = {
            pbx.name: DigestServer(
                pbx.auth.realm, key, nonce_lifetime=300.0, algorithms=pbx.auth.algorithms
            )
            for pbx in pbxs
            if pbx.auth is not None
        }
        self.failures = 0  # refused answers, for the security policy and metrics

    def check(self, request: Request, pbx: Pbx, now: float) -> Outcome:
        server = self._servers.get(pbx.name)
        auth = pbx.auth
        if server is None or auth is None:
            return Refused(403, None, f"PBX {pbx.name} has no auth users")
        register = request.method == "REGISTER"
        # RFC 3261 §22.1/§22.3: a registrar (UAS) challenges with 401, a proxy-like element
        # (what the SBC is for calls) with 407.
        status, ask, answer = (
            (401, "WWW-Authenticate", "Authorization")
            if register
            else (407, "Proxy-Authenticate", "Proxy-Authorization")
        )
        given = request.header_values(answer)
        # A request may carry credentials for several realms (§22.3): use ours; answers for
        # another realm only are checked anyway, and refused, rather than challenged forever.
        values = [v for v in given if _realm_is(v, auth.realm)] or given
        if not values:
            return Challenge(status, tuple((ask, v) for v in server.challenge(now)))
        result = server.verify(
            values[0],
            method=request.method,
            now=now,
            body=request.body,
            request_uri=_uri_to_check(values[0], request.uri),
            password_lookup=lambda user, realm: auth.password(user),
        )
        if result.ok:
            return Accepted(result.username or "")
        if result.status is VerifyStatus.STALE:
            # The right password on an expired nonce: a fresh one, no failure counted.
            return Challenge(status, tuple((ask, v) for v in server.challenge(now, stale=True)))
        if result.status is VerifyStatus.MALFORMED:
            return Refused(400, result.username, result.reason or "malformed credentials")
        self.failures += 1
        return Refused(403, result.username, f"{result.status.value}: {result.reason}")


def _realm_is(value: str, realm: str) -> bool:
    """Whether credentials are for `realm` (a request may carry several, one per realm)."""
    lowered = value.lower()
    return f'realm="{realm.lower()}"' in lowered or f"realm={realm.lower()}" in lowered


def _uri_to_check(credentials: str, request_uri: str) -> str | None:
    """The Request-URI the credentials' uri must equal (RFC 3261 §22.4), or None to accept
    it: some clients (SIPp among them) put just the host and port of the Request-URI there.
    The uri is inside the hash either way; only a different host or port is refused."""
    try:
        claimed = parse_uri(parse_credentials(credentials).uri)
        target = parse_uri(request_uri)
    except (ParseError, DigestError):
        return request_uri
    if (
        isinstance(claimed, SipUri)
        and isinstance(target, SipUri)
        and (claimed.host.lower(), claimed.port) == (target.host.lower(), target.port)
    ):
        return None
    return request_uri
