"""SDP as it crosses the B2BUA: read a message's body, rewrite an offer or answer for the
other leg (codec policy, no ICE, relay addresses, our o= and s=), and find where the sender
of a description wants its media. Pure functions over sbc.sdp."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from sbc.sdp import (
    OriginState,
    SdpError,
    SessionDescription,
    correct_answer_directions,
    filter_codecs,
    parse_sdp,
    point_at_relay,
    set_session_name,
    stamp_origin,
    strip_ice,
)
from sbc.sdp.crypto import (
    CryptoAttribute,
    LocalOffer,
    Protection,
    SrtpPolicy,
    accept_answer,
    answer_section,
    decide_offer,
    offer_section,
    parse_crypto,
    strip_crypto,
)
from sbc.sdp.model import MediaSection, SdpLine
from sbc.sdp.telephone_event import with_telephone_event, without_telephone_event
from sbc.sip.message import Message

Endpoint = tuple[str, int]
SDP_TYPE = "application/sdp"


def sdp_of(message: Message) -> SessionDescription | None:
    """The SDP a message carries, or None for no body. SdpError (status 415 for a body of
    another type, 400/488 for a malformed one) when it cannot be used."""
    body = message.body
    if not body:
        return None
    ctype = (message.content_type or "").split(";", 1)[0].strip().lower()
    if ctype != SDP_TYPE:
        # Multipart with SDP inside (e.g. SIP-I) is for a later issue; say so plainly.
        raise SdpError(
            f"body of type {ctype or 'unknown'} is not supported, only {SDP_TYPE}", status=415
        )
    return parse_sdp(body)


def _fitted(endpoints: Sequence[Endpoint | None], count: int) -> list[Endpoint | None]:
    """Relay endpoints for `count` m-lines: streams beyond what the relay allocated are
    rejected (port 0) rather than sent anywhere unrelayed."""
    fitted = list(endpoints[:count])
    fitted.extend([None] * (count - len(fitted)))
    return fitted


def cross(
    sdp: SessionDescription,
    endpoints: Sequence[Endpoint | None],
    origin: OriginState,
    *,
    codecs: Sequence[Sequence[str]] = (),
    answers: SessionDescription | None = None,
    dtmf: str = "",
    srtp: tuple[SrtpPolicy, SrtpPolicy] = (SrtpPolicy.OFF, SrtpPolicy.OFF),
    offered: SessionDescription | None = None,
) -> tuple[SessionDescription, OriginState]:
    """`sdp` rewritten for the other leg: only the codecs every list in `codecs` allows (for
    offers), no ICE (the relay is no ICE agent), every address the relay's, s=- and o= of
    that leg. `answers`: the offer this answers on that leg; a direction RFC 3264 §6.1 does
    not allow against it is narrowed (an answer of sendrecv to a sendonly hold, TRAPS #1).
    `dtmf`: 'strip' takes telephone-event out (that leg signals DTMF with INFO), 'add' puts
    it in (that leg expects RFC 4733, the other side sends INFO), '' leaves it.
    `srtp`: the SRTP policies (source side, that leg): see `secure`; `offered` is our offer
    on the source leg when `sdp` answers it."""
    out = sdp
    for allowed in codecs:
        out = filter_codecs(out, allowed)
    if dtmf == "strip":
        out = without_telephone_event(out)
    elif dtmf == "add":
        out = with_telephone_event(out, answering=answers)
    out = strip_ice(out, keep_rtcp_mux=False)
    out = _unbundled(out)
    out = secure(out, srtp, answers, offered)
    out = _rtcp_mux(out, sdp, answers)
    out = point_at_relay(out, _fitted(endpoints, len(out.media)), address=origin.address)
    out = set_session_name(out)
    if answers is not None and len(answers.media) == len(out.media):
        out = correct_answer_directions(answers, out)
    return stamp_origin(out, origin)


def remotes_of(sdp: SessionDescription) -> tuple[Endpoint | None, ...]:
    """Where the sender of `sdp` receives each stream: None for a rejected stream and for
    the RFC 2543 hold address 0.0.0.0 (send nothing there)."""
    remotes: list[Endpoint | None] = []
    for index, section in enumerate(sdp.media):
        conn = sdp.media_connection(index)
        if section.is_rejected or conn is None or conn.is_unspecified:
            remotes.append(None)
        else:
            remotes.append((conn.address, section.port))
    return tuple(remotes)


def same_session(previous: SessionDescription | None, sdp: SessionDescription) -> bool:
    """An offer that repeats the last one (same o= session id and version): a session
    refresh, not a change (RFC 3264 §8), answered without bothering the other leg."""
    if previous is None:
        return False
    try:
        old, new = previous.origin, sdp.origin
    except SdpError:
        return False
    return (old.sess_id, old.sess_version, old.address) == (
        new.sess_id,
        new.sess_version,
        new.address,
    )


def secure(
    sdp: SessionDescription,
    policies: tuple[SrtpPolicy, SrtpPolicy],
    answers: SessionDescription | None,
    offered: SessionDescription | None,
) -> SessionDescription:
    """SDES crossing the B2BUA (RFC 4568; TRAPS #9): no a=crypto goes from one leg to the
    other. An offer is checked against the source side's policy (SdesError 488 when it
    cannot be met) and re-offered under the other side's, with fresh keys of ours. An
    answer is checked against the offer we made its sender (488 when it breaks it) and the
    answer toward the offerer is built from that offerer's offer and policy."""
    source, target = policies
    if source is SrtpPolicy.OFF and target is SrtpPolicy.OFF and _plain(sdp):
        return sdp  # the common case, plain RTP on both sides: nothing to check or change
    session = tuple(line for line in sdp.session if not line.is_attribute("crypto"))
    media: list[MediaSection] = []
    if answers is None:
        for section in sdp.media:
            refused = decide_offer(section, source)
            if refused.protection is Protection.REJECT:
                raise refused.error()
            media.append(offer_section(section, target).section)
        return replace(sdp, session=session, media=tuple(media))
    for index, section in enumerate(sdp.media):
        ours = offered.media[index] if offered is not None and index < len(offered.media) else None
        if ours is not None:
            check = accept_answer(LocalOffer(ours, source, _cryptos(ours)), section)
            if check.protection is Protection.REJECT:
                raise check.error()
        if index < len(answers.media):
            decision = decide_offer(answers.media[index], target)
            media.append(answer_section(strip_crypto(section), decision))
        else:
            media.append(strip_crypto(section))
    return replace(sdp, session=session, media=tuple(media))


def _plain(sdp: SessionDescription) -> bool:
    """No a=crypto anywhere and no secure profile: nothing SDES to decide."""
    if any(line.is_attribute("crypto") for line in sdp.session):
        return False
    return all(
        "SAVP" not in section.proto and not section.has_attribute("crypto") for section in sdp.media
    )


def _cryptos(section: MediaSection) -> tuple[CryptoAttribute, ...]:
    found = []
    for value in section.attributes("crypto"):
        if value is None:
            continue
        try:
            found.append(parse_crypto(value))
        except SdpError:
            continue
    return tuple(found)


def _rtcp_mux(
    out: SessionDescription, source: SessionDescription, answers: SessionDescription | None
) -> SessionDescription:
    """RFC 5761 per leg (the relay muxes any leg that agrees, independently of the other):
    an offer asks the other leg for a=rtcp-mux when its sender asked us (never
    rtcp-mux-only, RFC 8858: we can do either there); an answer grants it to the offerer
    whenever the offerer asked, whatever the far side answered, and then names no
    separate RTCP port."""
    media: list[MediaSection] = []
    for index, section in enumerate(out.media):
        if section.is_rejected or not section.is_rtp:
            media.append(section)
            continue
        if answers is None:
            asked = index < len(source.media) and _asks_mux(source.media[index])
        else:
            asked = index < len(answers.media) and _asks_mux(answers.media[index])
        if not asked:
            media.append(section)
            continue
        lines = [
            line for line in section.lines[1:] if answers is None or not line.is_attribute("rtcp")
        ]
        media.append(MediaSection((section.lines[0], *lines, SdpLine.attribute("rtcp-mux"))))
    return replace(out, media=tuple(media))


def _asks_mux(section: MediaSection) -> bool:
    return section.has_attribute("rtcp-mux") or section.has_attribute("rtcp-mux-only")


def _unbundled(sdp: SessionDescription) -> SessionDescription:
    """No BUNDLE (RFC 9143) across the relay: every m-line has ports of its own on each leg,
    so a=group:BUNDLE would tell the far side to send everything to the first stream's
    port. The grouping, a=bundle-only, and the a=mid tags it pairs with are removed."""
    groups = [v for v in sdp.attributes("group") if v and v.split()[0].upper() == "BUNDLE"]
    if not groups and not any(m.has_attribute("bundle-only") for m in sdp.media):
        return sdp
    session = tuple(
        line
        for line in sdp.session
        if not (
            line.is_attribute("group") and (line.attribute_value or "").upper().startswith("BUNDLE")
        )
    )
    media = tuple(
        MediaSection(
            (
                section.lines[0],
                *(
                    line
                    for line in section.lines[1:]
                    if not line.is_attribute("bundle-only") and not line.is_attribute("mid")
                ),
            )
        )
        for section in sdp.media
    )
    return replace(sdp, session=session, media=media)
