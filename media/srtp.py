"""SRTP/SRTCP protect and unprotect for one stream on one leg (RFC 3711, RFC 7714), on
pylibsrtp: one libsrtp session per direction, failures counted instead of raised."""

from __future__ import annotations

from pylibsrtp import Error, Policy, Session

__all__ = ["KEY_LENGTHS", "SrtpTransform"]

# RFC 4568 suite names (the a=crypto spelling) -> libsrtp profile. Plain strings so the
# relay's workers need nothing from sbc.sdp; sbc.sdp.crypto.CryptoSuite values fit.
_PROFILES: dict[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "AEAD_AES_256_GCM": Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}
# Master key + master salt, in bytes (RFC 3711 §8.2, RFC 7714 §12).
KEY_LENGTHS: dict[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": 30,
    "AES_CM_128_HMAC_SHA1_32": 30,
    "AEAD_AES_128_GCM": 28,
    "AEAD_AES_256_GCM": 44,
}

# libsrtp's status texts as pylibsrtp raises them. For the GCM suites a bad tag is also
# reported as an authentication failure.
_AUTH_FAILURE = "authentication failure"
_REPLAYS = frozenset({"replay check failed (bad index)", "replay check failed (index too old)"})


def _session(suite: str, key: bytes, ssrc_type: int, allow_repeat_tx: bool) -> Session:
    policy = Policy(key=key, ssrc_type=ssrc_type, srtp_profile=_PROFILES[suite])
    policy.allow_repeat_tx = allow_repeat_tx
    return Session(policy)


def _check_key(suite: str, key: bytes, which: str) -> None:
    # Exact length: pylibsrtp takes a longer key and ignores the tail, which would hide a
    # key meant for another suite. The message never shows the key.
    if len(key) != KEY_LENGTHS[suite]:
        raise ValueError(
            f"SRTP {which} key for {suite} is {len(key)} bytes, must be {KEY_LENGTHS[suite]}"
        )


class SrtpTransform:
    """SRTP for one stream on one leg: `inbound_key` is the key the peer wrote in its SDP
    (it protects what the peer sends), `outbound_key` is ours.

    Per-packet methods return the transformed bytes, or None when libsrtp refuses the
    packet; the refusal is counted, never raised or logged. Any SSRC is accepted in both
    directions (libsrtp adds a stream per SSRC on first use), so a peer's new SSRC after a
    restart needs nothing from the caller.

    Re-keying after a re-INVITE: call `rekey`, which keeps the libsrtp session of each
    direction whose key did not change. A new session for an unchanged key restarts the
    rollover counter at 0 (RFC 3711 §3.3.1): inbound, every packet fails authentication
    once the peer's sequence numbers have wrapped (after 65536 packets, ~22 minutes of
    20 ms audio); outbound, keystream already used would be used again.
    """

    __slots__ = (
        "_allow_repeat_tx",
        "_inbound_key",
        "_outbound_key",
        "_rx",
        "_tx",
        "auth_failures",
        "bad_packets",
        "oversized",
        "protect_failures",
        "replays",
        "suite",
    )

    def __init__(
        self,
        suite: str,
        inbound_key: bytes,
        outbound_key: bytes,
        *,
        allow_repeat_tx: bool = True,
    ) -> None:
        """`allow_repeat_tx` lets a packet be protected again under a sequence number
        already sent: the relay forwards retransmissions and network duplicates unchanged,
        so the same plaintext under the same index gives the same ciphertext and reveals
        nothing. Without it libsrtp refuses such a packet (counted in protect_failures).
        """
        if suite not in _PROFILES:
            raise ValueError(
                f"SRTP suite {suite!r} is not supported (supported: {', '.join(_PROFILES)})"
            )
        _check_key(suite, inbound_key, "inbound")
        _check_key(suite, outbound_key, "outbound")
        self.suite = str(suite)
        self._inbound_key = inbound_key
        self._outbound_key = outbound_key
        self._allow_repeat_tx = allow_repeat_tx
        self._rx = _session(suite, inbound_key, Policy.SSRC_ANY_INBOUND, False)
        self._tx = _session(suite, outbound_key, Policy.SSRC_ANY_OUTBOUND, allow_repeat_tx)
        self.auth_failures = 0  # inbound packets whose tag did not verify
        self.replays = 0  # inbound packets already received, or older than the window
        self.bad_packets = 0  # inbound packets libsrtp could not parse, or over 1500 bytes
        self.oversized = 0  # outbound packets over pylibsrtp's buffer (RTP > 1356 bytes)
        self.protect_failures = 0  # outbound packets refused for any other reason

    def rekey(self, suite: str, inbound_key: bytes, outbound_key: bytes) -> SrtpTransform:
        """A transform for new keys; a direction whose suite and key are unchanged keeps
        its libsrtp session (rollover counter, replay window). The same keys: this object.
        Counters carry over: a call's report counts its refusals under every key."""
        if (suite, inbound_key, outbound_key) == (
            self.suite,
            self._inbound_key,
            self._outbound_key,
        ):
            return self
        fresh = SrtpTransform(
            suite, inbound_key, outbound_key, allow_repeat_tx=self._allow_repeat_tx
        )
        if suite == self.suite and inbound_key == self._inbound_key:
            fresh._rx = self._rx
        if suite == self.suite and outbound_key == self._outbound_key:
            fresh._tx = self._tx
        fresh.auth_failures = self.auth_failures
        fresh.replays = self.replays
        fresh.bad_packets = self.bad_packets
        fresh.oversized = self.oversized
        fresh.protect_failures = self.protect_failures
        return fresh

    # ---------------------------------------------------------------- per packet

    def unprotect_rtp(self, data: bytes) -> bytes | None:
        """SRTP from the peer -> RTP, or None (counted) when it does not verify."""
        try:
            return self._rx.unprotect(data)
        except Error as error:
            self._count_inbound(error)
        except ValueError:  # longer than pylibsrtp's 1500-byte buffer
            self.bad_packets += 1
        return None

    def protect_rtp(self, data: bytes) -> bytes | None:
        """RTP -> SRTP for the peer, or None (counted) when libsrtp refuses it."""
        try:
            return self._tx.protect(data)
        except Error:
            self.protect_failures += 1
        except ValueError:  # over 1356 bytes: no room for the tag in pylibsrtp's buffer
            self.oversized += 1
        return None

    def unprotect_rtcp(self, data: bytes) -> bytes | None:
        """SRTCP from the peer -> RTCP, or None (counted) when it does not verify."""
        try:
            return self._rx.unprotect_rtcp(data)
        except Error as error:
            self._count_inbound(error)
        except ValueError:
            self.bad_packets += 1
        return None

    def protect_rtcp(self, data: bytes) -> bytes | None:
        """RTCP -> SRTCP for the peer, or None (counted) when libsrtp refuses it."""
        try:
            return self._tx.protect_rtcp(data)
        except Error:
            self.protect_failures += 1
        except ValueError:  # over 1352 bytes
            self.oversized += 1
        return None

    def _count_inbound(self, error: Error) -> None:
        text = str(error)
        if text == _AUTH_FAILURE:
            self.auth_failures += 1
        elif text in _REPLAYS:
            self.replays += 1
        else:
            self.bad_packets += 1

    def __repr__(self) -> str:
        return (
            f"SrtpTransform({self.suite}, auth_failures={self.auth_failures}, "
            f"replays={self.replays}, bad_packets={self.bad_packets}, "
            f"oversized={self.oversized}, protect_failures={self.protect_failures})"
        )
