"""Digest authentication for SIP (RFC 3261 §22.4, RFC 7616, RFC 8760), sans-I/O.

Client side (trunk registration, or a request an ITSP challenges with 401/407)::

    offered = parse_challenges(resp.header_values("WWW-Authenticate"))  # Proxy-Authenticate on 407
    chosen = choose_challenge(offered)            # strongest algorithm first, RFC 8760 §2.4
    value = build_credentials(chosen, username=user, password=secret, method=req.method,
                              uri=req.uri, body=req.body, cnonce=secrets.token_urlsafe(12),
                              nc=counter.next_nc(chosen.nonce))   # counter: ClientNonceCounter
    req.set_header("Authorization", value)        # Proxy-Authorization on 407

Server side (authenticating requests from the PBX)::

    server = DigestServer("pbx.example.net", secret_key, nonce_lifetime=300.0)
    result = server.verify(req.header("Authorization"), method=req.method, request_uri=req.uri,
                           body=req.body, now=now, password_lookup=lookup)
    OK -> go on; STALE -> 401 with server.challenge(now, stale=True); MALFORMED -> 400;
    anything else -> 401 with server.challenge(now) (and count result.username as a failure).

Nonces are self-validating (timestamp + random + HMAC), so the server keeps no per-challenge
state; it remembers only the highest nc used per nonce, to refuse replays. Nothing in this
module logs, and no password, HA1 or response value ever appears in an exception message.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import math
import os
import re
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

from sbc.sip.errors import ParseError

__all__ = [
    "SUPPORTED_ALGORITHMS",
    "Challenge",
    "ClientNonceCounter",
    "Credentials",
    "DigestError",
    "DigestParseError",
    "DigestServer",
    "NoUsableChallengeError",
    "NotDigestError",
    "UnsupportedAlgorithmError",
    "VerifyResult",
    "VerifyStatus",
    "build_credentials",
    "choose_challenge",
    "choose_per_realm",
    "compute_ha1",
    "compute_response",
    "format_challenge",
    "format_credentials",
    "parse_challenge",
    "parse_challenges",
    "parse_credentials",
]


# --------------------------------------------------------------------------- errors


class DigestError(ValueError):
    """Digest authentication cannot go on; the message says what to change."""


class DigestParseError(ParseError, DigestError):
    """A WWW-Authenticate / Authorization value (or a Proxy- one) breaks the grammar.

    A request carrying such credentials deserves 400 Bad Request (`status`).
    """


class NotDigestError(DigestParseError):
    """The value uses another authentication scheme (Basic, Bearer, ...); `scheme` names it."""

    def __init__(self, scheme: str, what: str) -> None:
        super().__init__(
            f"{what}: authentication scheme '{scheme}' is not supported; only Digest is"
        )
        self.scheme = scheme


class UnsupportedAlgorithmError(DigestError):
    """The challenge or credentials name an algorithm this module cannot compute."""


class NoUsableChallengeError(DigestError):
    """None of the challenges a server offered can be answered."""


# --------------------------------------------------------------------------- hashes


_MASK64 = (1 << 64) - 1


def _first_primes(count: int) -> list[int]:
    primes: list[int] = []
    candidate = 2
    while len(primes) < count:
        if all(candidate % p for p in primes if p * p <= candidate):
            primes.append(candidate)
        candidate += 1
    return primes


def _integer_cube_root(n: int) -> int:
    x = 1 << -(-n.bit_length() // 3)  # a power of two at or above the root
    while True:
        y = (2 * x + n // (x * x)) // 3
        if y >= x:
            return x
        x = y


class _Sha512Fallback:
    """SHA-512/256 (FIPS 180-4 §5.3.6.2, §6.4) in pure Python, for OpenSSL builds without it.

    The round constants and initial values are derived here the way the standard defines
    them (fractional parts of square and cube roots of primes) instead of being tabulated.
    """

    _k: tuple[int, ...] = ()
    _iv_512_256: tuple[int, ...] = ()

    @classmethod
    def _constants(cls) -> tuple[tuple[int, ...], tuple[int, ...]]:
        if not cls._k:
            primes = _first_primes(80)
            cls._k = tuple(_integer_cube_root(p << 192) & _MASK64 for p in primes)
            h0 = [math.isqrt(p << 128) & _MASK64 for p in primes[:8]]
            # FIPS 180-4 §5.3.6: the SHA-512/t IV is SHA-512 of "SHA-512/t" under a tweaked IV.
            tweaked = tuple(h ^ 0xA5A5A5A5A5A5A5A5 for h in h0)
            cls._iv_512_256 = cls._digest_words(tweaked, b"SHA-512/256")
        return cls._k, cls._iv_512_256

    @staticmethod
    def _rotr(x: int, n: int) -> int:
        return ((x >> n) | (x << (64 - n))) & _MASK64

    @classmethod
    def _compress(cls, state: list[int], block: bytes) -> None:
        rotr = cls._rotr
        k = cls._k
        w = list(struct.unpack(">16Q", block))
        for t in range(16, 80):
            a15, a2 = w[t - 15], w[t - 2]
            s0 = rotr(a15, 1) ^ rotr(a15, 8) ^ (a15 >> 7)
            s1 = rotr(a2, 19) ^ rotr(a2, 61) ^ (a2 >> 6)
            w.append((w[t - 16] + s0 + w[t - 7] + s1) & _MASK64)
        a, b, c, d, e, f, g, h = state
        for t in range(80):
            t1 = (
                h + (rotr(e, 14) ^ rotr(e, 18) ^ rotr(e, 41)) + ((e & f) ^ (~e & g)) + k[t] + w[t]
            ) & _MASK64
            t2 = (
                (rotr(a, 28) ^ rotr(a, 34) ^ rotr(a, 39)) + ((a & b) ^ (a & c) ^ (b & c))
            ) & _MASK64
            h, g, f, e, d, c, b, a = g, f, e, (d + t1) & _MASK64, c, b, a, (t1 + t2) & _MASK64
        for i, v in enumerate((a, b, c, d, e, f, g, h)):
            state[i] = (state[i] + v) & _MASK64

    @classmethod
    def _digest_words(cls, iv: tuple[int, ...], data: bytes) -> tuple[int, ...]:
        padded = data + b"\x80" + b"\x00" * ((111 - len(data)) % 128)
        padded += (len(data) * 8).to_bytes(16, "big")
        state = list(iv)
        for off in range(0, len(padded), 128):
            cls._compress(state, padded[off : off + 128])
        return tuple(state)

    @classmethod
    def sha512_256(cls, data: bytes) -> bytes:
        _, iv = cls._constants()
        return struct.pack(">4Q", *cls._digest_words(iv, data)[:4])


def _sha512_256_fallback_hex(data: bytes) -> str:
    return _Sha512Fallback.sha512_256(data).hex()


def _pick_sha512_256() -> Callable[[bytes], str]:
    try:
        hashlib.new("sha512_256", b"")
    except ValueError:
        return _sha512_256_fallback_hex

    def native(data: bytes) -> str:
        return hashlib.new("sha512_256", data).hexdigest()

    return native


def _md5_hex(data: bytes) -> str:
    # usedforsecurity=False keeps MD5 digest working on FIPS-restricted OpenSSL builds;
    # RFC 8760 keeps MD5 only for interoperability.
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class _Algorithm:
    name: str
    hexdigest: Callable[[bytes], str]
    session: bool  # the "-sess" variants fold nonce and cnonce into HA1 (RFC 7616 §3.4.2)
    strength: int  # RFC 8760 §2.4 preference: SHA-512-256 > SHA-256 > MD5
    base: str  # the algorithm whose HA1 a -sess variant starts from


def _algorithm_table() -> dict[str, _Algorithm]:
    table: dict[str, _Algorithm] = {}
    for name, digest, strength in (
        ("SHA-512-256", _pick_sha512_256(), 3),
        ("SHA-256", _sha256_hex, 2),
        ("MD5", _md5_hex, 1),
    ):
        table[name.lower()] = _Algorithm(name, digest, False, strength, name)
        sess = f"{name}-sess"
        table[sess.lower()] = _Algorithm(sess, digest, True, strength, name)
    return table


_ALGORITHMS = _algorithm_table()

#: Every algorithm this module computes, strongest first (RFC 8760 §2.4).
SUPPORTED_ALGORITHMS: tuple[str, ...] = tuple(
    a.name for a in sorted(_ALGORITHMS.values(), key=lambda a: (-a.strength, a.session))
)
_SUPPORTED_QOP = ("auth", "auth-int")


def _algorithm(name: str) -> _Algorithm:
    found = _ALGORITHMS.get(name.lower())
    if found is None:
        raise UnsupportedAlgorithmError(
            f"digest algorithm '{name}' is not supported; use one of {', '.join(SUPPORTED_ALGORITHMS)}"
        )
    return found


def _canonical_algorithm(name: str) -> str:
    found = _ALGORITHMS.get(name.lower())
    return found.name if found is not None else name


def compute_ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """H(username:realm:password) with the hash of `algorithm` (RFC 7616 §3.4.2).

    For a "-sess" algorithm this is still the plain HA1 (what an operator may store instead
    of the password); the session key is derived from it per nonce.
    """
    return _algorithm(algorithm).hexdigest(f"{username}:{realm}:{password}".encode())


def compute_response(
    *,
    algorithm: str,
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None,
    nc: str | None,
    cnonce: str | None,
    body: bytes = b"",
) -> str:
    """The `response` value of RFC 7616 §3.4.1 (qop auth/auth-int) or RFC 2069 (qop absent).

    `ha1` is the plain HA1 from compute_ha1(); `nc` the 8-hex-digit text as sent.
    """
    alg = _algorithm(algorithm)
    h = alg.hexdigest
    if alg.session:
        if cnonce is None:
            raise DigestError(f"algorithm {alg.name} needs a cnonce")
        ha1 = h(f"{ha1}:{nonce}:{cnonce}".encode())
    if qop == "auth-int":
        # RFC 3261 §22.4: with no body, auth-int hashes the empty string.
        ha2 = h(f"{method}:{uri}:{h(body)}".encode())
    elif qop is None or qop == "auth":
        ha2 = h(f"{method}:{uri}".encode())
    else:
        raise DigestError(f"qop '{qop}' is not supported; use auth or auth-int")
    if qop is None:
        return h(f"{ha1}:{nonce}:{ha2}".encode())
    if nc is None or cnonce is None:
        raise DigestError(f"qop={qop} needs both nc and cnonce")
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, slots=True)
class Challenge:
    """One Digest challenge (WWW-Authenticate / Proxy-Authenticate value).

    `algorithm` is canonical ("SHA-256") when known, else as received; `qop` holds the
    offered values lower-cased; `extra` keeps unknown parameters (lower-case names).
    """

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    domain: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class Credentials:
    """One Digest credentials value (Authorization / Proxy-Authorization).

    `nc` is the 8-hex-digit text exactly as sent (it is hashed as text); `qop` is None for
    an RFC 2069 style answer.
    """

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    cnonce: str | None = None
    nc: str | None = None
    qop: str | None = None
    opaque: str | None = None
    extra: dict[str, str] = field(default_factory=dict, hash=False)

    def __repr__(self) -> str:
        # Keep the response out of logs and tracebacks that print the object.
        return (
            f"Credentials(username={self.username!r}, realm={self.realm!r}, uri={self.uri!r}, "
            f"algorithm={self.algorithm!r}, qop={self.qop!r}, nc={self.nc!r})"
        )


# --------------------------------------------------------------------------- parsing

_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_WS = frozenset(" \t\r\n")
_UNQUOTED_STOP = frozenset(' \t\r\n,"')
_NC_RE = re.compile(r"[0-9A-Fa-f]{8}")


def _skip_ws(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in _WS:
        i += 1
    return i


def _read_token(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in _TOKEN_CHARS:
        i += 1
    return i


def _read_quoted(text: str, i: int, what: str, name: str) -> tuple[str, int]:
    """Read the quoted-string opening at text[i]; return (unescaped value, index after it)."""
    close = text.find('"', i + 1)
    if close < 0:
        raise DigestParseError(f"{what}: the quoted value of '{name}' has no closing '\"'")
    if "\\" not in text[i + 1 : close]:
        return text[i + 1 : close], close + 1
    # RFC 3261 §25.1 quoted-pair: a backslash makes the next character literal.
    out: list[str] = []
    j, n = i + 1, len(text)
    while j < n:
        c = text[j]
        if c == "\\":
            if j + 1 >= n:
                break
            out.append(text[j + 1])
            j += 2
        elif c == '"':
            return "".join(out), j + 1
        else:
            out.append(c)
            j += 1
    raise DigestParseError(f"{what}: the quoted value of '{name}' has no closing '\"'")


def _scan(value: str, what: str) -> dict[str, str]:
    """Split a Digest challenge/credentials value into {lower-case name: value}."""
    i = _skip_ws(value, 0)
    end = _read_token(value, i)
    scheme = value[i:end]
    if not scheme:
        raise DigestParseError(f"{what}: expected an authentication scheme such as 'Digest'")
    if scheme.lower() != "digest":
        raise NotDigestError(scheme, what)
    n = len(value)
    i = end
    if i < n and value[i] not in _WS:
        raise DigestParseError(f"{what}: expected a space after 'Digest'")
    params: dict[str, str] = {}
    while True:
        # RFC 7230 §7: empty list elements (stray commas) must be accepted.
        while i < n and (value[i] in _WS or value[i] == ","):
            i += 1
        if i >= n:
            return params
        end = _read_token(value, i)
        if end == i:
            raise DigestParseError(
                f"{what}: unexpected character {value[i]!r} at offset {i}; expected a parameter name"
            )
        name = value[i:end].lower()
        i = _skip_ws(value, end)
        if i >= n or value[i] != "=":
            raise DigestParseError(f"{what}: parameter '{name}' has no '=' and value")
        i = _skip_ws(value, i + 1)
        if i < n and value[i] == '"':
            text, i = _read_quoted(value, i, what, name)
        else:
            start = i
            while i < n and value[i] not in _UNQUOTED_STOP:
                i += 1
            text = value[start:i]
            if not text:
                raise DigestParseError(f"{what}: parameter '{name}' has an empty value")
        if name in params:
            # RFC 7235 §2.1: each parameter name occurs at most once per challenge.
            raise DigestParseError(f"{what}: parameter '{name}' appears more than once")
        params[name] = text
        i = _skip_ws(value, i)
        if i < n and value[i] != ",":
            raise DigestParseError(f"{what}: expected ',' after parameter '{name}' (offset {i})")


def _required(params: dict[str, str], name: str, what: str) -> str:
    value = params.pop(name, None)
    if value is None:
        raise DigestParseError(f"{what}: required parameter '{name}' is missing")
    return value


def parse_challenge(value: str) -> Challenge:
    """Parse one WWW-Authenticate / Proxy-Authenticate value.

    Raises NotDigestError for another scheme and DigestParseError when malformed.
    """
    what = "Digest challenge"
    params = _scan(value, what)
    realm = _required(params, "realm", what)
    nonce = _required(params, "nonce", what)
    algorithm = _canonical_algorithm(params.pop("algorithm", "MD5"))
    qop = tuple(q for q in (p.strip().lower() for p in params.pop("qop", "").split(",")) if q)
    stale = params.pop("stale", "false").lower() == "true"
    return Challenge(
        realm=realm,
        nonce=nonce,
        algorithm=algorithm,
        qop=qop,
        opaque=params.pop("opaque", None),
        stale=stale,
        domain=tuple(params.pop("domain", "").split()),
        extra=params,
    )


def parse_challenges(values: Iterable[str]) -> list[Challenge]:
    """Parse every WWW-Authenticate (or Proxy-Authenticate) header value, skipping other schemes.

    RFC 3261 §25.1 allows one challenge per header line; a malformed Digest one raises.
    """
    found: list[Challenge] = []
    for value in values:
        try:
            found.append(parse_challenge(value))
        except NotDigestError:
            continue
    return found


def _decode_ext_value(text: str, what: str) -> str:
    # RFC 7616 §3.4.4 username* uses the RFC 8187 form UTF-8'lang'percent-encoded.
    charset, sep, rest = text.partition("'")
    _lang, sep2, encoded = rest.partition("'")
    if not sep or not sep2 or charset.lower() != "utf-8":
        raise DigestParseError(f"{what}: 'username*' must look like UTF-8''percent-encoded-name")
    return unquote(encoded, encoding="utf-8", errors="strict")


def parse_credentials(value: str) -> Credentials:
    """Parse one Authorization / Proxy-Authorization value.

    Raises NotDigestError for another scheme and DigestParseError when malformed.
    """
    what = "Digest credentials"
    params = _scan(value, what)
    if "username" not in params and "username*" in params:
        try:
            params["username"] = _decode_ext_value(params.pop("username*"), what)
        except UnicodeDecodeError:
            raise DigestParseError(f"{what}: 'username*' is not valid UTF-8") from None
    username = _required(params, "username", what)
    realm = _required(params, "realm", what)
    nonce = _required(params, "nonce", what)
    uri = _required(params, "uri", what)
    response = _required(params, "response", what)
    algorithm = _canonical_algorithm(params.pop("algorithm", "MD5"))
    qop_raw = params.pop("qop", None)
    qop = qop_raw.strip().lower() if qop_raw is not None else None
    nc = params.pop("nc", None)
    cnonce = params.pop("cnonce", None)
    if nc is not None and _NC_RE.fullmatch(nc) is None:
        raise DigestParseError(f"{what}: nc must be exactly 8 hex digits, got {nc!r}")
    if qop is not None and (nc is None or cnonce is None):
        # RFC 7616 §3.4: with qop the client MUST send cnonce and nc.
        raise DigestParseError(f"{what}: qop={qop} requires both 'nc' and 'cnonce'")
    if cnonce is None and algorithm.lower().endswith("-sess"):
        raise DigestParseError(f"{what}: algorithm {algorithm} requires 'cnonce'")
    return Credentials(
        username=username,
        realm=realm,
        nonce=nonce,
        uri=uri,
        response=response,
        algorithm=algorithm,
        cnonce=cnonce,
        nc=nc,
        qop=qop,
        opaque=params.pop("opaque", None),
        extra=params,
    )


# --------------------------------------------------------------------------- formatting


def _quote(value: str, name: str) -> str:
    # A line break or NUL would end the header and let the value inject new ones.
    if "\r" in value or "\n" in value or "\x00" in value:
        raise DigestError(f"'{name}' must not contain a line break or NUL character")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _extra_param(name: str, value: str) -> str:
    if value and all(c in _TOKEN_CHARS for c in value):
        return f"{name}={value}"
    return f"{name}={_quote(value, name)}"


def format_challenge(challenge: Challenge) -> str:
    """The WWW-Authenticate / Proxy-Authenticate value for `challenge` (RFC 7616 §3.3)."""
    parts = [f"realm={_quote(challenge.realm, 'realm')}"]
    if challenge.domain:
        parts.append(f"domain={_quote(' '.join(challenge.domain), 'domain')}")
    parts.append(f"nonce={_quote(challenge.nonce, 'nonce')}")
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote(challenge.opaque, 'opaque')}")
    if challenge.stale:
        parts.append("stale=TRUE")
    parts.append(f"algorithm={challenge.algorithm}")
    if challenge.qop:
        parts.append(f"qop={_quote(','.join(challenge.qop), 'qop')}")
    parts.extend(_extra_param(k, v) for k, v in challenge.extra.items())
    return "Digest " + ", ".join(parts)


def format_credentials(credentials: Credentials) -> str:
    """The Authorization / Proxy-Authorization value; algorithm, qop and nc go unquoted
    as RFC 7616 §3.4 requires (some servers reject them quoted)."""
    c = credentials
    parts = [
        f"username={_quote(c.username, 'username')}",
        f"realm={_quote(c.realm, 'realm')}",
        f"nonce={_quote(c.nonce, 'nonce')}",
        f"uri={_quote(c.uri, 'uri')}",
        f"response={_quote(c.response, 'response')}",
        f"algorithm={c.algorithm}",
    ]
    if c.cnonce is not None:
        parts.append(f"cnonce={_quote(c.cnonce, 'cnonce')}")
    if c.opaque is not None:
        parts.append(f"opaque={_quote(c.opaque, 'opaque')}")
    if c.qop is not None:
        parts.append(f"qop={c.qop}")
    if c.nc is not None:
        parts.append(f"nc={c.nc}")
    parts.extend(_extra_param(k, v) for k, v in c.extra.items())
    return "Digest " + ", ".join(parts)


# --------------------------------------------------------------------------- client


def _usable_qop(offered: tuple[str, ...]) -> str | None:
    """The qop to answer with: auth when offered, else auth-int; None when none is offered.

    Raises DigestError when only unknown qop values are offered.
    """
    if not offered:
        return None
    if "auth" in offered:
        return "auth"
    if "auth-int" in offered:
        return "auth-int"
    raise DigestError(f"the server offers only unsupported qop values: {', '.join(offered)}")


def _is_usable(challenge: Challenge) -> bool:
    if challenge.algorithm.lower() not in _ALGORITHMS:
        return False
    try:
        _usable_qop(challenge.qop)
    except DigestError:
        return False
    return True


def choose_challenge(challenges: Sequence[Challenge]) -> Challenge:
    """The challenge to answer: the strongest algorithm we support (RFC 8760 §2.4:
    SHA-512-256 > SHA-256 > MD5); among equals, the first offered. Unsupported ones are ignored.

    Raises NoUsableChallengeError when nothing can be answered.
    """
    best: Challenge | None = None
    best_strength = 0
    for ch in challenges:
        if not _is_usable(ch):
            continue
        strength = _ALGORITHMS[ch.algorithm.lower()].strength
        if strength > best_strength:
            best, best_strength = ch, strength
    if best is None:
        offered = ", ".join(sorted({c.algorithm for c in challenges})) or "none"
        raise NoUsableChallengeError(
            f"no usable Digest challenge: server offered algorithms [{offered}], "
            f"we support {', '.join(SUPPORTED_ALGORITHMS)} with qop auth/auth-int"
        )
    return best


def choose_per_realm(challenges: Sequence[Challenge]) -> list[Challenge]:
    """One chosen challenge per realm, in the order realms first appear.

    A forking proxy merges challenges from several realms into one 401/407 and the UAC
    answers each (RFC 3261 §22.3). Realms with nothing usable are left out.
    """
    realms: dict[str, list[Challenge]] = {}
    for ch in challenges:
        realms.setdefault(ch.realm, []).append(ch)
    chosen: list[Challenge] = []
    for group in realms.values():
        try:
            chosen.append(choose_challenge(group))
        except NoUsableChallengeError:
            continue
    return chosen


def build_credentials(
    challenge: Challenge,
    *,
    username: str,
    method: str,
    uri: str,
    cnonce: str,
    nc: int = 1,
    password: str | None = None,
    ha1: str | None = None,
    body: bytes = b"",
) -> str:
    """The Authorization / Proxy-Authorization value answering `challenge`.

    Pass exactly one of `password` or `ha1` (the plain HA1 for the challenge's algorithm,
    see compute_ha1). `uri` is the Request-URI as sent; `body` matters only for auth-int.
    `cnonce` is the caller's random string, `nc` how many times this nonce has been used
    including this time (ClientNonceCounter keeps it).
    """
    if (password is None) == (ha1 is None):
        raise TypeError("build_credentials needs exactly one of password= or ha1=")
    alg = _algorithm(challenge.algorithm)
    qop = _usable_qop(challenge.qop)
    if not 1 <= nc <= 0xFFFFFFFF:
        raise DigestError(f"nc must be between 1 and 0xffffffff, got {nc}")
    sends_cnonce = qop is not None or alg.session
    if sends_cnonce and not cnonce:
        raise DigestError("cnonce must be a non-empty random string")
    if password is not None:
        ha1 = compute_ha1(alg.name, username, challenge.realm, password)
    elif ha1 is None:
        raise TypeError("build_credentials needs exactly one of password= or ha1=")
    nc_text = f"{nc:08x}" if qop is not None else None
    cnonce_sent = cnonce if sends_cnonce else None
    response = compute_response(
        algorithm=alg.name,
        ha1=ha1.lower(),
        nonce=challenge.nonce,
        method=method,
        uri=uri,
        qop=qop,
        nc=nc_text,
        cnonce=cnonce_sent,
        body=body,
    )
    return format_credentials(
        Credentials(
            username=username,
            realm=challenge.realm,
            nonce=challenge.nonce,
            uri=uri,
            response=response,
            algorithm=alg.name,
            cnonce=cnonce_sent,
            nc=nc_text,
            qop=qop,
            opaque=challenge.opaque,
        )
    )


class ClientNonceCounter:
    """The nc value per server nonce: 1 on first use, then one more each reuse (RFC 7616 §3.4).

    Remembers the `max_nonces` most recently used nonces.
    """

    __slots__ = ("_counts", "_max")

    def __init__(self, max_nonces: int = 16) -> None:
        if max_nonces < 1:
            raise ValueError("max_nonces must be at least 1")
        self._counts: dict[str, int] = {}
        self._max = max_nonces

    def next_nc(self, nonce: str) -> int:
        count = self._counts.pop(nonce, 0) + 1
        if count > 0xFFFFFFFF:
            raise DigestError("nc for this nonce is exhausted; get a new challenge")
        if len(self._counts) >= self._max:
            del self._counts[next(iter(self._counts))]
        self._counts[nonce] = count  # re-inserted: most recently used last
        return count

    def forget(self, nonce: str) -> None:
        self._counts.pop(nonce, None)


# --------------------------------------------------------------------------- server


class VerifyStatus(enum.Enum):
    OK = "ok"
    STALE = "stale"  # right answer to an expired nonce: re-challenge with stale=TRUE
    BAD_CREDENTIALS = "bad-credentials"  # wrong password, realm, algorithm or qop
    BAD_NONCE = "bad-nonce"  # a nonce we never issued (forged or from another realm/key)
    REPLAY = "replay"  # nc not above the highest already accepted for this nonce
    MALFORMED = "malformed"  # unparsable, or uri differs from the Request-URI: answer 400
    UNKNOWN_USER = "unknown-user"


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """What DigestServer.verify() decided; `username`/`realm` as claimed, for accounting."""

    status: VerifyStatus
    username: str | None = None
    realm: str | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status is VerifyStatus.OK


PasswordLookup = Callable[[str, str], str | None]
"""(username, realm) -> password, or None for an unknown user."""
Ha1Lookup = Callable[[str, str, str], str | None]
"""(username, realm, algorithm) -> hex HA1 as compute_ha1() gives it, or None. `algorithm`
is the base one ("MD5", "SHA-256", "SHA-512-256"), also when the client used a -sess variant."""

_NONCE_TS = struct.Struct(">q")
_NONCE_RANDOM_LEN = 12
_NONCE_MAC_LEN = 16
_NONCE_RAW_LEN = _NONCE_TS.size + _NONCE_RANDOM_LEN + _NONCE_MAC_LEN  # 36 bytes, 48 base64 chars
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{48}")
_NO_QOP_USED = -1  # marks a nonce spent by an RFC 2069 (qop-less) answer
_MAX_FUTURE = 1.0  # seconds a nonce may appear to come from the future (clock adjustments)


@dataclass(slots=True)
class _NonceUse:
    issued_at: float
    highest_nc: int


class DigestServer:
    """Issues Digest challenges for one realm and verifies the answers.

    `secret` keys the nonce HMAC: keep it the same across restarts and nodes that share
    clients (and use a wall clock for `now`) so nonces stay valid there. Replay state is
    the highest nc accepted per nonce, at most `max_tracked_nonces` entries; a still-valid
    nonce pushed out of that table is answered STALE afterwards, never accepted again.
    An answer without qop (RFC 2069) is accepted once per nonce, and only when
    `accept_no_qop` is set.
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        *,
        nonce_lifetime: float = 300.0,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        qop: Sequence[str] = ("auth",),
        accept_no_qop: bool = True,
        max_tracked_nonces: int = 10_000,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if not realm:
            raise ValueError("realm must not be empty")
        if len(secret) < 16:
            raise ValueError("the nonce secret must be at least 16 random bytes")
        if not nonce_lifetime > 0:
            raise ValueError("nonce_lifetime must be a positive number of seconds")
        if max_tracked_nonces < 1:
            raise ValueError("max_tracked_nonces must be at least 1")
        self._algorithms = self._check_algorithms(algorithms)
        for q in qop:
            if q not in _SUPPORTED_QOP:
                raise ValueError(f"qop '{q}' is not supported; use auth and/or auth-int")
        if not qop and not accept_no_qop:
            raise ValueError("offer at least one qop or set accept_no_qop")
        self.realm = realm
        self._realm_bytes = realm.encode()
        self._secret = secret
        self._lifetime = float(nonce_lifetime)
        self._qop = tuple(qop)
        self._accept_no_qop = accept_no_qop
        self._max_tracked = max_tracked_nonces
        self._random_bytes = random_bytes
        self._used: dict[str, _NonceUse] = {}  # first-use order, oldest first
        self._forgotten_until = -math.inf  # latest issue time of a still-valid nonce evicted

    @staticmethod
    def _check_algorithms(algorithms: Iterable[str]) -> tuple[str, ...]:
        names: list[str] = []
        for name in algorithms:
            try:
                canonical = _algorithm(name).name
            except UnsupportedAlgorithmError as exc:
                raise ValueError(str(exc)) from None
            if canonical not in names:
                names.append(canonical)
        if not names:
            raise ValueError("at least one digest algorithm is needed")
        # RFC 8760 §2.4: one challenge per algorithm, most preferred first.
        names.sort(key=lambda n: -_ALGORITHMS[n.lower()].strength)
        return tuple(names)

    # ---- challenges

    def challenges(
        self, now: float, *, stale: bool = False, algorithms: Sequence[str] | None = None
    ) -> list[Challenge]:
        """Fresh challenges sharing one nonce, one per algorithm, strongest first."""
        names = self._algorithms if algorithms is None else self._check_algorithms(algorithms)
        for name in names:
            if name not in self._algorithms:
                raise ValueError(f"algorithm {name} is not among this server's {self._algorithms}")
        nonce = self._make_nonce(now)
        return [
            Challenge(realm=self.realm, nonce=nonce, algorithm=name, qop=self._qop, stale=stale)
            for name in names
        ]

    def challenge(
        self, now: float, *, stale: bool = False, algorithms: Sequence[str] | None = None
    ) -> list[str]:
        """WWW-Authenticate / Proxy-Authenticate values to send, one header line each."""
        return [
            format_challenge(c) for c in self.challenges(now, stale=stale, algorithms=algorithms)
        ]

    def _mac(self, stamp_and_random: bytes) -> bytes:
        mac = hmac.new(self._secret, stamp_and_random + self._realm_bytes, hashlib.sha256)
        return mac.digest()[:_NONCE_MAC_LEN]

    def _make_nonce(self, now: float) -> str:
        rnd = self._random_bytes(_NONCE_RANDOM_LEN)
        if len(rnd) != _NONCE_RANDOM_LEN:
            raise ValueError(f"random_bytes returned {len(rnd)} bytes, {_NONCE_RANDOM_LEN} needed")
        head = _NONCE_TS.pack(math.floor(now * 1000.0)) + rnd
        return base64.urlsafe_b64encode(head + self._mac(head)).decode("ascii")

    def _nonce_issued_at(self, nonce: str) -> float | None:
        """When we issued `nonce` (seconds), or None when it is not one of ours."""
        if _NONCE_RE.fullmatch(nonce) is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce)
        except (ValueError, binascii.Error):
            return None
        head, mac = raw[:-_NONCE_MAC_LEN], raw[-_NONCE_MAC_LEN:]
        if len(raw) != _NONCE_RAW_LEN or not hmac.compare_digest(mac, self._mac(head)):
            return None
        (millis,) = _NONCE_TS.unpack_from(head)
        return float(millis) / 1000.0

    # ---- verification

    def verify(
        self,
        credentials: str | Credentials,
        *,
        method: str,
        now: float,
        body: bytes = b"",
        request_uri: str | None = None,
        password_lookup: PasswordLookup | None = None,
        ha1_lookup: Ha1Lookup | None = None,
    ) -> VerifyResult:
        """Check an Authorization / Proxy-Authorization value (or parsed Credentials).

        Pass exactly one of `password_lookup` or `ha1_lookup`. With `request_uri`, the
        credentials' uri must equal it (RFC 7616 §3.4.6). A request with several
        credentials should pass the one whose realm is ours.
        """
        if (password_lookup is None) == (ha1_lookup is None):
            raise TypeError("verify needs exactly one of password_lookup= or ha1_lookup=")
        if isinstance(credentials, str):
            try:
                creds = parse_credentials(credentials)
            except DigestParseError as exc:
                return VerifyResult(VerifyStatus.MALFORMED, reason=str(exc))
        else:
            creds = credentials

        def result(status: VerifyStatus, reason: str = "") -> VerifyResult:
            return VerifyResult(status, creds.username, creds.realm, reason)

        if creds.realm != self.realm:
            return result(
                VerifyStatus.BAD_CREDENTIALS, f"credentials are for realm {creds.realm!r}"
            )
        alg = _ALGORITHMS.get(creds.algorithm.lower())
        if alg is None or alg.name not in self._algorithms:
            return result(VerifyStatus.BAD_CREDENTIALS, f"algorithm {creds.algorithm} not offered")
        if creds.qop is None:
            if not self._accept_no_qop:
                return result(VerifyStatus.BAD_CREDENTIALS, "answer without qop not accepted")
        elif creds.qop not in self._qop:
            return result(VerifyStatus.BAD_CREDENTIALS, f"qop {creds.qop} not offered")
        if request_uri is not None and creds.uri != request_uri:
            return result(VerifyStatus.MALFORMED, "the uri parameter differs from the Request-URI")
        issued_at = self._nonce_issued_at(creds.nonce)
        if issued_at is None:
            return result(VerifyStatus.BAD_NONCE, "nonce was not issued by this server")

        ha1: str | None = None
        if password_lookup is not None:
            password = password_lookup(creds.username, creds.realm)
            if password is not None:
                ha1 = compute_ha1(alg.base, creds.username, creds.realm, password)
        elif ha1_lookup is not None:
            ha1 = ha1_lookup(creds.username, creds.realm, alg.base)
        if ha1 is None:
            return result(VerifyStatus.UNKNOWN_USER, "no credentials for this user")
        expected = compute_response(
            algorithm=alg.name,
            ha1=ha1.lower(),
            nonce=creds.nonce,
            method=method,
            uri=creds.uri,
            qop=creds.qop,
            nc=creds.nc,
            cnonce=creds.cnonce,
            body=body,
        )
        if not hmac.compare_digest(expected.encode(), creds.response.lower().encode()):
            return result(VerifyStatus.BAD_CREDENTIALS, "response does not match")

        # RFC 7616 §3.3: stale only once the response proved the user knows the password.
        age = now - issued_at
        if age > self._lifetime or age < -_MAX_FUTURE:
            return result(VerifyStatus.STALE, "nonce expired")
        return self._record_use(creds, issued_at, now, result)

    def _record_use(
        self,
        creds: Credentials,
        issued_at: float,
        now: float,
        result: Callable[[VerifyStatus, str], VerifyResult],
    ) -> VerifyResult:
        self._prune(now)
        nc = _NO_QOP_USED if creds.nc is None else int(creds.nc, 16)
        use = self._used.get(creds.nonce)
        if use is None:
            if issued_at <= self._forgotten_until:
                return result(VerifyStatus.STALE, "nonce no longer tracked")
            if nc == 0:
                return result(VerifyStatus.REPLAY, "nc must start at 00000001")
            while len(self._used) >= self._max_tracked:
                self._evict_oldest(now)
            self._used[creds.nonce] = _NonceUse(issued_at, nc)
            return result(VerifyStatus.OK, "")
        if nc == _NO_QOP_USED or use.highest_nc == _NO_QOP_USED or nc <= use.highest_nc:
            return result(VerifyStatus.REPLAY, "nonce count not above the last one accepted")
        use.highest_nc = nc
        return result(VerifyStatus.OK, "")

    def _prune(self, now: float) -> None:
        # Entries sit in first-use order, which tracks issue order closely enough: expired
        # ones at the front go; any others wait for the size cap.
        used = self._used
        while used:
            oldest = next(iter(used))
            if now - used[oldest].issued_at <= self._lifetime:
                return
            del used[oldest]

    def _evict_oldest(self, now: float) -> None:
        oldest = next(iter(self._used))
        use = self._used.pop(oldest)
        if now - use.issued_at <= self._lifetime:
            # Still valid: without its entry a replay could pass, so refuse all nonces issued
            # up to then (their clients get STALE and simply retry with a new nonce).
            self._forgotten_until = max(self._forgotten_until, use.issued_at)

    @property
    def tracked_nonces(self) -> int:
        """How many nonces the replay table holds (for metrics)."""
        return len(self._used)
