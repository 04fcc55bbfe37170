"""SRTP toward the carrier, plain RTP toward the PBX, with real peers: SIPp for SIP and
Python RTP endpoints that encrypt and decrypt with pylibsrtp (RFC 3711, RFC 4568). The
payloads must arrive intact both ways, and no key may cross from one leg to the other."""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path

import pytest
from pylibsrtp import Error as SrtpError
from pylibsrtp import Policy, Session

from tests.support.calls import ITSP_HOST, PBX_HOST, CallLab, RunningPair, sdp_media
from tests.support.rtp import RtpEndpoint, RtpPacket
from tests.support.sipp import SIPP

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")

ITSP_KEY = bytes(range(1, 31))  # what call_srtp_itsp.xml puts in its a=crypto
TAG = 3  # the line of the SBC's offer that scenario accepts (AES_CM_128_HMAC_SHA1_80)
PROFILE = Policy.SRTP_PROFILE_AES128_CM_SHA1_80


def _session(key: bytes, direction: int) -> Session:
    return Session(Policy(key=key, ssrc_type=direction, srtp_profile=PROFILE))


def _sbc_key(invite_body: str) -> bytes:
    """The SBC's own key on the carrier leg: its a=crypto line with the accepted tag."""
    found = re.search(
        rf"a=crypto:{TAG} AES_CM_128_HMAC_SHA1_80 inline:([A-Za-z0-9+/=]+)", invite_body
    )
    assert found, invite_body
    return base64.b64decode(found.group(1))


def _addresses(pair: RunningPair) -> tuple[tuple[str, int], tuple[str, int], str, str]:
    answer = pair.wait_for_message(
        "pbx", lambda m: m.direction == "received" and m.status == 200 and m.method == "INVITE"
    )
    invite = pair.wait_for_message(
        "itsp", lambda m: m.direction == "received" and m.is_request and m.method == "INVITE"
    )
    to_pbx, to_itsp = sdp_media(answer.body)[0], sdp_media(invite.body)[0]
    return (to_pbx.host, to_pbx.port), (to_itsp.host, to_itsp.port), invite.body, answer.body


def _receive_plain(endpoint: RtpEndpoint, payload: bytes, timeout: float) -> RtpPacket | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = endpoint.recv(0.1)
        if got is not None and got.packet.payload == payload:
            return got.packet
    return None


def _receive_srtp(endpoint: RtpEndpoint, inbound: Session, timeout: float) -> list[bytes]:
    """Every SRTP packet that arrives at the carrier's socket, decrypted (RTP bytes)."""
    plain: list[bytes] = []
    deadline = time.monotonic() + timeout
    endpoint.sock.settimeout(0.1)
    while time.monotonic() < deadline and len(plain) < 3:
        try:
            data, _ = endpoint.sock.recvfrom(2048)
        except TimeoutError:
            continue
        try:
            plain.append(inbound.unprotect(data))
        except SrtpError:
            continue  # not ours to decrypt: the test fails below if nothing decrypts
    return plain


def test_srtp_carrier_leg_and_plain_pbx_leg_carry_intact_payloads_both_ways(
    tmp_path: Path,
) -> None:
    lab = CallLab(tmp_path, itsp_trunk="srtp: required")
    with (
        lab,
        RtpEndpoint(PBX_HOST, lab.pbx_rtp, ssrc=0x11110001) as pbx,
        RtpEndpoint(ITSP_HOST, lab.itsp_rtp, ssrc=0x22220002) as itsp,
        lab.outbound("call_out_pbx.xml", "call_srtp_itsp.xml", pbx_args=("-d", "2000")) as pair,
    ):
        to_pbx, to_itsp, invite_body, answer_body = _addresses(pair)
        assert " RTP/SAVP " in invite_body and " RTP/AVP " in answer_body
        assert "a=crypto" not in answer_body  # the PBX leg is plain: no key reaches it
        assert base64.b64encode(ITSP_KEY).decode() not in answer_body
        sbc_key = _sbc_key(invite_body)
        assert sbc_key != ITSP_KEY
        # Carrier -> PBX: SRTP encrypted with the carrier's key arrives as plain RTP.
        outbound = _session(ITSP_KEY, Policy.SSRC_ANY_OUTBOUND)
        payload = bytes(range(160))
        arrived = None
        for sequence in range(100, 160):
            packet = RtpPacket(0, sequence, sequence * 160, itsp.ssrc, payload)
            itsp.sock.sendto(outbound.protect(packet.to_bytes()), to_itsp)
            arrived = _receive_plain(pbx, payload, 0.05)
            if arrived is not None:
                break
        assert arrived is not None, "no decrypted packet reached the PBX"
        assert arrived.ssrc == itsp.ssrc
        # PBX -> carrier: plain RTP leaves the relay as SRTP under the SBC's own key.
        inbound = _session(sbc_key, Policy.SSRC_ANY_INBOUND)
        back = bytes(reversed(range(160)))
        for _ in range(5):
            pbx.send(to_pbx, back)
        decrypted = _receive_srtp(itsp, inbound, 3.0)
        assert decrypted, "nothing the carrier received decrypted with the SBC's key"
        assert all(RtpPacket.parse(data).payload == back for data in decrypted)
        outcome = pair.wait()
        assert lab.sbc is not None
        line = lab.sbc.wait_for_log(r"event=media\.quality .*source=b ")
    assert outcome.ok, outcome.describe()
    assert "srtp_auth_failures=0" in line, line
    # SDES over UDP: allowed, and said once at start (the keys are in the clear SDP).
    assert "event=config.srtp_keys_in_clear side=trunk name=itsp" in lab.log_text()
