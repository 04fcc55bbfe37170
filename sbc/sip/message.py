"""SIP requests and responses: parse from bytes and serialize back (RFC 3261 §7, §20, §25).

Parsing frames the message, splits the header lines once and validates the headers every
SIP element relies on (Via, From, To, Call-ID, CSeq, Max-Forwards, Content-Length); every
other header is structured only when code asks for it. A message nobody changed serializes
to the very bytes it was parsed from; a changed one is rebuilt with untouched header lines
kept byte-for-byte.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable

from sbc.sip.errors import ParseError
from sbc.sip.headers import (
    METHODS,
    CSeq,
    NameAddr,
    Via,
    is_token,
    parse_contacts,
    parse_cseq,
    parse_name_addr,
    parse_option_tags,
    parse_uint,
    parse_vias,
    split_commas,
)
from sbc.sip.uri import Uri, parse_uri, split_scheme

__all__ = [
    "CSeq",
    "Message",
    "NameAddr",
    "ParseError",
    "Request",
    "Response",
    "Via",
    "error_response",
    "header_key",
    "make_response",
    "new_tag",
    "parse",
]

# RFC 3261 §7.3.3 and the IANA registry of compact forms.
_COMPACT = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}
# Headers that may appear once only (RFC 3261 §7.3.1: not comma-separable).
_SINGLE = ("from", "to", "call-id", "cseq", "max-forwards", "content-length", "content-type")
_REQUIRED = (
    ("to", "To"),
    ("from", "From"),
    ("call-id", "Call-ID"),
    ("cseq", "CSeq"),
    ("via", "Via"),
)
_REQUIRED_KEYS = frozenset(key for key, _ in _REQUIRED)
_SLOT_OF = {"via": "_vias", "from": "_from", "to": "_to", "cseq": "_cseq", "call-id": "_call_id"}
_FOLD_RE = re.compile(r"[ \t]*\r\n[ \t]+")
_VERSION_RE = re.compile(r"SIP/\d+\.\d+", re.IGNORECASE)
_MAX_BODY = 1 << 24
# Header fields a message may carry (folded lines count once): past it parse() refuses the
# message rather than split and index an attacker's thousands of lines. Real messages carry
# a few dozen at most.
MAX_HEADERS = 100

REASONS = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

_KEY_CACHE: dict[str, str] = {}
_KEY_CACHE_MAX = 4096  # names are attacker-controlled: never let the cache grow without bound


def header_key(name: str) -> str:
    """Canonical key of a header name: lower case, compact forms expanded."""
    key = _KEY_CACHE.get(name)
    if key is None:
        key = name.rstrip(" \t").lower()
        if not key or " " in key or "\t" in key or "\n" in key:
            raise ParseError(f"bad header name {name[:30]!r}")
        key = _COMPACT.get(key, key)
        if len(_KEY_CACHE) < _KEY_CACHE_MAX:
            _KEY_CACHE[name] = key
    return key


def _value(line: str) -> str:
    value = line.partition(":")[2]
    if "\n" in value:
        value = _FOLD_RE.sub(" ", value)
    return value.strip(" \t")


def new_tag() -> str:
    return secrets.token_hex(6)


class Message:
    """What requests and responses share. Build with parse(), Request() or Response().

    Header lines are kept as two parallel lists: canonical keys and the lines as received
    (folding included), so lookups are one C-level list.index() and untouched lines are
    written back unchanged.
    """

    __slots__ = ("_keys", "_lines", "_body", "_raw", "_vias", "_from", "_to", "_cseq", "_call_id")

    _keys: list[str]
    _lines: list[str]
    _body: bytes
    _raw: bytes | None
    _vias: list[Via] | None
    _from: NameAddr | None
    _to: NameAddr | None
    _cseq: CSeq | None
    _call_id: str | None

    def _init_fields(self, headers: Iterable[tuple[str, str]], body: bytes) -> None:
        keys: list[str] = []
        lines: list[str] = []
        for name, value in headers:
            keys.append(header_key(name))
            lines.append(f"{name}: {value}")
        if "content-length" not in keys:
            keys.append("content-length")
            lines.append(f"Content-Length: {len(body)}")
        self._keys = keys
        self._lines = lines
        self._body = body
        self._raw = None
        self._vias = self._from = self._to = self._cseq = self._call_id = None

    # ----- generic header access -------------------------------------------------------
    def header(self, name: str) -> str | None:
        """The first value of a header, or None. Names are case-insensitive, compact forms too."""
        try:
            i = self._keys.index(header_key(name))
        except ValueError:
            return None
        return _value(self._lines[i])

    def header_values(self, name: str) -> list[str]:
        """Every header line of that name, in order (values are not split at commas)."""
        key = header_key(name)
        keys = self._keys
        if key not in keys:
            return []
        lines = self._lines
        return [_value(lines[i]) for i, k in enumerate(keys) if k == key]

    def has_header(self, name: str) -> bool:
        return header_key(name) in self._keys

    def headers(self) -> list[tuple[str, str]]:
        """(name as written, value) for every header line, in order."""
        return [(line.partition(":")[0].rstrip(" \t"), _value(line)) for line in self._lines]

    def set_header(self, name: str, value: str) -> None:
        """Replace every line of that name by one (at the first one's place, else at the end)."""
        key = header_key(name)
        line = f"{name}: {value}"
        keys = self._keys
        if key not in keys:
            keys.append(key)
            self._lines.append(line)
        else:
            first = keys.index(key)
            pairs = [(k, ln) for k, ln in zip(keys, self._lines, strict=True) if k != key]
            pairs.insert(first, (key, line))
            self._keys = [p[0] for p in pairs]
            self._lines = [p[1] for p in pairs]
        self._changed(key)

    def add_header(self, name: str, value: str, first: bool = False) -> None:
        """Append a line, or insert it before the first line of that name when first=True."""
        key = header_key(name)
        line = f"{name}: {value}"
        if first:
            i = self._keys.index(key) if key in self._keys else 0
            self._keys.insert(i, key)
            self._lines.insert(i, line)
        else:
            self._keys.append(key)
            self._lines.append(line)
        self._changed(key)

    def remove_header(self, name: str) -> int:
        """Remove every line of that name; returns how many were removed."""
        key = header_key(name)
        count = self._keys.count(key)
        if count:
            pairs = [(k, ln) for k, ln in zip(self._keys, self._lines, strict=True) if k != key]
            self._keys = [p[0] for p in pairs]
            self._lines = [p[1] for p in pairs]
            self._changed(key)
        return count

    def _changed(self, key: str) -> None:
        self._raw = None
        slot = _SLOT_OF.get(key)
        if slot is not None:
            setattr(self, slot, None)

    # ----- body ------------------------------------------------------------------------
    @property
    def body(self) -> bytes:
        return self._body

    @body.setter
    def body(self, value: bytes) -> None:
        self._body = value
        self.set_header("Content-Length", str(len(value)))

    # ----- validation --------------------------------------------------------------------
    def check(self) -> None:
        """Validate what every SIP element relies on (RFC 3261 §8.1.1, §20): the mandatory
        headers present once each, and Via, From, To, CSeq, Call-ID and Max-Forwards well
        formed. Raises ParseError with the reason for the 400."""
        keys = self._keys
        present = set(keys)
        if not _REQUIRED_KEYS <= present:
            missing = [label for key, label in _REQUIRED if key not in present]
            raise ParseError("missing required header(s): " + ", ".join(missing))
        if len(present) != len(keys):
            for key in _SINGLE:
                if keys.count(key) > 1:
                    raise ParseError(f"more than one {_display_name(key)} header")
        if not self.vias:
            raise ParseError("missing required header(s): Via")
        self.from_  # noqa: B018 - parsing is the check
        self.to  # noqa: B018
        self.call_id  # noqa: B018
        cseq = self.cseq
        if isinstance(self, Request) and cseq.method != self.method:
            raise ParseError(f"CSeq method {cseq.method} does not match the request method")
        if "max-forwards" in present:
            parse_uint(self._required("max-forwards"), "Max-Forwards", 255)

    # ----- the core headers, parsed on first use -------------------------------------------
    @property
    def vias(self) -> list[Via]:
        vias = self._vias
        if vias is None:
            keys = self._keys
            if keys.count("via") == 1:
                vias = parse_vias(_value(self._lines[keys.index("via")]))
            else:
                vias = [v for line in self.header_values("via") for v in parse_vias(line)]
            self._vias = vias
        return vias

    @property
    def via(self) -> Via:
        """The top-most Via (ParseError when there is none)."""
        vias = self.vias
        if not vias:
            raise ParseError("missing Via header")
        return vias[0]

    def replace_top_via(self, via: Via) -> None:
        """Rewrite the top-most Via value (e.g. to add received/rport, RFC 3581 §4)."""
        try:
            i = self._keys.index("via")
        except ValueError:
            raise ParseError("missing Via header") from None
        value = _value(self._lines[i])
        rest = split_commas(value)[1:] if "," in value else None
        self._lines[i] = f"Via: {via}"
        if rest:
            self._keys.insert(i + 1, "via")
            self._lines.insert(i + 1, "Via: " + ",".join(rest).strip(" \t"))
        vias = self._vias
        self._changed("via")
        if vias is not None:
            vias[0] = via
            self._vias = vias

    @property
    def from_(self) -> NameAddr:
        value = self._from
        if value is None:
            value = self._from = parse_name_addr(self._required("from"), "From header")
        return value

    @property
    def to(self) -> NameAddr:
        value = self._to
        if value is None:
            value = self._to = parse_name_addr(self._required("to"), "To header")
        return value

    @property
    def from_tag(self) -> str | None:
        return self.from_.params.get("tag")

    @property
    def to_tag(self) -> str | None:
        return self.to.params.get("tag")

    @property
    def cseq(self) -> CSeq:
        value = self._cseq
        if value is None:
            value = self._cseq = parse_cseq(self._required("cseq"))
        return value

    @property
    def call_id(self) -> str:
        value = self._call_id
        if value is None:
            value = self._call_id = _check_call_id(self._required("call-id"))
        return value

    def _required(self, key: str) -> str:
        try:
            return _value(self._lines[self._keys.index(key)])
        except ValueError:
            raise ParseError(f"missing {_display_name(key)} header") from None

    # ----- other headers, structured on demand ---------------------------------------------
    @property
    def max_forwards(self) -> int | None:
        value = self.header("max-forwards")
        return None if value is None else parse_uint(value, "Max-Forwards", 255)

    @property
    def content_type(self) -> str | None:
        """The media type (type/subtype, lower case) of the body, without parameters."""
        value = self.header("content-type")
        if value is None:
            return None
        return value.partition(";")[0].strip(" \t").lower()

    @property
    def contacts(self) -> list[NameAddr] | None:
        """All Contact values; None for the '*' wildcard; [] when there is none."""
        out: list[NameAddr] = []
        for value in self.header_values("contact"):
            parsed = parse_contacts(value)
            if parsed is None:
                return None
            out.extend(parsed)
        return out

    def name_addrs(self, name: str) -> list[NameAddr]:
        """Every comma-separated name-addr of a header such as Route or Record-Route."""
        what = f"{name} header"
        return [
            parse_name_addr(part, what)
            for value in self.header_values(name)
            for part in split_commas(value)
        ]

    def option_tags(self, name: str) -> list[str]:
        """Option tags of Require, Proxy-Require, Supported or Unsupported."""
        return parse_option_tags(self.header_values(name))

    # ----- serialization ---------------------------------------------------------------
    def _start_line(self) -> str:
        raise NotImplementedError  # each subclass has its own start line

    def shed(self) -> None:
        """Drop what parsing built (Via, From, To objects) and keep the wire form cached: a
        message a transaction only keeps to resend or to absorb retransmissions (for up to
        64*T1) then costs the collector three objects instead of a dozen. Reading it later
        parses again; changing it works as before."""
        if self._raw is None:
            self.__bytes__()
        self._vias = self._from = self._to = None

    def __bytes__(self) -> bytes:
        raw = self._raw
        if raw is None:
            if "content-length" not in self._keys:
                self._keys.append("content-length")
                self._lines.append(f"Content-Length: {len(self._body)}")
            text = "\r\n".join([self._start_line(), *self._lines, "\r\n"])
            raw = text.encode("utf-8", "surrogateescape") + self._body
            self._raw = raw
        return raw


class Request(Message):
    __slots__ = ("method", "_uri", "_ruri")

    method: str
    _uri: str
    _ruri: Uri | None

    def __init__(
        self, method: str, uri: str, headers: Iterable[tuple[str, str]] = (), body: bytes = b""
    ) -> None:
        self.method = method
        self._uri = uri
        self._ruri = None
        self._init_fields(headers, body)

    @property
    def uri(self) -> str:
        """The Request-URI as written."""
        return self._uri

    @uri.setter
    def uri(self, value: str) -> None:
        self._uri = value
        self._ruri = None
        self._raw = None

    @property
    def ruri(self) -> Uri:
        """The Request-URI, parsed."""
        value = self._ruri
        if value is None:
            value = self._ruri = parse_uri(self._uri)
        return value

    def shed(self) -> None:
        super().shed()
        self._ruri = None

    def _start_line(self) -> str:
        return f"{self.method} {self._uri} SIP/2.0"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self._uri}>"


class Response(Message):
    __slots__ = ("status", "reason")

    status: int
    reason: str

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        self.status = status
        self.reason = REASONS.get(status, "Unknown") if reason is None else reason
        self._init_fields(headers, body)

    def _start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


# ----- parsing --------------------------------------------------------------------------


def parse(data: bytes, max_headers: int = MAX_HEADERS) -> Request | Response:
    """Frame and split one message; check() validates the core headers.

    For a datagram, Content-Length frames the body and trailing bytes are ignored
    (RFC 3261 §18.3); without Content-Length the body is the rest of the data. More than
    `max_headers` header fields is a ParseError ('Too many headers', 400).
    """
    start = 0
    while data.startswith(b"\r\n", start):  # RFC 3261 §7.5: ignore CRLFs before the start line
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        raise ParseError("no empty line after the header fields")
    head = data[start:end].decode("utf-8", "surrogateescape")
    eol = head.find("\r\n")
    if eol < 0:
        first = head
        lines: list[str] = []
    else:
        first = head[:eol]
        lines = head[eol + 2 :].split("\r\n")
        if len(lines) > max_headers and len(_join_folded(lines)) > max_headers:
            raise ParseError("Too many headers")
    get = _KEY_CACHE.get
    # A name as long as its line means the line has no colon: None sends it to the slow path.
    keys = [get(n) if len(n := line.partition(":")[0]) < len(line) else None for line in lines]
    if None in keys:
        # Slow path: a name not seen before, a bad line, or a folded one (a continuation
        # line starts with SP/HTAB, which no cached name does).
        lines = _join_folded(lines)
        keys = [_checked_key(line) for line in lines]

    msg: Request | Response
    if first[:4].upper() == "SIP/":
        msg = _parse_status_line(first)
    else:
        msg = _parse_request_line(first)

    body_start = end + 4
    if "content-length" in keys:
        i = keys.index("content-length")
        if keys.count("content-length") > 1:
            raise ParseError("more than one Content-Length header")
        size = parse_uint(_value(lines[i]), "Content-Length", _MAX_BODY)
        stop = body_start + size
        if stop > len(data):
            raise ParseError("Content-Length is larger than the message")
        msg._body = data[body_start:stop]
        msg._raw = data if (start == 0 and stop == len(data)) else data[start:stop]
    else:
        msg._body = data[body_start:]
        msg._raw = data[start:] if start else data
    msg._keys = keys  # type: ignore[assignment]  # no None left: checked above
    msg._lines = lines
    msg._vias = msg._from = msg._to = msg._cseq = msg._call_id = None
    return msg


def _checked_key(line: str) -> str:
    name, sep, _ = line.partition(":")
    if not sep:
        raise ParseError(f"header line without a colon: {line[:30]!r}")
    return header_key(name)


def _display_name(key: str) -> str:
    return {"call-id": "Call-ID", "cseq": "CSeq"}.get(key, key.title())


def _join_folded(lines: list[str]) -> list[str]:
    """Join continuation lines (starting with SP/HTAB) to the line before (RFC 3261 §7.3.1)."""
    out: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t") and out:
            out[-1] = f"{out[-1]}\r\n{line}"
        else:
            out.append(line)
    return out


def _check_call_id(value: str) -> str:
    if not value or " " in value or "\t" in value:
        raise ParseError("Call-ID header is empty or contains whitespace")
    return value


def _parse_request_line(line: str) -> Request:
    # RFC 3261 §7.1: Method SP Request-URI SP SIP-Version, single spaces, nothing else.
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise ParseError("malformed request line")
    method, uri, version = parts
    if version != "SIP/2.0" and version.upper() != "SIP/2.0":
        if _VERSION_RE.fullmatch(version):
            raise ParseError(f"SIP version {version} not supported", status=505)
        raise ParseError("malformed request line")
    if method not in METHODS and not is_token(method):
        raise ParseError("request method is not a token")
    if uri.startswith("sip:"):
        scheme, rest = "sip", uri[4:]
    else:
        scheme, rest = split_scheme(uri)
    if "?" in rest and scheme in ("sip", "sips") and "?" in rest[rest.rfind("@") + 1 :]:
        # RFC 3261 §19.1.1 (table 1): headers are not allowed in a Request-URI.
        raise ParseError("Request-URI must not contain headers")
    msg = Request.__new__(Request)
    msg.method = method
    msg._uri = uri
    msg._ruri = None
    return msg


def _parse_status_line(line: str) -> Response:
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if version.upper() != "SIP/2.0":
        raise ParseError(f"SIP version {version[:20]} not supported", status=505)
    # RFC 3261 §25.1: Status-Code = 3DIGIT
    if len(code) != 3 or not code.isdigit() or code[0] == "0":
        raise ParseError("status code is not three digits")
    msg = Response.__new__(Response)
    msg.status = int(code)
    msg.reason = reason
    return msg


# ----- building responses ---------------------------------------------------------------

_COPIED = frozenset({"via", "from", "call-id", "cseq"})


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """A response to `request` per RFC 3261 §8.2.6.2: Via, From, Call-ID and CSeq copied,
    To copied with `to_tag` added when the request's To has no tag."""
    keys: list[str] = []
    lines: list[str] = []
    for key, line in zip(request._keys, request._lines, strict=True):
        if key in _COPIED:
            keys.append(key)
            lines.append(line)
        elif key == "to":
            keys.append(key)
            if to_tag is not None and request.to.tag is None:
                lines.append(f"To: {_value(line)};tag={to_tag}")
            else:
                lines.append(line)
        elif key == "timestamp" and status == 100:
            keys.append(key)  # RFC 3261 §8.2.6.1
            lines.append(line)
    for name, value in headers:
        keys.append(header_key(name))
        lines.append(f"{name}: {value}")
    keys.append("content-length")
    lines.append(f"Content-Length: {len(body)}")
    resp = Response.__new__(Response)
    resp.status = status
    resp.reason = REASONS.get(status, "Unknown") if reason is None else reason
    resp._keys = keys
    resp._lines = lines
    resp._body = body
    resp._raw = None
    resp._vias = resp._from = resp._to = None
    resp._cseq = request._cseq
    resp._call_id = request._call_id
    return resp


def error_response(data: bytes, err: ParseError) -> Response | None:
    """The answer to bytes that failed to parse, built from their raw header lines; None when
    they are not a request or carry no Via to answer along (then they are dropped)."""
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    end = data.find(b"\r\n\r\n", start)
    head = data[start : end if end >= 0 else len(data)].decode("utf-8", "surrogateescape")
    lines = _join_folded(head.split("\r\n"))
    if not lines or lines[0][:4].upper() == "SIP/" or lines[0].startswith("ACK "):
        return None  # responses are never answered, nor is ACK (RFC 3261 §17.2.1)
    headers: list[tuple[str, str]] = []
    seen: set[str] = set()
    to_value: str | None = None
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        key = _COMPACT.get(name.strip(" \t").lower(), name.strip(" \t").lower())
        if not sep or key not in ("via", "from", "to", "call-id", "cseq"):
            continue
        value = _FOLD_RE.sub(" ", value.strip(" \t"))
        if key == "via":
            headers.append(("Via", value))
        elif key not in seen:
            seen.add(key)
            if key == "to":
                to_value = value
            else:
                headers.append((_display_name(key), value))
    if not any(name == "Via" for name, _ in headers):
        return None
    if to_value is not None:
        headers.append(("To", _with_tag(to_value)))
    reason = "".join(c if c.isprintable() else " " for c in err.reason)[:120] or "Bad Request"
    return Response(err.status, reason, headers)


def _with_tag(to_value: str) -> str:
    try:
        to = parse_name_addr(to_value, "To header")
    except ParseError:
        return to_value
    return to_value if to.tag is not None else f"{to_value};tag={new_tag()}"
