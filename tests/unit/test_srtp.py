"""SRTP transform (RFC 3711, RFC 7714) with real pylibsrtp, keyed from negotiated SDES lines."""

from __future__ import annotations

import base64
import struct

import pytest

from media.rtp import build_rtcp_bye, build_rtp, parse_rtp
from media.srtp import KEY_LENGTHS, SrtpTransform
from sbc.sdp import MediaSection, parse_sdp
from sbc.sdp.crypto import (
    CryptoChoice,
    CryptoSuite,
    Protection,
    SrtpPolicy,
    accept_answer,
    decide_offer,
    format_crypto,
    generate_key,
    offer_section,
)

SUITES = list(CryptoSuite)
PAYLOAD = bytes(range(160))


def section(media: str, *attributes: str) -> MediaSection:
    body = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    body += f"m={media}\r\n" + "".join(f"a={a}\r\n" for a in attributes)
    return parse_sdp(body.encode()).media[0]


def rtp(sequence: int, ssrc: int = 0x1234ABCD, payload: bytes = PAYLOAD) -> bytes:
    return build_rtp(0, sequence & 0xFFFF, 160 * sequence, ssrc, payload)


def sender_report(ssrc: int = 0x1234ABCD) -> bytes:
    """An RTCP SR without report blocks (RFC 3550 §6.4.1): header + 20 bytes of info."""
    return struct.pack("!BBHI", 0x80, 200, 6, ssrc) + bytes(range(20))


def negotiated(suite: CryptoSuite) -> tuple[CryptoChoice, bytes]:
    """Leg X: the PBX offers one line of `suite`; we answer. Returns our choice and the
    PBX's own key (which the PBX protects with)."""
    pbx_key = generate_key(suite)
    offer = section("audio 4000 RTP/SAVP 0", f"crypto:{format_crypto(1, suite, pbx_key)}")
    decision = decide_offer(offer, SrtpPolicy.REQUIRED)
    assert decision.protection is Protection.SRTP and decision.choice is not None
    return decision.choice, pbx_key


def pair(suite: CryptoSuite) -> tuple[SrtpTransform, SrtpTransform]:
    """(SBC's transform on leg X, the PBX's view of the same stream), from the SDP keys."""
    choice, pbx_key = negotiated(suite)
    sbc = SrtpTransform(choice.suite, choice.inbound_key, choice.outbound_key)
    # The PBX decrypts with the key of our answer and encrypts with its own.
    pbx = SrtpTransform(suite, choice.outbound_key, pbx_key)
    return sbc, pbx


@pytest.mark.parametrize("suite", SUITES)
def test_round_trip_both_directions(suite: CryptoSuite) -> None:
    sbc, pbx = pair(suite)
    for sequence in range(1, 6):
        packet = rtp(sequence)
        protected = pbx.protect_rtp(packet)
        assert protected is not None and protected != packet
        assert len(protected) > len(packet)
        assert PAYLOAD not in protected  # the payload is encrypted
        assert sbc.unprotect_rtp(protected) == packet
        back = sbc.protect_rtp(rtp(sequence, ssrc=0x55667788))
        assert back is not None
        assert pbx.unprotect_rtp(back) == rtp(sequence, ssrc=0x55667788)
    assert (sbc.auth_failures, sbc.replays, sbc.bad_packets) == (0, 0, 0)


@pytest.mark.parametrize("suite", SUITES)
def test_tampered_packet_is_an_auth_failure(suite: CryptoSuite) -> None:
    sbc, pbx = pair(suite)
    protected = pbx.protect_rtp(rtp(1))
    assert protected is not None
    for position in (20, len(protected) - 1, 3):  # payload, tag, header (sequence)
        tampered = bytearray(protected)
        tampered[position] ^= 0x01
        assert sbc.unprotect_rtp(bytes(tampered)) is None
    assert sbc.auth_failures == 3 and sbc.replays == 0
    # The genuine packet still verifies: a forgery does not advance the replay window.
    assert sbc.unprotect_rtp(protected) == rtp(1)


@pytest.mark.parametrize("suite", SUITES)
def test_replay_is_counted(suite: CryptoSuite) -> None:
    sbc, pbx = pair(suite)
    first, second = pbx.protect_rtp(rtp(10)), pbx.protect_rtp(rtp(11))
    assert first is not None and second is not None
    assert sbc.unprotect_rtp(second) == rtp(11)
    assert sbc.unprotect_rtp(first) == rtp(10)  # late but inside the window: fine
    assert sbc.unprotect_rtp(second) is None
    assert sbc.unprotect_rtp(first) is None
    assert (sbc.replays, sbc.auth_failures) == (2, 0)


@pytest.mark.parametrize("suite", SUITES)
def test_srtcp_round_trip_tamper_and_replay(suite: CryptoSuite) -> None:
    sbc, pbx = pair(suite)
    for report in (sender_report(), build_rtcp_bye(0x1234ABCD)):
        protected = pbx.protect_rtcp(report)
        assert protected is not None and len(protected) > len(report)
        assert sbc.unprotect_rtcp(protected) == report
        assert sbc.unprotect_rtcp(protected) is None  # replayed
    assert sbc.replays == 2
    fresh = pbx.protect_rtcp(sender_report())
    assert fresh is not None
    tampered = bytearray(fresh)
    tampered[12] ^= 0x80
    assert sbc.unprotect_rtcp(bytes(tampered)) is None
    assert sbc.auth_failures == 1
    outbound = sbc.protect_rtcp(sender_report(0x99))
    assert outbound is not None and pbx.unprotect_rtcp(outbound) == sender_report(0x99)


@pytest.mark.parametrize("suite", SUITES)
def test_wrong_key_fails_authentication(suite: CryptoSuite) -> None:
    sbc, _ = pair(suite)
    stranger = SrtpTransform(suite, generate_key(suite), generate_key(suite))
    protected = stranger.protect_rtp(rtp(1))
    assert protected is not None
    assert sbc.unprotect_rtp(protected) is None and sbc.auth_failures == 1


def test_bridging_srtp_leg_to_srtp_leg_with_different_suites() -> None:
    """PBX --SRTP(SHA1_80)--> SBC leg X -> leg Y --SRTP(GCM-256)--> ITSP, and back."""
    sbc_x, pbx = pair(CryptoSuite.AES_CM_128_HMAC_SHA1_80)
    offer_y = offer_section(section("audio 4000 RTP/AVP 0"), SrtpPolicy.REQUIRED)
    itsp_key = generate_key(CryptoSuite.AEAD_AES_256_GCM)
    tag = next(c.tag for c in offer_y.cryptos if c.suite is CryptoSuite.AEAD_AES_256_GCM)
    answer = section(
        "audio 6000 RTP/SAVP 0",
        f"crypto:{format_crypto(tag, CryptoSuite.AEAD_AES_256_GCM, itsp_key)}",
    )
    decision_y = accept_answer(offer_y, answer)
    assert decision_y.choice is not None
    y = decision_y.choice
    sbc_y = SrtpTransform(y.suite, y.inbound_key, y.outbound_key)
    itsp = SrtpTransform(y.suite, y.outbound_key, itsp_key)
    for sequence in range(100, 110):
        from_pbx = pbx.protect_rtp(rtp(sequence))
        assert from_pbx is not None
        plain = sbc_x.unprotect_rtp(from_pbx)
        assert plain is not None
        to_itsp = sbc_y.protect_rtp(plain)
        assert to_itsp is not None
        received = itsp.unprotect_rtp(to_itsp)
        assert received is not None and parse_rtp(received).sequence == sequence
        assert received[12:] == PAYLOAD
        from_itsp = itsp.protect_rtp(rtp(sequence, ssrc=7))
        assert from_itsp is not None
        plain_back = sbc_y.unprotect_rtp(from_itsp)
        assert plain_back is not None
        to_pbx = sbc_x.protect_rtp(plain_back)
        assert to_pbx is not None and pbx.unprotect_rtp(to_pbx) == rtp(sequence, ssrc=7)


def test_plain_leg_to_srtp_leg() -> None:
    """What the relay does for RTP (PBX) <-> SRTP (trunk): protect only one way."""
    sbc, itsp = pair(CryptoSuite.AEAD_AES_128_GCM)
    protected = sbc.protect_rtp(rtp(1))
    assert protected is not None and itsp.unprotect_rtp(protected) == rtp(1)


def test_repeated_transmission_is_forwarded_unchanged() -> None:
    sbc, pbx = pair(CryptoSuite.AES_CM_128_HMAC_SHA1_80)
    first = sbc.protect_rtp(rtp(1))
    again = sbc.protect_rtp(rtp(1))  # a duplicate from the plain side, same bytes
    assert first is not None and again == first
    assert sbc.protect_failures == 0
    assert pbx.unprotect_rtp(first) == rtp(1)
    assert pbx.unprotect_rtp(again) is None and pbx.replays == 1  # the receiver drops it


def test_repeat_refused_without_allow_repeat_tx() -> None:
    suite = CryptoSuite.AES_CM_128_HMAC_SHA1_80
    strict = SrtpTransform(suite, generate_key(suite), generate_key(suite), allow_repeat_tx=False)
    assert strict.protect_rtp(rtp(1)) is not None
    assert strict.protect_rtp(rtp(1)) is None
    assert strict.protect_failures == 1


def test_oversized_and_garbage_packets_are_counted() -> None:
    sbc, pbx = pair(CryptoSuite.AES_CM_128_HMAC_SHA1_80)
    assert sbc.protect_rtp(rtp(1, payload=bytes(1344))) is not None  # 1356 bytes: the limit
    assert sbc.protect_rtp(rtp(2, payload=bytes(1345))) is None
    assert sbc.protect_rtcp(bytes(1400)) is None
    assert sbc.oversized == 2
    assert sbc.unprotect_rtp(b"\x80\x00") is None
    assert sbc.unprotect_rtp(bytes(1600)) is None
    assert sbc.unprotect_rtcp(b"\x80") is None
    assert sbc.bad_packets == 3
    assert (sbc.auth_failures, sbc.replays) == (0, 0)
    assert "oversized=2" in repr(sbc)


def test_construction_checks_suite_and_key_lengths() -> None:
    key30 = bytes(30)
    with pytest.raises(ValueError, match="AES_256_CM_HMAC_SHA1_80.*not supported"):
        SrtpTransform("AES_256_CM_HMAC_SHA1_80", key30, key30)
    secret = bytes(range(44))
    with pytest.raises(ValueError, match="inbound key for AEAD_AES_128_GCM is 44 bytes") as info:
        SrtpTransform("AEAD_AES_128_GCM", secret, bytes(28))
    assert base64.b64encode(secret).decode() not in str(info.value)
    with pytest.raises(ValueError, match="outbound key for AES_CM_128_HMAC_SHA1_32 is 28"):
        SrtpTransform("AES_CM_128_HMAC_SHA1_32", key30, bytes(28))
    assert KEY_LENGTHS == {suite.value: suite.key_length for suite in CryptoSuite}


def test_transform_accepts_suite_names_as_plain_strings() -> None:
    sbc, pbx = pair(CryptoSuite.AEAD_AES_256_GCM)
    assert sbc.suite == "AEAD_AES_256_GCM" and type(sbc.suite) is str


def test_rekey_replaces_changed_keys() -> None:
    suite = CryptoSuite.AES_CM_128_HMAC_SHA1_80
    sbc, pbx = pair(suite)
    new_ours = generate_key(suite)
    sbc2 = sbc.rekey(suite, sbc._inbound_key, new_ours)
    pbx2 = pbx.rekey(suite, new_ours, pbx._outbound_key)
    out = sbc2.protect_rtp(rtp(50))
    assert out is not None and pbx2.unprotect_rtp(out) == rtp(50)
    assert pbx.unprotect_rtp(out) is None  # the old key no longer fits
    inbound = pbx2.protect_rtp(rtp(51))
    assert inbound is not None and sbc2.unprotect_rtp(inbound) == rtp(51)


def test_rekey_keeps_the_rollover_counter_of_an_unchanged_key() -> None:
    """A re-INVITE after the peer's sequence numbers wrapped: keeping the session keeps the
    rollover counter; a fresh session for the same key would reject every packet."""
    suite = CryptoSuite.AES_CM_128_HMAC_SHA1_32
    sbc, pbx = pair(suite)
    start = 65500
    for sequence in range(start, start + 100):  # crosses 65535 -> 0: ROC becomes 1
        protected = pbx.protect_rtp(rtp(sequence))
        assert protected is not None and sbc.unprotect_rtp(protected) is not None
    after_wrap = pbx.protect_rtp(rtp(start + 100))
    assert after_wrap is not None
    fresh = SrtpTransform(suite, sbc._inbound_key, generate_key(suite))
    assert fresh.unprotect_rtp(after_wrap) is None and fresh.auth_failures == 1
    kept = sbc.rekey(suite, sbc._inbound_key, generate_key(suite))
    assert kept.unprotect_rtp(after_wrap) == rtp(start + 100)
    assert kept.auth_failures == 0


def test_rekey_keeps_the_session_of_each_unchanged_direction() -> None:
    suite = CryptoSuite.AES_CM_128_HMAC_SHA1_80
    sbc, _ = pair(suite)
    same = sbc.rekey(suite, sbc._inbound_key, sbc._outbound_key)
    assert same._tx is sbc._tx and same._rx is sbc._rx
    changed = sbc.rekey(suite, generate_key(suite), sbc._outbound_key)
    assert changed._tx is sbc._tx and changed._rx is not sbc._rx
    other_suite = sbc.rekey(
        CryptoSuite.AES_CM_128_HMAC_SHA1_32, sbc._inbound_key, sbc._outbound_key
    )
    assert other_suite._tx is not sbc._tx and other_suite._rx is not sbc._rx


def test_rekey_with_the_same_keys_is_the_same_transform_and_counts_carry_over() -> None:
    # A re-offer that changes nothing else (ptime, direction) must not lose the counts an
    # operator reads at the end of the call (one-way audio from SRTP failures, TRAPS #8).
    suite = CryptoSuite.AES_CM_128_HMAC_SHA1_80
    sbc, _ = pair(suite)
    assert sbc.unprotect_rtp(rtp(1)) is None  # plain bytes never verify
    assert sbc.auth_failures + sbc.bad_packets == 1
    assert sbc.rekey(suite, sbc._inbound_key, sbc._outbound_key) is sbc
    moved = sbc.rekey(suite, generate_key(suite), sbc._outbound_key)
    assert moved is not sbc
    assert moved.auth_failures + moved.bad_packets == 1
