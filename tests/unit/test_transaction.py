"""The SIP transaction layer (RFC 3261 §17, RFC 6026) driven with a virtual clock."""

from __future__ import annotations

import string
from typing import TypeVar

import pytest

from sbc.sip.message import Request, Response, make_response, parse
from sbc.sip.peer import Peer, stamp_via
from sbc.sip.transaction import (
    MAGIC_COOKIE,
    AckReceived,
    Action,
    ClientInviteState,
    ClientNonInviteState,
    ClientNonInviteTransaction,
    RequestReceived,
    ResponseReceived,
    Send,
    ServerInviteState,
    ServerNonInviteState,
    StrayResponse,
    Terminated,
    TimedOut,
    Timer,
    TimerSettings,
    TransactionError,
    TransactionLayer,
    TransactionStateError,
    TransportFailed,
    TxnKey,
    new_branch,
)

A = TypeVar("A")
SETTINGS = TimerSettings()
T1, T2, T4 = SETTINGS.t1, SETTINGS.t2, SETTINGS.t4
FAR = 1000.0  # later than every timer

PBX = {"udp": Peer("udp", "127.0.0.10", 5060), "tcp": Peer("tcp", "127.0.0.10", 40122)}
ITSP = {"udp": Peer("udp", "127.0.0.20", 5060), "tcp": Peer("tcp", "127.0.0.20", 5060)}
TRANSPORTS = ["udp", "tcp"]

SDP = (
    "v=0\r\n"
    "o=pbx 2890844526 2890844526 IN IP4 127.0.0.10\r\n"
    "s=-\r\n"
    "c=IN IP4 127.0.0.10\r\n"
    "t=0 0\r\n"
    "m=audio 49170 RTP/AVP 0 8 101\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
)


def request(
    method: str,
    *,
    transport: str = "udp",
    branch: str | None = "z9hG4bK.pbx-1",
    sent_by: str = "127.0.0.10:5060",
    cseq: int = 1,
    cseq_method: str | None = None,
    to_tag: str | None = None,
    uri: str = "sip:+15551234567@127.0.0.1",
    extra: str = "",
) -> Request:
    """A request as a PBX would send it, parsed from bytes."""
    via = f"SIP/2.0/{transport.upper()} {sent_by}" + (f";branch={branch}" if branch else "")
    to = "<sip:+15551234567@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    body = SDP if method == "INVITE" else ""
    raw = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: {via}\r\n"
        "Max-Forwards: 70\r\n"
        f'From: "Alice" <sip:+15550001111@127.0.0.10>;tag=pbx-tag-1\r\n'
        f"To: {to}\r\n"
        "Call-ID: 3848276298220188511@127.0.0.10\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        "Contact: <sip:+15550001111@127.0.0.10:5060>\r\n"
        f"{extra}"
        + ("Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n\r\n{body}"
    )
    msg = parse(raw.encode())
    assert isinstance(msg, Request)
    return msg


def outgoing(method: str, *, transport: str = "udp", extra: str = "", cseq: int = 7) -> Request:
    """A request the SBC sends toward the ITSP, with a fresh branch."""
    raw = (
        f"{method} sip:+15551234567@127.0.0.20 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport.upper()} 127.0.0.2:5060;branch={new_branch()};rport\r\n"
        "Max-Forwards: 70\r\n"
        "Route: <sip:127.0.0.30;lr>\r\n"
        "Route: <sip:127.0.0.20;lr>\r\n"
        "From: <sip:+15550001111@127.0.0.2>;tag=sbc-tag-9\r\n"
        "To: <sip:+15551234567@127.0.0.20>\r\n"
        "Call-ID: b2b-leg-2@127.0.0.2\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Contact: <sip:sbc@127.0.0.2:5060>\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse(raw.encode())
    assert isinstance(msg, Request)
    return msg


def answer(req: Request, status: int, to_tag: str | None = "itsp-tag-5") -> Response:
    """The response a peer sends to `req`, as it arrives off the wire."""
    resp = parse(bytes(make_response(req, status, to_tag=None if status == 100 else to_tag)))
    assert isinstance(resp, Response)
    return resp


def sends(actions: list[Action]) -> list[Send]:
    return [a for a in actions if isinstance(a, Send)]


def of_type(actions: list[Action], kind: type[A]) -> list[A]:
    return [a for a in actions if isinstance(a, kind)]


def advance(layer: TransactionLayer, until: float) -> list[tuple[float, Action]]:
    """Run the virtual clock: fire every deadline up to `until`, as an adapter would."""
    out: list[tuple[float, Action]] = []
    while (deadline := layer.next_deadline()) is not None and deadline <= until:
        out.extend((deadline, action) for action in layer.on_timer(deadline))
    return out


def assert_drained(layer: TransactionLayer) -> None:
    """No transaction, index entry or live timer is left (no leaks)."""
    advance(layer, FAR)
    assert len(layer) == 0
    assert layer.next_deadline() is None
    assert layer._rfc2543 == {}  # the RFC 2543 match index shrinks with the transactions


# ----- timer values ---------------------------------------------------------------------


def test_timer_values_follow_rfc3261_table_4_and_rfc6026() -> None:
    s = TimerSettings(t1=0.25, t2=2.0, t4=3.0)
    assert s.timeout == 64 * 0.25  # B, F, H, L, M
    assert s.d(reliable=False) == 32.0  # "at least 32 seconds" even with a small T1
    assert TimerSettings(t1=1.0).d(reliable=False) == 64.0
    assert (s.d(True), s.i(True), s.j(True), s.k(True)) == (0.0, 0.0, 0.0, 0.0)
    assert (s.i(False), s.j(False), s.k(False)) == (3.0, 16.0, 3.0)
    assert [s.next_interval(x) for x in (0.25, 0.5, 1.0, 2.0)] == [0.5, 1.0, 2.0, 2.0]


@pytest.mark.parametrize("kwargs", [{"t1": 0}, {"t1": 1.0, "t2": 0.5}, {"t4": -1}])
def test_timer_settings_reject_values_that_cannot_work(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="T"):
        TimerSettings(**kwargs)


def test_new_branch_has_magic_cookie_and_is_a_unique_token() -> None:
    branches = {new_branch() for _ in range(200)}
    assert len(branches) == 200
    allowed = set(string.ascii_letters + string.digits + "-.!%*_+`'~")
    for b in branches:
        assert b.startswith(MAGIC_COOKIE) and len(b) > len(MAGIC_COOKIE) + 8
        assert set(b) <= allowed


# ----- INVITE client transaction (RFC 3261 §17.1.1, RFC 6026 §7.2) -----------------------


def test_client_invite_timer_a_doubles_without_cap_until_timer_b_17_1_1_2() -> None:
    # T2 deliberately small: Timer A doubles on every retransmission and is not capped by
    # T2 (that cap belongs to timers E and G), so 64*T1 covers exactly seven sends.
    settings = TimerSettings(t1=0.5, t2=1.0)
    layer = TransactionLayer(settings)
    inv = outgoing("INVITE")
    key, actions = layer.send_request(inv, ITSP["udp"], now=0.0)
    assert [(s.peer, s.message) for s in sends(actions)] == [(ITSP["udp"], inv)]
    timeline = advance(layer, FAR)
    resent = [t for t, a in timeline if isinstance(a, Send)]
    expected, t, interval = [], 0.0, settings.t1
    while t + interval < 64 * settings.t1:
        t += interval
        expected.append(t)
        interval *= 2
    assert resent == expected and len(resent) + 1 == 7
    assert all(a.message is inv for _, a in timeline if isinstance(a, Send))
    ends = [(t, a) for t, a in timeline if not isinstance(a, Send)]
    assert ends == [(64 * settings.t1, TimedOut(key)), (64 * settings.t1, Terminated(key))]
    assert_drained(layer)


def test_client_invite_over_tcp_never_retransmits_and_times_out_with_timer_b() -> None:
    layer = TransactionLayer()
    key, actions = layer.send_request(outgoing("INVITE", transport="tcp"), ITSP["tcp"], 0.0)
    assert len(sends(actions)) == 1
    timeline = advance(layer, FAR)
    assert timeline == [(64 * T1, TimedOut(key)), (64 * T1, Terminated(key))]
    assert_drained(layer)


def test_client_invite_provisional_stops_retransmissions_and_timer_b() -> None:
    layer = TransactionLayer()
    inv = outgoing("INVITE")
    key, _ = layer.send_request(inv, ITSP["udp"], 0.0)
    assert layer.state(key) is ClientInviteState.CALLING
    ringing = answer(inv, 180)
    assert layer.receive(ringing, ITSP["udp"], 0.3) == [ResponseReceived(key, ringing)]
    assert layer.state(key) is ClientInviteState.PROCEEDING
    assert advance(layer, 500.0) == []  # no retransmission, no Timer B once Proceeding
    progress = answer(inv, 183)
    assert layer.receive(progress, ITSP["udp"], 501.0) == [ResponseReceived(key, progress)]
    assert layer.state(key) is ClientInviteState.PROCEEDING


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_client_invite_acks_non_2xx_per_17_1_1_3(transport: str) -> None:
    layer = TransactionLayer()
    # Two Vias and a Require: the ACK keeps only the top Via and carries no Require.
    inv = outgoing("INVITE", transport=transport, extra="Require: 100rel\r\n")
    inv.add_header("Via", "SIP/2.0/UDP 127.0.0.99:5060;branch=z9hG4bKlower")
    key, _ = layer.send_request(inv, ITSP[transport], 0.0)
    busy = answer(inv, 486)
    actions = layer.receive(busy, ITSP[transport], 1.0)
    assert of_type(actions, ResponseReceived) == [ResponseReceived(key, busy)]
    (ack_send,) = sends(actions)
    ack = ack_send.message
    assert isinstance(ack, Request)
    assert ack_send.peer == ITSP[transport]  # §17.1.1.2: where the INVITE went
    assert (ack.method, ack.uri) == ("ACK", inv.uri)
    assert ack.call_id == inv.call_id
    assert ack.header("From") == inv.header("From")
    assert ack.header("To") == busy.header("To") and ack.to_tag == "itsp-tag-5"
    assert [str(v) for v in ack.vias] == [str(inv.via)]
    assert (ack.cseq.number, ack.cseq.method) == (inv.cseq.number, "ACK")
    assert ack.header_values("Route") == inv.header_values("Route")
    assert ack.header("Require") is None and ack.body == b""
    reparsed = parse(bytes(ack))  # the ACK is a well-formed message
    assert isinstance(reparsed, Request) and reparsed.cseq == ack.cseq


def test_client_invite_completed_resends_ack_for_retransmitted_final_then_timer_d() -> None:
    layer = TransactionLayer()
    inv = outgoing("INVITE")
    key, _ = layer.send_request(inv, ITSP["udp"], 0.0)
    first = layer.receive(answer(inv, 503), ITSP["udp"], 0.2)
    (ack,) = sends(first)
    assert layer.state(key) is ClientInviteState.COMPLETED
    # §17.1.1.2: a retransmitted final re-sends the ACK and is not passed to the TU.
    again = layer.receive(answer(inv, 503), ITSP["udp"], 1.0)
    assert again == [Send(ITSP["udp"], ack.message)]
    assert layer.receive(answer(inv, 180), ITSP["udp"], 1.1) == []  # straggler
    assert advance(layer, 0.2 + 32.0 - 0.01) == []  # no Timer A while Completed
    assert advance(layer, FAR) == [(0.2 + 32.0, Terminated(key))]  # Timer D
    stray = answer(inv, 503)
    assert layer.receive(stray, ITSP["udp"], 40.0) == [StrayResponse(stray, ITSP["udp"])]
    assert_drained(layer)


def test_client_invite_over_tcp_timer_d_is_zero() -> None:
    layer = TransactionLayer()
    inv = outgoing("INVITE", transport="tcp")
    key, _ = layer.send_request(inv, ITSP["tcp"], 0.0)
    actions = layer.receive(answer(inv, 404), ITSP["tcp"], 0.1)
    # The ACK first: what the TU sends on hearing of the answer must follow it.
    assert [type(a) for a in actions] == [Send, ResponseReceived, Terminated]
    assert len(layer) == 0
    assert_drained(layer)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_client_invite_accepted_passes_every_2xx_to_tu_until_timer_m_rfc6026(
    transport: str,
) -> None:
    layer = TransactionLayer()
    inv = outgoing("INVITE", transport=transport)
    key, _ = layer.send_request(inv, ITSP[transport], 0.0)
    ok = answer(inv, 200)
    actions = layer.receive(ok, ITSP[transport], 2.0)
    assert actions == [ResponseReceived(key, ok)]  # no ACK: the 2xx ACK is the TU's job
    assert layer.state(key) is ClientInviteState.ACCEPTED
    retransmitted = answer(inv, 200)
    forked = answer(inv, 200, to_tag="other-branch-7")
    assert layer.receive(retransmitted, ITSP[transport], 2.5) == [
        ResponseReceived(key, retransmitted)
    ]
    assert layer.receive(forked, ITSP[transport], 3.0) == [ResponseReceived(key, forked)]
    assert layer.receive(answer(inv, 486), ITSP[transport], 3.1) == []
    assert advance(layer, FAR) == [(2.0 + 64 * T1, Terminated(key))]  # Timer M, any transport
    late = answer(inv, 200)
    assert layer.receive(late, ITSP[transport], 40.0) == [StrayResponse(late, ITSP[transport])]
    assert_drained(layer)


@pytest.mark.parametrize("method", ["INVITE", "OPTIONS"])
def test_client_transport_error_informs_tu_and_terminates_17_1_4(method: str) -> None:
    layer = TransactionLayer()
    key, _ = layer.send_request(outgoing(method, transport="tcp"), ITSP["tcp"], 0.0)
    assert layer.transport_error(key, 0.1) == [TransportFailed(key), Terminated(key)]
    assert layer.transport_error(key, 0.2) == []  # already gone
    assert_drained(layer)


# ----- non-INVITE client transaction (RFC 3261 §17.1.2) ----------------------------------


def test_client_non_invite_timer_e_doubles_up_to_t2_then_timer_f_17_1_2_2() -> None:
    layer = TransactionLayer()
    opts = outgoing("OPTIONS")
    key, _ = layer.send_request(opts, ITSP["udp"], 0.0)
    timeline = advance(layer, FAR)
    resent = [t for t, a in timeline if isinstance(a, Send)]
    expected, t, interval = [], 0.0, T1
    while t + interval < 64 * T1:
        t += interval
        expected.append(t)
        interval = min(2 * interval, T2)
    assert resent == expected
    assert resent[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]  # 500 ms, 1 s, 2 s, 4 s, 4 s (§17.1.2.2)
    ends = [(t, a) for t, a in timeline if not isinstance(a, Send)]
    assert ends == [(64 * T1, TimedOut(key)), (64 * T1, Terminated(key))]
    assert_drained(layer)


def test_client_non_invite_proceeding_retransmits_every_t2() -> None:
    layer = TransactionLayer()
    opts = outgoing("OPTIONS")
    key, _ = layer.send_request(opts, ITSP["udp"], 0.0)
    advance(layer, 0.6)  # first retransmission at T1; next Timer E due at 1.5
    trying = answer(opts, 100)
    assert layer.receive(trying, ITSP["udp"], 0.7) == [ResponseReceived(key, trying)]
    assert layer.state(key) is ClientNonInviteState.PROCEEDING
    timeline = advance(layer, FAR)
    resent = [t for t, a in timeline if isinstance(a, Send)]
    assert resent[0] == 1.5
    assert all(b - a == T2 for a, b in zip(resent, resent[1:], strict=False))
    assert resent[-1] + T2 >= 64 * T1 and len(resent) > 3
    assert [a for _, a in timeline if not isinstance(a, Send)] == [TimedOut(key), Terminated(key)]


def test_client_non_invite_completed_absorbs_retransmissions_until_timer_k() -> None:
    layer = TransactionLayer()
    bye = outgoing("BYE")
    key, _ = layer.send_request(bye, ITSP["udp"], 0.0)
    ok = answer(bye, 200)
    assert layer.receive(ok, ITSP["udp"], 0.1) == [ResponseReceived(key, ok)]
    assert layer.state(key) is ClientNonInviteState.COMPLETED
    assert layer.receive(answer(bye, 200), ITSP["udp"], 0.2) == []
    assert layer.receive(answer(bye, 100), ITSP["udp"], 0.3) == []
    assert advance(layer, FAR) == [(0.1 + T4, Terminated(key))]  # Timer K, no resends
    assert_drained(layer)


def test_client_non_invite_over_tcp_no_timer_e_and_timer_k_zero() -> None:
    layer = TransactionLayer()
    reg = outgoing("REGISTER", transport="tcp")
    key, _ = layer.send_request(reg, ITSP["tcp"], 0.0)
    trying = answer(reg, 100)
    assert layer.receive(trying, ITSP["tcp"], 0.1) == [ResponseReceived(key, trying)]
    challenge = answer(reg, 401)
    assert layer.receive(challenge, ITSP["tcp"], 0.2) == [
        ResponseReceived(key, challenge),
        Terminated(key),
    ]
    assert_drained(layer)
    key2, _ = layer.send_request(outgoing("REGISTER", transport="tcp"), ITSP["tcp"], 1.0)
    assert advance(layer, FAR) == [
        (1.0 + 64 * T1, TimedOut(key2)),
        (1.0 + 64 * T1, Terminated(key2)),
    ]


# ----- INVITE server transaction (RFC 3261 §17.2.1, RFC 6026 §7.1) -----------------------


def new_invite(
    layer: TransactionLayer, transport: str = "udp", **kwargs: object
) -> tuple[TxnKey, Request, list[Action]]:
    inv = request("INVITE", transport=transport, **kwargs)  # type: ignore[arg-type]
    actions = layer.receive(inv, PBX[transport], 0.0)
    (event,) = of_type(actions, RequestReceived)
    assert event.request is inv and event.source == PBX[transport]
    return event.txn_key, inv, actions


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_server_invite_sends_100_trying_once_17_2_1(transport: str) -> None:
    layer = TransactionLayer()
    key, inv, actions = new_invite(layer, transport, extra="Timestamp: 54\r\n")
    (trying,) = sends(actions)
    resp = trying.message
    assert isinstance(resp, Response)
    assert trying.peer == PBX[transport]
    assert resp.status == 100 and resp.to_tag is None  # §17.2.1: no To tag on 100
    assert resp.header("Timestamp") == "54"  # §8.2.6.1
    assert resp.cseq == inv.cseq and resp.via.branch == inv.via.branch
    assert layer.state(key) is ServerInviteState.PROCEEDING
    # A retransmission re-sends that 100 and is not a new request for the TU.
    again = layer.receive(request("INVITE", transport=transport), PBX[transport], 0.5)
    assert again == [Send(PBX[transport], resp)]
    assert len(layer) == 1


def test_server_invite_retransmission_gets_latest_provisional() -> None:
    layer = TransactionLayer()
    key, inv, _ = new_invite(layer)
    ringing = make_response(inv, 180, to_tag="sbc-1")
    assert layer.send_response(key, ringing, 0.1) == [Send(PBX["udp"], ringing)]
    assert layer.state(key) is ServerInviteState.PROCEEDING
    assert layer.receive(request("INVITE"), PBX["udp"], 0.5) == [Send(PBX["udp"], ringing)]


def test_server_invite_non_2xx_timer_g_then_timer_h_times_out() -> None:
    layer = TransactionLayer()
    key, inv, _ = new_invite(layer)
    busy = make_response(inv, 486, to_tag="sbc-1")
    assert layer.send_response(key, busy, 1.0) == [Send(PBX["udp"], busy)]
    assert layer.state(key) is ServerInviteState.COMPLETED
    # A retransmitted INVITE in Completed gets the final response again.
    assert layer.receive(request("INVITE"), PBX["udp"], 1.2) == [Send(PBX["udp"], busy)]
    timeline = advance(layer, FAR)
    resent = [t for t, a in timeline if isinstance(a, Send)]
    expected, t, interval = [], 1.0, T1
    while t + interval < 1.0 + 64 * T1:
        t += interval
        expected.append(t)
        interval = min(2 * interval, T2)
    assert resent == expected and resent[:4] == [1.5, 2.5, 4.5, 8.5]
    assert all(a.message is busy for _, a in timeline if isinstance(a, Send))
    ends = [(t, a) for t, a in timeline if not isinstance(a, Send)]
    assert ends == [(1.0 + 64 * T1, TimedOut(key)), (1.0 + 64 * T1, Terminated(key))]
    assert_drained(layer)


def test_server_invite_ack_for_non_2xx_is_absorbed_and_confirmed_until_timer_i() -> None:
    layer = TransactionLayer()
    key, inv, _ = new_invite(layer)
    layer.send_response(key, make_response(inv, 480, to_tag="sbc-1"), 1.0)
    ack = request("ACK", to_tag="sbc-1")  # same branch: ACK for non-2xx is in the transaction
    assert layer.receive(ack, PBX["udp"], 1.1) == []
    assert layer.state(key) is ServerInviteState.CONFIRMED
    assert layer.receive(request("ACK", to_tag="sbc-1"), PBX["udp"], 1.2) == []  # absorbed
    assert layer.receive(request("INVITE"), PBX["udp"], 1.3) == []
    assert advance(layer, FAR) == [(1.1 + T4, Terminated(key))]  # Timer I; G stopped
    assert_drained(layer)


def test_server_invite_over_tcp_no_timer_g_and_timer_i_zero() -> None:
    layer = TransactionLayer()
    key, inv, _ = new_invite(layer, "tcp")
    layer.send_response(key, make_response(inv, 603, to_tag="sbc-1"), 1.0)
    ack = request("ACK", transport="tcp", to_tag="sbc-1")
    assert layer.receive(ack, PBX["tcp"], 2.0) == [Terminated(key)]
    assert_drained(layer)
    key, inv, _ = new_invite(layer, "tcp", branch="z9hG4bK.pbx-2")
    layer.send_response(key, make_response(inv, 603, to_tag="sbc-1"), 1.0)
    assert advance(layer, FAR) == [(1.0 + 64 * T1, TimedOut(key)), (1.0 + 64 * T1, Terminated(key))]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_server_invite_accepted_state_rfc6026(transport: str) -> None:
    layer = TransactionLayer()
    peer = PBX[transport]
    key, inv, _ = new_invite(layer, transport)
    ok = make_response(inv, 200, to_tag="sbc-1")
    assert layer.send_response(key, ok, 1.0) == [Send(peer, ok)]
    assert layer.state(key) is ServerInviteState.ACCEPTED
    assert advance(layer, 1.0 + 64 * T1 - 0.01) == []  # the transaction never resends a 2xx
    # The TU's own 2xx retransmissions pass through.
    assert layer.send_response(key, ok, 2.0) == [Send(peer, ok)]
    # A retransmitted INVITE is absorbed: neither answered nor a new request.
    assert layer.receive(request("INVITE", transport=transport), peer, 3.0) == []
    # ACK for 2xx: its own branch (§13.2.2.4) or even the INVITE's; the TU gets both.
    ack = request("ACK", transport=transport, to_tag="sbc-1", branch="z9hG4bK.ack-1")
    assert layer.receive(ack, peer, 4.0) == [AckReceived(ack, peer)]
    same_branch_ack = request("ACK", transport=transport, to_tag="sbc-1")
    assert layer.receive(same_branch_ack, peer, 4.1) == [AckReceived(same_branch_ack, peer)]
    assert layer.state(key) is ServerInviteState.ACCEPTED
    with pytest.raises(TransactionStateError, match="ACCEPTED.*300-699 from TU"):
        layer.send_response(key, make_response(inv, 500, to_tag="sbc-1"), 5.0)
    assert advance(layer, FAR) == [(1.0 + 64 * T1, Terminated(key))]  # Timer L
    with pytest.raises(TransactionError, match="send_stateless"):
        layer.send_response(key, ok, 40.0)
    assert_drained(layer)


def test_server_invite_response_after_final_is_a_tu_error_naming_state_and_event() -> None:
    layer = TransactionLayer()
    key, inv, _ = new_invite(layer)
    layer.send_response(key, make_response(inv, 486, to_tag="sbc-1"), 1.0)
    with pytest.raises(TransactionStateError, match="COMPLETED: 1xx from TU is not allowed"):
        layer.send_response(key, make_response(inv, 180, to_tag="sbc-1"), 1.1)
    with pytest.raises(TransactionStateError, match="COMPLETED: 2xx from TU"):
        layer.send_response(key, make_response(inv, 200, to_tag="sbc-1"), 1.1)
    assert layer.state(key) is ServerInviteState.COMPLETED


def test_server_invite_transport_error_17_2_4() -> None:
    layer = TransactionLayer()
    key, inv, _ = new_invite(layer, "tcp")
    assert layer.transport_error(key, 0.5) == [TransportFailed(key), Terminated(key)]
    assert_drained(layer)
    # In Accepted the TU hears of it, but retransmitted INVITEs stay absorbed until Timer L.
    key, inv, _ = new_invite(layer, "tcp")
    layer.send_response(key, make_response(inv, 200, to_tag="sbc-1"), 1.0)
    assert layer.transport_error(key, 1.5) == [TransportFailed(key)]
    assert layer.receive(request("INVITE", transport="tcp"), PBX["tcp"], 2.0) == []
    assert_drained(layer)


# ----- non-INVITE server transaction (RFC 3261 §17.2.2) ----------------------------------


def test_server_non_invite_trying_proceeding_completed_timer_j() -> None:
    layer = TransactionLayer()
    reg = request("REGISTER", uri="sip:127.0.0.1")
    actions = layer.receive(reg, PBX["udp"], 0.0)
    (event,) = actions
    assert isinstance(event, RequestReceived) and event.cancel_target is None
    key = event.txn_key
    assert layer.state(key) is ServerNonInviteState.TRYING
    # Trying: retransmissions are discarded (nothing to resend yet).
    assert layer.receive(request("REGISTER", uri="sip:127.0.0.1"), PBX["udp"], 0.5) == []
    trying = make_response(reg, 100)
    assert layer.send_response(key, trying, 0.6) == [Send(PBX["udp"], trying)]
    assert layer.state(key) is ServerNonInviteState.PROCEEDING
    retrans = request("REGISTER", uri="sip:127.0.0.1")
    assert layer.receive(retrans, PBX["udp"], 1.0) == [Send(PBX["udp"], trying)]
    ok = make_response(reg, 200, to_tag="sbc-1")
    assert layer.send_response(key, ok, 1.5) == [Send(PBX["udp"], ok)]
    assert layer.state(key) is ServerNonInviteState.COMPLETED
    assert layer.receive(request("REGISTER", uri="sip:127.0.0.1"), PBX["udp"], 2.0) == [
        Send(PBX["udp"], ok)
    ]
    # §17.2.2: any other final response from the TU is discarded in Completed.
    assert layer.send_response(key, make_response(reg, 500, to_tag="sbc-1"), 2.5) == []
    with pytest.raises(TransactionStateError, match="COMPLETED: 1xx from TU"):
        layer.send_response(key, trying, 2.6)
    assert advance(layer, FAR) == [(1.5 + 64 * T1, Terminated(key))]  # Timer J
    assert_drained(layer)


def test_server_non_invite_over_tcp_timer_j_zero() -> None:
    layer = TransactionLayer()
    (event,) = layer.receive(request("OPTIONS", transport="tcp"), PBX["tcp"], 0.0)
    assert isinstance(event, RequestReceived)
    ok = make_response(event.request, 200, to_tag="sbc-1")
    assert layer.send_response(event.txn_key, ok, 0.1) == [
        Send(PBX["tcp"], ok),
        Terminated(event.txn_key),
    ]
    assert_drained(layer)


def test_ack_matching_no_transaction_goes_to_tu() -> None:
    layer = TransactionLayer()
    ack = request("ACK", to_tag="sbc-1", branch="z9hG4bK.ack-9")
    assert layer.receive(ack, PBX["udp"], 0.0) == [AckReceived(ack, PBX["udp"])]
    assert len(layer) == 0


# ----- CANCEL (RFC 3261 §9) --------------------------------------------------------------


def test_server_cancel_matches_its_invite_9_2_and_is_its_own_transaction() -> None:
    layer = TransactionLayer()
    inv_key, inv, _ = new_invite(layer)
    cancel = request("CANCEL")  # §9.1: same branch, CSeq number, From, To, Request-URI
    (event,) = layer.receive(cancel, PBX["udp"], 1.0)
    assert isinstance(event, RequestReceived)
    assert event.cancel_target == inv_key
    assert event.txn_key != inv_key and event.txn_key.method == "CANCEL"
    assert layer.state(event.txn_key) is ServerNonInviteState.TRYING
    assert layer.state(inv_key) is ServerInviteState.PROCEEDING
    ok = make_response(cancel, 200, to_tag="sbc-1")
    assert layer.send_response(event.txn_key, ok, 1.1) == [Send(PBX["udp"], ok)]
    # A retransmitted CANCEL is answered by its own transaction, not the INVITE's.
    assert layer.receive(request("CANCEL"), PBX["udp"], 1.2) == [Send(PBX["udp"], ok)]
    terminated = make_response(inv, 487, to_tag="sbc-1")
    layer.send_response(inv_key, terminated, 1.1)
    assert layer.receive(request("ACK", to_tag="sbc-1"), PBX["udp"], 1.3) == []
    assert_drained(layer)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"branch": "z9hG4bK.other"},  # another transaction
        {"sent_by": "127.0.0.11:5060"},  # same branch, another client (§17.2.3 rule 2)
    ],
)
def test_server_cancel_without_matching_invite_has_no_target(kwargs: dict[str, str]) -> None:
    layer = TransactionLayer()
    new_invite(layer)
    (event,) = layer.receive(request("CANCEL", **kwargs), PBX["udp"], 1.0)  # type: ignore[arg-type]
    assert isinstance(event, RequestReceived) and event.cancel_target is None


def test_same_branch_from_another_sent_by_is_a_new_transaction_17_2_3() -> None:
    layer = TransactionLayer()
    key, _, _ = new_invite(layer)
    other = request("INVITE", sent_by="127.0.0.11:5060")
    actions = layer.receive(other, Peer("udp", "127.0.0.11", 5060), 0.1)
    (event,) = of_type(actions, RequestReceived)
    assert event.txn_key != key and len(layer) == 2


def test_client_cancel_waits_for_a_provisional_9_1() -> None:
    layer = TransactionLayer()
    inv = outgoing("INVITE", extra="Require: timer\r\n")
    inv_key, _ = layer.send_request(inv, ITSP["udp"], 0.0)
    assert layer.cancel(inv_key, 0.1) == []  # nothing yet: no provisional response
    ringing = answer(inv, 180)
    actions = layer.receive(ringing, ITSP["udp"], 0.2)
    assert actions[0] == ResponseReceived(inv_key, ringing)
    (cancel_send,) = sends(actions)
    cancel = cancel_send.message
    assert isinstance(cancel, Request)
    assert cancel_send.peer == ITSP["udp"]  # §9.1: same destination as the INVITE
    assert (cancel.method, cancel.uri, cancel.call_id) == ("CANCEL", inv.uri, inv.call_id)
    assert cancel.header("From") == inv.header("From")
    assert cancel.header("To") == inv.header("To")  # the INVITE's To, not the 180's
    assert (cancel.cseq.number, cancel.cseq.method) == (inv.cseq.number, "CANCEL")
    assert [str(v) for v in cancel.vias] == [str(inv.via)]
    assert cancel.header_values("Route") == inv.header_values("Route")
    assert cancel.header("Require") is None and cancel.header("Proxy-Require") is None
    cancel_key = TxnKey(False, inv_key.branch, "CANCEL")
    assert layer.state(cancel_key) is ClientNonInviteState.TRYING
    assert layer.cancel(inv_key, 0.3) == []  # only one CANCEL
    # Responses are matched by branch and CSeq method (§17.1.3): the 200 is the CANCEL's.
    cancel_ok = answer(cancel, 200)
    assert layer.receive(cancel_ok, ITSP["udp"], 0.4) == [ResponseReceived(cancel_key, cancel_ok)]
    assert layer.state(inv_key) is ClientInviteState.PROCEEDING
    req_terminated = answer(inv, 487)
    actions = layer.receive(req_terminated, ITSP["udp"], 0.5)
    assert ResponseReceived(inv_key, req_terminated) in actions
    assert [s.message.method for s in sends(actions) if isinstance(s.message, Request)] == ["ACK"]
    assert_drained(layer)


def test_client_cancel_in_proceeding_is_sent_at_once() -> None:
    layer = TransactionLayer()
    inv = outgoing("INVITE")
    inv_key, _ = layer.send_request(inv, ITSP["udp"], 0.0)
    layer.receive(answer(inv, 183), ITSP["udp"], 0.1)
    (send,) = sends(layer.cancel(inv_key, 0.2))
    assert isinstance(send.message, Request) and send.message.method == "CANCEL"


def test_client_cancel_after_final_or_before_final_without_provisional_sends_nothing() -> None:
    layer = TransactionLayer()
    inv = outgoing("INVITE")
    inv_key, _ = layer.send_request(inv, ITSP["udp"], 0.0)
    assert layer.cancel(inv_key, 0.1) == []
    # The final answer comes first: the remembered CANCEL is dropped (§9.1: a no-op now).
    actions = layer.receive(answer(inv, 486), ITSP["udp"], 0.2)
    assert [s.message.method for s in sends(actions) if isinstance(s.message, Request)] == ["ACK"]
    assert layer.receive(answer(inv, 486), ITSP["udp"], 0.3)  # ACK again, still no CANCEL
    assert layer.cancel(inv_key, 0.4) == []
    assert TxnKey(False, inv_key.branch, "CANCEL") not in layer
    assert layer.cancel(TxnKey(False, "z9hG4bKnone", "INVITE"), 0.5) == []


def test_client_cancelled_invite_gives_up_64_t1_after_cancel_9_1() -> None:
    layer = TransactionLayer()
    inv = outgoing("INVITE")
    inv_key, _ = layer.send_request(inv, ITSP["udp"], 0.0)
    layer.receive(answer(inv, 180), ITSP["udp"], 1.0)
    layer.receive(answer(inv, 180), ITSP["udp"], 1.5)
    (cancel_send,) = sends(layer.cancel(inv_key, 2.0))
    layer.receive(answer(cancel_send.message, 200), ITSP["udp"], 2.1)  # type: ignore[arg-type]
    layer.receive(answer(inv, 180), ITSP["udp"], 3.0)  # a late 180 must not stop the wait
    timeline = advance(layer, FAR)
    assert (2.0 + 64 * T1, TimedOut(inv_key)) in timeline
    assert_drained(layer)


# ----- response matching (RFC 3261 §17.1.3, §18.1.2) --------------------------------------


def test_unmatched_response_is_given_to_tu_as_stray() -> None:
    layer = TransactionLayer()
    inv = outgoing("INVITE")
    key, _ = layer.send_request(inv, ITSP["udp"], 0.0)
    other = outgoing("INVITE")  # another branch
    stray = answer(other, 200)
    assert layer.receive(stray, ITSP["udp"], 0.1) == [StrayResponse(stray, ITSP["udp"])]
    # Same branch, other CSeq method: not this transaction either.
    bye_like = answer(outgoing("BYE"), 200)
    bye_like.set_header("Via", str(inv.via))
    assert of_type(layer.receive(bye_like, ITSP["udp"], 0.2), StrayResponse)
    assert layer.state(key) is ClientInviteState.CALLING


# ----- RFC 2543 fallback matching (RFC 3261 §17.2.3, no magic cookie) ---------------------


def test_rfc2543_invite_retransmission_ack_and_cancel_matching() -> None:
    layer = TransactionLayer()
    key, inv, actions = new_invite(layer, branch=None)
    assert key.branch.startswith("rfc2543-")
    (trying,) = sends(actions)
    # Same Request-URI, To tag, From tag, Call-ID, CSeq and top Via: a retransmission.
    assert layer.receive(request("INVITE", branch=None), PBX["udp"], 0.5) == [
        Send(PBX["udp"], trying.message)
    ]
    # Any one of them different: a new transaction.
    for changed in (
        request("INVITE", branch=None, cseq=2),
        request("INVITE", branch=None, uri="sip:+15559999999@127.0.0.1"),
        request("INVITE", branch=None, to_tag="x"),
        request("INVITE", branch=None, sent_by="127.0.0.10:5062"),
    ):
        assert of_type(layer.receive(changed, PBX["udp"], 0.6), RequestReceived)
    assert len(layer) == 5
    # A CANCEL matches by the same fields, taking the method as INVITE (§9.2).
    (event,) = layer.receive(request("CANCEL", branch=None), PBX["udp"], 0.7)
    assert isinstance(event, RequestReceived) and event.cancel_target == key
    layer.send_response(event.txn_key, make_response(event.request, 200, to_tag="t9"), 0.8)
    layer.send_response(key, make_response(inv, 487, to_tag="t9"), 0.8)
    # The ACK must carry the To tag of our response to match (§17.2.3).
    wrong = request("ACK", branch=None, to_tag="other")
    assert layer.receive(wrong, PBX["udp"], 0.9) == [AckReceived(wrong, PBX["udp"])]
    assert layer.receive(request("ACK", branch=None, to_tag="t9"), PBX["udp"], 1.0) == []
    assert layer.state(key) is ServerInviteState.CONFIRMED
    assert layer.receive(request("ACK", branch=None, to_tag="t9"), PBX["udp"], 1.1) == []
    for other_key in [k for k in list(layer._servers) if k != key and k.method == "INVITE"]:
        layer.send_response(other_key, make_response(inv, 500, to_tag="t9"), 2.0)
    assert_drained(layer)


def test_rfc2543_branch_without_cookie_uses_fallback_matching() -> None:
    layer = TransactionLayer()
    key, _, _ = new_invite(layer, branch="1a2b3c")
    assert key.branch.startswith("rfc2543-")
    assert layer.receive(request("INVITE", branch="1a2b3c"), PBX["udp"], 0.1) != []
    assert len(layer) == 1
    # The top Via (branch included) is part of the match.
    assert of_type(
        layer.receive(request("INVITE", branch="9z8y"), PBX["udp"], 0.2), RequestReceived
    )


def test_rfc2543_non_invite_retransmission() -> None:
    layer = TransactionLayer()
    (event,) = layer.receive(request("BYE", branch=None, to_tag="sbc-1"), PBX["udp"], 0.0)
    assert isinstance(event, RequestReceived)
    ok = make_response(event.request, 200)
    layer.send_response(event.txn_key, ok, 0.1)
    again = request("BYE", branch=None, to_tag="sbc-1")
    assert layer.receive(again, PBX["udp"], 0.2) == [Send(PBX["udp"], ok)]
    assert_drained(layer)


# ----- layer contract ---------------------------------------------------------------------


def test_send_request_rejects_ack_missing_branch_and_reused_branch() -> None:
    layer = TransactionLayer()
    with pytest.raises(TransactionError, match="send_stateless"):
        layer.send_request(request("ACK", to_tag="x"), ITSP["udp"], 0.0)
    with pytest.raises(TransactionError, match="no branch"):
        layer.send_request(request("OPTIONS", branch=None), ITSP["udp"], 0.0)
    opts = outgoing("OPTIONS")
    layer.send_request(opts, ITSP["udp"], 0.0)
    with pytest.raises(TransactionError, match="already in use"):
        layer.send_request(opts, ITSP["udp"], 0.1)


def test_send_stateless_is_a_plain_send() -> None:
    layer = TransactionLayer()
    ack = outgoing("ACK")
    assert layer.send_stateless(ack, ITSP["udp"]) == [Send(ITSP["udp"], ack)]
    assert len(layer) == 0 and layer.next_deadline() is None


def test_send_response_to_unknown_transaction_is_an_error() -> None:
    layer = TransactionLayer()
    with pytest.raises(TransactionError, match="no server transaction"):
        layer.send_response(
            TxnKey(True, "z9hG4bKgone", "INVITE", "127.0.0.10:5060"),
            make_response(request("INVITE"), 200),
            0.0,
        )


def test_stale_timers_never_fire_and_do_not_pile_up() -> None:
    layer = TransactionLayer()
    # Each OPTIONS over UDP arms E and F, then completes at once: E and F go stale.
    for i in range(3000):
        opts = outgoing("OPTIONS")
        key, _ = layer.send_request(opts, ITSP["udp"], i * 0.001)
        layer.receive(answer(opts, 200), ITSP["udp"], i * 0.001)
    assert len(layer._heap) < 3 * 1024 + 3000  # compaction keeps stale entries bounded
    timeline = advance(layer, FAR)
    assert not any(isinstance(a, Send | TimedOut) for _, a in timeline)
    assert sum(isinstance(a, Terminated) for _, a in timeline) == 3000
    assert_drained(layer)


def test_on_timer_before_any_deadline_does_nothing() -> None:
    layer = TransactionLayer()
    key, _ = layer.send_request(outgoing("INVITE"), ITSP["udp"], 10.0)
    assert layer.next_deadline() == 10.0 + T1
    assert layer.on_timer(10.0 + T1 - 0.001) == []
    assert layer.state(key) is ClientInviteState.CALLING


def test_server_responses_follow_via_received_and_rport_18_2_2() -> None:
    layer = TransactionLayer()
    nat = Peer("udp", "127.0.0.50", 40001)  # the PBX's address as seen from outside its NAT
    inv = request("INVITE", sent_by="192.168.1.10:5060", branch="z9hG4bK.nat-1;rport")
    stamp_via(inv, nat)  # as the transport does before handing the request over
    actions = layer.receive(inv, nat, 0.0)
    (trying,) = sends(actions)
    assert trying.peer == nat  # RFC 3581: received + rport, not the private sent-by
    (event,) = of_type(actions, RequestReceived)
    ok = make_response(inv, 200, to_tag="sbc-1")
    assert layer.send_response(event.txn_key, ok, 0.1) == [Send(nat, ok)]


def test_machine_rejects_an_event_its_table_lacks() -> None:
    txn = ClientNonInviteTransaction(
        TxnKey(False, "z9hG4bKx", "OPTIONS"), outgoing("OPTIONS"), ITSP["udp"], SETTINGS
    )
    with pytest.raises(TransactionStateError, match="TRYING: timer A is not allowed"):
        txn.fire(Timer.A, 0.0)


def test_server_invite_ack_before_any_final_goes_to_tu() -> None:
    layer = TransactionLayer()
    key, _, _ = new_invite(layer)
    ack = request("ACK", to_tag="sbc-1")  # matches the INVITE but nothing final was sent
    assert layer.receive(ack, PBX["udp"], 0.1) == [AckReceived(ack, PBX["udp"])]
    assert layer.state(key) is ServerInviteState.PROCEEDING


def _options_from(host: str, branch: str) -> Request:
    text = (
        f"OPTIONS sip:sbc@198.51.100.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:5060;branch=z9hG4bK{branch}\r\n"
        "From: <sip:a@example.com>;tag=1\r\nTo: <sip:sbc@198.51.100.1>\r\n"
        f"Call-ID: {branch}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    message = parse(text.encode())
    assert isinstance(message, Request)
    return message


def test_server_transactions_per_source_are_capped_and_given_back() -> None:
    # One address may not hold more than max_per_source transactions (each keeps its
    # request for Timer J): beyond it, a stateless 503 with Retry-After and no state kept.
    layer = TransactionLayer(TimerSettings(), max_per_source=2)
    source = Peer("udp", "192.0.2.99", 5060, "ext/udp:198.51.100.1:5060")
    other = Peer("udp", "192.0.2.98", 5060, "ext/udp:198.51.100.1:5060")

    def options(branch: str, peer: Peer = source) -> Request:
        return _options_from(peer.host, branch)

    now = 100.0
    keys = []
    for branch in ("a", "b"):
        received = [
            a for a in layer.receive(options(branch), source, now) if isinstance(a, RequestReceived)
        ]
        assert len(received) == 1
        keys.append(received[0].txn_key)
    refused = layer.receive(options("c"), source, now)
    assert len(refused) == 1 and isinstance(refused[0], Send)
    answer = refused[0].message
    assert isinstance(answer, Response) and answer.status == 503
    assert answer.header("Retry-After") == "5" and layer.refused_per_source == 1
    assert len(layer) == 2
    # Another address is not affected; once a transaction ends, the source may have one more.
    assert any(
        isinstance(a, RequestReceived) for a in layer.receive(options("d", other), other, now)
    )
    layer.send_response(keys[0], make_response(options("a"), 200), now)
    layer.on_timer(now + 64)  # Timer J: the completed transactions end
    assert any(
        isinstance(a, RequestReceived) for a in layer.receive(options("e"), source, now + 64)
    )


def test_exempt_sources_are_not_capped() -> None:
    layer = TransactionLayer(TimerSettings(), max_per_source=1, exempt=lambda host: True)
    source = Peer("udp", "192.0.2.99", 5060, "ext/udp:198.51.100.1:5060")
    for branch in ("x1", "x2", "x3"):
        actions = layer.receive(_options_from(source.host, branch), source, 1.0)
        assert any(isinstance(a, RequestReceived) for a in actions)
    assert layer.refused_per_source == 0 and len(layer) == 3


def test_abandoned_server_transactions_end_unanswered_and_never_retransmit() -> None:
    # A source blocked by the edge guard gets nothing more: not the answer to the request
    # that tripped the block, nor retransmissions of answers it no longer ACKs.
    layer = TransactionLayer(TimerSettings(), max_per_source=10)
    source = Peer("udp", "192.0.2.99", 5060, "ext/udp:198.51.100.1:5060")
    keys = []
    for branch in ("ab1", "ab2", "ab3"):
        received = [
            a
            for a in layer.receive(_options_from(source.host, branch), source, 1.0)
            if isinstance(a, RequestReceived)
        ]
        keys.append(received[0].txn_key)
    layer.send_response(keys[0], make_response(_options_from(source.host, "ab1"), 200), 1.0)
    ended = layer.abandon_source(source.host, keep=lambda key: key == keys[2])
    assert {a.txn_key for a in ended if isinstance(a, Terminated)} == {keys[0], keys[1]}
    assert len(layer) == 1 and keys[2] in layer
    assert layer.on_timer(1000.0) == []  # no Timer J retransmission state left for them
    assert layer.abandon(keys[0]) == []
    assert [type(a) for a in layer.abandon(keys[2])] == [Terminated]
