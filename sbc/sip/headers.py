"""Structured SIP header values (RFC 3261 §20, §25.1): Via, name-addr, CSeq and friends.

Parsers take the unfolded header value text and raise ParseError naming the header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

from sbc.sip.errors import ParseError
from sbc.sip.uri import Uri, format_params, parse_params, parse_uri, split_scheme

MAX_CSEQ = 2**31 - 1  # RFC 3261 §8.1.1.5: the sequence number MUST be less than 2**31
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# RFC 3261 §25.1: LWS may stand on both sides of "/" in sent-protocol and around ":" / ";" / "=".
_VIA_HEAD_RE = re.compile(
    r"[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*"
    r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]+(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?:[ \t]*:[ \t]*(\d{1,5}))?[ \t]*"
)
_HOST_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+")


def is_token(text: str) -> bool:
    return _TOKEN_RE.fullmatch(text) is not None


def split_commas(value: str) -> list[str]:
    """Split a header value at commas that are outside quotes and angle brackets."""
    if "," not in value:
        return [value]
    return _split_outside(value, ",", brackets=True)


def _split_outside(text: str, sep: str, *, brackets: bool, strict: bool = False) -> list[str]:
    """Split at `sep` outside quoted strings (and outside <...> when `brackets`); `strict`
    rejects an unterminated quoted string."""
    parts: list[str] = []
    depth = 0
    quoted = False
    start = 0
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif brackets and c == "<":
            depth += 1
        elif brackets and c == ">":
            depth = max(0, depth - 1)
        elif c == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if quoted and strict:
        raise ParseError("unterminated quoted string")
    parts.append(text[start:])
    return parts


def _split_params(text: str, what: str) -> dict[str, str | None]:
    """Parameters after a value: text is '' or starts with ';'. Allows LWS and quoted values."""
    text = text.strip(" \t")
    if not text:
        return {}
    if text[0] != ";":
        raise ParseError(f"{what}: unexpected {text[:20]!r}")
    if not text[1:].strip(" \t"):
        raise ParseError(f"{what}: empty parameter")
    if '"' not in text:
        return parse_params(text[1:], what)
    params: dict[str, str | None] = {}
    for part in _split_outside(text[1:], ";", brackets=False, strict=True):
        name, eq, value = part.partition("=")
        name = name.strip(" \t").lower()
        if not name:
            raise ParseError(f"{what}: empty parameter")
        params[name] = value.strip(" \t") if eq else None
    return params


@dataclass(slots=True)
class Via:
    """One Via value (RFC 3261 §20.42)."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> str | None:
        """The rport value; '' when present without a value (RFC 3581 §3); None when absent."""
        if "rport" not in self.params:
            return None
        return self.params["rport"] or ""

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {self.sent_by()}{format_params(self.params)}"


def parse_vias(value: str) -> list[Via]:
    """Parse one Via header line (possibly several comma-separated values)."""
    if (
        value.startswith("SIP/2.0/")
        and "," not in value
        and '"' not in value
        and "\t" not in value
        and value.count(" ") == 1
    ):
        via = _fast_via(value)
        if via is not None:
            return [via]
    return [_parse_via(part) for part in split_commas(value)]


def _fast_via(value: str) -> Via | None:
    """The usual 'SIP/2.0/UDP host:port;params' with no LWS; None to take the slow path."""
    space = value.find(" ")
    transport = value[8:space]
    hostport, semi, params = value[space + 1 :].partition(";")
    if hostport.startswith("["):
        end = hostport.find("]") + 1
        host, rest = hostport[:end], hostport[end:]
        if end == 0 or (rest and rest[0] != ":"):
            return None
        colon, port = rest[:1], rest[1:]
    else:
        host, colon, port = hostport.partition(":")
    if colon and not port:
        return None  # RFC 3261 §25.1: port = 1*DIGIT after the colon
    if not transport.isalnum() or _HOST_RE.fullmatch(host) is None:
        return None
    if port and (not port.isdigit() or (len(port) >= 5 and (len(port) > 5 or int(port) > 65535))):
        return None
    parsed = _fast_params(semi + params, "Via header") if semi else {}
    return Via(transport.upper(), host, int(port) if port else None, parsed)


def _parse_via(text: str) -> Via:
    m = _VIA_HEAD_RE.match(text)
    if m is None:
        raise ParseError(f"Via header: cannot parse {text.strip()[:40]!r}")
    name, version, transport, host, port = m.groups()
    if name.upper() != "SIP":
        raise ParseError(f"Via header: unknown protocol {name!r}")
    params = _split_params(text[m.end() :], "Via header")
    port_num = int(port) if port is not None else None
    if port_num is not None and port_num > 65535:
        raise ParseError("Via header: port out of range")
    return Via(transport.upper(), host, port_num, params, f"{name.upper()}/{version}")


@dataclass(slots=True)
class NameAddr:
    """A name-addr or addr-spec with header parameters (From, To, Contact, Route...).

    `display` is kept as written (a quoted string keeps its quotes and escapes).
    """

    uri: str
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def parsed_uri(self) -> Uri:
        return parse_uri(self.uri)

    def __str__(self) -> str:
        head = f"{self.display} <{self.uri}>" if self.display else f"<{self.uri}>"
        return head + format_params(self.params)


def _check_display_tokens(display: str, what: str) -> None:
    # RFC 3261 §25.1: display-name = *(token LWS) / quoted-string
    for word in display.split():
        if not is_token(word):
            raise ParseError(f"{what}: display name {display[:40]!r} must be quoted")


_COMMON_SCHEMES = ("sip:", "sips:", "tel:")
_TOKEN_WORDS_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+(?: +[A-Za-z0-9\-.!%*_+`'~]+)*")


def _fast_params(text: str, what: str) -> dict[str, str | None]:
    """';a=b;c' with no LWS and no quotes (the caller checked)."""
    if text.find(";", 1) < 0:  # the common single ;tag=... or ;lr
        name, eq, value = text[1:].partition("=")
        if not name:
            raise ParseError(f"{what}: empty parameter")
        return {name.lower(): value if eq else None}
    params: dict[str, str | None] = {}
    for part in text[1:].split(";"):
        name, eq, value = part.partition("=")
        if not name:
            raise ParseError(f"{what}: empty parameter")
        params[name.lower()] = value if eq else None
    return params


def parse_name_addr(value: str, what: str) -> NameAddr:
    """From/To/Contact/Route value: name-addr or addr-spec, then header parameters."""
    if "\\" not in value and "\t" not in value and "," not in value:
        parsed = _fast_name_addr(value, what)
        if parsed is not None:
            return parsed
    return _parse_name_addr_slow(value, what)


def _fast_name_addr(value: str, what: str) -> NameAddr | None:
    """The usual shapes without LWS around ';' '=' and no escapes; None for the slow path."""
    lt = value.find("<")
    if lt < 0:
        uri, semi, params = value.partition(";")
        if not uri.startswith(_COMMON_SCHEMES) or " " in value or "?" in uri or '"' in value:
            return None
        return NameAddr(uri, None, _fast_params(semi + params, what) if semi else {})
    gt = value.find(">", lt)
    if gt < 0:
        return None
    uri = value[lt + 1 : gt]
    rest = value[gt + 1 :]
    if not uri.startswith(_COMMON_SCHEMES) or " " in uri or " " in rest or '"' in rest:
        return None
    display: str | None = value[:lt].rstrip(" ")
    if display:
        if display[0] == '"':
            if display.count('"') != 2 or display[-1] != '"':
                return None
        elif _TOKEN_WORDS_RE.fullmatch(display) is None:
            return None
    else:
        display = None
    if rest and rest[0] != ";":
        return None
    return NameAddr(uri, display, _fast_params(rest, what) if rest else {})


def _parse_name_addr_slow(value: str, what: str) -> NameAddr:
    text = value.strip(" \t")
    display: str | None = None
    if text.startswith('"'):
        i = 1
        n = len(text)
        while i < n:
            c = text[i]
            if c == "\\":
                i += 2
                continue
            if c == '"':
                break
            i += 1
        else:
            raise ParseError(f"{what}: unterminated quoted display name")
        display = text[: i + 1]
        rest = text[i + 1 :].lstrip(" \t")
        if not rest.startswith("<"):
            raise ParseError(f"{what}: quoted display name not followed by <URI>")
    else:
        lt = text.find("<")
        if lt < 0:
            return _parse_addr_spec(text, what)
        display = text[:lt].rstrip(" \t") or None
        if display is not None:
            _check_display_tokens(display, what)
        rest = text[lt:]
    gt = rest.find(">")
    if gt < 0:
        raise ParseError(f"{what}: '<' without '>'")
    uri = rest[1:gt]
    if not uri or " " in uri or "\t" in uri:
        raise ParseError(f"{what}: whitespace inside <{uri.strip()[:40]}>")
    split_scheme(uri)
    return NameAddr(uri, display, _split_params(rest[gt + 1 :], what))


def _parse_addr_spec(text: str, what: str) -> NameAddr:
    uri, semi, params = text.partition(";")
    uri = uri.rstrip(" \t")
    # RFC 3261 §20: a URI with a comma, question mark or semicolon must be in <>.
    if not uri or any(c in uri for c in ' \t,?"'):
        raise ParseError(f"{what}: URI {uri[:40]!r} must be enclosed in <>")
    try:
        split_scheme(uri)
    except ParseError as exc:
        raise ParseError(f"{what}: {exc}") from None
    return NameAddr(uri, None, _split_params(semi + params, what))


def parse_contacts(value: str) -> list[NameAddr] | None:
    """Contact values of one header line; None for the '*' wildcard (RFC 3261 §10.2.2)."""
    if value.strip(" \t") == "*":
        return None
    return [parse_name_addr(part, "Contact header") for part in split_commas(value)]


class CSeq(NamedTuple):
    """CSeq value (RFC 3261 §20.16); a tuple because it is built for every message."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


METHODS = frozenset(
    {
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "UPDATE",
        "INFO",
        "MESSAGE",
        "NOTIFY",
        "SUBSCRIBE",
        "REFER",
        "PUBLISH",
    }
)


def parse_cseq(value: str) -> CSeq:
    parts = value.split()
    if len(parts) != 2:
        raise ParseError("CSeq header: expected '<number> <method>'")
    number, method = parts
    if not number.isdigit() or len(number) > 10 or int(number) > MAX_CSEQ:
        raise ParseError("CSeq header: sequence number is not a number below 2**31")
    if method not in METHODS and not is_token(method):
        raise ParseError("CSeq header: method is not a token")
    return CSeq(int(number), method)


def parse_uint(value: str, what: str, maximum: int) -> int:
    text = value.strip(" \t")
    if not text.isdigit() or len(text) > 12 or int(text) > maximum:
        raise ParseError(f"{what} header: {text[:20]!r} is not a number in 0..{maximum}")
    return int(text)


def parse_option_tags(values: list[str]) -> list[str]:
    """Require / Proxy-Require / Supported values: comma-separated option tags."""
    tags: list[str] = []
    for value in values:
        for part in value.split(","):
            tag = part.strip(" \t")
            if tag:
                tags.append(tag)
    return tags
