"""SDES (RFC 4568): a=crypto parsing, suite choice, answer matching and per-leg SRTP policy."""

from __future__ import annotations

import base64

import pytest

from sbc.sdp import MediaSection, SdpError, parse_sdp
from sbc.sdp.crypto import (
    DEFAULT_SUITES,
    CryptoAttribute,
    CryptoSuite,
    KeyParam,
    LocalOffer,
    Protection,
    SdesError,
    SrtpPolicy,
    accept_answer,
    answer_crypto,
    answer_section,
    decide_offer,
    format_crypto,
    generate_key,
    match_answer,
    offer_cryptos,
    offer_section,
    parse_crypto,
    strip_crypto,
    without_crypto,
)

KEY30 = bytes(range(1, 31))
KEY28 = bytes(range(101, 129))
KEY44 = bytes(range(150, 194))


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


SHA80 = f"1 AES_CM_128_HMAC_SHA1_80 inline:{b64(KEY30)}"
SHA32 = f"2 AES_CM_128_HMAC_SHA1_32 inline:{b64(KEY30)}"
GCM128 = f"3 AEAD_AES_128_GCM inline:{b64(KEY28)}"
GCM256 = f"4 AEAD_AES_256_GCM inline:{b64(KEY44)}"
WITH_MKI = f"5 AEAD_AES_256_GCM inline:{b64(KEY44)}|2^31|1:4"


def section(media: str, *attributes: str) -> MediaSection:
    body = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    body += f"m={media}\r\n" + "".join(f"a={a}\r\n" for a in attributes)
    return parse_sdp(body.encode()).media[0]


def cryptos(sec: MediaSection) -> list[CryptoAttribute]:
    return [parse_crypto(v) for v in sec.attributes("crypto") if v is not None]


# ------------------------------------------------------------------------------ parsing


def test_parse_plain_line() -> None:
    line = parse_crypto(SHA80)
    assert line.tag == 1
    assert line.suite is CryptoSuite.AES_CM_128_HMAC_SHA1_80
    assert line.key == KEY30
    assert line.key_params == (KeyParam("inline", KEY30),)
    assert line.session_params == ()
    assert line.problem() is None and line.usable


def test_parse_lifetime_mki_and_session_params() -> None:
    value = f"7 AES_CM_128_HMAC_SHA1_32 inline:{b64(KEY30)}|2^20|1:4 KDR=0 WSH=64 -X_VENDOR"
    line = parse_crypto(value)
    assert line.tag == 7
    assert line.key_params[0].lifetime == 2**20
    assert line.key_params[0].mki == (1, 4)
    assert line.session_params == ("KDR=0", "WSH=64", "-X_VENDOR")
    assert line.problem() == "it has an MKI, which pylibsrtp cannot use"


def test_parse_decimal_lifetime_without_mki_is_usable() -> None:
    line = parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{b64(KEY30)}|1048576")
    assert line.key_params[0].lifetime == 1048576
    assert line.key_params[0].mki is None
    # The lifetime bounds what the peer sends with its own key; it re-keys by re-offer.
    assert line.usable


def test_parse_gcm_keys_with_and_without_padding() -> None:
    padded = b64(KEY28)
    assert padded.endswith("=")
    for text in (padded, padded.rstrip("=")):
        line = parse_crypto(f"1 AEAD_AES_128_GCM inline:{text}")
        assert line.key == KEY28 and line.usable
    assert parse_crypto(GCM256).key == KEY44
    assert parse_crypto(GCM256).usable


def test_parse_is_case_insensitive_for_suite_and_method() -> None:
    line = parse_crypto(f"1 aes_cm_128_hmac_sha1_80 INLINE:{b64(KEY30)}")
    assert line.suite is CryptoSuite.AES_CM_128_HMAC_SHA1_80
    assert line.usable


def test_format_round_trip() -> None:
    for suite in CryptoSuite:
        key = generate_key(suite)
        assert len(key) == suite.key_length
        value = format_crypto(12, suite, key)
        line = parse_crypto(value)
        assert (line.tag, line.suite, line.key) == (12, suite, key)
        assert line.value == value
        assert str(line.to_line()) == f"a=crypto:{value}"


def test_format_refuses_wrong_key_length() -> None:
    with pytest.raises(ValueError, match="needs a 28-byte key, not 30"):
        format_crypto(1, CryptoSuite.AEAD_AES_128_GCM, KEY30)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "found 0 field"),
        ("1 AES_CM_128_HMAC_SHA1_80", "found 2 field"),
        (f"x AES_CM_128_HMAC_SHA1_80 inline:{b64(KEY30)}", "tag 'x' is not 1 to 9 digits"),
        (f"1234567890 AES_CM_128_HMAC_SHA1_80 inline:{b64(KEY30)}", "is not 1 to 9 digits"),
        (f"1 AES-CM inline:{b64(KEY30)}", "crypto-suite 'AES-CM' is not a name"),
        (f"1 AES_CM_128_HMAC_SHA1_80 {b64(KEY30)}", "is not '<method>:<key info>'"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:", "is not '<method>:<key info>'"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:ab*cd", "not base64"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:abcde", "not valid base64"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:|2^20", "inline key is empty"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{b64(KEY30)}|2^x", "lifetime '2^x'"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{b64(KEY30)}|2^99999999", "out of range"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{b64(KEY30)}|0", "lifetime 0"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{b64(KEY30)}|1:0", "MKI length 0"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{b64(KEY30)}|1:129", "MKI length 129"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{b64(KEY30)}|256:1", "does not fit 1 byte"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{b64(KEY30)}|1:x", "is not '<value>:<length>'"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{b64(KEY30)}|1:4|2^20", "before the MKI"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{b64(KEY30)}|1:4|2:4", "two MKI fields"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{b64(KEY30)}|2^2|2^3|1:1|x", "at most 2"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{b64(KEY30)} KDR=25", "is not KDR=0..24"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{b64(KEY30)} KDR", "is not KDR=0..24"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{b64(KEY30)} WSH=32", "is not WSH=<64 or more>"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{b64(KEY30)} FEC_ORDER=X", "FEC_ORDER=FEC_SRTP"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{b64(KEY30)} FEC_KEY=", "FEC_KEY= has no"),
    ],
)
def test_malformed_lines_say_what_is_wrong(value: str, message: str) -> None:
    with pytest.raises(SdesError, match=message.replace("^", r"\^").replace("*", r"\*")) as info:
        parse_crypto(value)
    assert isinstance(info.value, SdpError)
    assert info.value.status == 400


def test_error_messages_never_show_the_key() -> None:
    secret = b64(KEY30)
    for value in (
        f"1 AES_CM_128_HMAC_SHA1_80 {secret}",
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{secret}|1:4|2:4",
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{secret}*",
    ):
        with pytest.raises(SdesError) as info:
            parse_crypto(value)
        assert secret not in str(info.value)
        assert secret[:12] not in str(info.value)
    assert secret not in repr(parse_crypto(SHA80))


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (f"1 AES_256_CM_HMAC_SHA1_80 inline:{b64(KEY44)}", "'AES_256_CM_HMAC_SHA1_80' is not"),
        (f"1 F8_128_HMAC_SHA1_80 inline:{b64(KEY30)}", "is not supported"),
        (WITH_MKI, "MKI"),
        (
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{b64(KEY30)}|2^20|1:4;inline:{b64(KEY30)}|2^20|2:4",
            "2 key-params",
        ),
        ("1 AES_CM_128_HMAC_SHA1_80 otherkm:abc", "key method 'otherkm'"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{b64(KEY28)}", "28 bytes, AES_CM_128_HMAC_SHA1_80"),
        (f"1 AEAD_AES_128_GCM inline:{b64(KEY30)}", "30 bytes, AEAD_AES_128_GCM needs 28"),
        (f"1 AEAD_AES_256_GCM inline:{b64(KEY28)}", "needs 44"),
        (f"{SHA80} UNENCRYPTED_SRTP", "UNENCRYPTED_SRTP"),
        (f"{SHA80} UNENCRYPTED_SRTCP", "UNENCRYPTED_SRTCP"),
        (f"{SHA80} UNAUTHENTICATED_SRTP", "UNAUTHENTICATED_SRTP"),
        (f"{SHA80} KDR=1", "KDR=1"),
        (f"{SHA80} KDR=24", "KDR=24"),
        (f"{SHA80} FEC_ORDER=FEC_SRTP", "FEC_ORDER"),
        (f"{SHA80} FEC_KEY=inline:{b64(KEY30)}", "FEC_KEY"),
        (f"{SHA80} NEW_PARAM=1", "unknown session parameter 'NEW_PARAM=1'"),
    ],
)
def test_unusable_lines_parse_but_have_a_problem(value: str, problem: str) -> None:
    line = parse_crypto(value)
    reason = line.problem()
    assert reason is not None and problem in reason
    assert not line.usable


@pytest.mark.parametrize("params", ["KDR=0", "WSH=128", "-X_IGNORE_ME", "WSH=64 KDR=00"])
def test_session_params_we_can_honour_or_ignore(params: str) -> None:
    assert parse_crypto(f"{SHA80} {params}").usable


# ------------------------------------------------------------------------ the exchange


def test_suite_properties() -> None:
    lengths = {suite: suite.key_length for suite in CryptoSuite}
    assert lengths == {
        CryptoSuite.AEAD_AES_256_GCM: 44,
        CryptoSuite.AEAD_AES_128_GCM: 28,
        CryptoSuite.AES_CM_128_HMAC_SHA1_80: 30,
        CryptoSuite.AES_CM_128_HMAC_SHA1_32: 30,
    }
    by_strength = sorted(CryptoSuite, key=lambda s: s.strength, reverse=True)
    assert by_strength == [
        CryptoSuite.AEAD_AES_256_GCM,
        CryptoSuite.AEAD_AES_128_GCM,
        CryptoSuite.AES_CM_128_HMAC_SHA1_80,
        CryptoSuite.AES_CM_128_HMAC_SHA1_32,
    ]


def test_offer_cryptos_strongest_first_with_fresh_keys() -> None:
    suites = [
        CryptoSuite.AES_CM_128_HMAC_SHA1_32,
        CryptoSuite.AEAD_AES_128_GCM,
        CryptoSuite.AES_CM_128_HMAC_SHA1_80,
        CryptoSuite.AEAD_AES_128_GCM,  # a duplicate is offered once
    ]
    lines = offer_cryptos(suites)
    assert [(line.tag, line.suite) for line in lines] == [
        (1, CryptoSuite.AEAD_AES_128_GCM),
        (2, CryptoSuite.AES_CM_128_HMAC_SHA1_80),
        (3, CryptoSuite.AES_CM_128_HMAC_SHA1_32),
    ]
    assert all(line.usable for line in lines)
    again = offer_cryptos(suites)
    assert {line.key for line in lines}.isdisjoint({line.key for line in again})
    assert len({line.key for line in lines}) == 3
    with pytest.raises(ValueError, match="no crypto-suite"):
        offer_cryptos([])


def test_answer_picks_the_strongest_not_the_first() -> None:
    choice = answer_crypto([SHA32, SHA80, GCM128, GCM256])
    assert choice is not None
    assert choice.remote.tag == 4 and choice.suite is CryptoSuite.AEAD_AES_256_GCM
    assert choice.local.tag == 4 and choice.local.suite is CryptoSuite.AEAD_AES_256_GCM
    assert choice.inbound_key == KEY44
    assert len(choice.outbound_key) == 44 and choice.outbound_key != KEY44
    other = answer_crypto([GCM256])
    assert other is not None and other.outbound_key != choice.outbound_key


def test_answer_respects_allowed_suites() -> None:
    choice = answer_crypto(
        [GCM256, GCM128, SHA32, SHA80],
        [CryptoSuite.AES_CM_128_HMAC_SHA1_80, CryptoSuite.AES_CM_128_HMAC_SHA1_32],
    )
    assert choice is not None and choice.remote.tag == 1
    assert answer_crypto([GCM256], [CryptoSuite.AES_CM_128_HMAC_SHA1_80]) is None


def test_answer_skips_unusable_and_malformed_lines() -> None:
    choice = answer_crypto([WITH_MKI, "9 AEAD_AES_256_GCM inline:!!", SHA80])
    assert choice is not None and choice.remote.tag == 1
    assert answer_crypto([WITH_MKI, "garbage"]) is None
    assert answer_crypto([]) is None


def test_answer_tie_keeps_the_offerers_order() -> None:
    first = f"8 AES_CM_128_HMAC_SHA1_80 inline:{b64(bytes(30))}"
    choice = answer_crypto([first, SHA80])
    assert choice is not None and choice.remote.tag == 8


def test_match_answer_by_tag_and_suite() -> None:
    ours = offer_cryptos(DEFAULT_SUITES)
    answer_key = generate_key(CryptoSuite.AES_CM_128_HMAC_SHA1_80)
    choice = match_answer(ours, format_crypto(3, CryptoSuite.AES_CM_128_HMAC_SHA1_80, answer_key))
    assert choice.local is ours[2]
    assert choice.inbound_key == answer_key and choice.outbound_key == ours[2].key


@pytest.mark.parametrize(
    ("answer", "status", "message"),
    [
        (f"9 AES_CM_128_HMAC_SHA1_80 inline:{b64(KEY30)}", 488, r"tag 9 matches none .*1, 2"),
        (f"1 AES_CM_128_HMAC_SHA1_32 inline:{b64(KEY30)}", 488, "offered as AEAD_AES_128_GCM"),
        (f"2 AES_CM_128_HMAC_SHA1_80 inline:{b64(KEY28)}", 488, "28 bytes"),
        (f"2 AES_CM_128_HMAC_SHA1_80 inline:{b64(KEY30)}|1:4", 488, "MKI"),
        ("2 AES_CM_128_HMAC_SHA1_80", 400, "found 2 field"),
    ],
)
def test_match_answer_errors(answer: str, status: int, message: str) -> None:
    ours = offer_cryptos([CryptoSuite.AEAD_AES_128_GCM, CryptoSuite.AES_CM_128_HMAC_SHA1_80])
    with pytest.raises(SdesError, match=message) as info:
        match_answer(ours, answer)
    assert info.value.status == status


# ---------------------------------------------------------------------- per-leg policy

AVP = ("audio 4000 RTP/AVP 0 8", "rtpmap:0 PCMU/8000", "sendrecv")
OFFERS: dict[str, MediaSection] = {
    "avp": section(*AVP),
    "avp+crypto": section(*AVP, f"crypto:{SHA80}"),
    "avp+bad-crypto": section(*AVP, f"crypto:{WITH_MKI}"),
    "savp+crypto": section("audio 4000 RTP/SAVP 0", f"crypto:{SHA32}", f"crypto:{GCM128}"),
    "savp+bad-crypto": section("audio 4000 RTP/SAVP 0", f"crypto:{WITH_MKI}"),
    "savp": section("audio 4000 RTP/SAVP 0"),
    "savpf+crypto": section("video 4002 RTP/SAVPF 96", f"crypto:{SHA80}"),
    "image": section("image 5000 udptl t38", f"crypto:{SHA80}"),
    "port0": section("audio 0 RTP/SAVP 0", f"crypto:{SHA80}"),
    "dtls": section("audio 4000 UDP/TLS/RTP/SAVPF 0", "setup:actpass"),
}
S, P, R = Protection.SRTP, Protection.PLAIN, Protection.REJECT
EXPECTED = {  # kind: (off, optional, required)
    "avp": (P, P, R),
    "avp+crypto": (P, S, S),
    "avp+bad-crypto": (P, P, R),
    "savp+crypto": (R, S, S),
    "savp+bad-crypto": (R, R, R),
    "savp": (R, R, R),
    "savpf+crypto": (R, S, S),
    "image": (P, P, P),
    "port0": (P, P, P),
    "dtls": (R, R, R),
}
POLICIES = (SrtpPolicy.OFF, SrtpPolicy.OPTIONAL, SrtpPolicy.REQUIRED)


@pytest.mark.parametrize("kind", sorted(OFFERS))
@pytest.mark.parametrize("policy", POLICIES)
def test_decide_offer_matrix(kind: str, policy: SrtpPolicy) -> None:
    offer = OFFERS[kind]
    decision = decide_offer(offer, policy)
    assert decision.protection is EXPECTED[kind][POLICIES.index(policy)], decision.reason
    assert decision.proto == offer.proto
    if decision.protection is S:
        assert decision.choice is not None and decision.status is None
        assert decision.choice.local.tag == decision.choice.remote.tag
        assert decision.choice.local.suite == decision.choice.remote.suite
        assert decision.choice.local.key not in (KEY28, KEY30, KEY44)
    elif decision.protection is R:
        assert decision.status == 488 and decision.choice is None
        assert decision.error().status == 488 and decision.reason in str(decision.error())
    else:
        assert decision.choice is None and decision.status is None


def test_decide_offer_reasons_name_the_policy_and_the_fault() -> None:
    off = decide_offer(OFFERS["savp+crypto"], SrtpPolicy.OFF)
    assert off.reason == "SRTP policy 'off' on this leg, but the offer is RTP/SAVP"
    required = decide_offer(OFFERS["avp"], SrtpPolicy.REQUIRED)
    assert required.reason == "SRTP policy 'required' on this leg, but the offer has no a=crypto"
    bad = decide_offer(OFFERS["savp+bad-crypto"], SrtpPolicy.OPTIONAL)
    assert "tag 5: it has an MKI" in bad.reason and "cannot go plain" in bad.reason
    plain = decide_offer(OFFERS["avp+bad-crypto"], SrtpPolicy.OPTIONAL)
    assert "tag 5: it has an MKI" in plain.reason
    best_effort = decide_offer(OFFERS["avp+crypto"], SrtpPolicy.OPTIONAL)
    assert "best-effort" in best_effort.reason


def test_decide_offer_picks_strongest_allowed() -> None:
    decision = decide_offer(OFFERS["savp+crypto"], SrtpPolicy.REQUIRED)
    assert decision.choice is not None
    assert decision.choice.suite is CryptoSuite.AEAD_AES_128_GCM and decision.choice.local.tag == 3
    narrowed = decide_offer(
        OFFERS["savp+crypto"], SrtpPolicy.REQUIRED, [CryptoSuite.AES_CM_128_HMAC_SHA1_32]
    )
    assert narrowed.choice is not None and narrowed.choice.local.tag == 2
    refused = decide_offer(
        OFFERS["savp+crypto"], SrtpPolicy.REQUIRED, [CryptoSuite.AEAD_AES_256_GCM]
    )
    assert refused.protection is R and "not allowed on this leg" in refused.reason


@pytest.mark.parametrize("source", ["avp", "avp+crypto", "savp+crypto", "savpf+crypto"])
@pytest.mark.parametrize("policy", POLICIES)
def test_offer_section_per_policy(source: str, policy: SrtpPolicy) -> None:
    incoming = OFFERS[source]
    offer = offer_section(incoming, policy)
    out = offer.section
    feedback = incoming.proto.endswith("F")
    expected_proto = {
        SrtpPolicy.REQUIRED: "RTP/SAVPF" if feedback else "RTP/SAVP",
        SrtpPolicy.OPTIONAL: "RTP/AVPF" if feedback else "RTP/AVP",
        SrtpPolicy.OFF: "RTP/AVPF" if feedback else "RTP/AVP",
    }[policy]
    assert out.proto == expected_proto
    assert out.formats == incoming.formats and out.port == incoming.port
    emitted = cryptos(out)
    assert emitted == list(offer.cryptos)
    if policy is SrtpPolicy.OFF:
        assert emitted == []
    else:
        assert [line.tag for line in emitted] == [1, 2, 3, 4]
        assert [line.suite for line in emitted] == list(DEFAULT_SUITES)
    incoming_keys = {line.key for line in cryptos(incoming)}
    assert incoming_keys.isdisjoint({line.key for line in emitted})
    # Everything that is not a=crypto or m= crosses unchanged.
    assert [line for line in out.lines[1:] if not line.is_attribute("crypto")] == [
        line for line in incoming.lines[1:] if not line.is_attribute("crypto")
    ]


def test_offer_section_leaves_non_rtp_and_removed_streams_but_drops_crypto() -> None:
    for kind in ("image", "port0"):
        offer = offer_section(OFFERS[kind], SrtpPolicy.REQUIRED)
        assert offer.cryptos == ()
        assert offer.section.proto == OFFERS[kind].proto
        assert not offer.section.has_attribute("crypto")


def test_offer_section_honours_suites() -> None:
    offer = offer_section(OFFERS["avp"], SrtpPolicy.REQUIRED, [CryptoSuite.AES_CM_128_HMAC_SHA1_80])
    assert [(c.tag, c.suite) for c in cryptos(offer.section)] == [
        (1, CryptoSuite.AES_CM_128_HMAC_SHA1_80)
    ]


def _answer_to(offer: LocalOffer, media: str, *crypto_values: str) -> MediaSection:
    return section(media, *(f"crypto:{value}" for value in crypto_values))


@pytest.mark.parametrize(
    ("policy", "answer_kind", "expected"),
    [
        (SrtpPolicy.REQUIRED, "savp+ours", S),
        (SrtpPolicy.REQUIRED, "savp", R),
        (SrtpPolicy.REQUIRED, "avp", R),
        (SrtpPolicy.REQUIRED, "savp+unknown-tag", R),
        (SrtpPolicy.REQUIRED, "savp+two", R),
        (SrtpPolicy.OPTIONAL, "avp+ours", S),
        (SrtpPolicy.OPTIONAL, "savp+ours", S),
        (SrtpPolicy.OPTIONAL, "avp", P),
        (SrtpPolicy.OPTIONAL, "savp", R),
        (SrtpPolicy.OPTIONAL, "avp+unknown-tag", R),
        (SrtpPolicy.OFF, "avp", P),
        (SrtpPolicy.OFF, "avp+ours", R),
        (SrtpPolicy.OFF, "savp", R),
        (SrtpPolicy.REQUIRED, "port0", P),
    ],
)
def test_accept_answer(policy: SrtpPolicy, answer_kind: str, expected: Protection) -> None:
    offer = offer_section(OFFERS["avp"], policy, [CryptoSuite.AES_CM_128_HMAC_SHA1_80])
    their_key = generate_key(CryptoSuite.AES_CM_128_HMAC_SHA1_80)
    ours = format_crypto(1, CryptoSuite.AES_CM_128_HMAC_SHA1_80, their_key)
    unknown = format_crypto(7, CryptoSuite.AES_CM_128_HMAC_SHA1_80, their_key)
    answers = {
        "savp+ours": ("audio 6000 RTP/SAVP 0", ours),
        "avp+ours": ("audio 6000 RTP/AVP 0", ours),
        "savp": ("audio 6000 RTP/SAVP 0",),
        "avp": ("audio 6000 RTP/AVP 0",),
        "savp+unknown-tag": ("audio 6000 RTP/SAVP 0", unknown),
        "avp+unknown-tag": ("audio 6000 RTP/AVP 0", unknown),
        "savp+two": ("audio 6000 RTP/SAVP 0", ours, ours),
        "port0": ("audio 0 RTP/SAVP 0",),
    }
    media, *values = answers[answer_kind]
    decision = accept_answer(offer, _answer_to(offer, media, *values))
    assert decision.protection is expected, decision.reason
    if expected is S:
        assert decision.choice is not None
        assert decision.choice.inbound_key == their_key
        assert decision.choice.outbound_key == offer.cryptos[0].key
    if expected is R:
        assert decision.status == 488


def test_answer_section_shapes() -> None:
    their_answer = section("audio 7000 RTP/AVP 0", "sendrecv", f"crypto:{SHA80}")
    srtp = decide_offer(OFFERS["savp+crypto"], SrtpPolicy.OPTIONAL)
    out = answer_section(their_answer, srtp)
    assert out.proto == "RTP/SAVP" and out.port == 7000
    assert srtp.choice is not None and cryptos(out) == [srtp.choice.local]
    assert cryptos(out)[0].tag == 3  # the tag of the offered line we accepted
    best_effort = decide_offer(OFFERS["avp+crypto"], SrtpPolicy.OPTIONAL)
    out = answer_section(their_answer, best_effort)
    assert out.proto == "RTP/AVP" and len(cryptos(out)) == 1
    plain = decide_offer(OFFERS["avp+crypto"], SrtpPolicy.OFF)
    out = answer_section(their_answer, plain)
    assert out.proto == "RTP/AVP" and not out.has_attribute("crypto")
    reject = decide_offer(OFFERS["savp"], SrtpPolicy.REQUIRED)
    out = answer_section(their_answer, reject)
    assert out.port == 0 and out.proto == "RTP/SAVP" and not out.has_attribute("crypto")
    savpf = decide_offer(OFFERS["savpf+crypto"], SrtpPolicy.REQUIRED)
    assert answer_section(their_answer, savpf).proto == "RTP/SAVPF"


def test_strip_and_without_crypto() -> None:
    body = (
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        f"a=crypto:{SHA80}\r\nm=audio 4000 RTP/SAVP 0\r\na=crypto:{SHA32}\r\na=sendrecv\r\n"
    ).encode()
    sdp = parse_sdp(body)
    clean = without_crypto(sdp)
    assert b"crypto" not in clean.to_bytes() and b64(KEY30).encode() not in clean.to_bytes()
    assert clean.media[0].has_attribute("sendrecv")
    assert not strip_crypto(sdp.media[0]).has_attribute("crypto")


# --------------------------------------------------------- a whole B2BUA crossing


@pytest.mark.parametrize(
    ("policy_x", "policy_y"),
    [
        (SrtpPolicy.REQUIRED, SrtpPolicy.REQUIRED),
        (SrtpPolicy.OPTIONAL, SrtpPolicy.REQUIRED),
        (SrtpPolicy.REQUIRED, SrtpPolicy.OPTIONAL),
    ],
)
def test_keys_never_cross_legs(policy_x: SrtpPolicy, policy_y: SrtpPolicy) -> None:
    """Leg X (PBX) offers SRTP; we offer leg Y (trunk); Y answers; we answer X."""
    x_key = generate_key(CryptoSuite.AES_CM_128_HMAC_SHA1_80)
    x_offer = section(
        "audio 4000 RTP/SAVP 0", f"crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{b64(x_key)}"
    )
    decision_x = decide_offer(x_offer, policy_x)
    assert decision_x.protection is S and decision_x.choice is not None
    offer_y = offer_section(x_offer, policy_y)
    y_text = "\n".join(str(line) for line in offer_y.section.lines)
    assert b64(x_key) not in y_text
    y_key = generate_key(CryptoSuite.AEAD_AES_256_GCM)
    y_answer = section(
        f"audio 6000 {offer_y.section.proto} 0",
        f"crypto:1 AEAD_AES_256_GCM inline:{b64(y_key)}",
    )
    decision_y = accept_answer(offer_y, y_answer)
    assert decision_y.protection is S and decision_y.choice is not None
    assert decision_y.choice.suite is CryptoSuite.AEAD_AES_256_GCM
    x_answer = answer_section(y_answer, decision_x)
    x_text = "\n".join(str(line) for line in x_answer.lines)
    assert b64(y_key) not in x_text
    assert all(b64(line.key) not in x_text for line in offer_y.cryptos)
    assert cryptos(x_answer) == [decision_x.choice.local]
    keys = [
        x_key,
        y_key,
        decision_x.choice.outbound_key,
        *(line.key for line in offer_y.cryptos),
    ]
    assert len(set(keys)) == len(keys)
    assert decision_x.choice.inbound_key == x_key
    assert decision_y.choice.inbound_key == y_key
