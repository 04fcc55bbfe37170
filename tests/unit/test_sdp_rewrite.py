"""SDP rewrite rules: relay addresses, o=/s=, codec filtering, ICE stripping, direction."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

import pytest

from sbc.sdp import (
    Connection,
    Direction,
    OriginState,
    Rtcp,
    SdpError,
    SdpLine,
    SessionDescription,
    answer_direction,
    correct_answer_directions,
    direction_ok,
    filter_codecs,
    parse_sdp,
    point_at_relay,
    set_media_direction,
    set_session_name,
    stamp_origin,
    strip_ice,
    wrong_directions,
)


def sdp_of(*lines: str) -> SessionDescription:
    return parse_sdp("".join(f"{line}\r\n" for line in lines).encode())


def text(sdp: SessionDescription) -> str:
    return sdp.to_bytes().decode()


PBX_OFFER = (
    "v=0",
    "o=pbx 1732467000 1732467000 IN IP4 10.1.2.10",
    "s=Asterisk PBX 20.1",
    "c=IN IP4 10.1.2.10",
    "t=0 0",
    "m=audio 10000 RTP/AVP 0 8 9 18 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=fmtp:18 annexb=no",
    "a=rtcp:10001 IN IP4 10.1.2.10",
    "a=ptime:20",
    "a=sendrecv",
)

AUDIO_VIDEO = (
    "v=0",
    "o=alice 2890844526 2890844527 IN IP4 10.0.0.5",
    "s=Video call",
    "c=IN IP4 10.0.0.5",
    "t=0 0",
    "m=audio 49170 RTP/AVP 96 0 8 101",
    "a=rtpmap:96 opus/48000/2",
    "a=fmtp:96 useinbandfec=1",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "m=video 51372/2 RTP/AVPF 97 98",
    "c=IN IP4 10.0.0.6/127",
    "a=rtpmap:97 H264/90000",
    "a=fmtp:97 profile-level-id=42e01f;packetization-mode=1",
    "a=rtcp-fb:97 nack pli",
    "a=rtpmap:98 VP8/90000",
    "a=rtcp-fb:98 nack",
    "a=rtcp-fb:* ccm fir",
    "m=video 0 RTP/AVP 31",
    "c=IN IP4 10.0.0.7",
    "a=rtcp:9 IN IP4 10.0.0.7",
    "m=image 40000 udptl t38",
    "a=T38FaxVersion:0",
)

WEBRTC_OFFER = (
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0",
    "a=ice-lite",
    "m=audio 50123 UDP/TLS/RTP/SAVPF 111 63 9 0 8 110 126",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=candidate:1467250027 1 udp 2122260223 192.0.2.33 50123 typ host generation 0",
    "a=candidate:842163049 1 udp 1686052607 203.0.113.77 61000 typ srflx raddr 192.0.2.33 rport 50123",
    "a=candidate:2 1 udp 2122262783 2001:db8::33 50124 typ host generation 0",
    "a=end-of-candidates",
    "a=ice-ufrag:EsAw",
    "a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y",
    "a=ice-options:trickle",
    "a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F",
    "a=setup:actpass",
    "a=mid:0",
    "a=sendrecv",
    "a=rtcp-mux",
    "a=rtcp-mux-only",
    "a=rtpmap:111 opus/48000/2",
    "a=rtcp-fb:111 transport-cc",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=rtpmap:63 red/48000/2",
    "a=fmtp:63 111/111",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:110 telephone-event/48000",
    "a=rtpmap:126 telephone-event/8000",
)

SDES_OFFER = (
    "v=0",
    "o=FreeSWITCH 1732460000 1732460001 IN IP6 fd00:10::40",
    "s=FreeSWITCH",
    "c=IN IP6 fd00:10::40",
    "t=0 0",
    "m=audio 24000 RTP/SAVP 0 8 101",
    "a=rtpmap:101 telephone-event/8000",
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4",
    "a=rtcp:24001",
)

RELAY = "127.0.0.2"
_IP = re.compile(r"(?<![\w:.])(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9a-f]*:[0-9a-f:]*:[0-9a-f]+)(?![\w:.])")


def addresses_in(sdp_text: str) -> set[str]:
    """Every IP literal in a body, except the unspecified ones that name nobody."""
    return {a for a in _IP.findall(sdp_text) if a not in ("0.0.0.0", "::")}


def cross(sdp: SessionDescription, relay_ports: Sequence[int | None], **origin: str) -> str:
    """The whole crossing as the B2BUA does it towards a plain RTP trunk."""
    state = OriginState(RELAY, "42", 1)
    endpoints = [None if port is None else (RELAY, port) for port in relay_ports]
    out = strip_ice(sdp, keep_rtcp_mux=False)
    out = point_at_relay(out, endpoints)
    out = set_session_name(out)
    return text(stamp_origin(out, state)[0])


# ----------------------------------------------------------------------- topology hiding


@pytest.mark.parametrize(
    ("lines", "ports"),
    [
        (PBX_OFFER, [30000]),
        (AUDIO_VIDEO, [30000, 30002, 30004, 30006]),
        (WEBRTC_OFFER, [30000]),
        (SDES_OFFER, [30000]),
    ],
    ids=["pbx", "audio-video", "webrtc", "sdes-ipv6"],
)
def test_no_address_of_the_far_side_crosses(lines: tuple[str, ...], ports: list[int]) -> None:
    original = sdp_of(*lines)
    before = addresses_in(text(original))
    assert before  # the check below could not fail otherwise
    out = cross(original, ports)
    assert addresses_in(out) == {RELAY}
    for address in before:
        assert address not in out
    assert "Asterisk" not in out and "FreeSWITCH" not in out and "alice" not in out


def test_every_connection_and_port_names_the_relay() -> None:
    out = point_at_relay(
        sdp_of(*AUDIO_VIDEO),
        [(RELAY, 30000), (RELAY, 30002), (RELAY, 30004), (RELAY, 30006)],
    )
    assert out.connection == Connection("IN", "IP4", RELAY)
    assert [s.port for s in out.media] == [30000, 30002, 0, 30006]
    # The multicast TTL and the port count belong to the far side's transport, not ours.
    assert out.media[1].connection == Connection("IN", "IP4", RELAY)
    assert out.media[1].port_count is None
    assert out.media[2].connection == Connection("IN", "IP4", RELAY)
    assert [out.media_connection(i) for i in range(4)] == [Connection("IN", "IP4", RELAY)] * 4


def test_input_is_left_untouched() -> None:
    original = sdp_of(*PBX_OFFER)
    before = original.to_bytes()
    cross(original, [30000])
    filter_codecs(original, ["PCMA"])
    assert original.to_bytes() == before


def test_rtcp_attribute_moves_to_relay_port_plus_one_rfc3605() -> None:
    out = point_at_relay(sdp_of(*PBX_OFFER), [(RELAY, 30000)])
    assert out.media[0].rtcp == Rtcp(30001, "IN", "IP4", RELAY)
    port_only = point_at_relay(sdp_of(*SDES_OFFER), [("::1", 30010)])
    assert port_only.media[0].rtcp == Rtcp(30011)


def test_ipv6_relay_sets_addrtype_ip6_and_ipv4_relay_ip4() -> None:
    out = point_at_relay(sdp_of(*SDES_OFFER), [("::1", 30010)])
    assert out.connection == Connection("IN", "IP6", "::1")
    out = point_at_relay(sdp_of(*SDES_OFFER), [(RELAY, 30010)])
    assert out.connection == Connection("IN", "IP4", RELAY)
    assert "c=IN IP6" not in text(out)
    assert stamp_origin(out, OriginState(RELAY, "7"))[0].origin.addrtype == "IP4"
    assert stamp_origin(out, OriginState("::1", "7"))[0].origin.addrtype == "IP6"


def test_port_zero_stays_zero_in_its_position_rfc3264_s6_s8_2() -> None:
    original = sdp_of(*AUDIO_VIDEO)
    out = point_at_relay(original, [(RELAY, 30000), (RELAY, 30002), (RELAY, 30004), (RELAY, 30006)])
    assert [s.media for s in out.media] == ["audio", "video", "video", "image"]
    assert out.media[2].port == 0
    assert out.media[2].formats == ("31",)
    assert out.media[2].rtcp is None  # would name the far side, and means nothing at port 0


def test_endpoint_none_rejects_the_stream_with_port_0() -> None:
    out = point_at_relay(sdp_of(*AUDIO_VIDEO), [(RELAY, 30000), None, None, (RELAY, 30006)])
    assert [s.port for s in out.media] == [30000, 0, 0, 30006]
    assert out.media[1].formats == ("97", "98")
    assert "10.0.0" not in text(out).split("o=", 1)[1].split("\r\n", 1)[1]


def test_stream_without_own_c_line_gets_one_when_its_relay_address_differs() -> None:
    out = point_at_relay(sdp_of(*PBX_OFFER), [("127.0.0.3", 30000)], address="127.0.0.2")
    assert out.connection == Connection("IN", "IP4", "127.0.0.2")
    audio = out.media[0]
    assert audio.connection == Connection("IN", "IP4", "127.0.0.3")
    assert audio.lines[1].kind == "c"  # RFC 8866 §5 order: m=, i=, c=


def test_no_extra_c_line_when_the_session_one_already_names_the_relay() -> None:
    out = point_at_relay(sdp_of(*PBX_OFFER), [(RELAY, 30000)])
    assert [line.kind for line in out.media[0].lines].count("c") == 0
    assert text(out).count("c=") == 1


def test_wrong_number_of_endpoints_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="2 relay endpoints for 1 m-lines"):
        point_at_relay(sdp_of(*PBX_OFFER), [(RELAY, 1), (RELAY, 2)])


def test_rfc2543_hold_address_is_kept_so_the_far_side_sees_the_hold_rfc3264_s8_4() -> None:
    held = sdp_of(*(line.replace("IN IP4 10.1.2.10", "IN IP4 0.0.0.0") for line in PBX_OFFER))
    out = point_at_relay(held, [(RELAY, 30000)])
    assert out.connection == Connection("IN", "IP4", "0.0.0.0")
    assert out.media[0].connection is None
    assert out.media[0].port == 30000


def test_unspecified_address_of_an_ice_stream_is_not_a_hold() -> None:
    out = point_at_relay(sdp_of(*WEBRTC_OFFER), [(RELAY, 30000)])
    assert out.media[0].connection == Connection("IN", "IP4", RELAY)
    assert out.media[0].rtcp == Rtcp(30001, "IN", "IP4", RELAY)


# --------------------------------------------------------------------------- o= and s=


def test_origin_names_only_our_side() -> None:
    out, state = stamp_origin(sdp_of(*PBX_OFFER), OriginState(RELAY, "3000", 5))
    origin = out.origin
    assert (origin.username, origin.sess_id, origin.sess_version) == ("-", "3000", 5)
    assert (origin.nettype, origin.addrtype, origin.address) == ("IN", "IP4", RELAY)
    assert state.version == 5 and state.digest is not None
    assert out.session[1].kind == "o"


def test_sess_version_increments_exactly_when_content_changes_rfc3264_s8() -> None:
    state = OriginState(RELAY, "3000", 1)
    first = point_at_relay(sdp_of(*PBX_OFFER), [(RELAY, 30000)])
    sent, state = stamp_origin(first, state)
    assert sent.origin.sess_version == 1
    # A session refresh re-offer with the same content keeps the version...
    sent, state = stamp_origin(first, state)
    assert sent.origin.sess_version == 1
    # ...even when the far side bumped its own o= version for nothing we pass on.
    bumped = sdp_of(
        *(line.replace("1732467000 1732467000", "1732467000 1732467009") for line in PBX_OFFER)
    )
    sent, state = stamp_origin(point_at_relay(bumped, [(RELAY, 30000)]), state)
    assert sent.origin.sess_version == 1
    # Hold: a changed body, one more.
    held = set_media_direction(first, 0, Direction.SENDONLY)
    sent, state = stamp_origin(held, state)
    assert sent.origin.sess_version == 2
    sent, state = stamp_origin(held, state)
    assert sent.origin.sess_version == 2
    # Resume: back to the old content is still a change; versions never go back.
    sent, state = stamp_origin(first, state)
    assert sent.origin.sess_version == 3
    assert sent.origin.sess_id == "3000"


def test_origin_added_to_a_hand_built_description_without_one() -> None:
    bare = SessionDescription((SdpLine("v", "0"), SdpLine("t", "0 0")))
    out, _ = stamp_origin(set_session_name(bare), OriginState(RELAY, "9"))
    assert [line.kind for line in out.session] == ["v", "o", "s", "t"]
    assert out.origin.address == RELAY


def test_origin_state_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="sess-id"):
        OriginState(RELAY, "abc")
    with pytest.raises(ValueError, match="username"):
        OriginState(RELAY, "1", username="two words")
    with pytest.raises(ValueError, match="version"):
        OriginState(RELAY, "1", -1)


def test_session_name_replaced_or_added() -> None:
    assert set_session_name(sdp_of(*PBX_OFFER)).session_name == "-"
    assert set_session_name(sdp_of(*PBX_OFFER), "Example SBC").session_name == "Example SBC"
    without = sdp_of(*(line for line in PBX_OFFER if not line.startswith("s=")))
    added = set_session_name(without)
    assert [line.kind for line in added.session][:3] == ["v", "o", "s"]
    with pytest.raises(ValueError):
        set_session_name(without, "two\r\nlines")


# ------------------------------------------------------------------------------ codecs


def test_codecs_filtered_and_put_in_configured_order() -> None:
    out = filter_codecs(sdp_of(*PBX_OFFER), ["PCMA", "PCMU", "telephone-event"])
    audio = out.media[0]
    assert audio.formats == ("8", "0", "101")
    body = text(out)
    assert "G722" not in body and "annexb" not in body
    assert "a=fmtp:101 0-16" in body and "a=ptime:20" in body and "a=rtcp:10001" in body


def test_static_payload_types_without_rtpmap_match_by_name() -> None:
    # 18 has no a=rtpmap in the offer; RFC 3551 §6 says it is G729.
    out = filter_codecs(sdp_of(*PBX_OFFER), ["g729", "pcmu"])
    assert out.media[0].formats == ("18", "0")
    assert "a=fmtp:18 annexb=no" in text(out)
    assert "telephone-event" not in text(out)


def test_dynamic_payload_types_match_by_rtpmap_name_case_insensitively() -> None:
    out = filter_codecs(sdp_of(*WEBRTC_OFFER), ["PCMU", "OPUS", "Telephone-Event"])
    audio = out.media[0]
    assert audio.formats == ("0", "111", "110", "126")
    assert audio.fmtp("111") == "minptime=10;useinbandfec=1"
    assert audio.rtcp_fb("111") == ("transport-cc",)
    assert audio.rtpmap("63") is None and audio.fmtp("63") is None


def test_clock_rate_narrows_a_codec_rfc4733() -> None:
    out = filter_codecs(sdp_of(*WEBRTC_OFFER), ["PCMA", "telephone-event/8000"])
    assert out.media[0].formats == ("8", "126")
    assert "telephone-event/48000" not in text(out)


def test_rtcp_fb_of_removed_payload_dropped_wildcard_kept() -> None:
    out = filter_codecs(sdp_of(*AUDIO_VIDEO), ["opus", "VP8", "telephone-event"])
    video = out.media[1]
    assert video.formats == ("98",)
    assert video.rtcp_fb("98") == ("nack", "ccm fir")
    assert "H264" not in text(out) and "nack pli" not in text(out)
    assert "profile-level-id" not in text(out)


def test_stream_with_nothing_allowed_is_rejected_not_the_whole_sdp() -> None:
    original = sdp_of(*AUDIO_VIDEO)
    out = filter_codecs(original, ["PCMU", "telephone-event"])
    assert [s.port for s in out.media] == [49170, 0, 0, 40000]
    assert out.media[0].formats == ("0", "101")
    assert out.media[1].formats == original.media[1].formats  # m= keeps a format
    assert out.media[3] == original.media[3]  # T.38 is not RTP: untouched


def test_stream_left_with_only_telephone_event_is_rejected() -> None:
    out = filter_codecs(sdp_of(*AUDIO_VIDEO), ["G729", "telephone-event", "H264"])
    assert out.media[0].port == 0
    assert out.media[1].formats == ("97",)


def test_no_stream_left_is_a_488() -> None:
    only_audio = sdp_of(*PBX_OFFER)
    with pytest.raises(SdpError) as caught:
        filter_codecs(only_audio, ["opus", "telephone-event"])
    assert caught.value.status == 488
    assert "opus" in str(caught.value) and "PCMU" in str(caught.value)


def test_empty_allowed_list_keeps_everything() -> None:
    original = sdp_of(*PBX_OFFER)
    assert filter_codecs(original, []) is original


def test_bad_codec_spec() -> None:
    with pytest.raises(ValueError, match="opus/fast"):
        filter_codecs(sdp_of(*PBX_OFFER), ["opus/fast"])


# --------------------------------------------------------------------------------- ICE


ICE_NAMES = ("candidate", "ice-ufrag", "ice-pwd", "ice-options", "ice-lite", "end-of-candidates")


def test_strip_ice_removes_every_ice_attribute_at_both_levels() -> None:
    out = strip_ice(sdp_of(*WEBRTC_OFFER), keep_rtcp_mux=True)
    body = text(out)
    for name in ICE_NAMES:
        assert f"a={name}" not in body
    assert "a=rtcp-mux\r\n" in body and "a=rtcp-mux-only" in body
    assert "a=fingerprint:" in body and "a=setup:actpass" in body and "a=mid:0" in body
    assert out.media[0].formats == sdp_of(*WEBRTC_OFFER).media[0].formats


def test_strip_ice_removes_rtcp_mux_when_the_leg_cannot_mux() -> None:
    out = strip_ice(sdp_of(*WEBRTC_OFFER), keep_rtcp_mux=False)
    assert not out.media[0].rtcp_mux
    assert "rtcp-mux" not in text(out)
    assert "a=rtcp:9" in text(out)


def test_strip_ice_leaves_a_plain_offer_unchanged() -> None:
    original = sdp_of(*PBX_OFFER)
    assert strip_ice(original, keep_rtcp_mux=False) == original


# --------------------------------------------------------------------------- direction

S, SO, RO, IA = Direction.SENDRECV, Direction.SENDONLY, Direction.RECVONLY, Direction.INACTIVE

# RFC 3264 §6.1, written out rather than derived: what an answer may say to each offer.
ALLOWED_ANSWERS = {
    S: {S, SO, RO, IA},
    SO: {RO, IA},
    RO: {SO, IA},
    IA: {IA},
}


@pytest.mark.parametrize(("offer", "answer"), list(itertools.product(Direction, Direction)))
def test_direction_ok_table_rfc3264_s6_1(offer: Direction, answer: Direction) -> None:
    assert direction_ok(offer, answer) is (answer in ALLOWED_ANSWERS[offer])


@pytest.mark.parametrize(("offer", "expected"), [(S, S), (SO, RO), (RO, SO), (IA, IA)])
def test_default_answer_direction_rfc3264_s6_1(offer: Direction, expected: Direction) -> None:
    assert answer_direction(offer) is expected


@pytest.mark.parametrize(("offer", "wanted"), list(itertools.product(Direction, Direction)))
def test_answer_direction_is_always_allowed_and_never_more_than_wanted(
    offer: Direction, wanted: Direction
) -> None:
    answer = answer_direction(offer, wanted)
    assert answer in ALLOWED_ANSWERS[offer]
    assert (not answer.sends or wanted.sends) and (not answer.receives or wanted.receives)


def test_holding_side_answers_sendrecv_offer_with_sendonly() -> None:
    assert answer_direction(S, SO) is SO
    assert answer_direction(SO, SO) is IA


def test_sendrecv_answer_to_our_sendonly_is_caught_and_corrected_traps_1() -> None:
    hold_offer = set_media_direction(sdp_of(*PBX_OFFER), 0, SO)
    bad_answer = sdp_of(
        "v=0",
        "o=x 1 1 IN IP4 198.51.100.7",
        "s=-",
        "c=IN IP4 198.51.100.8",
        "t=0 0",
        "m=audio 31000 RTP/AVP 8",
    )
    assert bad_answer.media_direction(0) is S
    assert wrong_directions(hold_offer, bad_answer) == [0]
    fixed = correct_answer_directions(hold_offer, bad_answer)
    assert fixed.media_direction(0) is RO
    assert wrong_directions(hold_offer, fixed) == []
    assert wrong_directions(hold_offer, set_media_direction(bad_answer, 0, IA)) == []


def test_session_level_direction_counts_and_rejected_streams_are_ignored() -> None:
    offer = sdp_of(*AUDIO_VIDEO[:5], "a=recvonly", *AUDIO_VIDEO[5:])
    answer = set_media_direction(point_at_relay(offer, [(RELAY, 1), (RELAY, 3), None, None]), 0, SO)
    assert answer.direction is RO  # copied from the offer: wrong for the answerer
    assert wrong_directions(offer, answer) == [1]


def test_set_media_direction_replaces_in_place_and_keeps_one() -> None:
    original = sdp_of(*PBX_OFFER)
    out = set_media_direction(original, 0, IA)
    assert out.media[0].direction is IA
    names = [line.value for line in out.media[0].lines]
    assert names.count("inactive") == 1 and "sendrecv" not in names
    assert names.index("inactive") == len(names) - 1
    assert len(out.media[0].lines) == len(original.media[0].lines)
    appended = set_media_direction(sdp_of(*SDES_OFFER), 0, SO)
    assert appended.media[0].lines[-1].value == "sendonly"
