"""`sbc run --trace`: every SIP message as one line of a ladder diagram, grouped by call.

    === call c-1 ===
    12:00:01.234  PBX 127.0.0.10:5070      ──INVITE 0301234567────────▶ SBC internal
    12:00:01.236  SBC external             ──INVITE 0301234567────────▶ ITSP 203.0.113.5:5060
    12:00:01.301  SBC external             ◀──200 OK─────────────────── ITSP 203.0.113.5:5060
    12:00:01.302  PBX 127.0.0.10:5070      ◀──200 OK─────────────────── SBC internal

Peers on a "left" interface (the PBX side) are drawn left of the SBC, the others right of
it, so both legs of a call read in the same direction. Formatting is pure; `Tracer` only
writes through the function it is given. Times are UTC, like the log lines.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sbc.sip.errors import ParseError
from sbc.sip.message import Message, Request, Response
from sbc.sip.peer import Peer
from sbc.sip.uri import SipUri, TelUri

__all__ = [
    "TraceEvent",
    "Tracer",
    "default_label",
    "format_event",
    "format_ladder",
    "group_key",
    "interface_of",
    "message_label",
]

LEFT_INTERFACES = frozenset({"internal"})
_ROLE = {"internal": "PBX", "external": "ITSP"}
_COLUMN = 24  # width of the text left of the arrow, so arrows line up
_ARROW = 28  # minimum arrow width, so the right column lines up for usual labels


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One message through one of our listeners.

    `peer` is the remote end; `listener` names our listener (defaults to peer.listener,
    which a Send may leave empty). `call` is the call's own id, which both legs share;
    without it events group by Call-ID, i.e. per leg.
    """

    when: float  # UNIX time
    inbound: bool
    peer: Peer
    message: Message
    call: str | None = None
    listener: str = ""


def interface_of(listener: str) -> str:
    """'internal/udp:127.0.0.1:5060' -> 'internal'; '' when the listener is unknown."""
    return listener.partition("/")[0] if "/" in listener else ""


def default_label(peer: Peer, interface: str) -> str:
    """A role for the remote end from the interface it talks to: PBX or ITSP."""
    return _ROLE.get(interface, "peer")


def _address(peer: Peer) -> str:
    host = f"[{peer.host}]" if ":" in peer.host else peer.host
    address = f"{host}:{peer.port}"
    # UDP is the usual case: only name the transport when it is something else.
    return address if peer.transport == "udp" else f"{peer.transport}:{address}"


def _dialled(request: Request) -> str | None:
    try:
        uri = request.ruri
    except ParseError:
        return None
    if isinstance(uri, SipUri):
        return uri.user
    if isinstance(uri, TelUri):
        return uri.number
    return None


def message_label(message: Message) -> str:
    """'INVITE 0301234567', 'BYE', '180 Ringing', '200 OK (BYE)': what the arrow carries.

    The dialled number is shown on INVITE only (where the call is routed); a response
    names its method unless it answers an INVITE, so the two 200 OKs of a call differ.
    """
    if isinstance(message, Request):
        user = _dialled(message) if message.method == "INVITE" else None
        return f"{message.method} {user}" if user else message.method
    assert isinstance(message, Response)
    label = f"{message.status} {message.reason}"
    try:
        method = message.cseq.method
    except ParseError:
        return label
    return label if method == "INVITE" else f"{label} ({method})"


def clock(when: float) -> str:
    """UNIX time as HH:MM:SS.mmm (UTC)."""
    whole = int(when)
    millis = min(int(round((when - whole) * 1000)), 999)
    return time.strftime("%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}"


def _arrow(label: str, rightward: bool) -> str:
    fill = "─" * max(2, _ARROW - len(label) - 3)
    return f"──{label}{fill}▶" if rightward else f"◀──{label}{fill}"


def format_event(
    event: TraceEvent,
    label: Callable[[Peer, str], str] = default_label,
    left_interfaces: frozenset[str] = LEFT_INTERFACES,
) -> str:
    """One ladder line (no newline) for `event`."""
    interface = interface_of(event.listener or event.peer.listener)
    remote = f"{label(event.peer, interface)} {_address(event.peer)}"
    sbc = f"SBC {interface}" if interface else "SBC"
    text = message_label(event.message)
    if interface in left_interfaces:
        # remote │ SBC: inbound travels rightward.
        left, right, rightward = remote, sbc, event.inbound
    else:
        # SBC │ remote: outbound travels rightward.
        left, right, rightward = sbc, remote, not event.inbound
    return f"{clock(event.when)}  {left:<{_COLUMN}} {_arrow(text, rightward)} {right}"


def group_key(event: TraceEvent) -> str:
    """What groups events into one ladder: the call's id, else the leg's Call-ID."""
    if event.call is not None:
        return event.call
    try:
        return event.message.call_id
    except ParseError:
        return "?"


def _header(key: str) -> str:
    return f"=== call {key} ==="


def format_ladder(
    events: Iterable[TraceEvent],
    label: Callable[[Peer, str], str] = default_label,
    left_interfaces: frozenset[str] = LEFT_INTERFACES,
) -> str:
    """All `events` as ladders, one per group (in order of first message), each in the
    order given; for a finished trace. Ends with a newline unless empty."""
    groups: dict[str, list[str]] = {}
    for event in events:
        line = format_event(event, label, left_interfaces)
        groups.setdefault(group_key(event), []).append(line)
    blocks = ["\n".join([_header(key), *lines]) + "\n" for key, lines in groups.items()]
    return "\n".join(blocks)


class Tracer:
    """Writes one line per message as it happens (the live `--trace` view).

    Concurrent calls interleave, so a call header is written again whenever the group
    changes from the previous line. `write` receives whole lines with their newline (e.g.
    sys.stderr.write).
    """

    __slots__ = ("_write", "_label", "_left", "_last", "errors")

    def __init__(
        self,
        write: Callable[[str], object],
        label: Callable[[Peer, str], str] = default_label,
        left_interfaces: frozenset[str] = LEFT_INTERFACES,
    ) -> None:
        self._write = write
        self._label = label
        self._left = left_interfaces
        self._last: str | None = None
        self.errors = 0

    def message(
        self,
        when: float,
        inbound: bool,
        peer: Peer,
        message: Message,
        call: str | None = None,
        listener: str = "",
    ) -> None:
        """Trace one received (`inbound`) or sent message; `when` is UNIX time."""
        event = TraceEvent(when, inbound, peer, message, call, listener)
        try:
            line = format_event(event, self._label, self._left)
            key = group_key(event)
            if key != self._last:
                self._last = key
                line = f"{_header(key)}\n{line}"
            self._write(line + "\n")
        except Exception:
            # A diagnostic view must not take a SIP message down with it (a closed stderr,
            # an odd message): count it and carry on.
            self.errors += 1
