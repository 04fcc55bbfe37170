"""What the relay is told about each side of a stream: media.plan.LegMedia (its control-message
form and checks) and sbc.b2bua.media_plan.plan_leg, which works it out from the SDP we sent a
peer and the SDP that peer sent us."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from media.plan import LegMedia, SrtpKeys
from sbc.b2bua.media_plan import plan_leg
from sbc.sdp import SessionDescription, parse_sdp
from sbc.sdp.crypto import CryptoSuite, format_crypto, offer_cryptos

KEY30_A = bytes(range(1, 31))
KEY30_B = bytes(range(31, 61))
KEY44 = bytes(range(100, 144))
KEY28 = bytes(range(150, 178))


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def sdp(*media: str) -> SessionDescription:
    """A whole description around media sections given as lines joined by newlines."""
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0"]
    for section in media:
        lines.extend(section.split("\n"))
    return parse_sdp(("\r\n".join(lines) + "\r\n").encode())


def audio(
    formats: str,
    *attributes: str,
    port: int = 4000,
    proto: str = "RTP/AVP",
) -> str:
    return "\n".join([f"m=audio {port} {proto} {formats}", *(f"a={a}" for a in attributes)])


def only(plans: tuple[LegMedia | None, ...]) -> LegMedia:
    assert len(plans) == 1
    plan = plans[0]
    assert plan is not None
    return plan


# ================================================================== media.plan.LegMedia


SRTP = SrtpKeys("AES_CM_128_HMAC_SHA1_80", b64(KEY30_A), b64(KEY30_B))


@pytest.mark.parametrize(
    "media",
    [
        LegMedia(),
        LegMedia(
            media="audio",
            codec="opus",
            clock_rate=48000,
            ptime_ms=30.0,
            events_in=101,
            events_out=96,
            event_rate=48000,
            dtmf="info",
            srtp=SRTP,
        ),
        LegMedia(events_in=0, events_out=127, srtp=None),
    ],
    ids=["defaults", "everything-set-with-srtp", "payload-type-bounds"],
)
def test_leg_media_survives_to_dict_from_dict_and_json(media: LegMedia) -> None:
    data = media.to_dict()
    assert LegMedia.from_dict(data) == media
    # The control channel carries it as JSON: the dict form must be plain data.
    assert LegMedia.from_dict(json.loads(json.dumps(data))) == media


def test_leg_media_to_dict_carries_srtp_keys_as_a_plain_object() -> None:
    data = LegMedia(srtp=SRTP).to_dict()
    assert data["srtp"] == {
        "suite": "AES_CM_128_HMAC_SHA1_80",
        "inbound": b64(KEY30_A),
        "outbound": b64(KEY30_B),
    }
    assert LegMedia().to_dict()["srtp"] is None


def test_leg_media_from_dict_fills_missing_fields_with_defaults() -> None:
    assert LegMedia.from_dict({"codec": "PCMA"}) == LegMedia(codec="PCMA")


def test_leg_media_from_dict_does_not_change_the_dict_it_was_given() -> None:
    data = LegMedia(srtp=SRTP).to_dict()
    before = json.dumps(data, sort_keys=True)
    LegMedia.from_dict(data)
    assert json.dumps(data, sort_keys=True) == before


def test_leg_media_from_dict_refuses_unknown_fields_and_names_them() -> None:
    data = {**LegMedia().to_dict(), "volume": 3, "extra": 1}
    with pytest.raises(ValueError, match="extra, volume"):
        LegMedia.from_dict(data)


def test_leg_media_from_dict_refuses_unknown_fields_in_srtp_keys() -> None:
    data = LegMedia(srtp=SRTP).to_dict()
    data["srtp"]["mki"] = 1
    with pytest.raises(ValueError, match="leg media"):
        LegMedia.from_dict(data)


def test_leg_media_from_dict_refuses_srtp_keys_with_a_key_missing() -> None:
    data = LegMedia(srtp=SRTP).to_dict()
    del data["srtp"]["outbound"]
    with pytest.raises(ValueError, match="leg media"):
        LegMedia.from_dict(data)


@pytest.mark.parametrize("value", [[], "LegMedia()", None, 7])
def test_leg_media_from_dict_refuses_what_is_not_an_object(value: Any) -> None:
    with pytest.raises(ValueError, match="must be an object"):
        LegMedia.from_dict(value)


@pytest.mark.parametrize("mode", ["inband", "RFC4733", "", "sip-info"])
def test_leg_media_from_dict_refuses_an_unknown_dtmf_mode(mode: str) -> None:
    with pytest.raises(ValueError, match="dtmf"):
        LegMedia.from_dict({"dtmf": mode})


@pytest.mark.parametrize("field", ["events_in", "events_out"])
@pytest.mark.parametrize("value", [-1, 128, 255, 1000])
def test_leg_media_from_dict_refuses_payload_types_outside_0_127(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=f"{field} {value} is not an RTP payload type"):
        LegMedia.from_dict({field: value})


@pytest.mark.parametrize("field", ["clock_rate", "event_rate"])
@pytest.mark.parametrize("value", [0, -8000])
def test_leg_media_from_dict_refuses_clock_rates_that_are_not_positive(
    field: str, value: int
) -> None:
    with pytest.raises(ValueError, match="clock rates must be positive"):
        LegMedia.from_dict({field: value})


def test_srtp_keys_repr_hides_both_keys() -> None:
    text = repr(SRTP)
    assert "AES_CM_128_HMAC_SHA1_80" in text
    assert b64(KEY30_A) not in text
    assert b64(KEY30_B) not in text


def test_leg_media_repr_hides_its_srtp_keys_too() -> None:
    # The dataclass repr of LegMedia is what a traceback or a log line would show.
    text = repr(LegMedia(srtp=SRTP))
    assert "AES_CM_128_HMAC_SHA1_80" in text
    assert b64(KEY30_A) not in text
    assert b64(KEY30_B) not in text


def test_srtp_keys_compare_by_value_although_repr_hides_them() -> None:
    assert SrtpKeys("s", "k1", "k2") == SrtpKeys("s", "k1", "k2")
    assert SrtpKeys("s", "k1", "k2") != SrtpKeys("s", "k1", "k3")


# ================================================================== plan_leg: codecs


def test_plan_leg_without_their_sdp_is_empty() -> None:
    assert plan_leg(sdp(audio("0")), None, "rfc4733") == ()


def test_plan_leg_takes_their_first_real_codec_that_we_listed_too() -> None:
    # RFC 3264 §6.1: the answer's order says what is preferred; 18 (G729) is theirs only.
    ours = sdp(audio("0 8 101", "rtpmap:101 telephone-event/8000"))
    theirs = sdp(audio("18 8 0 101", "rtpmap:101 telephone-event/8000"))
    plan = only(plan_leg(ours, theirs, "rfc4733"))
    assert (plan.codec, plan.clock_rate) == ("PCMA", 8000)


def test_plan_leg_skips_telephone_event_and_comfort_noise_when_picking_the_codec() -> None:
    ours = sdp(audio("101 13 96", "rtpmap:101 telephone-event/8000", "rtpmap:96 opus/48000/2"))
    theirs = sdp(audio("101 13 96", "rtpmap:101 telephone-event/8000", "rtpmap:96 opus/48000/2"))
    plan = only(plan_leg(ours, theirs, "rfc4733"))
    assert (plan.codec, plan.clock_rate) == ("opus", 48000)


def test_plan_leg_reads_the_clock_rate_of_a_dynamic_codec_from_its_rtpmap() -> None:
    ours = sdp(audio("9 97", "rtpmap:97 AMR-WB/16000"))
    theirs = sdp(audio("97", "rtpmap:97 AMR-WB/16000"))
    plan = only(plan_leg(ours, theirs, "rfc4733"))
    assert (plan.codec, plan.clock_rate) == ("AMR-WB", 16000)


def test_plan_leg_falls_back_to_their_first_codec_when_none_is_shared() -> None:
    ours = sdp(audio("0"))
    theirs = sdp(audio("8 18"))
    assert only(plan_leg(ours, theirs, "rfc4733")).codec == "PCMA"


def test_plan_leg_without_our_sdp_uses_their_first_codec() -> None:
    theirs = sdp(audio("8 0"))
    plan = only(plan_leg(None, theirs, "rfc4733"))
    assert (plan.codec, plan.clock_rate, plan.srtp) == ("PCMA", 8000, None)


@pytest.mark.parametrize(("ptime", "expected"), [("30", 30.0), ("10", 10.0), ("", 20.0)])
def test_plan_leg_reads_their_ptime(ptime: str, expected: float) -> None:
    attributes = [f"ptime:{ptime}"] if ptime else []
    plan = only(plan_leg(sdp(audio("0")), sdp(audio("0", *attributes)), "rfc4733"))
    assert plan.ptime_ms == expected


@pytest.mark.parametrize("ptime", ["abc", "0", "-20", "5000"])
def test_plan_leg_ignores_a_ptime_that_makes_no_sense(ptime: str) -> None:
    plan = only(plan_leg(sdp(audio("0")), sdp(audio("0", f"ptime:{ptime}")), "rfc4733"))
    assert plan.ptime_ms == 20.0


@pytest.mark.parametrize("mode", ["rfc4733", "info"])
def test_plan_leg_passes_the_legs_dtmf_mode_on(mode: str) -> None:
    assert only(plan_leg(sdp(audio("0")), sdp(audio("0")), mode)).dtmf == mode


# ================================================================== plan_leg: streams


def test_plan_leg_gives_none_for_a_stream_they_rejected_with_port_0() -> None:
    ours = sdp(audio("0"), "m=video 5000 RTP/AVP 96\na=rtpmap:96 H264/90000")
    theirs = sdp(audio("0"), "m=video 0 RTP/AVP 96")
    plans = plan_leg(ours, theirs, "rfc4733")
    assert len(plans) == 2
    assert plans[0] is not None
    assert plans[1] is None


def test_plan_leg_gives_none_for_a_stream_we_rejected_with_port_0() -> None:
    ours = sdp(audio("0", port=0))
    theirs = sdp(audio("0"))
    assert plan_leg(ours, theirs, "rfc4733") == (None,)


def test_plan_leg_gives_none_for_a_stream_that_is_not_rtp() -> None:
    ours = sdp(audio("0"), "m=application 5000 UDP/BFCP *")
    theirs = sdp(audio("0"), "m=application 6000 UDP/BFCP *")
    plans = plan_leg(ours, theirs, "rfc4733")
    assert plans[0] is not None
    assert plans[1] is None


def test_plan_leg_plans_a_video_stream_with_its_own_codec() -> None:
    ours = sdp(audio("0"), "m=video 5000 RTP/AVP 96\na=rtpmap:96 H264/90000")
    theirs = sdp(audio("0"), "m=video 6000 RTP/AVP 96\na=rtpmap:96 H264/90000")
    video = plan_leg(ours, theirs, "rfc4733")[1]
    assert video is not None
    assert (video.media, video.codec, video.clock_rate) == ("video", "H264", 90000)
    assert video.events_in is None and video.events_out is None


def test_plan_leg_plans_every_m_line_of_theirs_even_beyond_ours() -> None:
    ours = sdp(audio("0"))
    theirs = sdp(audio("0"), audio("8", port=4002))
    plans = plan_leg(ours, theirs, "rfc4733")
    assert [p.codec if p else None for p in plans] == ["PCMU", "PCMA"]
    # No SDP of ours for the second stream: no keys can be paired there.
    assert plans[1] is not None and plans[1].srtp is None


# ================================================================== plan_leg: telephone-event


def test_plan_leg_events_in_is_our_number_and_events_out_theirs_rfc3264_6_1() -> None:
    # RFC 3264 §6.1: a side sends with the payload numbers of the SDP it received (ours)
    # and expects those of the SDP it sent (theirs).
    ours = sdp(audio("0 101", "rtpmap:101 telephone-event/8000", "fmtp:101 0-16"))
    theirs = sdp(audio("0 96", "rtpmap:96 telephone-event/8000", "fmtp:96 0-15"))
    plan = only(plan_leg(ours, theirs, "rfc4733"))
    assert (plan.events_in, plan.events_out, plan.event_rate) == (101, 96, 8000)


def test_plan_leg_without_telephone_event_on_either_side_has_no_event_numbers() -> None:
    plan = only(plan_leg(sdp(audio("0 8")), sdp(audio("0 8")), "info"))
    assert (plan.events_in, plan.events_out) == (None, None)


def test_plan_leg_picks_the_telephone_event_at_the_codecs_clock_rate() -> None:
    # Wideband offers often list telephone-event twice (RFC 4733 §2.1: the rate follows the
    # audio); the one at the main codec's rate is the one in use.
    section = audio(
        "111 110 101",
        "rtpmap:111 opus/48000/2",
        "rtpmap:110 telephone-event/8000",
        "rtpmap:101 telephone-event/48000",
    )
    plan = only(plan_leg(sdp(section), sdp(section), "rfc4733"))
    assert (plan.codec, plan.clock_rate) == ("opus", 48000)
    assert (plan.events_in, plan.events_out, plan.event_rate) == (101, 101, 48000)


def test_plan_leg_event_rate_is_the_rate_of_their_telephone_event() -> None:
    ours = sdp(audio("9 101", "rtpmap:9 G722/8000", "rtpmap:101 telephone-event/8000"))
    theirs = sdp(audio("9 101", "rtpmap:9 G722/8000", "rtpmap:101 telephone-event/8000"))
    assert only(plan_leg(ours, theirs, "rfc4733")).event_rate == 8000


def test_plan_leg_an_answer_without_telephone_event_negotiates_none_rfc3264_6_1() -> None:
    # RFC 3264 §6.1/§7: the formats of a stream are those of the answer; one that drops
    # telephone-event neither sends nor expects it, whatever the offer listed.
    offer = sdp(audio("0 101", "rtpmap:101 telephone-event/8000", "fmtp:101 0-16"))
    answer = sdp(audio("0"))
    plan = only(plan_leg(offer, answer, "rfc4733"))
    assert plan.events_out is None


WIDEBAND_OFFER = audio(
    "111 0 101 100",
    "rtpmap:111 opus/48000/2",
    "rtpmap:101 telephone-event/48000",
    "rtpmap:100 telephone-event/8000",
)
NARROWBAND_ANSWER = audio("0 100", "rtpmap:100 telephone-event/8000")


def test_plan_leg_as_offerer_takes_our_event_at_the_answered_codecs_rate_rfc4733_2_1() -> None:
    # We offered opus and PCMU, each with its telephone-event; the answer took PCMU, so the
    # peer sends telephone-event/8000 with our number for it, 100.
    plan = only(plan_leg(sdp(WIDEBAND_OFFER), sdp(NARROWBAND_ANSWER), "rfc4733"))
    assert (plan.codec, plan.clock_rate) == ("PCMU", 8000)
    assert (plan.events_in, plan.events_out, plan.event_rate) == (100, 100, 8000)


def test_plan_leg_as_answerer_takes_their_event_at_the_answered_codecs_rate_rfc4733_2_1() -> None:
    plan = only(plan_leg(sdp(NARROWBAND_ANSWER), sdp(WIDEBAND_OFFER), "rfc4733"))
    assert (plan.codec, plan.clock_rate) == ("PCMU", 8000)
    assert (plan.events_in, plan.events_out, plan.event_rate) == (100, 100, 8000)


# ================================================================== plan_leg: SRTP keys


SAVP = "RTP/SAVP"


def crypto(tag: int, suite: CryptoSuite, key: bytes) -> str:
    return f"crypto:{format_crypto(tag, suite, key)}"


def test_plan_leg_pairs_the_answered_crypto_line_with_our_offered_one_by_tag() -> None:
    offered = offer_cryptos()  # strongest first, tags 1..4, fresh keys
    chosen = next(line for line in offered if line.suite is CryptoSuite.AES_CM_128_HMAC_SHA1_80)
    ours = sdp(audio("0", *(f"crypto:{line.value}" for line in offered), proto=SAVP))
    theirs = sdp(
        audio("0", crypto(chosen.tag, CryptoSuite.AES_CM_128_HMAC_SHA1_80, KEY30_A), proto=SAVP)
    )
    keys = only(plan_leg(ours, theirs, "rfc4733")).srtp
    assert keys == SrtpKeys("AES_CM_128_HMAC_SHA1_80", b64(KEY30_A), b64(chosen.key))


def test_plan_leg_inbound_is_their_key_and_outbound_ours_rfc4568_6_1() -> None:
    # Each side encrypts what it sends with the key in its own SDP (RFC 4568 §6.1).
    ours = sdp(audio("0", crypto(1, CryptoSuite.AES_CM_128_HMAC_SHA1_80, KEY30_B), proto=SAVP))
    theirs = sdp(audio("0", crypto(1, CryptoSuite.AES_CM_128_HMAC_SHA1_80, KEY30_A), proto=SAVP))
    keys = only(plan_leg(ours, theirs, "rfc4733")).srtp
    assert keys is not None
    assert base64.b64decode(keys.inbound) == KEY30_A
    assert base64.b64decode(keys.outbound) == KEY30_B


def test_plan_leg_as_answerer_pairs_the_offer_line_we_answered() -> None:
    # They offered three lines; our answer took tag 2 (GCM-128).
    theirs = sdp(
        audio(
            "0",
            crypto(1, CryptoSuite.AEAD_AES_256_GCM, KEY44),
            crypto(2, CryptoSuite.AEAD_AES_128_GCM, KEY28),
            crypto(3, CryptoSuite.AES_CM_128_HMAC_SHA1_80, KEY30_A),
            proto=SAVP,
        )
    )
    our_key = bytes(reversed(KEY28))
    ours = sdp(audio("0", crypto(2, CryptoSuite.AEAD_AES_128_GCM, our_key), proto=SAVP))
    keys = only(plan_leg(ours, theirs, "rfc4733")).srtp
    assert keys == SrtpKeys("AEAD_AES_128_GCM", b64(KEY28), b64(our_key))


def test_plan_leg_same_tag_but_another_suite_is_no_match() -> None:
    ours = sdp(audio("0", crypto(1, CryptoSuite.AES_CM_128_HMAC_SHA1_32, KEY30_B), proto=SAVP))
    theirs = sdp(audio("0", crypto(1, CryptoSuite.AES_CM_128_HMAC_SHA1_80, KEY30_A), proto=SAVP))
    assert only(plan_leg(ours, theirs, "rfc4733")).srtp is None


def test_plan_leg_same_suite_but_another_tag_is_no_match() -> None:
    ours = sdp(audio("0", crypto(2, CryptoSuite.AES_CM_128_HMAC_SHA1_80, KEY30_B), proto=SAVP))
    theirs = sdp(audio("0", crypto(1, CryptoSuite.AES_CM_128_HMAC_SHA1_80, KEY30_A), proto=SAVP))
    assert only(plan_leg(ours, theirs, "rfc4733")).srtp is None


def test_plan_leg_no_crypto_on_their_side_is_plain_rtp() -> None:
    ours = sdp(audio("0", crypto(1, CryptoSuite.AES_CM_128_HMAC_SHA1_80, KEY30_B), proto=SAVP))
    theirs = sdp(audio("0"))
    assert only(plan_leg(ours, theirs, "rfc4733")).srtp is None


def test_plan_leg_skips_a_crypto_line_pylibsrtp_cannot_use() -> None:
    # Tag 1 has an MKI (unusable); tag 2 is fine and is the pair in force.
    mki_line = f"crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{b64(KEY30_A)}|2^20|1:4"
    ours = sdp(
        audio(
            "0",
            f"crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{b64(KEY30_B)}|2^20|1:4",
            crypto(2, CryptoSuite.AES_CM_128_HMAC_SHA1_32, KEY30_B),
            proto=SAVP,
        )
    )
    theirs = sdp(
        audio("0", mki_line, crypto(2, CryptoSuite.AES_CM_128_HMAC_SHA1_32, KEY30_A), proto=SAVP)
    )
    keys = only(plan_leg(ours, theirs, "rfc4733")).srtp
    assert keys == SrtpKeys("AES_CM_128_HMAC_SHA1_32", b64(KEY30_A), b64(KEY30_B))


def test_plan_leg_keys_are_per_stream() -> None:
    suite = CryptoSuite.AES_CM_128_HMAC_SHA1_80
    ours = sdp(
        audio("0", crypto(1, suite, KEY30_B), proto=SAVP),
        audio("0", crypto(1, suite, bytes(30)), port=4002, proto=SAVP),
    )
    theirs = sdp(
        audio("0", crypto(1, suite, KEY30_A), proto=SAVP),
        audio("0", crypto(1, suite, bytes(range(200, 230))), port=4002, proto=SAVP),
    )
    first, second = plan_leg(ours, theirs, "rfc4733")
    assert first is not None and second is not None
    assert first.srtp == SrtpKeys(suite.value, b64(KEY30_A), b64(KEY30_B))
    assert second.srtp == SrtpKeys(suite.value, b64(bytes(range(200, 230))), b64(bytes(30)))
