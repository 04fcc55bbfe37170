"""Answering a server's digest challenge on a request we sent (RFC 3261 §22.2, RFC 8760):
which header to add, built from the strongest challenge we can answer, and when not to try
again. Sans-I/O; the digest arithmetic is sbc.sip.auth's."""

from __future__ import annotations

import secrets

from sbc.sip.auth import (
    ClientNonceCounter,
    DigestError,
    build_credentials,
    choose_challenge,
    parse_challenges,
)
from sbc.sip.message import Request, Response


class ChallengeAnswerer:
    """Credentials for one peer. `answer()` gives the Authorization (401) or
    Proxy-Authorization (407) header for a challenged request, or None when it must not be
    answered: no usable challenge, another realm than configured, or a repeat challenge of
    a nonce we already answered without `stale=true` (the password is wrong: answering again
    would only loop, RFC 3261 §22.2)."""

    __slots__ = ("username", "_password", "realm", "_counter", "_answered")

    def __init__(self, username: str, password: str, realm: str | None = None) -> None:
        self.username = username
        self._password = password
        self.realm = realm
        self._counter = ClientNonceCounter()
        self._answered: set[str] = set()  # nonces we answered, to tell a refusal from stale

    def __repr__(self) -> str:
        return f"ChallengeAnswerer(username={self.username!r}, realm={self.realm!r})"

    def answer(self, request: Request, response: Response) -> tuple[str, str] | None:
        if response.status == 401:
            name, header = "Authorization", "WWW-Authenticate"
        elif response.status == 407:
            name, header = "Proxy-Authorization", "Proxy-Authenticate"
        else:
            return None
        try:
            offered = parse_challenges(response.header_values(header))
            if self.realm is not None:
                offered = [c for c in offered if c.realm == self.realm]
            challenge = choose_challenge(offered)
        except DigestError:
            return None
        if challenge.nonce in self._answered and not challenge.stale:
            return None  # the same nonce refused again: the credentials are wrong
        if not challenge.stale and self._answered and request.has_header(name):
            return None  # a fresh challenge to a request that already carried credentials
        nc = self._counter.next_nc(challenge.nonce)
        value = build_credentials(
            challenge,
            username=self.username,
            password=self._password,
            method=request.method,
            uri=request.uri,
            cnonce=secrets.token_hex(8),
            nc=nc,
            body=request.body,
        )
        self._answered.add(challenge.nonce)
        return name, value
