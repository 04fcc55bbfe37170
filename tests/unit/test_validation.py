"""sbc.sip.validation.check_request: one test per branch (RFC 3261 §8.2, §16.3)."""

from __future__ import annotations

import pytest

from sbc.sip.message import Request, Response, parse
from sbc.sip.validation import ALLOWED_METHODS, check_request

SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.10\r\ns=-\r\nc=IN IP4 127.0.0.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


def request(
    method: str = "INVITE",
    *,
    uri: str = "sip:bob@127.0.0.1",
    max_forwards: str | None = "70",
    contact: str | None = "<sip:alice@127.0.0.10:5060>",
    to: str = "<sip:bob@127.0.0.1>",
    cseq_method: str | None = None,
    extra: tuple[str, ...] = (),
    body: bytes = b"",
) -> Request:
    lines = [
        f"{method} {uri} SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.10:5060;branch=z9hG4bK-val;rport",
        "From: <sip:alice@127.0.0.10>;tag=f1",
        f"To: {to}",
        "Call-ID: val-1@127.0.0.10",
        f"CSeq: 5 {cseq_method or method}",
    ]
    if max_forwards is not None:
        lines.append(f"Max-Forwards: {max_forwards}")
    if contact is not None:
        lines.append(f"Contact: {contact}")
    lines += list(extra)
    lines.append(f"Content-Length: {len(body)}")
    msg = parse(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    assert isinstance(msg, Request)
    return msg


def answer(req: Request, **kwargs: bool) -> Response:
    resp = check_request(req, **kwargs)
    assert resp is not None, "expected an error response"
    # every answer is a well-formed response to this request (RFC 3261 §8.2.6.2)
    again = parse(bytes(resp))
    assert isinstance(again, Response)
    assert again.status == resp.status
    assert again.call_id == req.call_id
    assert again.cseq == req.cseq
    assert [str(v) for v in again.vias] == [str(v) for v in req.vias]
    assert again.from_tag == req.from_tag
    assert again.to_tag, "the answer must carry a To tag"
    return again


# ----- requests that may be processed -----------------------------------------------------


def test_good_invite_with_sdp() -> None:
    req = request(extra=("Content-Type: application/sdp",), body=SDP)
    assert check_request(req) is None


def test_good_invite_without_body() -> None:
    assert check_request(request()) is None


@pytest.mark.parametrize("method", ["OPTIONS", "BYE", "CANCEL", "MESSAGE", "NOTIFY", "REFER"])
def test_good_requests(method: str) -> None:
    assert check_request(request(method)) is None


def test_info_with_text_plain_body_is_carried_not_read() -> None:
    req = request("INFO", extra=("Content-Type: text/plain",), body=b"hello")
    assert check_request(req) is None


def test_info_with_unknown_content_encoding_is_carried() -> None:
    req = request("INFO", extra=("Content-Type: application/x-thing", "Content-Encoding: gzip"),
                  body=b"\x1f\x8b")  # fmt: skip
    assert check_request(req) is None


def test_register_with_wildcard_contact() -> None:
    req = request("REGISTER", contact="*", extra=("Expires: 0",))
    assert check_request(req) is None


def test_supported_require_tags_pass() -> None:
    req = request(extra=("Require: 100rel, Timer", "Supported: whatever"))
    assert check_request(req) is None


def test_allowed_methods_cover_the_b2bua_set() -> None:
    for method in ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "PRACK", "UPDATE", "INFO"):
        assert method in ALLOWED_METHODS


# ----- 400 ---------------------------------------------------------------------------------


def test_missing_header_is_400() -> None:
    req = request()
    req.remove_header("Call-ID")
    resp = check_request(req)
    assert resp is not None
    assert resp.status == 400
    assert "Call-ID" in resp.reason


def test_cseq_method_mismatch_is_400() -> None:
    resp = check_request(request(cseq_method="BYE"))
    assert resp is not None and resp.status == 400


@pytest.mark.parametrize("method", ["INVITE", "REGISTER"])
def test_malformed_contact_is_400_rfc4475_3_1_2_13(method: str) -> None:
    resp = answer(request(method, contact="<sip:alice @127.0.0.10>"))
    assert resp.status == 400
    assert "Contact" in resp.reason


def test_malformed_contact_in_message_is_not_read() -> None:
    assert check_request(request("MESSAGE", contact="<sip:alice @127.0.0.10>")) is None


def test_bad_request_uri_is_400() -> None:
    resp = answer(request(uri="sip:bob@127.0.0.1:99999"))
    assert resp.status == 400


def test_max_forwards_out_of_range_is_400() -> None:
    assert answer(request(max_forwards="300")).status == 400


def test_400_keeps_existing_to_tag() -> None:
    resp = check_request(request(to="<sip:bob@127.0.0.1>;tag=dlg", cseq_method="BYE"))
    assert resp is not None and resp.to_tag == "dlg"


def test_400_with_malformed_to_still_answers() -> None:
    resp = check_request(request(to="<sip:bob@127.0.0.1"))
    assert resp is not None
    assert resp.status == 400


# ----- 416 / 501 / 405 ---------------------------------------------------------------------


@pytest.mark.parametrize("uri", ["http://example.com/", "mailto:bob@example.com", "unknown:x"])
def test_unknown_uri_scheme_is_416_rfc3261_8_2_2_1(uri: str) -> None:
    assert answer(request(uri=uri)).status == 416


@pytest.mark.parametrize("uri", ["sips:bob@127.0.0.1", "tel:+15551234"])
def test_sips_and_tel_are_supported(uri: str) -> None:
    assert check_request(request(uri=uri)) is None


def test_unknown_method_is_501_rfc3261_21_5_2() -> None:
    assert answer(request("NEWMETHOD")).status == 501


@pytest.mark.parametrize("method", ["SUBSCRIBE", "PUBLISH"])
def test_known_but_not_taken_method_is_405_with_allow_rfc3261_8_2_1(method: str) -> None:
    resp = answer(request(method))
    assert resp.status == 405
    allow = resp.header("Allow")
    assert allow is not None
    allowed = [m.strip() for m in allow.split(",")]
    assert "INVITE" in allowed and "OPTIONS" in allowed
    assert method not in allowed


# ----- 483 ---------------------------------------------------------------------------------


def test_max_forwards_zero_is_483_rfc3261_16_3() -> None:
    assert answer(request(max_forwards="0")).status == 483


def test_max_forwards_zero_options_to_a_remote_target_is_483() -> None:
    assert answer(request("OPTIONS", max_forwards="0")).status == 483


def test_max_forwards_zero_options_to_local_target_is_answered_rfc3261_11() -> None:
    assert check_request(request("OPTIONS", max_forwards="0"), local_target=True) is None


def test_max_forwards_zero_invite_to_local_target_is_still_483() -> None:
    assert answer(request(max_forwards="0"), local_target=True).status == 483


def test_max_forwards_one_passes() -> None:
    assert check_request(request(max_forwards="1")) is None


def test_missing_max_forwards_passes() -> None:
    assert check_request(request(max_forwards=None)) is None


# ----- 420 ---------------------------------------------------------------------------------


def test_unknown_require_tags_are_420_listing_only_them_rfc3261_8_2_2_3() -> None:
    req = request(extra=("Require: foo, 100rel", "Require: bar", "Proxy-Require: baz, timer"))
    resp = answer(req)
    assert resp.status == 420
    unsupported = resp.header("Unsupported")
    assert unsupported is not None
    assert [t.strip() for t in unsupported.split(",")] == ["foo", "bar", "baz"]


def test_unknown_proxy_require_alone_is_420_rfc4475_3_3_5() -> None:
    resp = answer(request("OPTIONS", extra=("Proxy-Require: noProxyRequire",)))
    assert resp.status == 420
    assert resp.header("Unsupported") == "noProxyRequire"


@pytest.mark.parametrize("method", ["ACK", "CANCEL"])
def test_require_is_not_checked_for_ack_and_cancel_rfc3261_8_2_2_3(method: str) -> None:
    req = request(method, cseq_method=method, extra=("Require: foo",))
    assert check_request(req) is None


# ----- 415 / 406 ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["INVITE", "UPDATE", "PRACK"])
def test_non_sdp_body_is_415_with_accept_rfc3261_8_2_3(method: str) -> None:
    resp = answer(request(method, extra=("Content-Type: text/plain",), body=b"hi"))
    assert resp.status == 415
    accept = resp.header("Accept")
    assert accept is not None and "application/sdp" in accept


def test_body_without_content_type_is_415() -> None:
    assert answer(request(body=SDP)).status == 415


def test_content_type_parameters_and_case_are_ignored() -> None:
    req = request(extra=("c: Application/SDP ; charset=UTF-8",), body=SDP)
    assert check_request(req) is None


def test_multipart_body_is_accepted() -> None:
    req = request(
        extra=("Content-Type: multipart/mixed;boundary=b",), body=b"--b\r\n\r\nx\r\n--b--"
    )
    assert check_request(req) is None


def test_unknown_content_encoding_is_415_rfc3261_8_2_3() -> None:
    req = request(extra=("Content-Type: application/sdp", "Content-Encoding: gzip"), body=SDP)
    resp = answer(req)
    assert resp.status == 415
    assert resp.header("Accept-Encoding") == "identity"


def test_identity_content_encoding_passes() -> None:
    req = request(extra=("Content-Type: application/sdp", "e: Identity"), body=SDP)
    assert check_request(req) is None


def test_empty_body_with_content_type_passes() -> None:
    assert check_request(request(extra=("Content-Type: text/plain",))) is None


def test_invite_whose_accept_excludes_sdp_is_406_rfc3261_21_4_7() -> None:
    resp = answer(request(extra=("Accept: text/plain, application/json",)))
    assert resp.status == 406


@pytest.mark.parametrize(
    "accept",
    ["application/sdp", "text/plain, Application/SDP;level=1", "application/*", "*/*"],
)
def test_invite_accept_including_sdp_passes(accept: str) -> None:
    assert check_request(request(extra=(f"Accept: {accept}",))) is None


def test_accept_on_options_is_not_checked() -> None:
    assert check_request(request("OPTIONS", extra=("Accept: text/plain",))) is None


def test_empty_accept_on_invite_is_406_rfc3261_20_1() -> None:
    resp = check_request(request(extra=("Accept:",)))
    assert resp is not None and resp.status == 406


def test_accept_sdp_with_q_zero_on_invite_is_406() -> None:
    resp = check_request(request(extra=("Accept: application/sdp;q=0",)))
    assert resp is not None and resp.status == 406


# ----- ACK is never answered (RFC 3261 §17.2.1) ---------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cseq_method": "INVITE"},  # CSeq mismatch: malformed
        {"uri": "http://x/"},
        {"max_forwards": "0"},
        {"extra": ("Content-Type: text/plain",), "body": b"x"},
        {"extra": ("Require: foo",)},
        {"max_forwards": "999"},
    ],
)
def test_ack_is_never_answered(kwargs: dict[str, object]) -> None:
    req = request("ACK", **kwargs)  # type: ignore[arg-type]
    assert check_request(req) is None


def test_ack_missing_headers_is_not_answered() -> None:
    req = request("ACK")
    req.remove_header("From")
    req.remove_header("CSeq")
    assert check_request(req) is None
