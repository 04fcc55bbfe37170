"""SDP as it crosses the B2BUA: read a message's body, rewrite an offer or answer for the
other leg (codec policy, no ICE, relay addresses, our o= and s=), and find where the sender
of a description wants its media. Pure functions over sbc.sdp."""

from __future__ import annotations

from collections.abc import Sequence

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
) -> tuple[SessionDescription, OriginState]:
    """`sdp` rewritten for the other leg: only the codecs every list in `codecs` allows (for
    offers), no ICE (the relay is no ICE agent), every address the relay's, s=- and o= of
    that leg. `answers`: the offer this answers on that leg; a direction RFC 3264 §6.1 does
    not allow against it is narrowed (an answer of sendrecv to a sendonly hold, TRAPS #1).
    `dtmf`: 'strip' takes telephone-event out (that leg signals DTMF with INFO), 'add' puts
    it in (that leg expects RFC 4733, the other side sends INFO), '' leaves it."""
    out = sdp
    for allowed in codecs:
        out = filter_codecs(out, allowed)
    if dtmf == "strip":
        out = without_telephone_event(out)
    elif dtmf == "add":
        out = with_telephone_event(out, answering=answers)
    out = strip_ice(out, keep_rtcp_mux=False)
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
