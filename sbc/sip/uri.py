"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966): parse, compare, serialize."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from sbc.sip.errors import ParseError

# RFC 3261 §25.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_WSP_RE = re.compile(r"[ \t\r\n]")
_HOST_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+")


def split_scheme(text: str) -> tuple[str, str]:
    """Return (scheme, rest) of an absolute URI, or raise ParseError."""
    colon = text.find(":")
    if colon <= 0 or not _SCHEME_RE.fullmatch(text, 0, colon):
        raise ParseError(f"URI {text[:60]!r} has no scheme")
    return text[:colon].lower(), text[colon + 1 :]


def parse_params(text: str, what: str) -> dict[str, str | None]:
    """Parse ';name=value;flag' (text starts after the first ';' or is empty).

    Names are lower-cased; values are kept as written (quoted strings with their quotes).
    """
    params: dict[str, str | None] = {}
    if not text:
        return params
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        name = name.strip(" \t").lower()
        if not name:
            raise ParseError(f"{what}: empty parameter")
        params[name] = value.strip(" \t") if eq else None
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join([f";{k}" if v is None else f";{k}={v}" for k, v in params.items()])


@dataclass(slots=True)
class SipUri:
    """sip: or sips: URI. `user`, `password`, param values and headers stay escaped as
    received; comparisons unescape (RFC 3261 §19.1.4)."""

    scheme: str
    user: str | None
    password: str | None
    host: str
    port: int | None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str = ""

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    def host_port(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        userinfo = ""
        if self.user is not None:
            userinfo = self.user + (f":{self.password}" if self.password is not None else "") + "@"
        headers = f"?{self.headers}" if self.headers else ""
        return f"{self.scheme}:{userinfo}{self.host_port()}{format_params(self.params)}{headers}"

    def equivalent(self, other: object) -> bool:
        """URI equality per RFC 3261 §19.1.4."""
        if not isinstance(other, SipUri) or self.scheme != other.scheme:
            return False
        if _unq(self.user) != _unq(other.user) or _unq(self.password) != _unq(other.password):
            return False
        if self.host.lower() != other.host.lower() or self.port != other.port:
            return False
        mine = {k: _unq_lower(v) for k, v in self.params.items()}
        theirs = {k: _unq_lower(v) for k, v in other.params.items()}
        # user, ttl, method, maddr and transport must match if present in either URI;
        # other parameters only when present in both.
        for key in ("user", "ttl", "method", "maddr", "transport"):
            if mine.get(key) != theirs.get(key):
                return False
        for key in mine.keys() & theirs.keys():
            if mine[key] != theirs[key]:
                return False
        return _header_set(self.headers) == _header_set(other.headers)


@dataclass(slots=True)
class TelUri:
    """tel: URI (RFC 3966): the number and its parameters."""

    number: str
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def scheme(self) -> str:
        return "tel"

    def __str__(self) -> str:
        return f"tel:{self.number}{format_params(self.params)}"


@dataclass(slots=True)
class OtherUri:
    """Any other absolute URI: kept opaque."""

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"


Uri = SipUri | TelUri | OtherUri


def _unq(value: str | None) -> str | None:
    return None if value is None else unquote(value, errors="surrogateescape")


def _unq_lower(value: str | None) -> str | None:
    return None if value is None else unquote(value, errors="surrogateescape").lower()


def _header_set(headers: str) -> frozenset[tuple[str, str]]:
    if not headers:
        return frozenset()
    out = set()
    for part in headers.split("&"):
        name, _, value = part.partition("=")
        out.add((unquote(name).lower(), unquote(value, errors="surrogateescape")))
    return frozenset(out)


def parse_uri(text: str) -> Uri:
    """Parse an absolute URI; sip/sips strictly, tel loosely, anything else opaque."""
    if not text or _WSP_RE.search(text) is not None:
        raise ParseError(f"URI {text[:60]!r} is empty or contains whitespace")
    scheme, rest = split_scheme(text)
    if scheme in ("sip", "sips"):
        return _parse_sip(scheme, rest, text)
    if scheme == "tel":
        number, _, params = rest.partition(";")
        if not number:
            raise ParseError(f"tel URI {text[:60]!r} has no number")
        return TelUri(number, parse_params(params, "tel URI"))
    return OtherUri(scheme, rest)


def _parse_sip(scheme: str, rest: str, text: str) -> SipUri:
    # The user part may hold ';', '?' and '/' (RFC 3261 §25.1 user-unreserved) but never a
    # raw '@', and neither may parameters or headers: the host part starts after the last '@'.
    at = rest.rfind("@")
    user: str | None = None
    password: str | None = None
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, colon, pw = userinfo.partition(":")
        password = pw if colon else None
        if not user:
            raise ParseError(f"SIP URI {text[:60]!r} has an empty user part")
    rest, _, headers = rest.partition("?")
    hostport, _, params = rest.partition(";")
    match = _HOST_RE.match(hostport)
    if not match:
        raise ParseError(f"SIP URI {text[:60]!r} has no valid host")
    host = match.group()
    tail = hostport[match.end() :]
    port: int | None = None
    if tail:
        if tail[0] != ":" or not tail[1:].isdigit() or len(tail) > 6:
            raise ParseError(f"SIP URI {text[:60]!r} has a bad port")
        port = int(tail[1:])
        if port > 65535:
            raise ParseError(f"SIP URI {text[:60]!r} port out of range")
    return SipUri(scheme, user, password, host, port, parse_params(params, "SIP URI"), headers)
