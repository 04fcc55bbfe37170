"""RFC 3261 §12 dialogs (sbc.sip.dialog) driven with parsed messages and a virtual clock."""

from __future__ import annotations

import pytest

from sbc.sip.dialog import (
    TRANSITIONS,
    Dialog,
    DialogError,
    DialogEvent,
    DialogSet,
    DialogState,
    DialogStateError,
    DialogTable,
    GiveUp,
    RAck,
    ReliableProvisionalRetransmitter,
    ReliableProvisionals,
    Role,
    RSeqCheck,
    TwoXXRetransmitter,
    ends_dialog,
    is_reliable,
    message_key,
    parse_rack,
)
from sbc.sip.message import Request, Response, make_response, parse

CALL_ID = "3848276298220188511@127.0.0.10"
PBX_CONTACT = "<sip:alice@127.0.0.10:5060;transport=udp>"
SBC_CONTACT = "<sip:sbc@127.0.0.1:5060>"
SBC_VIA = "SIP/2.0/UDP 127.0.0.1:5060;rport"
LOCAL_TAG = "sbc-tag-1"


def _msg(start: str, headers: list[str], body: str = "") -> bytes:
    lines = [start, *headers, f"Content-Length: {len(body.encode())}"]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def pbx_request(
    method: str = "INVITE",
    *,
    cseq: int = 101,
    to_tag: str | None = None,
    record_route: tuple[str, ...] = (),
    contact: str | None = PBX_CONTACT,
    uri: str = "sip:+15551234567@127.0.0.1:5060",
    extra: tuple[str, ...] = (),
) -> Request:
    """A request as a PBX (behind a record-routing proxy) sends it to the SBC, parsed from bytes."""
    headers = [
        "Via: SIP/2.0/UDP 127.0.0.30:5060;branch=z9hG4bK-proxy-" + str(cseq),
        "Via: SIP/2.0/UDP 127.0.0.10:5060;branch=z9hG4bK-pbx-" + str(cseq) + ";rport=5060",
        *(f"Record-Route: {rr}" for rr in record_route),
        "Max-Forwards: 69",
        'From: "Alice" <sip:+15550001111@127.0.0.10>;tag=pbx-tag-1',
        "To: <sip:+15551234567@127.0.0.1>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {CALL_ID}",
        f"CSeq: {cseq} {method}",
    ]
    if contact is not None:
        headers.append(f"Contact: {contact}")
    headers.extend(extra)
    msg = parse(_msg(f"{method} {uri} SIP/2.0", headers))
    assert isinstance(msg, Request)
    msg.check()
    return msg


def sbc_invite(*, cseq: int = 7, uri: str = "sip:+15551234567@itsp.example.com") -> Request:
    """An INVITE the SBC sends toward the trunk, as bytes on the wire and back."""
    headers = [
        "Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-sbc-invite;rport",
        "Max-Forwards: 70",
        "From: <sip:+15550001111@127.0.0.2>;tag=" + LOCAL_TAG,
        "To: <sip:+15551234567@itsp.example.com>",
        "Call-ID: trunk-call-1@127.0.0.2",
        f"CSeq: {cseq} INVITE",
        "Contact: <sip:sbc@127.0.0.2:5060>",
        "Supported: 100rel",
    ]
    msg = parse(_msg(f"INVITE {uri} SIP/2.0", headers))
    assert isinstance(msg, Request)
    return msg


def trunk_response(
    invite: Request,
    status: int,
    *,
    to_tag: str | None = "itsp-a",
    record_route: tuple[str, ...] = (),
    contact: str | None = "<sip:gw1@127.0.0.20:5060>",
    extra: tuple[str, ...] = (),
    cseq: str | None = None,
) -> Response:
    """A response from the trunk side to a request we sent, parsed from bytes."""
    to = invite.header("To") or ""
    if to_tag is not None and invite.to_tag is None:
        to += f";tag={to_tag}"
    headers = [
        f"Via: {invite.header('Via')}",
        *(f"Record-Route: {rr}" for rr in record_route),
        f"From: {invite.header('From')}",
        f"To: {to}",
        f"Call-ID: {invite.call_id}",
        f"CSeq: {cseq or invite.header('CSeq')}",
    ]
    if contact is not None:
        headers.append(f"Contact: {contact}")
    headers.extend(extra)
    msg = parse(_msg(f"SIP/2.0 {status} Whatever", headers))
    assert isinstance(msg, Response)
    msg.check()
    return msg


def uas_dialog(**kwargs: object) -> Dialog:
    invite = pbx_request(**kwargs)  # type: ignore[arg-type]
    return Dialog.from_uas(invite, LOCAL_TAG, SBC_CONTACT)


def confirmed_uas_dialog(**kwargs: object) -> Dialog:
    invite = pbx_request(**kwargs)  # type: ignore[arg-type]
    dialog = Dialog.from_uas(invite, LOCAL_TAG, SBC_CONTACT)
    dialog.response_sent(make_response(invite, 200, to_tag=LOCAL_TAG))
    assert dialog.state is DialogState.CONFIRMED
    return dialog


def confirmed_uac_dialog(**kwargs: object) -> tuple[Request, Dialog]:
    invite = sbc_invite()
    dialog = Dialog.from_uac(invite, trunk_response(invite, 200, **kwargs), "sip:sbc@127.0.0.2")  # type: ignore[arg-type]
    return invite, dialog


def in_dialog_from_peer(dialog: Dialog, method: str, cseq: int, **kwargs: object) -> Request:
    """A request the PBX sends inside a UAS dialog of ours."""
    return pbx_request(method, cseq=cseq, to_tag=dialog.local_tag, **kwargs)  # type: ignore[arg-type]


def state_of(dialog: Dialog) -> DialogState:
    """The state, read through a call so that mypy does not keep an earlier narrowing."""
    return dialog.state


def roundtrip(request: Request) -> Request:
    """What the far side would parse from the bytes we send."""
    again = parse(bytes(request))
    assert isinstance(again, Request)
    again.check()
    return again


# ----- creation -------------------------------------------------------------------------------


def test_uas_dialog_takes_its_state_from_the_invite() -> None:
    rr = ("<sip:127.0.0.30;lr;ftag=pbx-tag-1>", "<sip:127.0.0.31;lr>, <sip:127.0.0.32;lr>")
    dialog = uas_dialog(record_route=rr)
    assert dialog.role is Role.UAS
    assert dialog.state is DialogState.EARLY
    assert dialog.call_id == CALL_ID
    assert (dialog.local_tag, dialog.remote_tag) == (LOCAL_TAG, "pbx-tag-1")
    assert dialog.local_uri == "<sip:+15551234567@127.0.0.1>"
    assert dialog.remote_uri == '"Alice" <sip:+15550001111@127.0.0.10>'
    assert dialog.remote_target == "sip:alice@127.0.0.10:5060;transport=udp"
    assert dialog.remote_seq == 101
    assert dialog.local_contact == SBC_CONTACT
    # §12.1.1: Record-Route in order, URI parameters preserved.
    assert dialog.route_set == [
        "<sip:127.0.0.30;lr;ftag=pbx-tag-1>",
        "<sip:127.0.0.31;lr>",
        "<sip:127.0.0.32;lr>",
    ]
    assert dialog.secure is False


def test_uas_dialog_needs_a_contact() -> None:
    with pytest.raises(DialogError, match="Contact") as info:
        uas_dialog(contact=None)
    assert info.value.status == 400


def test_uas_dialog_refuses_a_request_already_in_a_dialog() -> None:
    with pytest.raises(DialogError, match="To tag"):
        Dialog.from_uas(pbx_request(to_tag="x"), LOCAL_TAG, SBC_CONTACT)


def test_secure_flag_needs_tls_and_a_sips_request_uri() -> None:
    invite = pbx_request(uri="sips:+15551234567@127.0.0.1:5061")
    assert Dialog.from_uas(invite, LOCAL_TAG, SBC_CONTACT, over_tls=True).secure
    assert not Dialog.from_uas(invite, LOCAL_TAG, SBC_CONTACT, over_tls=False).secure
    plain = pbx_request()
    assert not Dialog.from_uas(plain, LOCAL_TAG, SBC_CONTACT, over_tls=True).secure


def test_uac_early_dialog_from_180_with_to_tag() -> None:
    invite = sbc_invite()
    ringing = trunk_response(
        invite, 180, record_route=("<sip:p1.itsp.example.com;lr>", "<sip:p2.itsp.example.com;lr>")
    )
    dialog = Dialog.from_uac(invite, ringing, "sip:sbc@127.0.0.2:5060")
    assert dialog.role is Role.UAC
    assert dialog.state is DialogState.EARLY
    assert (dialog.local_tag, dialog.remote_tag) == (LOCAL_TAG, "itsp-a")
    assert dialog.local_uri == "<sip:+15550001111@127.0.0.2>"
    assert dialog.remote_uri == "<sip:+15551234567@itsp.example.com>"
    assert dialog.local_seq == 7 and dialog.remote_seq is None
    assert dialog.remote_target == "sip:gw1@127.0.0.20:5060"
    assert dialog.local_contact == "<sip:sbc@127.0.0.2:5060>"
    # §12.1.2: the UAC reverses Record-Route.
    assert dialog.route_set == ["<sip:p2.itsp.example.com;lr>", "<sip:p1.itsp.example.com;lr>"]
    assert dialog.invite_in_progress


def test_uac_dialog_from_200_is_confirmed() -> None:
    _, dialog = confirmed_uac_dialog()
    assert dialog.state is DialogState.CONFIRMED
    assert not dialog.invite_in_progress


@pytest.mark.parametrize("status,to_tag", [(100, "x"), (180, None), (486, "x")])
def test_responses_that_create_no_dialog(status: int, to_tag: str | None) -> None:
    invite = sbc_invite()
    with pytest.raises(DialogError, match="creates no dialog"):
        Dialog.from_uac(invite, trunk_response(invite, status, to_tag=to_tag), SBC_CONTACT)


def test_2xx_without_contact_cannot_make_a_dialog_but_a_lax_18x_can() -> None:
    invite = sbc_invite()
    with pytest.raises(DialogError, match="no Contact"):
        Dialog.from_uac(invite, trunk_response(invite, 200, contact=None), SBC_CONTACT)
    early = Dialog.from_uac(invite, trunk_response(invite, 183, contact=None), SBC_CONTACT)
    assert early.remote_target == invite.uri


# ----- building requests ----------------------------------------------------------------------


def test_request_with_loose_route_set_keeps_remote_target_as_request_uri() -> None:
    rr = ("<sip:127.0.0.30;lr>", "<sip:127.0.0.31;lr>")
    dialog = confirmed_uas_dialog(record_route=rr)
    bye = roundtrip(dialog.create_request("BYE", via=SBC_VIA, branch="z9hG4bK-bye-1"))
    assert bye.method == "BYE"
    assert bye.uri == "sip:alice@127.0.0.10:5060;transport=udp"
    assert [a.uri for a in bye.name_addrs("Route")] == ["sip:127.0.0.30;lr", "sip:127.0.0.31;lr"]
    assert bye.header("Via") == SBC_VIA + ";branch=z9hG4bK-bye-1"
    assert bye.from_.uri == "sip:+15551234567@127.0.0.1" and bye.from_tag == LOCAL_TAG
    assert bye.to.uri == "sip:+15550001111@127.0.0.10" and bye.to_tag == "pbx-tag-1"
    assert bye.to.display == '"Alice"'
    assert bye.call_id == CALL_ID
    assert bye.max_forwards == 70
    assert not bye.has_header("Contact")  # BYE is no target refresh


def test_uac_request_routes_through_reversed_record_route() -> None:
    invite = sbc_invite()
    ok = trunk_response(
        invite, 200, record_route=("<sip:p1.itsp.example.com;lr>", "<sip:p2.itsp.example.com;lr>")
    )
    dialog = Dialog.from_uac(invite, ok, SBC_CONTACT)
    info = dialog.create_request("INFO", via=SBC_VIA, branch="z9hG4bK-i")
    assert [a.uri for a in info.name_addrs("Route")] == [
        "sip:p2.itsp.example.com;lr",
        "sip:p1.itsp.example.com;lr",
    ]
    assert info.uri == "sip:gw1@127.0.0.20:5060"


def test_request_without_route_set_has_no_route_header() -> None:
    dialog = confirmed_uas_dialog()
    msg = dialog.create_request("OPTIONS", via=SBC_VIA, branch="z9hG4bK-o")
    assert msg.uri == dialog.remote_target
    assert not msg.has_header("Route")


def test_strict_router_example_of_rfc3261_section_12_2_1_1() -> None:
    rr = ("<sip:proxy1>, <sip:proxy2>, <sip:proxy3;lr>, <sip:proxy4>",)
    dialog = confirmed_uas_dialog(record_route=rr, contact="<sip:user@remoteua>")
    msg = roundtrip(dialog.create_request("INFO", via=SBC_VIA, branch="z9hG4bK-s"))
    assert msg.uri == "sip:proxy1"
    assert [a.uri for a in msg.name_addrs("Route")] == [
        "sip:proxy2",
        "sip:proxy3;lr",
        "sip:proxy4",
        "sip:user@remoteua",
    ]


def test_strict_router_uri_loses_what_a_request_uri_may_not_carry() -> None:
    rr = ("<sip:proxy1;transport=tcp;method=INVITE?Subject=x>", "<sip:proxy2;lr>")
    dialog = confirmed_uas_dialog(record_route=rr)
    uri, routes = dialog.request_target()
    assert uri == "sip:proxy1;transport=tcp"
    assert routes == ["<sip:proxy2;lr>", f"<{dialog.remote_target}>"]


def test_target_refresh_requests_carry_our_contact() -> None:
    _, dialog = confirmed_uac_dialog()
    for method in ("INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"):
        msg = dialog.create_request(method, via=SBC_VIA, branch=f"z9hG4bK-{method}")
        assert msg.header("Contact") == "<sip:sbc@127.0.0.2>", method
        if method == "INVITE":
            dialog.receive_response(trunk_response(msg, 200))
    for method in ("INFO", "MESSAGE", "OPTIONS", "BYE"):
        assert not dialog.create_request(method, via=SBC_VIA, branch="z9hG4bK-x").has_header(
            "Contact"
        )


def test_caller_headers_and_body_follow_the_dialog_headers() -> None:
    _, dialog = confirmed_uac_dialog()
    sdp = b"v=0\r\n"
    msg = dialog.create_request(
        "UPDATE",
        via=SBC_VIA,
        branch="z9hG4bK-u",
        headers=[("Content-Type", "application/sdp"), ("Contact", "<sip:other@127.0.0.2>")],
        body=sdp,
    )
    again = roundtrip(msg)
    assert again.body == sdp and again.content_type == "application/sdp"
    assert again.header_values("Contact") == ["<sip:other@127.0.0.2>"]


@pytest.mark.parametrize("name", ["Route", "CSeq", "call-id", "f", "Via"])
def test_headers_the_dialog_owns_are_refused(name: str) -> None:
    _, dialog = confirmed_uac_dialog()
    with pytest.raises(DialogError, match="writes these itself"):
        dialog.create_request("INFO", via=SBC_VIA, branch="z9hG4bK-x", headers=[(name, "x")])


def test_top_via_needs_a_branch() -> None:
    _, dialog = confirmed_uac_dialog()
    with pytest.raises(DialogError, match="no branch"):
        dialog.create_request("INFO", via=SBC_VIA)
    msg = dialog.create_request("INFO", via=SBC_VIA + ";branch=z9hG4bK-own")
    assert msg.via.branch == "z9hG4bK-own"


# ----- CSeq -----------------------------------------------------------------------------------


def test_cseq_increments_and_ack_reuses_the_invite_number() -> None:
    invite, dialog = confirmed_uac_dialog()
    ack = roundtrip(dialog.create_ack(invite.cseq.number, via=SBC_VIA, branch="z9hG4bK-ack-1"))
    assert ack.method == "ACK" and ack.cseq == (7, "ACK")
    assert ack.via.branch == "z9hG4bK-ack-1" != invite.via.branch  # §13.2.2.4: own branch
    assert ack.uri == dialog.remote_target
    numbers = []
    for method in ("INFO", "INVITE", "OPTIONS"):
        msg = dialog.create_request(method, via=SBC_VIA, branch=f"z9hG4bK-{method}")
        numbers.append(msg.cseq.number)
        assert msg.cseq.method == method
    assert numbers == [8, 9, 10]
    assert dialog.local_seq == 10
    # Without a number, the ACK is for the last INVITE sent.
    assert dialog.create_ack(via=SBC_VIA, branch="z9hG4bK-ack-2").cseq == (9, "ACK")
    assert dialog.local_seq == 10  # an ACK takes no new number


def test_uas_side_starts_its_own_cseq_space() -> None:
    dialog = confirmed_uas_dialog(cseq=5000)
    assert dialog.create_request("INFO", via=SBC_VIA, branch="z9hG4bK-1").cseq.number == 1
    assert dialog.create_request("INFO", via=SBC_VIA, branch="z9hG4bK-2").cseq.number == 2
    assert dialog.remote_seq == 5000


@pytest.mark.parametrize("method", ["ACK", "CANCEL"])
def test_ack_and_cancel_are_not_new_requests(method: str) -> None:
    _, dialog = confirmed_uac_dialog()
    with pytest.raises(DialogError, match="create_ack"):
        dialog.create_request(method, via=SBC_VIA, branch="z9hG4bK-x")
    assert dialog.local_seq == 7


def test_ack_needs_an_invite() -> None:
    dialog = confirmed_uas_dialog()
    with pytest.raises(DialogError, match="no INVITE"):
        dialog.create_ack(via=SBC_VIA, branch="z9hG4bK-a")


def test_cseq_space_is_bounded() -> None:
    _, dialog = confirmed_uac_dialog()
    dialog.local_seq = 2**31 - 1
    with pytest.raises(DialogError, match="exhausted"):
        dialog.create_request("INFO", via=SBC_VIA, branch="z9hG4bK-x")


def test_out_of_order_cseq_gets_500_and_in_order_updates_remote_seq() -> None:
    dialog = confirmed_uas_dialog(cseq=101)
    assert dialog.receive_request(in_dialog_from_peer(dialog, "INFO", 102)) is None
    assert dialog.remote_seq == 102
    late = in_dialog_from_peer(dialog, "INFO", 100)
    answer = dialog.receive_request(late)
    assert answer is not None and answer.status == 500
    assert answer.to_tag == LOCAL_TAG and answer.call_id == CALL_ID
    assert dialog.remote_seq == 102  # a rejected request leaves the counter alone
    # A gap is fine: only lower numbers are out of order (§12.2.2).
    assert dialog.receive_request(in_dialog_from_peer(dialog, "INFO", 150)) is None
    assert dialog.remote_seq == 150


def test_first_request_from_the_callee_sets_remote_seq() -> None:
    _, dialog = confirmed_uac_dialog()
    assert dialog.remote_seq is None
    info = trunk_request(dialog, "INFO", 3)
    assert dialog.receive_request(info) is None
    assert dialog.remote_seq == 3
    assert dialog.receive_request(trunk_request(dialog, "INFO", 2)).status == 500  # type: ignore[union-attr]


def test_ack_is_never_answered_even_with_an_old_cseq() -> None:
    dialog = confirmed_uas_dialog(cseq=101)
    dialog.receive_request(in_dialog_from_peer(dialog, "INFO", 102))
    assert dialog.receive_request(in_dialog_from_peer(dialog, "ACK", 101)) is None
    assert dialog.remote_seq == 102


def test_request_of_another_dialog_is_refused() -> None:
    dialog = confirmed_uas_dialog()
    stranger = pbx_request("INFO", cseq=200, to_tag="someone-else")
    with pytest.raises(DialogError, match="not in dialog"):
        dialog.receive_request(stranger)


def trunk_request(dialog: Dialog, method: str, cseq: int, contact: str | None = None) -> Request:
    """A request the trunk sends inside a UAC dialog of ours."""
    headers = [
        "Via: SIP/2.0/UDP 127.0.0.20:5060;branch=z9hG4bK-itsp-" + str(cseq),
        f"From: <sip:+15551234567@itsp.example.com>;tag={dialog.remote_tag}",
        f"To: <sip:+15550001111@127.0.0.2>;tag={dialog.local_tag}",
        f"Call-ID: {dialog.call_id}",
        f"CSeq: {cseq} {method}",
    ]
    if contact:
        headers.append(f"Contact: {contact}")
    msg = parse(_msg(f"{method} sip:sbc@127.0.0.2:5060 SIP/2.0", headers))
    assert isinstance(msg, Request)
    return msg


# ----- target refresh -------------------------------------------------------------------------


def test_received_reinvite_refreshes_the_target_only_when_answered_2xx() -> None:
    dialog = confirmed_uas_dialog(cseq=1)
    old = dialog.remote_target
    reinvite = in_dialog_from_peer(dialog, "INVITE", 2, contact="<sip:alice@127.0.0.11:5070>")
    assert dialog.receive_request(reinvite) is None
    assert dialog.remote_target == old  # not before the answer
    dialog.response_sent(make_response(reinvite, 100))
    dialog.response_sent(make_response(reinvite, 488))
    assert dialog.remote_target == old  # a failed re-INVITE changes nothing
    assert dialog.state is DialogState.CONFIRMED  # ...and keeps the call
    again = in_dialog_from_peer(dialog, "INVITE", 3, contact="<sip:alice@127.0.0.11:5070>")
    assert dialog.receive_request(again) is None
    dialog.response_sent(make_response(again, 200))
    assert dialog.remote_target == "sip:alice@127.0.0.11:5070"
    assert not dialog.invite_in_progress


def test_apply_target_refresh_directly() -> None:
    dialog = confirmed_uas_dialog(cseq=1)
    update = in_dialog_from_peer(dialog, "UPDATE", 2, contact="<sip:alice@10.0.0.9>")
    assert dialog.apply_target_refresh(update) is True
    assert dialog.remote_target == "sip:alice@10.0.0.9"
    assert dialog.apply_target_refresh(update) is False
    with pytest.raises(DialogError, match="not a target refresh"):
        dialog.apply_target_refresh(in_dialog_from_peer(dialog, "INFO", 3))


def test_2xx_to_our_update_refreshes_the_target_and_an_error_does_not() -> None:
    _, dialog = confirmed_uac_dialog()
    update = dialog.create_request("UPDATE", via=SBC_VIA, branch="z9hG4bK-u1")
    dialog.receive_response(trunk_response(update, 491, contact="<sip:gw9@127.0.0.29>"))
    assert dialog.remote_target == "sip:gw1@127.0.0.20:5060"
    update = dialog.create_request("UPDATE", via=SBC_VIA, branch="z9hG4bK-u2")
    dialog.receive_response(trunk_response(update, 200, contact="<sip:gw9@127.0.0.29>"))
    assert dialog.remote_target == "sip:gw9@127.0.0.29"
    with pytest.raises(DialogError, match="only a 2xx"):
        dialog.apply_target_refresh(trunk_response(update, 500))


def test_reinvite_answer_ends_our_invite_transaction() -> None:
    _, dialog = confirmed_uac_dialog()
    reinvite = dialog.create_request("INVITE", via=SBC_VIA, branch="z9hG4bK-r")
    assert dialog.invite_in_progress
    with pytest.raises(DialogError, match="in progress"):
        dialog.create_request("INVITE", via=SBC_VIA, branch="z9hG4bK-r2")
    dialog.receive_response(trunk_response(reinvite, 500))
    assert not dialog.invite_in_progress and dialog.state is DialogState.CONFIRMED


# ----- glare ----------------------------------------------------------------------------------


def test_crossing_reinvites_get_491() -> None:
    dialog = confirmed_uas_dialog(cseq=1)
    dialog.create_request("INVITE", via=SBC_VIA, branch="z9hG4bK-mine")
    answer = dialog.receive_request(in_dialog_from_peer(dialog, "INVITE", 2))
    assert answer is not None and answer.status == 491


def test_second_invite_before_we_answer_the_first_gets_500_with_retry_after() -> None:
    dialog = confirmed_uas_dialog(cseq=1)
    assert dialog.receive_request(in_dialog_from_peer(dialog, "INVITE", 2)) is None
    answer = dialog.receive_request(in_dialog_from_peer(dialog, "INVITE", 3))
    assert answer is not None and answer.status == 500
    retry = answer.header("Retry-After")
    assert retry is not None and 0 <= int(retry) <= 10


# ----- early -> confirmed, termination ------------------------------------------------------------


def test_early_dialog_confirmed_by_2xx_takes_route_set_and_target_from_it() -> None:
    invite = sbc_invite()
    ringing = trunk_response(
        invite, 180, record_route=("<sip:old.example.com;lr>",), contact="<sip:early@127.0.0.21>"
    )
    dialog = Dialog.from_uac(invite, ringing, SBC_CONTACT)
    assert dialog.route_set == ["<sip:old.example.com;lr>"]
    ok = trunk_response(
        invite, 200, record_route=("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>")
    )
    dialog.receive_response(ok)
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.route_set == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
    assert dialog.remote_target == "sip:gw1@127.0.0.20:5060"
    assert not dialog.invite_in_progress
    # A retransmitted 2xx changes nothing.
    dialog.receive_response(trunk_response(invite, 200, contact="<sip:elsewhere@127.0.0.99>"))
    assert dialog.remote_target == "sip:gw1@127.0.0.20:5060"


def test_confirm_refuses_a_2xx_of_another_fork() -> None:
    invite = sbc_invite()
    dialog = Dialog.from_uac(invite, trunk_response(invite, 180, to_tag="a"), SBC_CONTACT)
    with pytest.raises(DialogError, match="another dialog"):
        dialog.confirm(trunk_response(invite, 200, to_tag="b"))
    with pytest.raises(DialogError, match="only a 2xx"):
        dialog.confirm(trunk_response(invite, 183, to_tag="a"))


def test_uas_dialog_confirmed_by_our_2xx_and_ended_by_our_error() -> None:
    invite = pbx_request()
    dialog = Dialog.from_uas(invite, LOCAL_TAG, SBC_CONTACT)
    dialog.response_sent(make_response(invite, 180, to_tag=LOCAL_TAG))
    assert dialog.state is DialogState.EARLY
    dialog.response_sent(make_response(invite, 486, to_tag=LOCAL_TAG))
    assert state_of(dialog) is DialogState.TERMINATED  # §12.3
    ok = Dialog.from_uas(invite, LOCAL_TAG, SBC_CONTACT)
    ok.response_sent(make_response(invite, 200, to_tag=LOCAL_TAG))
    assert ok.state is DialogState.CONFIRMED and not ok.invite_in_progress


def test_non_2xx_final_to_our_invite_ends_the_early_dialog() -> None:
    invite = sbc_invite()
    dialog = Dialog.from_uac(invite, trunk_response(invite, 183), SBC_CONTACT)
    dialog.receive_response(trunk_response(invite, 486))
    assert dialog.state is DialogState.TERMINATED


def test_sending_bye_terminates_the_dialog() -> None:
    _, dialog = confirmed_uac_dialog()
    bye = dialog.create_request("BYE", via=SBC_VIA, branch="z9hG4bK-bye")
    assert dialog.state is DialogState.TERMINATED and dialog.bye_sent
    with pytest.raises(DialogError, match="terminated"):
        dialog.create_request("INFO", via=SBC_VIA, branch="z9hG4bK-x")
    # A BYE challenged with 407 goes again, with the next CSeq (§22.2).
    again = dialog.create_request("BYE", via=SBC_VIA, branch="z9hG4bK-bye2")
    assert again.cseq.number == bye.cseq.number + 1
    assert ends_dialog(trunk_response(bye, 200, cseq=str(bye.cseq)))


def test_receiving_bye_terminates_and_later_requests_get_481() -> None:
    dialog = confirmed_uas_dialog(cseq=1)
    assert dialog.receive_request(in_dialog_from_peer(dialog, "BYE", 2)) is None
    assert dialog.state is DialogState.TERMINATED
    answer = dialog.receive_request(in_dialog_from_peer(dialog, "INFO", 3))
    assert answer is not None and answer.status == 481
    with pytest.raises(DialogError, match="terminated"):
        dialog.create_request("BYE", via=SBC_VIA, branch="z9hG4bK-b")


def test_callee_may_not_bye_an_early_dialog_but_caller_may() -> None:
    dialog = uas_dialog()
    with pytest.raises(DialogError, match="§15"):
        dialog.create_request("BYE", via=SBC_VIA, branch="z9hG4bK-b")
    assert dialog.state is DialogState.EARLY
    invite = sbc_invite()
    early = Dialog.from_uac(invite, trunk_response(invite, 180), SBC_CONTACT)
    early.create_request("BYE", via=SBC_VIA, branch="z9hG4bK-b")
    assert early.state is DialogState.TERMINATED


def test_illegal_transition_names_state_and_event() -> None:
    invite = pbx_request()
    dialog = Dialog.from_uas(invite, LOCAL_TAG, SBC_CONTACT)
    dialog.terminate()
    with pytest.raises(
        DialogStateError, match="TERMINATED.*2xx to the dialog-creating request"
    ) as info:
        dialog.confirm(make_response(invite, 200, to_tag=LOCAL_TAG))
    assert info.value.event is DialogEvent.CONFIRM
    assert (DialogState.TERMINATED, DialogEvent.CONFIRM) not in TRANSITIONS


@pytest.mark.parametrize(
    "status,method,ends",
    [
        (481, "INFO", True),
        (408, "INVITE", True),
        (200, "BYE", True),
        (404, "BYE", True),
        (487, "INVITE", False),
        (491, "INVITE", False),
        (100, "BYE", False),
        (200, "INFO", False),
    ],
)
def test_ends_dialog(status: int, method: str, ends: bool) -> None:
    invite = sbc_invite()
    response = trunk_response(invite, status, cseq=f"8 {method}")
    assert ends_dialog(response) is ends


# ----- table and forking ----------------------------------------------------------------------


def test_table_matches_requests_and_responses_in_both_directions() -> None:
    table = DialogTable()
    uas = confirmed_uas_dialog(cseq=1)
    table.add(uas)
    _, uac = confirmed_uac_dialog()
    table.add(uac)
    assert len(table) == 2
    # The PBX sends a request in the UAS dialog: To tag is ours.
    assert table.match(in_dialog_from_peer(uas, "INFO", 2)) is uas
    # The PBX answers a request we sent in the UAS dialog: From tag is ours.
    ours = uas.create_request("INFO", via=SBC_VIA, branch="z9hG4bK-i")
    answer = make_response(roundtrip(ours), 200)
    assert table.match(answer) is uas
    # The same in the UAC dialog.
    assert table.match(trunk_request(uac, "BYE", 1)) is uac
    info = uac.create_request("INFO", via=SBC_VIA, branch="z9hG4bK-j")
    assert table.match(trunk_response(info, 200, to_tag=None)) is uac
    # Unknown or out-of-dialog messages find nothing.
    assert table.match(pbx_request("INFO", cseq=5, to_tag="nobody")) is None
    assert table.match(pbx_request()) is None
    assert message_key(pbx_request()) is None
    assert table.get(uac.call_id, uac.local_tag, uac.remote_tag) is uac
    table.remove(uas)
    assert table.match(in_dialog_from_peer(uas, "INFO", 3)) is None
    assert uas not in table and uac in table


def test_table_refuses_two_dialogs_with_one_id() -> None:
    table = DialogTable()
    table.add(confirmed_uas_dialog())
    with pytest.raises(DialogError, match="exists already"):
        table.add(confirmed_uas_dialog())


def test_forking_makes_one_early_dialog_per_to_tag_and_the_2xx_confirms_one() -> None:
    table = DialogTable()
    invite = sbc_invite()
    dset = table.start_invite(invite, SBC_CONTACT)
    assert dset.receive(trunk_response(invite, 100, to_tag=None)) is None
    a = dset.receive(trunk_response(invite, 180, to_tag="fork-a", contact="<sip:a@127.0.0.21>"))
    b = dset.receive(trunk_response(invite, 183, to_tag="fork-b", contact="<sip:b@127.0.0.22>"))
    assert a is not None and b is not None and a is not b
    assert dset.receive(trunk_response(invite, 180, to_tag="fork-a")) is a  # same fork again
    assert {d.remote_tag for d in dset.early()} == {"fork-a", "fork-b"}
    assert len(table) == 2
    assert table.match_set(trunk_response(invite, 180, to_tag="fork-c")) is dset
    # A request from fork b inside its early dialog finds it.
    assert table.match(trunk_request(b, "UPDATE", 1)) is b

    ok_b = dset.receive(trunk_response(invite, 200, to_tag="fork-b", contact="<sip:b2@127.0.0.22>"))
    assert ok_b is b and dset.confirmed is b
    assert b.state is DialogState.CONFIRMED and b.remote_target == "sip:b2@127.0.0.22"
    assert a.state is DialogState.EARLY  # kept until the INVITE transaction ends (§13.2.2.4)
    # A 2xx from a fork never seen before: its own confirmed dialog, to ACK and BYE.
    c = dset.receive(trunk_response(invite, 200, to_tag="fork-c", contact="<sip:c@127.0.0.23>"))
    assert c is not None and c.state is DialogState.CONFIRMED
    assert dset.extra == [c] and table.match(trunk_request(c, "INFO", 1)) is c
    assert dset.receive(trunk_response(invite, 200, to_tag="fork-c")) is c
    assert dset.extra == [c]  # a retransmission is not a new extra dialog
    ack = c.create_ack(via=SBC_VIA, branch="z9hG4bK-ack-c")
    assert ack.uri == "sip:c@127.0.0.23" and ack.to_tag == "fork-c"
    c.create_request("BYE", via=SBC_VIA, branch="z9hG4bK-bye-c")
    assert state_of(c) is DialogState.TERMINATED

    assert dset.finish() == [a]
    assert state_of(a) is DialogState.TERMINATED and a not in table
    assert b in table and dset.confirmed is b
    table.remove_set(dset)
    assert table.match_set(trunk_response(invite, 180, to_tag="fork-a")) is None


def test_non_2xx_final_ends_every_early_dialog_of_the_invite() -> None:
    table = DialogTable()
    invite = sbc_invite()
    dset = table.start_invite(invite, SBC_CONTACT)
    forks = [dset.receive(trunk_response(invite, 180, to_tag=t)) for t in ("x", "y")]
    assert dset.receive(trunk_response(invite, 486, to_tag="z")) is None
    assert all(d is not None and d.state is DialogState.TERMINATED for d in forks)
    assert len(table) == 0 and dset.confirmed is None


def test_dialog_set_checks_what_it_is_given() -> None:
    invite = sbc_invite()
    dset = DialogSet(invite, SBC_CONTACT)
    with pytest.raises(DialogError, match="does not answer"):
        dset.receive(trunk_response(invite, 180, cseq="8 INVITE"))
    with pytest.raises(DialogError, match="no To tag"):
        dset.receive(trunk_response(invite, 200, to_tag=None))
    with pytest.raises(DialogError, match="From tag and no To tag"):
        DialogSet(pbx_request(to_tag="t"), SBC_CONTACT)
    table = DialogTable()
    table.start_invite(invite, SBC_CONTACT)
    with pytest.raises(DialogError, match="tracked already"):
        table.start_invite(invite, SBC_CONTACT)


# ----- 2xx retransmission ---------------------------------------------------------------------


def ok_for(invite: Request) -> Response:
    return make_response(invite, 200, to_tag=LOCAL_TAG, headers=[("Contact", SBC_CONTACT)])


def run_until_done(
    rtx: TwoXXRetransmitter | ReliableProvisionalRetransmitter,
) -> tuple[list[float], float | None]:
    """Fire the timer at each deadline (a virtual clock); resend times and the give-up time."""
    sent: list[float] = []
    for _ in range(100):  # bounded: the schedule ends at 64*T1
        deadline = rtx.next_deadline()
        if deadline is None:
            return sent, None
        out = rtx.on_timer(deadline)
        if isinstance(out, GiveUp):
            assert out.response is rtx.response
            assert rtx.next_deadline() is None
            return sent, deadline
        assert out is rtx.response
        sent.append(deadline)
    raise AssertionError("the retransmitter never finished")


@pytest.mark.parametrize("t1,t2", [(0.5, 4.0), (0.1, 0.4), (1.0, 1.0)])
def test_2xx_is_resent_doubling_up_to_t2_and_given_up_at_64_t1(t1: float, t2: float) -> None:
    start = 1000.0
    rtx = TwoXXRetransmitter(ok_for(pbx_request()), start, t1, t2)
    sent, gave_up = run_until_done(rtx)
    gaps = [round(b - a, 9) for a, b in zip([start, *sent], sent, strict=False)]
    expected: list[float] = []
    interval, t = t1, start
    while t + interval < start + 64 * t1:
        expected.append(round(interval, 9))
        t += interval
        interval = min(2 * interval, t2)
    assert gaps == expected
    assert gaps[0] == t1 and max(gaps) == t2
    assert gave_up == pytest.approx(start + 64 * t1)


def test_2xx_schedule_with_defaults() -> None:
    rtx = TwoXXRetransmitter(ok_for(pbx_request()), 0.0)
    sent, gave_up = run_until_done(rtx)
    assert sent == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert gave_up == 32.0


def test_ack_stops_the_2xx_and_early_or_stale_timers_do_nothing() -> None:
    invite = pbx_request(cseq=101)
    rtx = TwoXXRetransmitter(ok_for(invite), 0.0)
    assert rtx.on_timer(0.2) is None  # not due yet
    assert rtx.next_deadline() == 0.5
    assert rtx.on_timer(0.5) is rtx.response
    assert rtx.next_deadline() == 1.5
    dialog = Dialog.from_uas(invite, LOCAL_TAG, SBC_CONTACT)
    wrong = in_dialog_from_peer(dialog, "ACK", 100)
    right = in_dialog_from_peer(dialog, "ACK", 101)
    assert not rtx.acknowledges(wrong) and rtx.acknowledges(right)
    rtx.ack_received()
    assert rtx.done and rtx.next_deadline() is None
    assert rtx.on_timer(1.5) is None and rtx.on_timer(100.0) is None


def test_a_late_timer_does_not_burst() -> None:
    rtx = TwoXXRetransmitter(ok_for(pbx_request()), 0.0)
    assert rtx.on_timer(10.0) is rtx.response  # far past 0.5
    deadline = rtx.next_deadline()
    assert deadline is not None and deadline > 10.0
    assert rtx.on_timer(10.0) is None


def test_retransmitter_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="2xx"):
        TwoXXRetransmitter(make_response(pbx_request(), 180), 0.0)
    with pytest.raises(ValueError, match="T2"):
        TwoXXRetransmitter(ok_for(pbx_request()), 0.0, 1.0, 0.5)
    with pytest.raises(ValueError, match="T1"):
        TwoXXRetransmitter(ok_for(pbx_request()), 0.0, 0.0, 4.0)


def test_reliable_provisional_is_resent_doubling_until_prack() -> None:
    ringing = make_response(pbx_request(), 180, to_tag=LOCAL_TAG)
    rtx = ReliableProvisionalRetransmitter(ringing, 0.0, 0.5)
    sent, gave_up = run_until_done(rtx)
    assert sent == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]  # no T2 cap (RFC 3262 §3)
    assert gave_up == 32.0
    again = ReliableProvisionalRetransmitter(ringing, 0.0)
    again.prack_received()
    assert again.next_deadline() is None


# ----- 100rel ---------------------------------------------------------------------------------


def test_rseq_starts_random_and_counts_up_after_each_prack() -> None:
    invite = pbx_request(extra=("Supported: 100rel",))
    dialog = Dialog.from_uas(invite, LOCAL_TAG, SBC_CONTACT)
    first = make_response(invite, 183, to_tag=LOCAL_TAG)
    rack = dialog.reliable.stamp(first)
    assert 1 <= rack.rseq <= 2**31 - 1
    assert first.header("RSeq") == str(rack.rseq) and is_reliable(first)
    assert (rack.cseq, rack.method) == (101, "INVITE")
    second = make_response(invite, 180, to_tag=LOCAL_TAG)
    with pytest.raises(DialogError, match="not acknowledged"):
        dialog.reliable.stamp(second)
    # A PRACK for another RSeq does not match: 481, and the first stays outstanding.
    wrong = in_dialog_from_peer(dialog, "PRACK", 102, extra=(f"RAck: {rack.rseq + 1} 101 INVITE",))
    answer = dialog.receive_request(wrong)
    assert answer is not None and answer.status == 481
    prack = in_dialog_from_peer(dialog, "PRACK", 103, extra=(f"RAck: {rack.rseq} 101 INVITE",))
    assert dialog.receive_request(prack) is None
    assert dialog.reliable.unacked is None
    assert dialog.reliable.stamp(second).rseq == rack.rseq + 1
    assert second.option_tags("Require") == ["100rel"]


def test_random_rseq_starts_differ() -> None:
    starts = {
        ReliableProvisionals().stamp(make_response(pbx_request(), 180, to_tag="t")).rseq
        for _ in range(8)
    }
    assert len(starts) > 1


def test_prack_without_or_with_bad_rack_gets_400() -> None:
    dialog = uas_dialog()
    for extra in ((), ("RAck: one 101 INVITE",), ("RAck: 5 101",)):
        answer = dialog.receive_request(in_dialog_from_peer(dialog, "PRACK", 102, extra=extra))
        assert answer is not None and answer.status == 400, extra


def test_100_and_finals_are_never_sent_reliably() -> None:
    invite = pbx_request()
    for status in (100, 200):
        with pytest.raises(DialogError, match="101-199"):
            ReliableProvisionals().stamp(make_response(invite, status, to_tag="t"))


def test_uac_accepts_reliable_provisionals_in_order_only() -> None:
    invite = sbc_invite()
    rel = ("Require: 100rel",)
    first = trunk_response(invite, 183, extra=(*rel, "RSeq: 4000"))
    dialog = Dialog.from_uac(invite, first, SBC_CONTACT)
    assert is_reliable(first)
    assert dialog.reliable.receive(first) is RSeqCheck.NEW
    assert dialog.reliable.receive(first) is RSeqCheck.RETRANSMISSION
    skip = trunk_response(invite, 180, extra=(*rel, "RSeq: 4002"))
    assert dialog.reliable.receive(skip) is RSeqCheck.OUT_OF_ORDER
    nxt = trunk_response(invite, 180, extra=(*rel, "RSeq: 4001"))
    assert dialog.reliable.receive(nxt) is RSeqCheck.NEW
    assert dialog.reliable.receive(skip) is RSeqCheck.NEW  # now it is next in line
    prack = roundtrip(dialog.create_prack(nxt, via=SBC_VIA, branch="z9hG4bK-p"))
    assert prack.method == "PRACK" and prack.cseq == (8, "PRACK")
    assert parse_rack(prack.header("RAck") or "") == RAck(4001, 7, "INVITE")
    assert prack.to_tag == "itsp-a"
    # A new request (a later re-INVITE) starts a fresh RSeq space.
    other = trunk_response(invite, 183, extra=(*rel, "RSeq: 17"), cseq="9 INVITE")
    assert dialog.reliable.receive(other) is RSeqCheck.NEW


def test_each_fork_has_its_own_rseq_space() -> None:
    table = DialogTable()
    invite = sbc_invite()
    dset = table.start_invite(invite, SBC_CONTACT)
    rel = ("Require: 100rel",)
    a_resp = trunk_response(invite, 183, to_tag="a", extra=(*rel, "RSeq: 10"))
    b_resp = trunk_response(invite, 183, to_tag="b", extra=(*rel, "RSeq: 900"))
    a, b = dset.receive(a_resp), dset.receive(b_resp)
    assert a is not None and b is not None
    assert a.reliable.receive(a_resp) is RSeqCheck.NEW
    assert b.reliable.receive(b_resp) is RSeqCheck.NEW
    assert not is_reliable(trunk_response(invite, 180, extra=("RSeq: 1",)))


def test_unusable_contact_or_record_route_is_a_400() -> None:
    with pytest.raises(DialogError, match="Contact header") as info:
        uas_dialog(contact="<sip:@>")
    assert info.value.status == 400
    with pytest.raises(DialogError, match="Record-Route header") as info:
        uas_dialog(record_route=("<sip:proxy;lr>", "<sip:p2:99999;lr>"))
    assert info.value.status == 400


def test_a_2xx_without_contact_leaves_the_early_dialog_as_it_was() -> None:
    invite = sbc_invite()
    dialog = Dialog.from_uac(invite, trunk_response(invite, 180), SBC_CONTACT)
    with pytest.raises(DialogError, match="no Contact"):
        dialog.receive_response(
            trunk_response(invite, 200, contact=None, record_route=("<sip:x;lr>",))
        )
    assert dialog.state is DialogState.EARLY and dialog.route_set == []
    assert dialog.invite_in_progress


def test_local_contact_given_as_a_bare_uri_is_written_as_a_name_addr() -> None:
    dialog = Dialog.from_uas(pbx_request(), LOCAL_TAG, "sip:sbc@127.0.0.1:5060;transport=udp")
    assert dialog.local_contact == "<sip:sbc@127.0.0.1:5060;transport=udp>"
    with pytest.raises(DialogError, match="empty"):
        Dialog.from_uas(pbx_request(), LOCAL_TAG, "  ")


def test_reinvite_with_a_bad_contact_gets_400_and_changes_nothing() -> None:
    dialog = confirmed_uas_dialog(cseq=1)
    answer = dialog.receive_request(in_dialog_from_peer(dialog, "INVITE", 2, contact="<sip:@>"))
    assert answer is not None and answer.status == 400
    assert dialog.remote_seq == 1 and not dialog.invite_in_progress
