"""What the B2BUA does to an SDP crossing from one leg to the other.

Pure functions: each takes a SessionDescription and returns a new one (the input is never
changed). Typical order for one crossing: filter_codecs, strip_ice, point_at_relay,
set_session_name, then stamp_origin last (it versions the final content).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

from sbc.sdp.model import (
    STATIC_PAYLOAD_TYPES,
    Connection,
    Direction,
    MediaSection,
    Origin,
    Rtcp,
    RtpMap,
    SdpError,
    SdpLine,
    SessionDescription,
    addrtype_of,
)

__all__ = [
    "ICE_ATTRIBUTES",
    "OriginState",
    "answer_direction",
    "correct_answer_directions",
    "direction_ok",
    "filter_codecs",
    "point_at_relay",
    "set_media_direction",
    "set_session_name",
    "stamp_origin",
    "strip_ice",
    "wrong_directions",
]

Endpoint = tuple[str, int]

# ------------------------------------------------------------------------- relay addresses


def point_at_relay(
    sdp: SessionDescription,
    relay_endpoints: Sequence[Endpoint | None],
    *,
    address: str | None = None,
) -> SessionDescription:
    """Point every stream at the relay: endpoint i serves m-line i, None rejects it.

    A stream already at port 0 stays at port 0 in its position (RFC 3264 §6, §8.2); a
    stream whose endpoint is None gets port 0. Every c= line (session and media level) and
    every a=rtcp names the relay, so no address of the far side crosses (topology hiding);
    the relay takes RTCP on port+1. `address` is written where no stream gives one (the
    session c= when every stream is rejected); it defaults to the first endpoint's address.
    An unspecified c= address (0.0.0.0, the RFC 2543 hold still sent by old PBXes, RFC 3264
    §8.4) is kept when the stream does not use ICE, or the far side would not see the hold.
    """
    if len(relay_endpoints) != len(sdp.media):
        raise ValueError(
            f"point_at_relay: {len(relay_endpoints)} relay endpoints for {len(sdp.media)} m-lines"
        )
    fallback = address or next((ep[0] for ep in relay_endpoints if ep), "0.0.0.0")
    session_ice = sdp.ice_ufrag is not None
    session_conn = sdp.connection
    session_hold = session_conn is not None and session_conn.is_unspecified and not session_ice
    # What the session c= names once rewritten: streams without their own c= inherit it.
    session_address: str | None = None
    if session_conn is not None:
        session_address = session_conn.address if session_hold else fallback
    session = tuple(
        _relay_connection(line, None if session_hold else fallback) if line.kind == "c" else line
        for line in sdp.session
    )
    media = tuple(
        _relay_section(section, endpoint, fallback, session_address, session_hold, session_ice)
        for section, endpoint in zip(sdp.media, relay_endpoints, strict=True)
    )
    return SessionDescription(session, media)


def _relay_connection(line: SdpLine, address: str | None) -> SdpLine:
    if address is None:
        return line
    return Connection.for_address(address).to_line()


def _relay_section(
    section: MediaSection,
    endpoint: Endpoint | None,
    fallback: str,
    session_address: str | None,
    session_hold: bool,
    session_ice: bool,
) -> MediaSection:
    own = section.connection
    uses_ice = session_ice or section.ice_ufrag is not None or section.has_attribute("candidate")
    hold = (own.is_unspecified if own is not None else session_hold) and not uses_ice
    if section.is_rejected or endpoint is None:
        # The address of a rejected stream means nothing, but it must not leak either.
        lines = [
            _relay_connection(line, None if hold else fallback) if line.kind == "c" else line
            for line in section.lines[1:]
            if not line.is_attribute("rtcp")
        ]
        m_line = replace(section.media_line, port=0, port_count=None)
        return MediaSection((m_line.to_line(), *lines))
    relay_address, relay_port = endpoint
    out = [replace(section.media_line, port=relay_port, port_count=None).to_line()]
    for line in section.lines[1:]:
        if line.kind == "c":
            out.append(_relay_connection(line, None if hold else relay_address))
        elif line.is_attribute("rtcp"):
            out.append(_relay_rtcp(line, relay_address, relay_port))
        else:
            out.append(line)
    if own is None and not hold and session_address != relay_address:
        # The inherited session c= (or its absence) would not name this stream's relay.
        out.insert(_connection_position(out), Connection.for_address(relay_address).to_line())
    return MediaSection(tuple(out))


def _relay_rtcp(line: SdpLine, address: str, port: int) -> SdpLine:
    old = Rtcp.parse(line.attribute_value or "")
    if old.address is None:
        return Rtcp(port + 1).to_line()
    return Rtcp(port + 1, "IN", addrtype_of(address), address).to_line()


def _connection_position(lines: Sequence[SdpLine]) -> int:
    """Where a c= goes in a media section: after m= and i= (RFC 8866 §5 line order)."""
    position = 1
    while position < len(lines) and lines[position].kind == "i":
        position += 1
    return position


# ---------------------------------------------------------------------- origin and s=


@dataclass(frozen=True, slots=True)
class OriginState:
    """What we put in o= on one leg: a stable sess-id, a version bumped on every change.

    `digest` fingerprints the last body sent on this leg (without its o= line) so an
    unchanged re-offer, such as a session refresh, keeps its version (RFC 3264 §8).
    """

    address: str
    sess_id: str
    version: int = 0
    username: str = "-"
    digest: bytes | None = None

    def __post_init__(self) -> None:
        if not self.sess_id.isascii() or not self.sess_id.isdigit():
            raise ValueError(f"OriginState: sess-id {self.sess_id!r} must be digits")
        if self.version < 0:
            raise ValueError(f"OriginState: version {self.version} must not be negative")
        for name, value in (("username", self.username), ("address", self.address)):
            if not value or any(ch.isspace() for ch in value):
                raise ValueError(f"OriginState: {name} {value!r} must be one non-empty token")


def _digest_without_origin(sdp: SessionDescription) -> bytes:
    body = SessionDescription(
        tuple(line for line in sdp.session if line.kind != "o"), sdp.media
    ).to_bytes()
    return hashlib.sha256(body).digest()


def stamp_origin(
    sdp: SessionDescription, state: OriginState
) -> tuple[SessionDescription, OriginState]:
    """Write this leg's o= into `sdp`; returns the new body and the leg's next state.

    o= names only our address on this leg (TRAPS.md #6). The version increases by one
    whenever the content differs from the last body sent on the leg and stays the same for
    an identical one (RFC 3264 §8). Call it last, after every other rewrite.
    """
    digest = _digest_without_origin(sdp)
    version = state.version
    if state.digest is not None and digest != state.digest:
        version += 1
    origin = Origin(
        state.username, state.sess_id, version, "IN", addrtype_of(state.address), state.address
    )
    if any(line.kind == "o" for line in sdp.session):
        session = tuple(origin.to_line() if line.kind == "o" else line for line in sdp.session)
    else:  # only a hand-built description lacks one; o= follows v= (RFC 8866 §5)
        session = (*sdp.session[:1], origin.to_line(), *sdp.session[1:])
    return replace(sdp, session=session), replace(state, version=version, digest=digest)


def set_session_name(sdp: SessionDescription, name: str = "-") -> SessionDescription:
    """Replace s= (or add it after o=) so the far side's session name does not cross."""
    if not name or "\r" in name or "\n" in name:
        raise ValueError(f"session name {name!r} must be non-empty text on one line")
    if any(line.kind == "s" for line in sdp.session):
        session = tuple(SdpLine("s", name) if line.kind == "s" else line for line in sdp.session)
    else:
        kinds = [line.kind for line in sdp.session]
        position = kinds.index("o") + 1 if "o" in kinds else min(1, len(kinds))
        session = (*sdp.session[:position], SdpLine("s", name), *sdp.session[position:])
    return replace(sdp, session=session)


# ------------------------------------------------------------------------------- codecs

# Payloads that carry no media of their own: a stream left with only these is rejected.
_AUXILIARY = frozenset({"telephone-event", "cn", "red", "ulpfec", "flexfec", "rtx"})
_PER_PAYLOAD_ATTRIBUTES = frozenset({"rtpmap", "fmtp", "rtcp-fb"})


@dataclass(frozen=True, slots=True)
class _CodecSpec:
    """One allowed entry: 'PCMU', or narrower 'opus/48000' or 'opus/48000/2'."""

    encoding: str
    clock_rate: int | None
    parameters: str | None

    @classmethod
    def parse(cls, text: str) -> _CodecSpec:
        name, _, rest = text.strip().partition("/")
        rate, _, params = rest.partition("/")
        if not name or (rate and not rate.isdigit()):
            raise ValueError(f"codec {text!r} is not 'name' or 'name/clock-rate[/channels]'")
        return cls(name.casefold(), int(rate) if rate else None, params or None)

    def matches(self, rtpmap: RtpMap | None) -> bool:
        if rtpmap is None or rtpmap.encoding.casefold() != self.encoding:
            return False
        if self.clock_rate is not None and rtpmap.clock_rate != self.clock_rate:
            return False
        return self.parameters is None or (rtpmap.parameters or "1") == self.parameters


def filter_codecs(sdp: SessionDescription, allowed: Sequence[str]) -> SessionDescription:
    """Keep only the allowed codecs of each RTP stream, in the configured order.

    Names match a=rtpmap encodings case-insensitively, or RFC 3551 static payload types
    without one (0 PCMU, 8 PCMA, 9 G722, 18 G729...). rtpmap/fmtp/rtcp-fb lines of removed
    payload types go too. A stream left with nothing but auxiliary payloads (e.g.
    telephone-event alone) is rejected with port 0; when that leaves no stream at all,
    SdpError with status 488. Non-RTP streams (T.38 m=image) pass unchanged; an empty
    `allowed` keeps everything.
    """
    if not allowed:
        return sdp
    specs = [_CodecSpec.parse(name) for name in allowed]
    media = tuple(_filter_section(section, specs) for section in sdp.media)
    had_active = any(not section.is_rejected for section in sdp.media)
    if had_active and all(section.is_rejected for section in media):
        offered = sorted({_codec_name(s, pt) for s in sdp.media if s.is_rtp for pt in s.formats})
        raise SdpError(
            f"no allowed codec in any stream (allowed: {', '.join(allowed)}; "
            f"offered: {', '.join(offered)})",
            status=488,
        )
    return replace(sdp, media=media)


def _codec_name(section: MediaSection, payload_type: str) -> str:
    rtpmap = section.rtpmap(payload_type)
    return rtpmap.encoding if rtpmap is not None else f"payload type {payload_type}"


def _payload_type(line: SdpLine) -> str:
    """The payload type an a=rtpmap/fmtp/rtcp-fb line is about ('*' for every one)."""
    fields = (line.attribute_value or "").split(maxsplit=1)
    return fields[0] if fields else ""


def _rtpmaps(section: MediaSection, formats: Sequence[str]) -> dict[str, RtpMap | None]:
    """The rtpmap of each payload type (RFC 3551 static meaning when none is given)."""
    maps: dict[str, RtpMap | None] = {}
    for value in section.attributes("rtpmap"):
        if value is not None:
            first = value.split(maxsplit=1)[:1]
            if first and first[0] in formats and first[0] not in maps:
                maps[first[0]] = RtpMap.parse(value)
    for pt in formats:
        if pt not in maps:
            maps[pt] = STATIC_PAYLOAD_TYPES.get(pt)
    return maps


def _auxiliary(rtpmap: RtpMap | None) -> bool:
    return rtpmap is not None and rtpmap.encoding.casefold() in _AUXILIARY


def _filter_section(section: MediaSection, specs: Sequence[_CodecSpec]) -> MediaSection:
    if section.is_rejected or not section.is_rtp:
        return section
    formats = section.formats
    maps = _rtpmaps(section, formats)  # each a=rtpmap read once, not once per spec
    kept: list[str] = []
    for spec in specs:
        kept.extend(pt for pt in formats if pt not in kept and spec.matches(maps[pt]))
    media_line = section.media_line
    if all(_auxiliary(maps[pt]) for pt in kept):
        # Port 0 keeps the formats: an m= line needs at least one (RFC 8866 §5.14).
        return section.with_media_line(replace(media_line, port=0, port_count=None))
    keep = {*kept, "*"}
    lines = [
        line
        for line in section.lines[1:]
        if line.attribute_name not in _PER_PAYLOAD_ATTRIBUTES or _payload_type(line) in keep
    ]
    return MediaSection((replace(media_line, formats=tuple(kept)).to_line(), *lines))


# ---------------------------------------------------------------------------------- ICE

ICE_ATTRIBUTES = frozenset(
    {
        "candidate",
        "remote-candidates",
        "ice-ufrag",
        "ice-pwd",
        "ice-options",
        "ice-lite",
        "ice-mismatch",
        "ice-pacing",
        "end-of-candidates",
    }
)
_MUX_ATTRIBUTES = frozenset({"rtcp-mux", "rtcp-mux-only"})


def strip_ice(sdp: SessionDescription, *, keep_rtcp_mux: bool) -> SessionDescription:
    """Remove ICE (RFC 8839) at session and media level for a leg that does not use it.

    a=rtcp-mux (and rtcp-mux-only, RFC 8858) goes too unless the leg supports muxing.
    Candidates name the far side's addresses, so this is also topology hiding.
    """
    drop = ICE_ATTRIBUTES if keep_rtcp_mux else ICE_ATTRIBUTES | _MUX_ATTRIBUTES

    def keep(line: SdpLine) -> bool:
        return line.attribute_name not in drop

    return SessionDescription(
        tuple(filter(keep, sdp.session)),
        tuple(
            MediaSection((section.lines[0], *filter(keep, section.lines[1:])))
            for section in sdp.media
        ),
    )


# ---------------------------------------------------------------------------- direction


_DIRECTION_NAMES = frozenset(d.value for d in Direction)


def answer_direction(offer: Direction, wanted: Direction = Direction.SENDRECV) -> Direction:
    """The direction to answer `offer` with, as close to `wanted` as RFC 3264 §6.1 allows.

    The answerer may send only if the offerer receives and receive only if the offerer
    sends: sendonly -> recvonly (or inactive), recvonly -> sendonly (or inactive),
    inactive -> inactive, sendrecv -> whatever is wanted.
    """
    return Direction.from_flags(wanted.sends and offer.receives, wanted.receives and offer.sends)


def direction_ok(offer: Direction, answer: Direction) -> bool:
    """False for an answer RFC 3264 §6.1 forbids, e.g. sendrecv to our sendonly (TRAPS.md #1)."""
    return (offer.receives or not answer.sends) and (offer.sends or not answer.receives)


def wrong_directions(offer: SessionDescription, answer: SessionDescription) -> list[int]:
    """Indexes of the answered streams whose direction RFC 3264 §6.1 does not allow."""
    return [
        index
        for index, (offered, answered) in enumerate(zip(offer.media, answer.media, strict=False))
        if not offered.is_rejected
        and not answered.is_rejected
        and not direction_ok(offer.media_direction(index), answer.media_direction(index))
    ]


def correct_answer_directions(
    offer: SessionDescription, answer: SessionDescription
) -> SessionDescription:
    """The answer with each wrong direction narrowed to what the offer allows."""
    for index in wrong_directions(offer, answer):
        fixed = answer_direction(offer.media_direction(index), answer.media_direction(index))
        answer = set_media_direction(answer, index, fixed)
    return answer


def _is_direction(line: SdpLine) -> bool:
    return line.attribute_value is None and line.attribute_name in _DIRECTION_NAMES


def set_media_direction(
    sdp: SessionDescription, index: int, direction: Direction
) -> SessionDescription:
    """Write `direction` on stream `index` (a media-level attribute overrides the session's)."""
    section = sdp.media[index]
    new_line = SdpLine.attribute(direction.value)
    lines: list[SdpLine] = []
    placed = False
    for line in section.lines[1:]:
        if not _is_direction(line):
            lines.append(line)
        elif not placed:
            lines.append(new_line)
            placed = True
    if not placed:
        lines.append(new_line)
    return sdp.with_media(index, MediaSection((section.lines[0], *lines)))
