"""From the SDP exchanged on one leg to what the relay must know about that side of each
stream (media.plan.LegMedia): the codec in use, telephone-event numbers, the leg's DTMF
mode and its SRTP keys. Pure functions; the call adapter passes the result to the relay."""

from __future__ import annotations

import base64

from media.plan import LegMedia, SrtpKeys
from sbc.sdp import SdpError, SessionDescription
from sbc.sdp.crypto import CryptoAttribute, parse_crypto
from sbc.sdp.model import STATIC_PAYLOAD_TYPES, MediaSection
from sbc.sdp.telephone_event import TELEPHONE_EVENT, event_payload_type

_NOT_CODECS = frozenset({TELEPHONE_EVENT, "cn", "red", "ulpfec", "flexfec", "rtx"})


def plan_leg(
    ours: SessionDescription | None,
    theirs: SessionDescription | None,
    dtmf: str,
) -> tuple[LegMedia | None, ...]:
    """Per m-line of the peer's SDP (`theirs`), how that side speaks; None for a stream that
    is rejected or not RTP. `ours` is what we sent that peer (offer or answer)."""
    if theirs is None:
        return ()
    plans: list[LegMedia | None] = []
    for index, section in enumerate(theirs.media):
        mine = ours.media[index] if ours is not None and index < len(ours.media) else None
        direction = str(theirs.media_direction(index))
        plans.append(_plan_stream(section, mine, dtmf, direction))
    return tuple(plans)


def _plan_stream(
    theirs: MediaSection, ours: MediaSection | None, dtmf: str, direction: str
) -> LegMedia | None:
    if theirs.is_rejected or not theirs.is_rtp:
        return None
    if ours is not None and ours.is_rejected:
        return None
    codec, clock = _main_codec(theirs, ours)
    # RFC 3264 §6.1: a side sends with the payload numbers of the SDP it received (ours)
    # and receives with those of its own. Events are in use only when both SDPs list them
    # (an answer that leaves telephone-event out refuses it), at the agreed codec's clock.
    own = event_payload_type(theirs, clock)
    sent = own if ours is None else event_payload_type(ours, clock)
    if own is None or sent is None:
        own = sent = None
    return LegMedia(
        media=theirs.media,
        codec=codec,
        clock_rate=clock,
        ptime_ms=_ptime(theirs),
        events_in=None if sent is None else sent[0],
        events_out=None if own is None else own[0],
        event_rate=clock if own is None else own[1],
        dtmf=dtmf,
        srtp=None if ours is None else srtp_keys(ours, theirs),
        direction=direction,
        rtcp_mux=ours is not None and ours.rtcp_mux and theirs.rtcp_mux,
    )


def _main_codec(theirs: MediaSection, ours: MediaSection | None) -> tuple[str, int]:
    """The codec the stream carries: the peer's first real codec that we listed too (the
    answer's order wins, RFC 3264 §6.1), else its first."""
    shared = set(ours.formats) if ours is not None else set(theirs.formats)
    first: tuple[str, int] | None = None
    maps = theirs.rtpmaps()
    for pt in theirs.formats:
        rtpmap = maps.get(pt) or STATIC_PAYLOAD_TYPES.get(pt)
        if rtpmap is None or rtpmap.encoding.casefold() in _NOT_CODECS:
            continue
        found = (rtpmap.encoding, rtpmap.clock_rate)
        if pt in shared:
            return found
        first = first or found
    return first or ("PCMU", 8000)


def _ptime(section: MediaSection) -> float:
    value = section.attribute("ptime")
    try:
        ptime = float(value) if value else 20.0
    except ValueError:
        return 20.0
    return ptime if 0 < ptime <= 1000 else 20.0


def srtp_keys(ours: MediaSection, theirs: MediaSection) -> SrtpKeys | None:
    """The SDES pair in force: the peer's a=crypto and ours with the same tag and suite
    (one side answered one line of the other's offer, RFC 4568 §5.1). None: plain RTP."""
    their_lines = _cryptos(theirs)
    if not their_lines:
        return None
    our_lines = _cryptos(ours)
    for line in their_lines:
        for mine in our_lines:
            if line.tag == mine.tag and line.suite is not None and line.suite == mine.suite:
                return SrtpKeys(
                    str(line.suite),
                    base64.b64encode(line.key).decode(),
                    base64.b64encode(mine.key).decode(),
                )
    return None


def _cryptos(section: MediaSection) -> list[CryptoAttribute]:
    lines = []
    for value in section.attributes("crypto"):
        if value is None:
            continue
        try:
            line = parse_crypto(value)
        except SdpError:
            continue
        if line.usable:
            lines.append(line)
    return lines
