"""Topology hiding: what of a message from one leg may appear on the other (sans-I/O).

The rule is deny by default. The B2BUA builds every message of a leg fresh (its own Via,
Call-ID, tags, CSeq, Contact; no Record-Route or Route from the other side) and copies across
only what these functions allow: the headers a relayed method needs to mean anything, the
headers the operator allow-listed for that side, a sanitized reason phrase, and the asserted
identity (RFC 3325) when that side is trusted with it, re-homed on our own address.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

from sbc.sip.errors import ParseError
from sbc.sip.headers import NameAddr, parse_name_addr, split_commas
from sbc.sip.message import Message, Request, Response, header_key
from sbc.sip.uri import SipUri, parse_uri

# Headers that carry what a relayed request or its answer is about (RFC 6086 INFO packages,
# RFC 6665 events, RFC 3515 REFER, RFC 3326 Reason). They cross with it; nothing else does.
_METHOD_HEADERS: dict[str, frozenset[str]] = {
    method: frozenset(header_key(name) for name in names)
    for method, names in {
        "INFO": ("Info-Package", "Content-Disposition"),
        "NOTIFY": ("Event", "Subscription-State"),
        "REFER": ("Refer-To", "Referred-By", "Refer-Sub"),
        "MESSAGE": ("Content-Disposition",),
        "BYE": ("Reason",),
    }.items()
}
_NONE: frozenset[str] = frozenset()
# A dot between two word characters: an IPv4 address or a host name (gw3.itsp.example).
_HOSTLIKE = re.compile(r"\w\.\w")


def crossing_headers(
    message: Message, method: str, allowed: Iterable[str]
) -> list[tuple[str, str]]:
    """The headers of `message` that may cross to the other leg: those `method` needs and
    those the operator allow-listed (`headers:` of the trunk or PBX the other leg faces).
    X- headers, User-Agent/Server, Warning, Via/Route/Record-Route/Contact and everything
    else stay on their own leg (TRAPS #6)."""
    wanted = _METHOD_HEADERS.get(method, _NONE)
    extra = {header_key(name) for name in allowed}
    if extra:
        wanted = wanted | extra
    if not wanted:
        return []
    return [(name, value) for name, value in message.headers() if header_key(name) in wanted]


def sanitized_reason(response: Response) -> str:
    """The reason phrase of a response from the other leg, or '' (use the standard one) when
    it is not plain printable ASCII of at most 64 characters or looks like it names a host,
    URI or address (reason phrases are free text, and carriers put anything in them)."""
    text = response.reason
    if not text or len(text) > 64 or not all(32 <= ord(c) < 127 for c in text):
        return ""
    if any(ch in text for ch in "@:/[]<>") or _HOSTLIKE.search(text):
        return ""
    return text


def reason_header(protocol: str, cause: int, text: str) -> tuple[str, str]:
    """An RFC 3326 Reason header, e.g. ('Reason', 'SIP;cause=408;text="No ACK"')."""
    clean = "".join(c for c in text if 32 <= ord(c) < 127 and c not in '"\\')
    return ("Reason", f'{protocol};cause={cause};text="{clean[:60]}"')


def asserted_identity(request: Request, policy: str, host: str) -> list[tuple[str, str]]:
    """P-Asserted-Identity (and Privacy) for the INVITE we send on the other leg (RFC 3325).

    `policy` is the trunk's or PBX's `pai` setting: 'strip' drops the identity (§9.1: only
    to a trusted peer); 'pass' keeps the user part and display name but re-homes sip: URIs on
    `host` (our address on that leg), so the identity never names an internal host. tel:
    URIs cross unchanged. A value we cannot parse is dropped rather than copied blindly."""
    if policy != "pass":
        return []
    out: list[tuple[str, str]] = []
    for value in request.header_values("P-Asserted-Identity"):
        for part in split_commas(value):
            rehomed = _rehome(part, host)
            if rehomed is not None:
                out.append(("P-Asserted-Identity", rehomed))
    if out:
        out.extend(("Privacy", value) for value in request.header_values("Privacy"))
    return out


def _rehome(text: str, host: str) -> str | None:
    try:
        addr = parse_name_addr(text.strip(), "P-Asserted-Identity header")
        uri = parse_uri(addr.uri)
    except ParseError:
        return None
    if isinstance(uri, SipUri):
        # user=phone says what the user part is; every other parameter is about the host.
        params = {k: v for k, v in uri.params.items() if k == "user"}
        uri = dataclasses.replace(uri, host=host, port=None, params=params, headers="")
        return str(NameAddr(str(uri), addr.display))
    return str(NameAddr(addr.uri, addr.display))
