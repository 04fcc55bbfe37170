"""The SDP model: byte-for-byte round trips, accessors, and errors that name the line."""

from __future__ import annotations

import pytest

from sbc.sdp import (
    Candidate,
    Connection,
    Crypto,
    Direction,
    MediaSection,
    Origin,
    Rtcp,
    RtpMap,
    SdpError,
    SdpLine,
    SessionDescription,
    parse_sdp,
)


def crlf(*lines: str) -> bytes:
    return "".join(f"{line}\r\n" for line in lines).encode()


PBX_OFFER = crlf(
    "v=0",
    "o=- 1732467000 1732467000 IN IP4 10.1.2.10",
    "s=Asterisk",
    "c=IN IP4 10.1.2.10",
    "t=0 0",
    "m=audio 10000 RTP/AVP 0 8 9 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
    "a=maxptime:150",
    "a=sendrecv",
)

ITSP_ANSWER = crlf(
    "v=0",
    "o=Sonus_UAC 123456 654321 IN IP4 198.51.100.7",
    "s=SIP Media Capabilities",
    "c=IN IP4 198.51.100.8",
    "t=0 0",
    "m=audio 31000 RTP/AVP 8 101",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=sendrecv",
    "a=maxptime:20",
)

AUDIO_VIDEO = crlf(
    "v=0",
    "o=alice 2890844526 2890844527 IN IP4 10.0.0.5",
    "s=Video call",
    "i=Weekly sync",
    "c=IN IP4 10.0.0.5",
    "b=AS:2048",
    "t=0 0",
    "a=sendonly",
    "m=audio 49170 RTP/AVP 96 0 101",
    "b=AS:64",
    "a=rtpmap:96 opus/48000/2",
    "a=fmtp:96 useinbandfec=1",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=ptime:20",
    "m=video 51372/2 RTP/AVPF 97 98",
    "b=AS:1920",
    "a=rtpmap:97 H264/90000",
    "a=fmtp:97 profile-level-id=42e01f;packetization-mode=1",
    "a=rtcp-fb:97 nack pli",
    "a=rtpmap:98 VP8/90000",
    "a=rtcp-fb:98 nack",
    "a=rtcp-fb:* ccm fir",
    "a=x-custom-thing:42",
    "y=a line kind nobody defined",
    "a=inactive",
)

SDES_OFFER = crlf(
    "v=0",
    "o=FreeSWITCH 1732460000 1732460001 IN IP4 10.20.30.40",
    "s=FreeSWITCH",
    "c=IN IP4 10.20.30.40",
    "t=0 0",
    "m=audio 24000 RTP/SAVP 9 0 8 101",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4",
    "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|1:32 UNENCRYPTED_SRTCP",
    "a=rtcp:24001 IN IP4 10.20.30.40",
)

WEBRTC_OFFER = crlf(
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0",
    "a=extmap-allow-mixed",
    "a=msid-semantic: WMS stream1",
    "m=audio 50123 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
    "c=IN IP4 192.0.2.33",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=candidate:1467250027 1 udp 2122260223 192.0.2.33 50123 typ host generation 0",
    "a=candidate:842163049 1 udp 1686052607 203.0.113.77 61000 typ srflx raddr 192.0.2.33 rport 50123",
    "a=candidate:2 1 udp 2122262783 2001:db8::33 50124 typ host generation 0",
    "a=end-of-candidates",
    "a=ice-ufrag:EsAw",
    "a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y",
    "a=ice-options:trickle renomination",
    "a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F",
    "a=setup:actpass",
    "a=mid:0",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "a=sendrecv",
    "a=msid:stream1 track1",
    "a=rtcp-mux",
    "a=rtcp-rsize",
    "a=rtpmap:111 opus/48000/2",
    "a=rtcp-fb:111 transport-cc",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=rtpmap:63 red/48000/2",
    "a=fmtp:63 111/111",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:13 CN/8000",
    "a=rtpmap:110 telephone-event/48000",
    "a=rtpmap:126 telephone-event/8000",
    "a=ssrc:1001 cname:abc",
)

T38_OFFER = crlf(
    "v=0",
    "o=- 1001 1002 IN IP4 198.51.100.20",
    "s=-",
    "c=IN IP4 198.51.100.20",
    "t=0 0",
    "m=image 40000 udptl t38",
    "a=T38FaxVersion:0",
    "a=T38MaxBitRate:14400",
    "a=T38FaxRateManagement:transferredTCF",
    "a=T38FaxMaxBuffer:262",
    "a=T38FaxMaxDatagram:176",
    "a=T38FaxUdpEC:t38UDPRedundancy",
)

SAMPLES = {
    "pbx-offer": PBX_OFFER,
    "itsp-answer": ITSP_ANSWER,
    "audio-video": AUDIO_VIDEO,
    "sdes-crypto": SDES_OFFER,
    "webrtc-ice": WEBRTC_OFFER,
    "t38-image": T38_OFFER,
}


# ------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("body", SAMPLES.values(), ids=SAMPLES.keys())
def test_round_trip_is_byte_for_byte(body: bytes) -> None:
    assert parse_sdp(body).to_bytes() == body


@pytest.mark.parametrize("body", SAMPLES.values(), ids=SAMPLES.keys())
def test_lf_only_input_is_read_and_written_back_with_crlf(body: bytes) -> None:
    lf_only = body.replace(b"\r\n", b"\n")
    sdp = parse_sdp(lf_only)
    assert sdp == parse_sdp(body)
    assert bytes(sdp) == body


def test_last_line_without_newline_and_trailing_blank_lines_are_tolerated() -> None:
    assert parse_sdp(PBX_OFFER.rstrip(b"\r\n")).to_bytes() == PBX_OFFER
    assert parse_sdp(PBX_OFFER + b"\r\n\r\n").to_bytes() == PBX_OFFER


def test_bytes_that_are_not_utf8_survive_the_round_trip() -> None:
    body = PBX_OFFER.replace(b"s=Asterisk", b"s=Caf\xe9 ISO-8859-1")
    assert parse_sdp(body).to_bytes() == body
    assert parse_sdp(body).session_name is not None


def test_spacing_inside_lines_is_kept_verbatim() -> None:
    body = PBX_OFFER.replace(b"m=audio 10000 RTP/AVP", b"m=audio  10000   RTP/AVP")
    sdp = parse_sdp(body)
    assert sdp.to_bytes() == body
    assert sdp.media[0].port == 10000


def test_unknown_line_kinds_and_attributes_are_kept_in_place() -> None:
    sdp = parse_sdp(AUDIO_VIDEO)
    video = sdp.media[1]
    kinds = [line.kind for line in video.lines]
    assert SdpLine("y", "a line kind nobody defined") in video.lines
    assert kinds.index("y") == len(kinds) - 2
    assert video.attribute("x-custom-thing") == "42"


def test_sections_split_at_m_lines() -> None:
    sdp = parse_sdp(AUDIO_VIDEO)
    assert [line.kind for line in sdp.session] == ["v", "o", "s", "i", "c", "b", "t", "a"]
    assert [section.lines[0].kind for section in sdp.media] == ["m", "m"]
    assert len(sdp.media[0].lines) == 7


# -------------------------------------------------------------------------- accessors


def test_origin_fields() -> None:
    assert parse_sdp(ITSP_ANSWER).origin == Origin(
        "Sonus_UAC", "123456", 654321, "IN", "IP4", "198.51.100.7"
    )


def test_connection_at_session_and_media_level() -> None:
    webrtc = parse_sdp(WEBRTC_OFFER)
    assert webrtc.connection is None
    assert webrtc.media[0].connection == Connection("IN", "IP4", "192.0.2.33")
    assert webrtc.media_connection(0) == Connection("IN", "IP4", "192.0.2.33")
    pbx = parse_sdp(PBX_OFFER)
    assert pbx.media[0].connection is None
    assert pbx.media_connection(0) == Connection("IN", "IP4", "10.1.2.10")


def test_multicast_connection_keeps_ttl_suffix() -> None:
    conn = Connection.parse("IN IP4 224.2.36.42/127/3")
    assert (conn.address, conn.suffix) == ("224.2.36.42", "/127/3")
    assert conn.to_line() == SdpLine("c", "IN IP4 224.2.36.42/127/3")


def test_media_line_fields() -> None:
    sdp = parse_sdp(AUDIO_VIDEO)
    audio, video = sdp.media
    assert (audio.media, audio.port, audio.port_count, audio.proto) == (
        "audio",
        49170,
        None,
        "RTP/AVP",
    )
    assert audio.formats == ("96", "0", "101")
    assert (video.media, video.port, video.port_count, video.proto) == (
        "video",
        51372,
        2,
        "RTP/AVPF",
    )
    assert audio.is_rtp and video.is_rtp and not audio.is_rejected


def test_t38_image_section_has_opaque_formats() -> None:
    image = parse_sdp(T38_OFFER).media[0]
    assert (image.media, image.proto, image.formats, image.is_rtp) == (
        "image",
        "udptl",
        ("t38",),
        False,
    )
    assert image.attribute("t38faxversion") == "0"
    assert image.attribute("T38MaxBitRate") == "14400"


def test_rtpmap_dynamic_and_static_without_rtpmap() -> None:
    audio = parse_sdp(AUDIO_VIDEO).media[0]
    assert audio.rtpmap("96") == RtpMap("96", "opus", 48000, "2")
    # RFC 3551 §6: payload type 0 means PCMU/8000 without any a=rtpmap.
    assert audio.rtpmap("0") == RtpMap("0", "PCMU", 8000)
    assert audio.rtpmap("0", static_default=False) is None
    assert audio.rtpmap("77") is None


def test_fmtp_and_rtcp_fb_per_payload_type() -> None:
    video = parse_sdp(AUDIO_VIDEO).media[1]
    assert video.fmtp("97") == "profile-level-id=42e01f;packetization-mode=1"
    assert video.fmtp("98") is None
    assert video.rtcp_fb("97") == ("nack pli", "ccm fir")
    assert video.rtcp_fb("98") == ("nack", "ccm fir")


def test_direction_media_level_overrides_session_level_which_overrides_default() -> None:
    av = parse_sdp(AUDIO_VIDEO)
    assert av.direction is Direction.SENDONLY
    assert av.media[0].direction is None
    assert av.media_direction(0) is Direction.SENDONLY
    assert av.media_direction(1) is Direction.INACTIVE
    itsp = parse_sdp(ITSP_ANSWER)
    assert itsp.media_direction(0) is Direction.SENDRECV
    t38 = parse_sdp(T38_OFFER)
    assert t38.direction is None and t38.media[0].direction is None
    assert t38.media_direction(0) is Direction.SENDRECV


def test_rtcp_attribute_rfc3605() -> None:
    assert parse_sdp(SDES_OFFER).media[0].rtcp == Rtcp(24001, "IN", "IP4", "10.20.30.40")
    assert parse_sdp(PBX_OFFER).media[0].rtcp is None
    assert Rtcp.parse("53020") == Rtcp(53020)


def test_ice_attributes_and_rtcp_mux() -> None:
    audio = parse_sdp(WEBRTC_OFFER).media[0]
    assert (audio.ice_ufrag, audio.ice_pwd) == ("EsAw", "bP+XJMM09aR8AiX1jdukzR6Y")
    assert audio.ice_options == ("trickle", "renomination")
    assert audio.end_of_candidates and audio.rtcp_mux
    first, srflx, v6 = audio.candidates
    assert first == Candidate(
        "1467250027", 1, "udp", 2122260223, "192.0.2.33", 50123, "host", ("generation", "0")
    )
    assert (srflx.type, srflx.extensions) == ("srflx", ("raddr", "192.0.2.33", "rport", "50123"))
    assert v6.address == "2001:db8::33"
    assert not parse_sdp(PBX_OFFER).media[0].rtcp_mux


def test_crypto_lines_rfc4568() -> None:
    first, second = parse_sdp(SDES_OFFER).media[0].crypto
    assert first == Crypto(
        1, "AES_CM_128_HMAC_SHA1_80", "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4"
    )
    assert (second.tag, second.suite, second.session_params) == (
        2,
        "AES_CM_128_HMAC_SHA1_32",
        ("UNENCRYPTED_SRTCP",),
    )


def test_malformed_attributes_parsed_on_demand_raise_sdp_error() -> None:
    with pytest.raises(SdpError, match="crypto"):
        Crypto.parse("1 AES_CM_128_HMAC_SHA1_80")
    with pytest.raises(SdpError, match="candidate"):
        Candidate.parse("1 1 udp 100 192.0.2.1 5000 host")


def test_media_section_must_start_with_m_line() -> None:
    with pytest.raises(ValueError, match="m= line"):
        MediaSection((SdpLine("a", "sendrecv"),))


def test_constructed_description_serializes() -> None:
    sdp = SessionDescription(
        (SdpLine("v", "0"), Origin("-", "1", 1, "IN", "IP4", "127.0.0.2").to_line()),
        (MediaSection((SdpLine("m", "audio 4000 RTP/AVP 0"),)),),
    )
    assert sdp.to_bytes() == crlf("v=0", "o=- 1 1 IN IP4 127.0.0.2", "m=audio 4000 RTP/AVP 0")


# ----------------------------------------------------------------------------- errors


def error_of(body: bytes) -> SdpError:
    with pytest.raises(SdpError) as caught:
        parse_sdp(body)
    assert isinstance(caught.value, ValueError)
    assert caught.value.status == 400
    return caught.value


def test_missing_v_line_names_line_1() -> None:
    err = error_of(PBX_OFFER.split(b"\r\n", 1)[1])
    assert err.line == 1
    assert "line 1" in str(err) and "v=0" in str(err) and "o=-" in str(err)


def test_empty_body() -> None:
    assert "empty" in str(error_of(b""))
    assert "empty" in str(error_of(b"\r\n\r\n"))


def test_unsupported_version() -> None:
    err = error_of(PBX_OFFER.replace(b"v=0", b"v=1"))
    assert err.line == 1 and "version" in str(err)


def test_missing_origin() -> None:
    err = error_of(PBX_OFFER.replace(b"o=- 1732467000 1732467000 IN IP4 10.1.2.10\r\n", b""))
    assert "o=" in str(err)


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ("o=- 1732467000 IN IP4 10.1.2.10", "6 fields"),
        ("o=- 1732467000 v2 IN IP4 10.1.2.10", "sess-version"),
    ],
)
def test_bad_origin_names_line_2(bad: str, words: str) -> None:
    err = error_of(PBX_OFFER.replace(b"o=- 1732467000 1732467000 IN IP4 10.1.2.10", bad.encode()))
    assert err.line == 2 and words in str(err)


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ("m=audio 10000 RTP/AVP", "at least one format"),
        ("m=audio", "at least one format"),
        ("m=audio abc RTP/AVP 0", "port 'abc' is not a number"),
        ("m=audio -5 RTP/AVP 0", "port '-5' is not a number"),
        ("m=audio 70000 RTP/AVP 0", "port 70000 is out of range"),
        ("m=audio 10000/0 RTP/AVP 0", "port count"),
        ("m=audio 10000/x RTP/AVP 0", "port count"),
    ],
)
def test_bad_m_line_names_its_line(bad: str, words: str) -> None:
    body = PBX_OFFER.replace(b"m=audio 10000 RTP/AVP 0 8 9 101", bad.encode())
    err = error_of(body)
    assert err.line == 6
    assert str(err).startswith("SDP line 6: ")
    assert words in str(err)


def test_line_numbers_count_lf_only_lines_too() -> None:
    body = PBX_OFFER.replace(b"a=rtpmap:9 G722/8000", b"a=rtpmap:9 G722").replace(b"\r\n", b"\n")
    err = error_of(body)
    assert err.line == 9 and "rtpmap" in str(err)


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ("this is not sdp", "expected '<letter>=<value>'"),
        ("A=sendrecv", "expected '<letter>=<value>'"),
        ("ab=sendrecv", "expected '<letter>=<value>'"),
        ("c=IN IP4", "c= needs 3 fields"),
        ("a=rtpmap:x PCMU/8000", "payload type"),
        ("a=rtpmap:96 opus/fast", "clock rate"),
        ("a=rtcp:port", "a=rtcp port"),
        ("v=0", "second v="),
        ("o=- 1 1 IN IP4 10.0.0.1", "o= may appear once"),
    ],
)
def test_bad_lines_inside_a_media_section_name_their_line(bad: str, words: str) -> None:
    body = PBX_OFFER.replace(b"a=maxptime:150", bad.encode())
    err = error_of(body)
    assert err.line == 13, str(err)
    assert words in str(err)


def test_direction_flags() -> None:
    assert [(d.sends, d.receives) for d in Direction] == [
        (True, True),
        (True, False),
        (False, True),
        (False, False),
    ]
    assert all(Direction.from_flags(d.sends, d.receives) is d for d in Direction)


def test_rtpmap_with_a_clock_rate_of_zero_is_malformed() -> None:
    # Samples per second: at 0 no timestamp would ever advance (found by fuzzing; the
    # relay's DTMF translation raised on it).
    with pytest.raises(SdpError, match="clock rate of 0"):
        RtpMap.parse("101 telephone-event/0")
    assert RtpMap.parse("101 telephone-event/8000").clock_rate == 8000
