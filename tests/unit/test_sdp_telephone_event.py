"""RFC 4733 telephone-event in SDP (sbc.sdp.telephone_event): finding it, taking it out toward
a side that signals DTMF with SIP INFO, and adding it toward a side that expects it in RTP."""

from __future__ import annotations

import pytest

from sbc.sdp import MediaSection, SessionDescription, parse_sdp
from sbc.sdp.telephone_event import (
    event_payload_type,
    main_clock_rate,
    telephone_events,
    with_telephone_event,
    without_telephone_event,
)

SESSION = ["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0"]


def sdp(*sections: str) -> SessionDescription:
    """A description around media sections, each given as lines joined by newlines."""
    lines = list(SESSION)
    for section in sections:
        lines.extend(section.split("\n"))
    return parse_sdp(("\r\n".join(lines) + "\r\n").encode())


def audio(formats: str, *attributes: str, port: int = 4000, proto: str = "RTP/AVP") -> str:
    return "\n".join([f"m=audio {port} {proto} {formats}", *(f"a={a}" for a in attributes)])


def section(formats: str, *attributes: str, port: int = 4000) -> MediaSection:
    return sdp(audio(formats, *attributes, port=port)).media[0]


def text(section: MediaSection) -> list[str]:
    return [str(line) for line in section.lines]


def reparsed(description: SessionDescription) -> SessionDescription:
    """The description serialized and parsed again: what the far side would read."""
    data = description.to_bytes()
    assert data.endswith(b"\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"")  # CRLF line ends only (RFC 8866 §5)
    again = parse_sdp(data)
    assert again.to_bytes() == data
    return again


def assert_rfc8866_order(description: SessionDescription) -> None:
    """RFC 8866 §5: within a media description, i= c= b= k= come before the a= lines."""
    for media in description.media:
        kinds = [line.kind for line in media.lines[1:]]
        if "a" in kinds:
            first_attribute = kinds.index("a")
            assert all(kind == "a" for kind in kinds[first_attribute:]), kinds


def assert_payload_lines_listed(media: MediaSection) -> None:
    """Every rtpmap/fmtp names a format of the m= line."""
    for name in ("rtpmap", "fmtp"):
        for value in media.attributes(name):
            assert value is not None
            assert value.split()[0] in media.formats, (name, value, media.formats)


PCMU_TE = audio(
    "0 8 101",
    "rtpmap:0 PCMU/8000",
    "rtpmap:8 PCMA/8000",
    "rtpmap:101 telephone-event/8000",
    "fmtp:101 0-16",
    "ptime:20",
    "sendrecv",
)
VIDEO = "\n".join(
    [
        "m=video 5000 RTP/AVP 96 97",
        "a=rtpmap:96 H264/90000",
        "a=fmtp:96 profile-level-id=42e01f",
        "a=rtcp-fb:96 nack",
        "a=rtpmap:97 VP8/90000",
    ]
)


# ================================================================== finding it


def test_telephone_events_maps_each_event_payload_type_to_its_clock_rate() -> None:
    media = section(
        "111 110 101",
        "rtpmap:111 opus/48000/2",
        "rtpmap:110 telephone-event/48000",
        "rtpmap:101 telephone-event/8000",
    )
    assert telephone_events(media) == {110: 48000, 101: 8000}


def test_telephone_events_matches_the_encoding_name_case_insensitively() -> None:
    assert telephone_events(section("0 101", "rtpmap:101 Telephone-Event/8000")) == {101: 8000}


def test_telephone_events_ignores_an_rtpmap_for_a_format_not_on_the_m_line() -> None:
    assert telephone_events(section("0", "rtpmap:101 telephone-event/8000")) == {}


def test_telephone_events_finds_none_in_video_or_non_rtp_streams() -> None:
    video = sdp("m=video 5000 RTP/AVP 101\na=rtpmap:101 telephone-event/8000").media[0]
    assert telephone_events(video) == {}
    other = sdp("m=audio 5000 UDP/BFCP 101\na=rtpmap:101 telephone-event/8000").media[0]
    assert telephone_events(other) == {}


@pytest.mark.parametrize(
    ("formats", "attributes", "rate"),
    [
        ("0 101", ["rtpmap:101 telephone-event/8000"], 8000),
        ("101 0", ["rtpmap:101 telephone-event/8000"], 8000),
        ("111 101", ["rtpmap:111 opus/48000/2", "rtpmap:101 telephone-event/48000"], 48000),
        ("13 9", [], 8000),  # CN is no codec; G722's RTP clock is 8000 (RFC 3551 §4.5.2)
        ("97 0", ["rtpmap:97 AMR-WB/16000"], 16000),
        ("101", ["rtpmap:101 telephone-event/16000"], 8000),  # nothing to tell by
    ],
)
def test_main_clock_rate_is_that_of_the_first_real_codec(
    formats: str, attributes: list[str], rate: int
) -> None:
    assert main_clock_rate(section(formats, *attributes)) == rate


def test_event_payload_type_prefers_the_one_at_the_main_codecs_rate_rfc4733_2_1() -> None:
    media = section(
        "111 110 101",
        "rtpmap:111 opus/48000/2",
        "rtpmap:110 telephone-event/8000",
        "rtpmap:101 telephone-event/48000",
    )
    assert event_payload_type(media) == (101, 48000)


def test_event_payload_type_falls_back_to_the_first_when_no_rate_matches() -> None:
    media = section(
        "0 110 101", "rtpmap:110 telephone-event/16000", "rtpmap:101 telephone-event/48000"
    )
    assert event_payload_type(media) == (110, 16000)


def test_event_payload_type_is_none_without_telephone_event() -> None:
    assert event_payload_type(section("0 8")) is None


# ================================================================== without_telephone_event


def test_without_telephone_event_removes_the_format_and_its_rtpmap_and_fmtp() -> None:
    out = without_telephone_event(sdp(PCMU_TE))
    assert text(out.media[0]) == [
        "m=audio 4000 RTP/AVP 0 8",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=ptime:20",
        "a=sendrecv",
    ]


def test_without_telephone_event_removes_every_event_format_and_its_rtcp_fb() -> None:
    out = without_telephone_event(
        sdp(
            audio(
                "111 110 101",
                "rtpmap:111 opus/48000/2",
                "fmtp:111 useinbandfec=1",
                "rtcp-fb:111 transport-cc",
                "rtpmap:110 telephone-event/48000",
                "fmtp:110 0-15",
                "rtcp-fb:110 nack",
                "rtpmap:101 telephone-event/8000",
                "fmtp:101 0-15",
                "rtcp-fb:* nack",
            )
        )
    )
    assert text(out.media[0]) == [
        "m=audio 4000 RTP/AVP 111",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 useinbandfec=1",
        "a=rtcp-fb:111 transport-cc",
        "a=rtcp-fb:* nack",  # the wildcard is about the remaining codecs too
    ]


def test_without_telephone_event_keeps_a_format_whose_number_starts_the_same() -> None:
    # fmtp:1010 is no line of payload type 101: whole words are compared.
    out = without_telephone_event(
        sdp(audio("0 101", "rtpmap:101 telephone-event/8000", "fmtp:101 0-16", "x-fmtp:1010 a"))
    )
    assert text(out.media[0]) == ["m=audio 4000 RTP/AVP 0", "a=x-fmtp:1010 a"]


def test_without_telephone_event_leaves_video_and_other_audio_streams_alone() -> None:
    plain = audio("0 8", "rtpmap:0 PCMU/8000", port=4002)
    original = sdp(PCMU_TE, VIDEO, plain)
    out = without_telephone_event(original)
    assert out.media[1] == original.media[1]
    assert out.media[2] == original.media[2]
    assert out.session == original.session
    assert out.media[0].formats == ("0", "8")


def test_without_telephone_event_leaves_a_video_stream_using_payload_type_101_alone() -> None:
    video = "m=video 5000 RTP/AVP 101\na=rtpmap:101 H264/90000\na=fmtp:101 packetization-mode=1"
    original = sdp(PCMU_TE, video)
    out = without_telephone_event(original)
    assert out.media[1] == original.media[1]


def test_without_telephone_event_keeps_a_section_whose_only_format_is_telephone_event() -> None:
    # An m= line needs at least one format (RFC 8866 §5.14): nothing sensible to remove.
    only_events = audio("101", "rtpmap:101 telephone-event/8000", "fmtp:101 0-16")
    original = sdp(only_events)
    assert without_telephone_event(original).media[0] == original.media[0]


def test_without_telephone_event_leaves_a_rejected_stream_alone() -> None:
    original = sdp(audio("0 101", "rtpmap:101 telephone-event/8000", port=0))
    assert without_telephone_event(original) == original


def test_without_telephone_event_output_parses_again() -> None:
    out = reparsed(without_telephone_event(sdp(PCMU_TE, VIDEO)))
    assert event_payload_type(out.media[0]) is None
    assert_payload_lines_listed(out.media[0])
    assert_rfc8866_order(out)


def test_without_telephone_event_changes_nothing_without_it() -> None:
    original = sdp(audio("0 8", "rtpmap:0 PCMU/8000"), VIDEO)
    assert without_telephone_event(original) == original


# ================================================================== with_telephone_event


def test_with_telephone_event_adds_101_at_the_main_codecs_rate_with_events_0_16() -> None:
    out = with_telephone_event(sdp(audio("0 8", "rtpmap:0 PCMU/8000", "rtpmap:8 PCMA/8000")))
    media = out.media[0]
    assert media.formats == ("0", "8", "101")
    assert media.attributes("rtpmap")[-1] == "101 telephone-event/8000"
    assert media.fmtp("101") == "0-16"  # RFC 4733 §7.1.1: DTMF and flash
    assert event_payload_type(media) == (101, 8000)


def test_with_telephone_event_keeps_the_payload_lines_together() -> None:
    out = with_telephone_event(
        sdp(audio("0 8", "rtpmap:0 PCMU/8000", "rtpmap:8 PCMA/8000", "ptime:20", "sendrecv"))
    )
    assert text(out.media[0]) == [
        "m=audio 4000 RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=sendrecv",
    ]


def test_with_telephone_event_follows_a_wideband_codecs_clock_rate_rfc4733_2_1() -> None:
    out = with_telephone_event(sdp(audio("111", "rtpmap:111 opus/48000/2")))
    assert event_payload_type(out.media[0]) == (101, 48000)


def test_with_telephone_event_picks_another_dynamic_number_when_101_is_taken() -> None:
    out = with_telephone_event(
        sdp(audio("101 96 0", "rtpmap:101 opus/48000/2", "rtpmap:96 AMR-WB/16000"))
    )
    media = out.media[0]
    assert media.formats == ("101", "96", "0", "97")
    assert telephone_events(media) == {97: 48000}
    assert media.fmtp("97") == "0-16"


def test_with_telephone_event_uses_the_payload_type_asked_for() -> None:
    out = with_telephone_event(sdp(audio("0")), payload_type=100)
    assert telephone_events(out.media[0]) == {100: 8000}


def test_with_telephone_event_does_nothing_when_the_stream_has_one() -> None:
    original = sdp(audio("0 96", "rtpmap:96 telephone-event/8000"))
    assert with_telephone_event(original) == original


def test_with_telephone_event_leaves_video_rejected_and_non_rtp_streams_alone() -> None:
    original = sdp(
        audio("0", port=0),
        VIDEO,
        "m=application 6000 UDP/BFCP *",
        audio("8", port=4002),
    )
    out = with_telephone_event(original)
    assert out.media[:3] == original.media[:3]
    assert event_payload_type(out.media[3]) == (101, 8000)


def test_with_telephone_event_leaves_a_stream_with_every_dynamic_number_taken_alone() -> None:
    formats = " ".join(str(pt) for pt in range(96, 128))
    rtpmaps = [f"rtpmap:{pt} L16/8000" for pt in range(96, 128)]
    original = sdp(audio(formats, *rtpmaps))
    assert with_telephone_event(original) == original


def test_with_telephone_event_output_parses_again_and_is_valid_sdp() -> None:
    out = reparsed(with_telephone_event(sdp(audio("0 8", "rtpmap:0 PCMU/8000", "sendrecv"), VIDEO)))
    assert event_payload_type(out.media[0]) == (101, 8000)
    assert_payload_lines_listed(out.media[0])
    assert_rfc8866_order(out)


def test_with_telephone_event_puts_the_attributes_after_a_media_level_c_line_rfc8866_5() -> None:
    # Static payload types need no rtpmap (RFC 3551 §6), and c= often sits at media level.
    original = sdp("m=audio 4000 RTP/AVP 0 8\nc=IN IP4 192.0.2.7\nb=AS:64\na=sendrecv")
    out = reparsed(with_telephone_event(original))
    assert_rfc8866_order(out)
    assert text(out.media[0]) == [
        "m=audio 4000 RTP/AVP 0 8 101",
        "c=IN IP4 192.0.2.7",
        "b=AS:64",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=sendrecv",
    ]
    assert out.media_connection(0) is not None


def test_with_telephone_event_then_without_gives_the_original_back() -> None:
    original = sdp(audio("0 8", "rtpmap:0 PCMU/8000", "rtpmap:8 PCMA/8000", "ptime:20"), VIDEO)
    assert without_telephone_event(with_telephone_event(original)) == original


# ---------------------------------------------------------- answering (RFC 3264 §6.1)


def test_with_telephone_event_answering_uses_the_offers_payload_type_and_rate() -> None:
    offer = sdp(audio("0 96", "rtpmap:96 telephone-event/8000", "fmtp:96 0-15"))
    answer = sdp(audio("0", "rtpmap:0 PCMU/8000"))
    out = with_telephone_event(answer, answering=offer)
    assert out.media[0].formats == ("0", "96")
    assert telephone_events(out.media[0]) == {96: 8000}


def test_with_telephone_event_answering_keeps_the_offers_rate_even_if_codec_differs() -> None:
    offer = sdp(audio("111 0 110", "rtpmap:111 opus/48000/2", "rtpmap:110 telephone-event/48000"))
    answer = sdp(audio("111", "rtpmap:111 opus/48000/2"))
    out = with_telephone_event(answer, answering=offer)
    assert telephone_events(out.media[0]) == {110: 48000}


def test_with_telephone_event_answering_adds_nothing_where_the_offer_had_none() -> None:
    # An answer may list only formats the offer had (RFC 3264 §6.1).
    offer = sdp(audio("0 96", "rtpmap:96 telephone-event/8000"), audio("0 8", port=4002))
    answer = sdp(audio("0"), audio("0", port=4002))
    out = with_telephone_event(answer, answering=offer)
    assert event_payload_type(out.media[0]) == (96, 8000)
    assert out.media[1] == answer.media[1]


def test_with_telephone_event_answering_leaves_streams_beyond_the_offer_alone() -> None:
    offer = sdp(audio("0 96", "rtpmap:96 telephone-event/8000"))
    answer = sdp(audio("0"), audio("0", port=4002))
    out = with_telephone_event(answer, answering=offer)
    assert out.media[1] == answer.media[1]


def test_with_telephone_event_answering_does_not_replace_the_answers_own_event() -> None:
    offer = sdp(audio("0 96", "rtpmap:96 telephone-event/8000"))
    answer = sdp(audio("0 101", "rtpmap:101 telephone-event/8000"))
    assert with_telephone_event(answer, answering=offer) == answer


def test_with_telephone_event_answering_output_parses_again() -> None:
    offer = sdp(audio("8 0 100", "rtpmap:100 telephone-event/8000", "fmtp:100 0-16"), VIDEO)
    answer = sdp(audio("8", "rtpmap:8 PCMA/8000", "sendrecv"), VIDEO)
    out = reparsed(with_telephone_event(answer, answering=offer))
    assert event_payload_type(out.media[0]) == (100, 8000)
    assert out.media[1] == answer.media[1]
    assert_payload_lines_listed(out.media[0])
    assert_rfc8866_order(out)
