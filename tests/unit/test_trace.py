"""sbc.trace: the --trace ladder for both legs of a call (INVITE/100/180/200/ACK/BYE/200)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from sbc.sip.message import Message, parse
from sbc.sip.peer import Peer
from sbc.trace import TraceEvent, Tracer, clock, format_event, format_ladder, message_label

PBX = Peer("udp", "127.0.0.10", 5070, "internal/udp:127.0.0.1:5060")
ITSP = Peer("udp", "203.0.113.5", 5060, "external/udp:198.51.100.1:5060")
T0 = 1_700_000_000.0  # 22:13:20 UTC

# One arrow: rightward `──LABEL───▶` or leftward `◀──LABEL───`; labels hold no box chars.
LINE_RE = re.compile(
    r"^(?P<time>\d\d:\d\d:\d\d\.\d{3})  (?P<left>\S.*?) +"
    r"(?:──(?P<right_label>[^─]+)─+▶|◀──(?P<left_label>[^─]+)─+) (?P<right>\S.*)$"
)


def request(method: str, uri: str, call_id: str, cseq: int) -> Message:
    return parse(
        (
            f"{method} {uri} SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.10:5070;branch=z9hG4bK-x\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:100@pbx>;tag=a\r\n"
            "To: <sip:0301234567@sbc>\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )


def response(status: int, reason: str, method: str, call_id: str, cseq: int) -> Message:
    return parse(
        (
            f"SIP/2.0 {status} {reason}\r\n"
            "Via: SIP/2.0/UDP 127.0.0.10:5070;branch=z9hG4bK-x\r\n"
            "From: <sip:100@pbx>;tag=a\r\n"
            "To: <sip:0301234567@sbc>;tag=b\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )


A, B = "leg-a@pbx", "leg-b@sbc"  # the two legs' Call-IDs

# (inbound, peer, message): the whole call as the SBC sees it, in order.
EXCHANGE: list[tuple[bool, Peer, Message]] = [
    (True, PBX, request("INVITE", "sip:0301234567@127.0.0.1", A, 1)),
    (False, PBX, response(100, "Trying", "INVITE", A, 1)),
    (False, ITSP, request("INVITE", "sip:0301234567@203.0.113.5", B, 1)),
    (True, ITSP, response(100, "Trying", "INVITE", B, 1)),
    (True, ITSP, response(180, "Ringing", "INVITE", B, 1)),
    (False, PBX, response(180, "Ringing", "INVITE", A, 1)),
    (True, ITSP, response(200, "OK", "INVITE", B, 1)),
    (False, PBX, response(200, "OK", "INVITE", A, 1)),
    (True, PBX, request("ACK", "sip:sbc@127.0.0.1", A, 1)),
    (False, ITSP, request("ACK", "sip:itsp@203.0.113.5", B, 1)),
    (True, PBX, request("BYE", "sip:sbc@127.0.0.1", A, 2)),
    (False, ITSP, request("BYE", "sip:itsp@203.0.113.5", B, 2)),
    (True, ITSP, response(200, "OK", "BYE", B, 2)),
    (False, PBX, response(200, "OK", "BYE", A, 2)),
]

PBX_SIDE = "PBX 127.0.0.10:5070"
ITSP_SIDE = "ITSP 203.0.113.5:5060"
# What each line should say: (left column, label, rightward?, right column).
EXPECTED = [
    (PBX_SIDE, "INVITE 0301234567", True, "SBC internal"),
    (PBX_SIDE, "100 Trying", False, "SBC internal"),
    ("SBC external", "INVITE 0301234567", True, ITSP_SIDE),
    ("SBC external", "100 Trying", False, ITSP_SIDE),
    ("SBC external", "180 Ringing", False, ITSP_SIDE),
    (PBX_SIDE, "180 Ringing", False, "SBC internal"),
    ("SBC external", "200 OK", False, ITSP_SIDE),
    (PBX_SIDE, "200 OK", False, "SBC internal"),
    (PBX_SIDE, "ACK", True, "SBC internal"),
    ("SBC external", "ACK", True, ITSP_SIDE),
    (PBX_SIDE, "BYE", True, "SBC internal"),
    ("SBC external", "BYE", True, ITSP_SIDE),
    ("SBC external", "200 OK (BYE)", False, ITSP_SIDE),
    (PBX_SIDE, "200 OK (BYE)", False, "SBC internal"),
]


def events(call: str | None = "c-1") -> list[TraceEvent]:
    return [
        TraceEvent(T0 + n * 0.010, inbound, peer, message, call)
        for n, (inbound, peer, message) in enumerate(EXCHANGE)
    ]


@dataclass(frozen=True, slots=True)
class Line:
    time: str
    left: str
    label: str
    rightward: bool
    right: str


def split(line: str) -> Line:
    match = LINE_RE.match(line)
    assert match is not None, line
    rightward = match["right_label"] is not None
    label = match["right_label"] if rightward else match["left_label"]
    return Line(match["time"], match["left"], label, rightward, match["right"])


def test_ladder_for_both_legs_of_a_call() -> None:
    text = format_ladder(events())
    lines = text.splitlines()
    assert lines[0] == "=== call c-1 ==="
    assert text.count("=== call") == 1  # both legs in one ladder
    parsed = [split(line) for line in lines[1:]]
    assert [(p.left, p.label, p.rightward, p.right) for p in parsed] == EXPECTED
    assert parsed[0].time == "22:13:20.000"
    assert parsed[-1].time == "22:13:20.130"  # 13 * 10 ms, in order
    # Every arrow starts in the same column, so the ladder reads as one.
    assert len({line.index("─") - (1 if "◀" in line else 0) for line in lines[1:]}) == 1


def test_without_a_call_id_each_leg_is_its_own_ladder() -> None:
    text = format_ladder(events(call=None))
    blocks = text.split("\n\n")
    assert [block.splitlines()[0] for block in blocks] == [f"=== call {A} ===", f"=== call {B} ==="]
    assert len(blocks[0].splitlines()) == 1 + 7 and len(blocks[1].splitlines()) == 1 + 7
    assert all("PBX" in line for line in blocks[0].splitlines()[1:])
    assert all("ITSP" in line for line in blocks[1].splitlines()[1:])


def test_single_line_layout() -> None:
    invite = TraceEvent(T0 + 1.234, True, PBX, EXCHANGE[0][2])
    line = format_event(invite)
    assert line.startswith("22:13:21.234  PBX 127.0.0.10:5070 ")
    assert "──INVITE 0301234567─" in line and line.endswith("▶ SBC internal")


def test_listener_override_and_other_transports() -> None:
    tls = Peer("tls", "2001:db8::5", 5061)  # a Send may leave the listener empty
    event = TraceEvent(T0, False, tls, EXCHANGE[2][2], listener="external/tls:[::]:5061")
    line = split(format_event(event))
    assert (line.left, line.rightward, line.right) == (
        "SBC external",
        True,
        "ITSP tls:[2001:db8::5]:5061",
    )
    unknown = split(format_event(TraceEvent(T0, True, tls, EXCHANGE[1][2])))
    assert (unknown.left, unknown.rightward) == ("SBC", False)


def test_custom_labels() -> None:
    line = format_event(events()[0], label=lambda peer, interface: f"pbx-{interface}")
    assert split(line).left == "pbx-internal 127.0.0.10:5070"


@pytest.mark.parametrize(
    ("index", "label"),
    [(0, "INVITE 0301234567"), (8, "ACK"), (4, "180 Ringing"), (12, "200 OK (BYE)")],
)
def test_message_label(index: int, label: str) -> None:
    assert message_label(EXCHANGE[index][2]) == label


def test_clock_rounds_without_overflowing() -> None:
    assert clock(T0 + 0.9996) == "22:13:20.999"


def test_tracer_streams_with_headers_on_group_change() -> None:
    written: list[str] = []
    tracer = Tracer(written.append)
    sequence = events()
    other = TraceEvent(T0, True, PBX, request("OPTIONS", "sip:sbc@127.0.0.1", "ping", 1))
    for event in [sequence[0], sequence[1], other, sequence[2]]:
        tracer.message(event.when, event.inbound, event.peer, event.message, event.call)
    assert all(chunk.endswith("\n") for chunk in written)
    lines = "".join(written).splitlines()
    headers = [line for line in lines if line.startswith("===")]
    assert headers == ["=== call c-1 ===", "=== call ping ===", "=== call c-1 ==="]
    assert [split(line).label for line in lines if not line.startswith("===")] == [
        "INVITE 0301234567",
        "100 Trying",
        "OPTIONS",
        "INVITE 0301234567",
    ]


def test_tracer_never_raises_into_the_sip_path() -> None:
    def broken(_: str) -> None:
        raise OSError("stderr closed")

    tracer = Tracer(broken)
    tracer.message(T0, True, PBX, EXCHANGE[0][2])
    assert tracer.errors == 1
