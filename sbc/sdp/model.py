"""SDP (RFC 8866) as ordered lines: parse, inspect, serialize.

Every line is kept as received, so whatever no rewrite touches (a=crypto, b=, a=fmtp,
m=image, unknown attributes) goes out byte-for-byte; structure is parsed on demand.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

__all__ = [
    "STATIC_PAYLOAD_TYPES",
    "Candidate",
    "Connection",
    "Crypto",
    "Direction",
    "MediaLine",
    "MediaSection",
    "Origin",
    "Rtcp",
    "RtpMap",
    "SdpError",
    "SdpLine",
    "SessionDescription",
    "addrtype_of",
    "parse_sdp",
]


class SdpError(ValueError):
    """A session description is malformed or cannot be accepted.

    `status` is what a SIP request carrying it should be answered with: 400 for a body
    that does not parse, 488 for one that parses but offers nothing we can accept.
    """

    def __init__(self, reason: str, *, line: int | None = None, status: int = 400) -> None:
        super().__init__(f"SDP line {line}: {reason}" if line is not None else f"SDP: {reason}")
        self.reason = reason
        self.line = line
        self.status = status


class Direction(enum.StrEnum):
    """Media direction attributes (RFC 8866 §6.7), as seen by the side that wrote them."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    @classmethod
    def from_flags(cls, sends: bool, receives: bool) -> Direction:
        if sends:
            return cls.SENDRECV if receives else cls.SENDONLY
        return cls.RECVONLY if receives else cls.INACTIVE


_DIRECTIONS = frozenset(d.value for d in Direction)


def addrtype_of(address: str) -> str:
    """'IP6' for an IPv6 literal, else 'IP4' (also for a host name: RFC 8866 §5.7)."""
    if ":" not in address:
        return "IP4"  # IPv4 literals and host names never hold a colon (fast path)
    try:
        return "IP6" if ipaddress.ip_address(address).version == 6 else "IP4"
    except ValueError:
        return "IP4"


# ----------------------------------------------------------------------------- lines


@dataclass(frozen=True, slots=True)
class SdpLine:
    """One `<kind>=<value>` line; `value` is kept exactly as received."""

    kind: str
    value: str
    # The attribute name worked out once: every crossing looks lines up by name dozens of
    # times (measured: ~170 lookups per call), a partition and lower() each time before.
    _name: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind == "a":
            object.__setattr__(self, "_name", self.value.partition(":")[0].lower())

    @classmethod
    def attribute(cls, name: str, value: str | None = None) -> SdpLine:
        """An `a=name` (property) or `a=name:value` line."""
        return cls("a", name if value is None else f"{name}:{value}")

    @property
    def attribute_name(self) -> str | None:
        """The attribute name of an a= line, lower-cased; None for other lines."""
        return self._name

    @property
    def attribute_value(self) -> str | None:
        """What follows the first ':' of an a= line; None for a property attribute."""
        name, colon, value = self.value.partition(":")
        return value if colon else None

    def is_attribute(self, name: str) -> bool:
        return self._name == name

    def __str__(self) -> str:
        return f"{self.kind}={self.value}"


# ----------------------------------------------------------------------- line grammars


def _uint(text: str, what: str, line: int | None, maximum: int | None = None) -> int:
    if not text.isascii() or not text.isdigit():
        raise SdpError(f"{what} {text!r} is not a number", line=line)
    value = int(text)
    if maximum is not None and value > maximum:
        raise SdpError(f"{what} {value} is out of range (0-{maximum})", line=line)
    return value


@dataclass(frozen=True, slots=True)
class Origin:
    """The o= line (RFC 8866 §5.2)."""

    username: str
    sess_id: str
    sess_version: int
    nettype: str
    addrtype: str
    address: str

    @classmethod
    def parse(cls, value: str, line: int | None = None) -> Origin:
        fields = value.split()
        if len(fields) != 6:
            raise SdpError(
                "o= needs 6 fields (username sess-id sess-version nettype addrtype address), "
                f"found {len(fields)}",
                line=line,
            )
        user, sess_id, version, nettype, addrtype, address = fields
        _uint(sess_id, "o= sess-id", line)
        return cls(
            user, sess_id, _uint(version, "o= sess-version", line), nettype, addrtype, address
        )

    def to_line(self) -> SdpLine:
        return SdpLine(
            "o",
            f"{self.username} {self.sess_id} {self.sess_version} "
            f"{self.nettype} {self.addrtype} {self.address}",
        )


@dataclass(frozen=True, slots=True)
class Connection:
    """A c= line (RFC 8866 §5.7); `suffix` keeps a multicast '/ttl[/count]' verbatim."""

    nettype: str
    addrtype: str
    address: str
    suffix: str = ""

    @classmethod
    def parse(cls, value: str, line: int | None = None) -> Connection:
        fields = value.split()
        if len(fields) != 3:
            raise SdpError(
                f"c= needs 3 fields (nettype addrtype address), found {len(fields)}", line=line
            )
        nettype, addrtype, address = fields
        host, slash, rest = address.partition("/")
        if not host:
            raise SdpError(f"c= has an empty address in {value!r}", line=line)
        return cls(nettype, addrtype, host, slash + rest)

    @classmethod
    def for_address(cls, address: str) -> Connection:
        return cls("IN", addrtype_of(address), address)

    @property
    def is_unspecified(self) -> bool:
        """0.0.0.0 or :: -- the RFC 2543 way of putting a call on hold (RFC 3264 §8.4)."""
        return self.address in ("0.0.0.0", "::")

    def to_line(self) -> SdpLine:
        return SdpLine("c", f"{self.nettype} {self.addrtype} {self.address}{self.suffix}")


@dataclass(frozen=True, slots=True)
class MediaLine:
    """An m= line (RFC 8866 §5.14): formats are payload types for RTP, opaque otherwise."""

    media: str
    port: int
    port_count: int | None
    proto: str
    formats: tuple[str, ...]

    @classmethod
    def parse(cls, value: str, line: int | None = None) -> MediaLine:
        fields = value.split()
        if len(fields) < 4:
            raise SdpError(
                "m= needs media, port, proto and at least one format "
                f"(e.g. 'm=audio 49170 RTP/AVP 0'), found {value!r}",
                line=line,
            )
        media, port_text, proto, *formats = fields
        port_part, slash, count_part = port_text.partition("/")
        port = _uint(port_part, "m= port", line, 65535)
        count = None
        if slash:
            count = _uint(count_part, "m= port count", line, 65535)
            if count == 0:
                raise SdpError("m= port count must be at least 1", line=line)
        return cls(media, port, count, proto, tuple(formats))

    @property
    def is_rtp(self) -> bool:
        return "RTP/" in self.proto.upper()

    def to_line(self) -> SdpLine:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        return SdpLine("m", " ".join((self.media, port, self.proto, *self.formats)))


@dataclass(frozen=True, slots=True)
class RtpMap:
    """a=rtpmap (RFC 8866 §6.6); `parameters` is the channel count for audio."""

    payload_type: str
    encoding: str
    clock_rate: int
    parameters: str | None = None

    @classmethod
    def parse(cls, value: str, line: int | None = None) -> RtpMap:
        pt, _, rest = value.strip().partition(" ")
        encoding, slash, rate_part = rest.strip().partition("/")
        if not pt or not encoding or not slash:
            raise SdpError(
                f"a=rtpmap:{value} is not '<payload type> <encoding>/<clock rate>'", line=line
            )
        _uint(pt, "a=rtpmap payload type", line, 127)
        rate, slash, params = rate_part.partition("/")
        clock_rate = _uint(rate, "a=rtpmap clock rate", line)
        if clock_rate == 0:  # a rate of samples per second: timestamps would never advance
            raise SdpError(f"a=rtpmap:{value} has a clock rate of 0", line=line)
        return cls(pt, encoding, clock_rate, params if slash else None)


# RFC 3551 §6: payload types with a fixed meaning, usable without a=rtpmap.
STATIC_PAYLOAD_TYPES: dict[str, RtpMap] = {
    pt: RtpMap(pt, name, rate, channels)
    for pt, name, rate, channels in (
        ("0", "PCMU", 8000, None),
        ("3", "GSM", 8000, None),
        ("4", "G723", 8000, None),
        ("5", "DVI4", 8000, None),
        ("6", "DVI4", 16000, None),
        ("7", "LPC", 8000, None),
        ("8", "PCMA", 8000, None),
        ("9", "G722", 8000, None),
        ("10", "L16", 44100, "2"),
        ("11", "L16", 44100, None),
        ("12", "QCELP", 8000, None),
        ("13", "CN", 8000, None),
        ("14", "MPA", 90000, None),
        ("15", "G728", 8000, None),
        ("16", "DVI4", 11025, None),
        ("17", "DVI4", 22050, None),
        ("18", "G729", 8000, None),
        ("25", "CelB", 90000, None),
        ("26", "JPEG", 90000, None),
        ("28", "nv", 90000, None),
        ("31", "H261", 90000, None),
        ("32", "MPV", 90000, None),
        ("33", "MP2T", 90000, None),
        ("34", "H263", 90000, None),
    )
}


@dataclass(frozen=True, slots=True)
class Rtcp:
    """a=rtcp (RFC 3605): the RTCP port, and address when it differs from c=."""

    port: int
    nettype: str | None = None
    addrtype: str | None = None
    address: str | None = None

    @classmethod
    def parse(cls, value: str, line: int | None = None) -> Rtcp:
        fields = value.split()
        if len(fields) not in (1, 4):
            raise SdpError(
                f"a=rtcp:{value} is not '<port>' or '<port> IN IP4|IP6 <address>'", line=line
            )
        port = _uint(fields[0], "a=rtcp port", line, 65535)
        if len(fields) == 1:
            return cls(port)
        return cls(port, fields[1], fields[2], fields[3])

    def to_line(self) -> SdpLine:
        if self.address is None:
            return SdpLine.attribute("rtcp", str(self.port))
        return SdpLine.attribute(
            "rtcp", f"{self.port} {self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True, slots=True)
class Crypto:
    """a=crypto (RFC 4568 §9.1): SDES keys, carried per leg and never across."""

    tag: int
    suite: str
    key_params: str
    session_params: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: str) -> Crypto:
        fields = value.split()
        if len(fields) < 3:
            raise SdpError(f"a=crypto:{value} is not '<tag> <crypto-suite> <key-params>'")
        return cls(_uint(fields[0], "a=crypto tag", None), fields[1], fields[2], tuple(fields[3:]))


@dataclass(frozen=True, slots=True)
class Candidate:
    """a=candidate (RFC 8839 §5.1); `extensions` keeps raddr/rport/generation... verbatim."""

    foundation: str
    component: int
    transport: str
    priority: int
    address: str
    port: int
    type: str
    extensions: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: str) -> Candidate:
        fields = value.split()
        if len(fields) < 8 or fields[6] != "typ":
            raise SdpError(
                f"a=candidate:{value} is not '<foundation> <component> <transport> "
                "<priority> <address> <port> typ <type> ...'"
            )
        return cls(
            fields[0],
            _uint(fields[1], "a=candidate component", None),
            fields[2],
            _uint(fields[3], "a=candidate priority", None),
            fields[4],
            _uint(fields[5], "a=candidate port", None, 65535),
            fields[7],
            tuple(fields[8:]),
        )


# -------------------------------------------------------------------- shared accessors


def _values(lines: Iterable[SdpLine], name: str) -> tuple[str | None, ...]:
    return tuple(line.attribute_value for line in lines if line.is_attribute(name))


def _direction(lines: Iterable[SdpLine]) -> Direction | None:
    for line in lines:
        name = line.attribute_name
        if name in _DIRECTIONS and line.attribute_value is None:
            return Direction(name)
    return None


def _connection(lines: Iterable[SdpLine]) -> Connection | None:
    for line in lines:
        if line.kind == "c":
            return Connection.parse(line.value)
    return None


class _Attributes:
    """Attribute lookups shared by the session section and media sections."""

    __slots__ = ()

    @property
    def _own_lines(self) -> tuple[SdpLine, ...]:
        raise NotImplementedError

    def attributes(self, name: str) -> tuple[str | None, ...]:
        """Values of every a=<name> line in order (None for a property attribute)."""
        return _values(self._own_lines, name.lower())

    def attribute(self, name: str) -> str | None:
        """The value of the first a=<name>:<value> line, or None."""
        for value in self.attributes(name):
            if value is not None:
                return value
        return None

    def has_attribute(self, name: str) -> bool:
        name = name.lower()
        return any(line.is_attribute(name) for line in self._own_lines)

    @property
    def direction(self) -> Direction | None:
        """The direction attribute written at this level, None when there is none."""
        return _direction(self._own_lines)

    @property
    def connection(self) -> Connection | None:
        """The c= line at this level (a media section may inherit the session's)."""
        return _connection(self._own_lines)

    @property
    def ice_ufrag(self) -> str | None:
        return self.attribute("ice-ufrag")

    @property
    def ice_pwd(self) -> str | None:
        return self.attribute("ice-pwd")

    @property
    def ice_options(self) -> tuple[str, ...]:
        return tuple(tag for v in self.attributes("ice-options") if v for tag in v.split())


# -------------------------------------------------------------------- media sections


@dataclass(frozen=True, slots=True)
class MediaSection(_Attributes):
    """One media description: its m= line first, then its other lines in received order."""

    lines: tuple[SdpLine, ...]
    # The m= line parsed once: port, formats and media are read many times per crossing.
    _media_line: MediaLine | None = field(default=None, init=False, repr=False, compare=False)
    # The a=rtpmap lines parsed once: codec policy, DTMF and the media plan all read them.
    _rtpmaps: dict[str, RtpMap] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.lines or self.lines[0].kind != "m":
            raise ValueError("a MediaSection starts with its m= line")

    @property
    def _own_lines(self) -> tuple[SdpLine, ...]:
        return self.lines

    @property
    def media_line(self) -> MediaLine:
        parsed = self._media_line
        if parsed is None:
            parsed = MediaLine.parse(self.lines[0].value)
            object.__setattr__(self, "_media_line", parsed)
        return parsed

    @property
    def media(self) -> str:
        return self.media_line.media

    @property
    def port(self) -> int:
        return self.media_line.port

    @property
    def port_count(self) -> int | None:
        return self.media_line.port_count

    @property
    def proto(self) -> str:
        return self.media_line.proto

    @property
    def formats(self) -> tuple[str, ...]:
        return self.media_line.formats

    @property
    def is_rejected(self) -> bool:
        """Port 0: a stream rejected in an answer or removed in an offer (RFC 3264 §6, §8.2)."""
        return self.port == 0

    @property
    def is_rtp(self) -> bool:
        return self.media_line.is_rtp

    def rtpmaps(self) -> dict[str, RtpMap]:
        """Every a=rtpmap of the section by payload type, read in one pass (the first line
        of a payload type wins); static payload types without one are not included."""
        cached = self._rtpmaps
        if cached is not None:
            return cached
        found: dict[str, RtpMap] = {}
        for value in self.attributes("rtpmap"):
            if value is None:
                continue
            pt = value.split(maxsplit=1)[0] if value.strip() else ""
            if pt and pt not in found:
                found[pt] = RtpMap.parse(value)
        object.__setattr__(self, "_rtpmaps", found)
        return found

    def rtpmap(self, payload_type: str, *, static_default: bool = True) -> RtpMap | None:
        """The a=rtpmap of a payload type; for a static one without it, RFC 3551's meaning."""
        found = self.rtpmaps().get(payload_type)
        if found is not None:
            return found
        return STATIC_PAYLOAD_TYPES.get(payload_type) if static_default else None

    def fmtp(self, payload_type: str) -> str | None:
        """The format parameters of a payload type (text after '<pt> '), or None."""
        for value in self.attributes("fmtp"):
            pt, _, params = (value or "").partition(" ")
            if pt == payload_type:
                return params.strip()
        return None

    def rtcp_fb(self, payload_type: str) -> tuple[str, ...]:
        """a=rtcp-fb values for a payload type, including the '*' wildcard ones (RFC 4585)."""
        found = []
        for value in self.attributes("rtcp-fb"):
            pt, _, feedback = (value or "").partition(" ")
            if pt in (payload_type, "*"):
                found.append(feedback.strip())
        return tuple(found)

    @property
    def rtcp(self) -> Rtcp | None:
        value = self.attribute("rtcp")
        return None if value is None else Rtcp.parse(value)

    @property
    def rtcp_mux(self) -> bool:
        return self.has_attribute("rtcp-mux")

    @property
    def candidates(self) -> tuple[Candidate, ...]:
        return tuple(Candidate.parse(v) for v in self.attributes("candidate") if v is not None)

    @property
    def end_of_candidates(self) -> bool:
        return self.has_attribute("end-of-candidates")

    @property
    def crypto(self) -> tuple[Crypto, ...]:
        return tuple(Crypto.parse(v) for v in self.attributes("crypto") if v is not None)

    def with_media_line(self, media_line: MediaLine) -> MediaSection:
        return MediaSection((media_line.to_line(), *self.lines[1:]))


# -------------------------------------------------------------------- the description


@dataclass(frozen=True, slots=True)
class SessionDescription(_Attributes):
    """A whole SDP body: the session-level lines, then the media sections in order."""

    session: tuple[SdpLine, ...]
    media: tuple[MediaSection, ...] = ()

    @classmethod
    def parse(cls, data: bytes) -> SessionDescription:
        return parse_sdp(data)

    def to_bytes(self) -> bytes:
        """The body with CRLF line ends (RFC 8866 §5)."""
        lines = [*self.session, *(line for section in self.media for line in section.lines)]
        text = "".join(f"{line.kind}={line.value}\r\n" for line in lines)
        return text.encode("utf-8", "surrogateescape")

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    @property
    def _own_lines(self) -> tuple[SdpLine, ...]:
        return self.session

    @property
    def origin(self) -> Origin:
        for line in self.session:
            if line.kind == "o":
                return Origin.parse(line.value)
        raise SdpError("no o= line (origin) in the session section")

    @property
    def session_name(self) -> str | None:
        for line in self.session:
            if line.kind == "s":
                return line.value
        return None

    @property
    def ice_lite(self) -> bool:
        return self.has_attribute("ice-lite")

    def media_direction(self, index: int) -> Direction:
        """A stream's direction: its own attribute, else the session's, else sendrecv."""
        return self.media[index].direction or self.direction or Direction.SENDRECV

    def media_connection(self, index: int) -> Connection | None:
        """A stream's c=: its own, else the session-level one (RFC 8866 §5.7)."""
        return self.media[index].connection or self.connection

    def with_media(self, index: int, section: MediaSection) -> SessionDescription:
        media = list(self.media)
        media[index] = section
        return replace(self, media=tuple(media))


# ------------------------------------------------------------------------------ parsing


def _split(text: str, number: int) -> SdpLine:
    kind, eq, value = text.partition("=")
    if not eq or len(kind) != 1 or not ("a" <= kind <= "z"):
        raise SdpError(f"expected '<letter>=<value>', found {text[:60]!r}", line=number)
    return SdpLine(kind, value)


def _check(line: SdpLine, number: int) -> None:
    """Validate the lines whose structure the SBC relies on, naming the line when wrong."""
    if line.kind == "c":
        Connection.parse(line.value, number)
    elif line.kind == "m":
        MediaLine.parse(line.value, number)
    elif line.is_attribute("rtpmap"):
        RtpMap.parse(line.attribute_value or "", number)
    elif line.is_attribute("rtcp"):
        Rtcp.parse(line.attribute_value or "", number)


def parse_sdp(data: bytes) -> SessionDescription:
    """Parse an SDP body; SdpError (status 400) names the line and what is wrong.

    LF-only line ends and blank lines are tolerated; unknown line kinds are kept.
    """
    text = data.decode("utf-8", "surrogateescape")
    session: list[SdpLine] = []
    sections: list[list[SdpLine]] = []
    current = session
    seen_version = seen_origin = False
    for number, raw in enumerate(text.split("\n"), start=1):
        stripped = raw[:-1] if raw.endswith("\r") else raw
        if not stripped.strip():
            continue  # a trailing CRLF too many is common; it carries nothing
        line = _split(stripped, number)
        if not seen_version:
            if line.kind != "v":
                raise SdpError(f"SDP must start with 'v=0', found {stripped[:60]!r}", line=number)
            if line.value.strip() != "0":
                raise SdpError(f"unsupported SDP version {line.value!r} (only v=0)", line=number)
            seen_version = True
        elif line.kind == "v":
            raise SdpError("a second v= line", line=number)
        elif line.kind == "o":
            if seen_origin or sections:
                raise SdpError("o= may appear once, in the session section", line=number)
            Origin.parse(line.value, number)
            seen_origin = True
        _check(line, number)
        if line.kind == "m":
            current = [line]
            sections.append(current)
        else:
            current.append(line)
    if not seen_version:
        raise SdpError("empty body: no v= line", line=1)
    if not seen_origin:
        raise SdpError("no o= line (origin) in the session section")
    return SessionDescription(tuple(session), tuple(MediaSection(tuple(s)) for s in sections))
