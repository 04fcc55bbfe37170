"""RFC 4733 telephone-event in SDP: find it, take it out toward a side that signals DTMF
with SIP INFO, add it toward a side that expects it in RTP when the other side had none."""

from __future__ import annotations

from dataclasses import replace

from sbc.sdp.model import STATIC_PAYLOAD_TYPES, MediaSection, SdpLine, SessionDescription

TELEPHONE_EVENT = "telephone-event"
DEFAULT_PAYLOAD_TYPE = 101  # the number most equipment uses; any free dynamic one will do
_PER_PAYLOAD = frozenset({"rtpmap", "fmtp", "rtcp-fb"})


def telephone_events(section: MediaSection) -> dict[int, int]:
    """payload type -> clock rate of each telephone-event format of an audio section."""
    found: dict[int, int] = {}
    if section.media != "audio" or not section.is_rtp:
        return found
    maps = section.rtpmaps()
    for pt in section.formats:
        rtpmap = maps.get(pt)
        if rtpmap is not None and rtpmap.encoding.casefold() == TELEPHONE_EVENT:
            found[int(pt)] = rtpmap.clock_rate
    return found


def main_clock_rate(section: MediaSection) -> int:
    """The clock rate of the first real codec (telephone-event must match it, RFC 4733
    §2.1: its timestamps count in the audio's units); 8000 when it cannot be told."""
    maps = section.rtpmaps()
    for pt in section.formats:
        rtpmap = maps.get(pt) or STATIC_PAYLOAD_TYPES.get(pt)
        if rtpmap is not None and rtpmap.encoding.casefold() not in (TELEPHONE_EVENT, "cn"):
            return rtpmap.clock_rate
    return 8000


def event_payload_type(section: MediaSection, rate: int | None = None) -> tuple[int, int] | None:
    """(payload type, clock rate) of the telephone-event at `rate` (default: the section's
    main codec's; RFC 4733 §2.1: events count in the audio's clock), else the first one
    listed; None when the section has none."""
    events = telephone_events(section)
    if not events:
        return None
    if rate is None:
        rate = main_clock_rate(section)
    for pt, clock in events.items():
        if clock == rate:
            return pt, clock
    pt = next(iter(events))
    return pt, events[pt]


def without_telephone_event(sdp: SessionDescription) -> SessionDescription:
    """Every telephone-event format removed from the audio streams (with its rtpmap, fmtp
    and rtcp-fb lines): the side receiving this signals DTMF with SIP INFO instead."""
    return replace(sdp, media=tuple(_strip(section) for section in sdp.media))


def _strip(section: MediaSection) -> MediaSection:
    events = {str(pt) for pt in telephone_events(section)}
    if not events or section.is_rejected:
        return section
    formats = tuple(pt for pt in section.formats if pt not in events)
    if not formats:
        return section  # telephone-event alone: nothing sensible to remove it for
    lines = [
        line
        for line in section.lines[1:]
        if line.attribute_name not in _PER_PAYLOAD or _first_word(line) not in events
    ]
    return MediaSection((replace(section.media_line, formats=formats).to_line(), *lines))


def with_telephone_event(
    sdp: SessionDescription,
    payload_type: int = DEFAULT_PAYLOAD_TYPE,
    *,
    answering: SessionDescription | None = None,
) -> SessionDescription:
    """A telephone-event format added to each active audio stream that lacks one, at the
    main codec's clock rate, events 0-16 (RFC 4733 §7.1.1): toward a side that sends and
    expects DTMF in RTP when the other side signals it with INFO. For an answer, pass the
    offer it answers: only streams whose offer had telephone-event get it, with the
    offer's payload type and rate (RFC 3264 §6.1: an answer lists only offered formats)."""
    media = []
    for index, section in enumerate(sdp.media):
        if answering is None:
            media.append(_add(section, payload_type, None))
        elif index < len(answering.media):
            offered = event_payload_type(answering.media[index])
            media.append(section if offered is None else _add(section, *offered))
        else:
            media.append(section)
    return replace(sdp, media=tuple(media))


def _add(section: MediaSection, preferred: int, rate: int | None) -> MediaSection:
    if section.media != "audio" or not section.is_rtp or section.is_rejected:
        return section
    if telephone_events(section):
        return section
    pt = _free_payload_type(section, preferred)
    if pt is None:
        return section  # all 32 dynamic numbers taken: leave the stream alone
    rate = rate or main_clock_rate(section)
    media_line = replace(section.media_line, formats=(*section.formats, str(pt)))
    lines = list(section.lines[1:])
    # After the stream's last rtpmap/fmtp line, so the payload lines stay together; never
    # before its i=/c=/b=/k= lines, which come ahead of every a= line (RFC 8866 §5).
    at = max(
        (
            i + 1
            for i, line in enumerate(lines)
            if line.kind != "a" or line.attribute_name in _PER_PAYLOAD
        ),
        default=0,
    )
    lines[at:at] = [
        SdpLine.attribute("rtpmap", f"{pt} {TELEPHONE_EVENT}/{rate}"),
        SdpLine.attribute("fmtp", f"{pt} 0-16"),
    ]
    return MediaSection((media_line.to_line(), *lines))


def _free_payload_type(section: MediaSection, preferred: int) -> int | None:
    used = {int(pt) for pt in section.formats if pt.isdigit()}
    if preferred not in used:
        return preferred
    return next((pt for pt in range(96, 128) if pt not in used), None)


def _first_word(line: SdpLine) -> str:
    words = (line.attribute_value or "").split(maxsplit=1)
    return words[0] if words else ""
