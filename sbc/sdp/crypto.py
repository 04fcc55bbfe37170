"""SDES (RFC 4568) for SRTP: parse and write a=crypto, choose the strongest suite both
sides support, and decide per leg and stream whether media is SRTP, plain RTP or refused.

Keys belong to one leg: every a=crypto this module emits carries a fresh key of ours, and
every rewrite drops the lines that came from the other leg (TRAPS.md #9).
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from sbc.sdp.model import MediaSection, SdpError, SdpLine, SessionDescription

__all__ = [
    "DEFAULT_SUITES",
    "CryptoAttribute",
    "CryptoChoice",
    "CryptoSuite",
    "KeyParam",
    "LocalOffer",
    "Protection",
    "SdesError",
    "SrtpDecision",
    "SrtpPolicy",
    "accept_answer",
    "answer_crypto",
    "answer_section",
    "decide_offer",
    "format_crypto",
    "generate_key",
    "match_answer",
    "offer_cryptos",
    "offer_section",
    "parse_crypto",
    "strip_crypto",
    "without_crypto",
]


class SdesError(SdpError):
    """An a=crypto line that is malformed (status 400) or an exchange that cannot give SRTP
    (status 488). Messages name the tag and the fault, never the key."""


# ------------------------------------------------------------------------------ suites


class CryptoSuite(enum.StrEnum):
    """The SRTP crypto-suites pylibsrtp implements, declared strongest first."""

    AEAD_AES_256_GCM = "AEAD_AES_256_GCM"
    AEAD_AES_128_GCM = "AEAD_AES_128_GCM"
    AES_CM_128_HMAC_SHA1_80 = "AES_CM_128_HMAC_SHA1_80"
    AES_CM_128_HMAC_SHA1_32 = "AES_CM_128_HMAC_SHA1_32"

    @property
    def key_length(self) -> int:
        """Bytes of master key + master salt carried inline (RFC 4568 §6.2, RFC 7714 §12)."""
        return _KEY_LENGTHS[self]

    @property
    def strength(self) -> int:
        """Higher is stronger: GCM-256 > GCM-128 > HMAC-SHA1 with an 80-bit tag > 32-bit tag."""
        return _STRENGTH[self]

    @classmethod
    def lookup(cls, name: str) -> CryptoSuite | None:
        """The suite a written name means (ABNF literals are case-insensitive), or None."""
        return _BY_NAME.get(name.upper())


_KEY_LENGTHS = {
    CryptoSuite.AEAD_AES_256_GCM: 32 + 12,
    CryptoSuite.AEAD_AES_128_GCM: 16 + 12,
    CryptoSuite.AES_CM_128_HMAC_SHA1_80: 16 + 14,
    CryptoSuite.AES_CM_128_HMAC_SHA1_32: 16 + 14,
}
_STRENGTH = {suite: len(CryptoSuite) - rank for rank, suite in enumerate(CryptoSuite)}
_BY_NAME = {suite.value: suite for suite in CryptoSuite}

DEFAULT_SUITES: tuple[CryptoSuite, ...] = tuple(CryptoSuite)


def _strongest_first(suites: Iterable[CryptoSuite]) -> list[CryptoSuite]:
    return sorted(set(suites), key=lambda suite: suite.strength, reverse=True)


# -------------------------------------------------------------------------- the model


@dataclass(frozen=True, slots=True)
class KeyParam:
    """One key-param, `inline:<base64 key||salt>[|lifetime][|MKI:length]` (RFC 4568 §6.1).

    A key method other than `inline` is kept (as the grammar allows) with an empty key;
    such a line is unusable. `mki` is (value, length in bytes).
    """

    method: str
    key_salt: bytes = field(repr=False)
    lifetime: int | None = None
    mki: tuple[int, int] | None = None

    def to_text(self) -> str:
        key = base64.b64encode(self.key_salt).decode("ascii")
        text = f"{self.method}:{key}"
        if self.lifetime is not None:
            text += f"|{self.lifetime}"
        if self.mki is not None:
            text += f"|{self.mki[0]}:{self.mki[1]}"
        return text


@dataclass(frozen=True, slots=True)
class CryptoAttribute:
    """One parsed a=crypto value: `<tag> <crypto-suite> <key-params> [<session-params>]`."""

    tag: int
    suite_name: str
    key_params: tuple[KeyParam, ...]
    session_params: tuple[str, ...] = ()

    @classmethod
    def generate(cls, tag: int, suite: CryptoSuite) -> CryptoAttribute:
        """A line of ours with a fresh random key, no lifetime (the suite's maximum) and
        no MKI."""
        return cls(tag, suite.value, (KeyParam("inline", generate_key(suite)),))

    @property
    def suite(self) -> CryptoSuite | None:
        return CryptoSuite.lookup(self.suite_name)

    @property
    def key(self) -> bytes:
        """Master key || master salt of the first key-param."""
        return self.key_params[0].key_salt

    @property
    def value(self) -> str:
        """The attribute value, as written after `a=crypto:`."""
        keys = ";".join(param.to_text() for param in self.key_params)
        return " ".join((str(self.tag), self.suite_name, keys, *self.session_params))

    def to_line(self) -> SdpLine:
        return SdpLine.attribute("crypto", self.value)

    def problem(self) -> str | None:
        """Why pylibsrtp cannot use this line, or None when it can."""
        suite = self.suite
        if suite is None:
            return f"crypto-suite {self.suite_name[:40]!r} is not supported"
        if len(self.key_params) != 1:
            # Several keys are only told apart by MKI, which pylibsrtp cannot do.
            return f"{len(self.key_params)} key-params (several keys need an MKI)"
        param = self.key_params[0]
        if param.method != "inline":
            return f"key method {param.method[:20]!r} is not supported (only inline)"
        if param.mki is not None:
            return "it has an MKI, which pylibsrtp cannot use"
        # A lifetime is accepted whatever its value: it bounds what the key's owner sends
        # with it (each side sends with its own key, RFC 4568 §6.1), and the owner re-keys
        # by a new offer, which we follow like any re-offer.
        if len(param.key_salt) != suite.key_length:
            return (
                f"key||salt is {len(param.key_salt)} bytes, {suite.value} needs {suite.key_length}"
            )
        for session_param in self.session_params:
            problem = _session_param_problem(session_param)
            if problem is not None:
                return problem
        return None

    @property
    def usable(self) -> bool:
        return self.problem() is None


def _session_param_problem(param: str) -> str | None:
    """Why a (syntactically valid) session parameter rules a line out (RFC 4568 §6.3)."""
    name, _, value = param.partition("=")
    name = name.upper()
    if name in ("UNENCRYPTED_SRTP", "UNENCRYPTED_SRTCP", "UNAUTHENTICATED_SRTP"):
        return f"session parameter {name} asks for an SRTP variant pylibsrtp cannot set up"
    if name == "KDR":
        # KDR=0 is the SRTP default (derive once); pylibsrtp cannot set another rate.
        if value.isdigit() and int(value) == 0:
            return None
        return f"KDR={value[:4]} (key re-derivation) is not supported"
    if name in ("FEC_ORDER", "FEC_KEY"):
        return f"session parameter {name} (SRTP with FEC) is not supported"
    if name == "WSH" or param.startswith("-"):
        # WSH is a hint; libsrtp's 128-packet replay window is above its minimum of 64.
        # Our reading of a leading '-' (which the §9.1 srtp-session-extension grammar
        # allows): an extension the sender marks as safe to ignore.
        return None
    return f"unknown session parameter {param[:40]!r}"


@dataclass(frozen=True, slots=True)
class CryptoChoice:
    """The pair of a=crypto lines agreed for one stream on one leg: the peer's (its key
    decrypts what the peer sends us) and ours (same tag and suite; our key protects what we
    send). Hand `suite`, `inbound_key`, `outbound_key` to the relay's SRTP transform."""

    remote: CryptoAttribute
    local: CryptoAttribute

    @property
    def suite(self) -> CryptoSuite:
        suite = self.local.suite
        if suite is None:  # only a hand-built choice can hold one; ours are from the enum
            raise ValueError(f"CryptoChoice: {self.local.suite_name!r} is not a known suite")
        return suite

    @property
    def inbound_key(self) -> bytes:
        return self.remote.key

    @property
    def outbound_key(self) -> bytes:
        return self.local.key


# ------------------------------------------------------------------------------ parsing

_TAG = re.compile(r"[0-9]{1,9}")
_SUITE_NAME = re.compile(r"[A-Za-z0-9_]+")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_DIGITS = re.compile(r"[0-9]+")


def parse_crypto(value: str) -> CryptoAttribute:
    """Parse an a=crypto value (RFC 4568 §9.1); SdesError (status 400) says what is wrong.

    A line that parses may still be unusable (see CryptoAttribute.problem).
    """
    fields = value.split()
    if len(fields) < 3:
        raise SdesError(
            f"a=crypto needs '<tag> <crypto-suite> <key-params>', found {len(fields)} field(s)"
        )
    tag_text, suite_name, key_text, *session_params = fields
    if not _TAG.fullmatch(tag_text):
        raise SdesError(f"a=crypto tag {tag_text[:20]!r} is not 1 to 9 digits")
    tag = int(tag_text)
    if not _SUITE_NAME.fullmatch(suite_name):
        raise SdesError(f"a=crypto tag {tag}: crypto-suite {suite_name[:40]!r} is not a name")
    key_params = tuple(_parse_key_param(text, tag) for text in key_text.split(";"))
    for param in session_params:
        _check_session_param(param, tag)
    return CryptoAttribute(tag, suite_name, key_params, tuple(session_params))


def _parse_key_param(text: str, tag: int) -> KeyParam:
    # Messages never quote `text`: it holds the key.
    method, colon, info = text.partition(":")
    if not colon or not method or not info:
        raise SdesError(f"a=crypto tag {tag}: a key-param is not '<method>:<key info>'")
    method = method.lower()
    if method != "inline":
        return KeyParam(method, b"")  # key-method-ext: grammatical, unusable
    key_text, *extras = info.split("|")
    if len(extras) > 2:
        raise SdesError(
            f"a=crypto tag {tag}: inline key has {len(extras)} '|' fields, "
            "at most 2 (lifetime, MKI:length)"
        )
    lifetime: int | None = None
    mki: tuple[int, int] | None = None
    for extra in extras:
        if ":" in extra:
            if mki is not None:
                raise SdesError(f"a=crypto tag {tag}: two MKI fields in one key-param")
            mki = _parse_mki(extra, tag)
        elif lifetime is None and mki is None:
            lifetime = _parse_lifetime(extra, tag)
        else:
            raise SdesError(f"a=crypto tag {tag}: a lifetime must come once, before the MKI")
    return KeyParam(method, _decode_key(key_text, tag), lifetime, mki)


def _decode_key(text: str, tag: int) -> bytes:
    if not text:
        raise SdesError(f"a=crypto tag {tag}: the inline key is empty")
    if not _BASE64.fullmatch(text):
        raise SdesError(f"a=crypto tag {tag}: the inline key is not base64")
    # Some senders drop the '=' padding of the 28- and 44-byte GCM keys; accept both.
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except binascii.Error:
        raise SdesError(f"a=crypto tag {tag}: the inline key is not valid base64") from None


def _parse_lifetime(text: str, tag: int) -> int:
    """`2^n` or a decimal count of packets (RFC 4568 §6.1)."""
    power = text.startswith("2^")
    digits = text[2:] if power else text
    if not _DIGITS.fullmatch(digits):
        raise SdesError(f"a=crypto tag {tag}: lifetime {text[:24]!r} is not '2^n' or a number")
    # Bounded so a hostile '2^99999999' costs nothing; SRTP itself stops at 2^48.
    if (power and int(digits) > 64) or (not power and len(digits) > 20):
        raise SdesError(f"a=crypto tag {tag}: lifetime {text[:24]!r} is out of range")
    lifetime = 2 ** int(digits) if power else int(digits)
    if lifetime == 0:
        raise SdesError(f"a=crypto tag {tag}: lifetime 0 allows no packet at all")
    return lifetime


def _parse_mki(text: str, tag: int) -> tuple[int, int]:
    """`<value>:<length in bytes>`, length 1-128 (RFC 4568 §6.1, §9.1)."""
    value_text, _, length_text = text.partition(":")
    if (
        not _DIGITS.fullmatch(value_text)
        or not _DIGITS.fullmatch(length_text)
        or len(length_text) > 3
        or len(value_text) > 310  # 128 bytes of MKI never need more digits
    ):
        raise SdesError(f"a=crypto tag {tag}: MKI {text[:24]!r} is not '<value>:<length>'")
    value, length = int(value_text), int(length_text)
    if not 1 <= length <= 128:
        raise SdesError(f"a=crypto tag {tag}: MKI length {length} is outside 1-128")
    if value >= 256**length:
        raise SdesError(f"a=crypto tag {tag}: MKI value {value} does not fit {length} byte(s)")
    return value, length


def _check_session_param(param: str, tag: int) -> None:
    """Reject the session parameters whose RFC 4568 §9.1 grammar is broken.

    Anything else is an srtp-session-extension as far as syntax goes; whether we can
    honour it is CryptoAttribute.problem's question.
    """
    name, equals, value = param.partition("=")
    upper = name.upper()
    if upper == "KDR":
        if not equals or not _DIGITS.fullmatch(value) or len(value) > 2 or int(value) > 24:
            raise SdesError(f"a=crypto tag {tag}: {param[:24]!r} is not KDR=0..24")
    elif upper == "WSH":
        if not equals or not _DIGITS.fullmatch(value) or len(value) > 9 or int(value) < 64:
            raise SdesError(f"a=crypto tag {tag}: {param[:24]!r} is not WSH=<64 or more>")
    elif upper == "FEC_ORDER":
        if value.upper() not in ("FEC_SRTP", "SRTP_FEC"):
            raise SdesError(
                f"a=crypto tag {tag}: {param[:40]!r} is not FEC_ORDER=FEC_SRTP|SRTP_FEC"
            )
    elif upper == "FEC_KEY":
        if not value:
            raise SdesError(f"a=crypto tag {tag}: FEC_KEY= has no key-params")
    elif not param.isprintable() or not param.isascii():
        raise SdesError(f"a=crypto tag {tag}: a session parameter has non-visible characters")


# ------------------------------------------------------------------ keys and selection


def generate_key(suite: CryptoSuite) -> bytes:
    """Fresh master key || master salt for `suite` from the OS's CSPRNG."""
    return secrets.token_bytes(suite.key_length)


def format_crypto(tag: int, suite: CryptoSuite, key: bytes) -> str:
    """An a=crypto value `<tag> <suite> inline:<base64 key>`; the key must fit the suite."""
    if not 0 <= tag <= 999_999_999:
        raise ValueError(f"a=crypto tag {tag} must be 0-999999999 (at most 9 digits)")
    if len(key) != suite.key_length:
        raise ValueError(f"{suite.value} needs a {suite.key_length}-byte key, not {len(key)}")
    return CryptoAttribute(tag, suite.value, (KeyParam("inline", key),)).value


def offer_cryptos(suites: Iterable[CryptoSuite] = DEFAULT_SUITES) -> tuple[CryptoAttribute, ...]:
    """Lines for an offer: one per suite, strongest first, tags 1..n, each with a fresh key.

    The offerer lists its preference first (RFC 4568 §5.1.1), so strongest goes first.
    """
    ordered = _strongest_first(suites)
    if not ordered:
        raise ValueError("offer_cryptos: no crypto-suite to offer")
    return tuple(CryptoAttribute.generate(tag, suite) for tag, suite in enumerate(ordered, 1))


def _choose(
    offered: Iterable[str], allowed: Iterable[CryptoSuite]
) -> tuple[CryptoAttribute | None, list[str]]:
    """The strongest usable allowed line, and why each other line was passed over.

    A malformed line is passed over like an unusable one: one broken line among good ones
    should not cost the call.
    """
    allowed_set = frozenset(allowed)
    best: CryptoAttribute | None = None
    problems: list[str] = []
    for value in offered:
        try:
            line = parse_crypto(value)
        except SdesError as error:
            problems.append(error.reason)
            continue
        problem = line.problem()
        suite = line.suite
        if problem is None and suite not in allowed_set:
            problem = f"crypto-suite {line.suite_name} is not allowed on this leg"
        if problem is not None:
            problems.append(f"tag {line.tag}: {problem}")
        elif suite is not None and (best is None or suite.strength > _strength_of(best)):
            best = line  # strictly stronger only: on a tie the offerer's order wins
    return best, problems


def _strength_of(line: CryptoAttribute) -> int:
    suite = line.suite
    return -1 if suite is None else suite.strength


def answer_crypto(
    offered: Iterable[str], allowed_suites: Iterable[CryptoSuite] = DEFAULT_SUITES
) -> CryptoChoice | None:
    """Pick the strongest usable offered line (a=crypto values) of an allowed suite and
    make our answer line for it: the same tag and suite, a fresh key of ours (RFC 4568
    §5.1.2). None when no line qualifies.

    Strongest, not first: the offerer's order is only a preference (TRAPS.md #9).
    """
    chosen, _ = _choose(offered, allowed_suites)
    if chosen is None or chosen.suite is None:
        return None
    return CryptoChoice(remote=chosen, local=CryptoAttribute.generate(chosen.tag, chosen.suite))


def match_answer(offered: Sequence[CryptoAttribute], answer_value: str) -> CryptoChoice:
    """Which of our offered lines the answer's a=crypto value accepts.

    The answer must name one of our tags with that tag's suite (RFC 4568 §5.1.3) and carry
    a key pylibsrtp can use; otherwise SdesError with status 488 (400 if it does not parse).
    """
    answer = parse_crypto(answer_value)
    ours = next((line for line in offered if line.tag == answer.tag), None)
    if ours is None:
        tags = ", ".join(str(line.tag) for line in offered) or "none"
        raise SdesError(
            f"answer a=crypto tag {answer.tag} matches none of the offered tags ({tags})",
            status=488,
        )
    if answer.suite is None or answer.suite != ours.suite:
        raise SdesError(
            f"answer a=crypto tag {answer.tag} names {answer.suite_name[:40]}, "
            f"but tag {ours.tag} was offered as {ours.suite_name}",
            status=488,
        )
    problem = answer.problem()
    if problem is not None:
        raise SdesError(f"answer a=crypto tag {answer.tag} is unusable: {problem}", status=488)
    return CryptoChoice(remote=answer, local=ours)


# --------------------------------------------------------------------- per-leg policy


class SrtpPolicy(enum.StrEnum):
    """What a leg accepts: never SRTP, SRTP when the peer can, or SRTP only."""

    OFF = "off"
    OPTIONAL = "optional"
    REQUIRED = "required"


class Protection(enum.StrEnum):
    """What one stream on one leg ends up as."""

    SRTP = "srtp"
    PLAIN = "plain"  # plain RTP, or nothing to protect (not RTP, port 0)
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class SrtpDecision:
    """The outcome for one stream on one leg.

    `proto` is the m= proto of the offer on this leg, which an answer repeats (RFC 3264
    §6). `choice` is set for SRTP; `status` (488) for REJECT, with `reason` saying why.
    """

    protection: Protection
    reason: str
    proto: str
    choice: CryptoChoice | None = None
    status: int | None = None

    def error(self) -> SdesError:
        """The rejection as an SdpError to answer the offer with (status 488)."""
        return SdesError(self.reason, status=self.status or 488)


@dataclass(frozen=True, slots=True)
class LocalOffer:
    """A stream as we offer it on a leg, with the lines (and keys) we put in it."""

    section: MediaSection
    policy: SrtpPolicy
    cryptos: tuple[CryptoAttribute, ...]


def _is_sdes_proto(proto: str) -> bool:
    """RTP/SAVP or RTP/SAVPF (RFC 3711, RFC 5124): SRTP keyed in the SDP."""
    return proto.upper() in ("RTP/SAVP", "RTP/SAVPF")


def _is_dtls_proto(proto: str) -> bool:
    """UDP/TLS/RTP/SAVP(F) and kin: SRTP keyed by DTLS (RFC 5764), not by a=crypto."""
    return "TLS" in proto.upper()


def _proto(source: str, secure: bool) -> str:
    """RTP/(S)AVP, keeping the RTCP feedback profile (RFC 4585 AVPF, RFC 5124 SAVPF)."""
    feedback = "F" if source.upper().endswith("F") else ""
    return f"RTP/{'SAVP' if secure else 'AVP'}{feedback}"


def strip_crypto(section: MediaSection) -> MediaSection:
    """The section without any a=crypto line."""
    return MediaSection((section.lines[0], *_no_crypto(section.lines[1:])))


def without_crypto(sdp: SessionDescription) -> SessionDescription:
    """The description without any a=crypto, session level included: RFC 4568 puts it at
    media level only, but one written at session level must not cross either."""
    return SessionDescription(
        tuple(_no_crypto(sdp.session)), tuple(strip_crypto(s) for s in sdp.media)
    )


def _no_crypto(lines: Iterable[SdpLine]) -> list[SdpLine]:
    return [line for line in lines if not line.is_attribute("crypto")]


def _plain(reason: str, proto: str) -> SrtpDecision:
    return SrtpDecision(Protection.PLAIN, reason, proto)


def _reject(reason: str, proto: str) -> SrtpDecision:
    return SrtpDecision(Protection.REJECT, reason, proto, status=488)


def _not_applicable(section: MediaSection) -> SrtpDecision | None:
    if section.is_rejected:
        return _plain("stream removed (port 0)", section.proto)
    if not section.is_rtp:
        return _plain(f"{section.proto} is not RTP: SRTP does not apply", section.proto)
    return None


def _crypto_values(section: MediaSection) -> list[str]:
    return [value for value in section.attributes("crypto") if value is not None]


def decide_offer(
    section: MediaSection,
    policy: SrtpPolicy,
    allowed_suites: Iterable[CryptoSuite] = DEFAULT_SUITES,
) -> SrtpDecision:
    """How to answer a stream offered on a leg with SRTP policy `policy`.

    off: plain RTP; an RTP/SAVP offer (SRTP only) is refused. optional: SRTP when a usable
    a=crypto is offered, in RTP/SAVP or as best-effort SRTP in RTP/AVP (sent by many
    PBXes); else plain RTP, which an RTP/SAVP offer cannot be answered with. required:
    SRTP or nothing. For SRTP the decision holds our answer line (fresh key, same tag).
    """
    skipped = _not_applicable(section)
    if skipped is not None:
        return skipped
    proto = section.proto
    if _is_dtls_proto(proto):
        return _reject(f"{proto} is keyed by DTLS; this leg keys SRTP by SDES (a=crypto)", proto)
    values = _crypto_values(section)
    secure = _is_sdes_proto(proto)
    if policy is SrtpPolicy.OFF:
        if secure:
            return _reject(f"SRTP policy 'off' on this leg, but the offer is {proto}", proto)
        ignored = "; its a=crypto lines are ignored" if values else ""
        return _plain(f"SRTP policy 'off' on this leg{ignored}", proto)
    chosen, problems = _choose(values, allowed_suites)
    if chosen is not None and chosen.suite is not None:
        local = CryptoAttribute.generate(chosen.tag, chosen.suite)
        style = "" if secure else " (best-effort SRTP in RTP/AVP)"
        return SrtpDecision(
            Protection.SRTP,
            f"{chosen.suite} with tag {chosen.tag}{style}",
            proto,
            CryptoChoice(remote=chosen, local=local),
        )
    missing = f"no usable a=crypto ({'; '.join(problems)})" if problems else "no a=crypto"
    if policy is SrtpPolicy.REQUIRED:
        return _reject(f"SRTP policy 'required' on this leg, but the offer has {missing}", proto)
    if secure:
        return _reject(f"the {proto} offer has {missing}, and {proto} cannot go plain", proto)
    return _plain(f"SRTP policy 'optional': the offer has {missing}", proto)


def offer_section(
    section: MediaSection,
    policy: SrtpPolicy,
    suites: Iterable[CryptoSuite] = DEFAULT_SUITES,
) -> LocalOffer:
    """The stream as we offer it on a leg with SRTP policy `policy`.

    Every a=crypto of the source goes. required: RTP/SAVP (SAVPF kept) with fresh lines
    of ours; optional: RTP/AVP(F) with fresh lines (best-effort SRTP: either answer is
    fine); off: RTP/AVP(F) and no a=crypto. Port-0 and non-RTP streams keep their proto.
    """
    base = strip_crypto(section)
    if section.is_rejected or not section.is_rtp:
        return LocalOffer(base, policy, ())
    cryptos = () if policy is SrtpPolicy.OFF else offer_cryptos(suites)
    proto = _proto(section.proto, secure=policy is SrtpPolicy.REQUIRED)
    rewritten = base.with_media_line(replace(base.media_line, proto=proto))
    lines = (*rewritten.lines, *(line.to_line() for line in cryptos))
    return LocalOffer(MediaSection(lines), policy, cryptos)


def accept_answer(offer: LocalOffer, answer: MediaSection) -> SrtpDecision:
    """What the peer's answer to our offer gives for the stream on that leg.

    SRTP when it accepts one of our lines (same tag and suite); plain when our offer
    allowed it (off, or optional without a=crypto in the answer); otherwise REJECT (488):
    the call is answered on that leg, so the caller ends or re-negotiates the stream.
    """
    proto = answer.proto
    skipped = _not_applicable(answer) or _not_applicable(offer.section)
    if skipped is not None:
        return skipped
    values = _crypto_values(answer)
    if not offer.cryptos:
        if values or _is_sdes_proto(proto):
            carried = " with a=crypto" if values else ""
            return _reject(f"the answer is {proto}{carried}, but we offered plain RTP", proto)
        return _plain("plain RTP, as offered", proto)
    if len(values) > 1:
        return _reject(f"the answer has {len(values)} a=crypto lines; it must accept one", proto)
    if values:
        try:
            choice = match_answer(offer.cryptos, values[0])
        except SdesError as error:
            return _reject(error.reason, proto)
        return SrtpDecision(
            Protection.SRTP, f"{choice.suite} with tag {choice.local.tag}", proto, choice
        )
    if offer.policy is SrtpPolicy.REQUIRED:
        return _reject("SRTP policy 'required' on this leg, but the answer has no a=crypto", proto)
    if _is_sdes_proto(proto):
        return _reject(f"the answer is {proto} without a=crypto", proto)
    return _plain("the answerer declined best-effort SRTP (no a=crypto)", proto)


def answer_section(section: MediaSection, decision: SrtpDecision) -> MediaSection:
    """Our answer on a leg: `section` (the other leg's answer, already rewritten for this
    one) with the offer's proto and, for SRTP, our answer line as its only a=crypto.

    A REJECT decision gives the stream port 0 (RFC 3264 §6). Non-RTP and port-0 streams only
    lose their a=crypto lines.
    """
    base = strip_crypto(section)
    if decision.protection is Protection.REJECT:
        rejected = replace(base.media_line, port=0, port_count=None, proto=decision.proto)
        return base.with_media_line(rejected)
    if section.is_rejected or not section.is_rtp:
        return base
    rewritten = base.with_media_line(replace(base.media_line, proto=decision.proto))
    if decision.protection is Protection.SRTP and decision.choice is not None:
        return MediaSection((*rewritten.lines, decision.choice.local.to_line()))
    return rewritten
