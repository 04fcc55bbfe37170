"""DTMF in SIP INFO bodies (sans-I/O): `application/dtmf-relay` and `application/dtmf`, parsed
into a `Digit` and formatted back, for interworking with RFC 4733 telephone-events.

Neither format has an RFC; what is accepted follows what deployed PBXs and gateways send:
- application/dtmf-relay: lines `Signal=<s>` and `Duration=<ms>`, keys in any case, CRLF or
  LF, blanks around `=`, other lines ignored. A missing (or zero) Duration means
  DEFAULT_DURATION_MS: 250 ms is a typical keypress and what several PBXs assume.
- application/dtmf: the body is the signal alone; it carries no duration.
A signal is 0-9 * # A-D (either case), "!" for flash, or an event code 0-16 (RFC 4733 §3.2:
10 is *, 11 is #, 16 is flash) as some vendors send.
"""

from __future__ import annotations

from dataclasses import dataclass

from media.dtmf import EVENT_CHARS, FLASH, DtmfError, event_char, event_code
from sbc.sip.body import media_type
from sbc.sip.errors import ParseError

DTMF_RELAY_TYPE = "application/dtmf-relay"
DTMF_TYPE = "application/dtmf"
DTMF_INFO_TYPES = frozenset({DTMF_RELAY_TYPE, DTMF_TYPE})
DEFAULT_DURATION_MS = 250
MAX_DURATION_MS = 60_000  # a held key; anything longer is a broken sender
_MAX_BODY = 1024  # a DTMF body is a few dozen bytes; larger is not one


class DtmfInfoError(ParseError):
    """An INFO body that is no DTMF digit: `reason` names the problem for the reason phrase;
    `status` is 415 for a media type that is not a DTMF one, else 400."""


@dataclass(frozen=True, slots=True)
class Digit:
    char: str  # one of media.dtmf.EVENT_CHARS: 0-9 * # A-D, "!" for flash
    duration_ms: int = DEFAULT_DURATION_MS

    def __post_init__(self) -> None:
        if len(self.char) != 1 or self.char not in EVENT_CHARS:
            raise DtmfInfoError(f"DTMF signal {self.char!r} is not 0-9 * # A-D or !")
        if not 0 < self.duration_ms <= MAX_DURATION_MS:
            raise DtmfInfoError(
                f"DTMF duration {self.duration_ms} ms is outside 1-{MAX_DURATION_MS}"
            )

    @classmethod
    def clamped(cls, char: str, duration_ms: int) -> Digit:
        """A digit from RFC 4733 (`DigitEnded`) for an INFO: a zero duration (an end packet
        reporting none) means unknown, so the default; a key held past the maximum is cut."""
        return cls(
            char, min(duration_ms, MAX_DURATION_MS) if duration_ms > 0 else DEFAULT_DURATION_MS
        )


def parse_dtmf_info(content_type: str, body: bytes) -> Digit:
    """The digit of an INFO request, by its Content-Type (parameters ignored)."""
    kind, _ = media_type(content_type)
    if kind == DTMF_RELAY_TYPE:
        return parse_dtmf_relay(body)
    if kind == DTMF_TYPE:
        return parse_dtmf(body)
    raise DtmfInfoError(
        f"INFO body of type {kind} is not {DTMF_RELAY_TYPE} or {DTMF_TYPE}", status=415
    )


def parse_dtmf_relay(body: bytes) -> Digit:
    fields: dict[str, str] = {}
    for line in _text(body, DTMF_RELAY_TYPE).splitlines():
        key, equals, value = line.partition("=")
        key = key.strip().lower()
        if not equals or key not in ("signal", "duration"):
            continue  # vendors add their own lines; only these two matter
        if key in fields:
            raise DtmfInfoError(f"{DTMF_RELAY_TYPE} body has two {key.capitalize()} lines")
        fields[key] = value.strip()
    if "signal" not in fields:
        raise DtmfInfoError(f"{DTMF_RELAY_TYPE} body has no Signal line")
    return Digit(_signal(fields["signal"]), _duration(fields.get("duration")))


def parse_dtmf(body: bytes) -> Digit:
    return Digit(_signal(_text(body, DTMF_TYPE).strip()))


def format_dtmf_relay(char: str, duration_ms: int = DEFAULT_DURATION_MS) -> bytes:
    """`Signal=` with the character (flash as "!"), then `Duration=` in ms, CRLF-terminated.
    The duration is clamped as `Digit.clamped` does: the relay's `DigitEnded` may report 0."""
    digit = Digit.clamped(char, duration_ms)
    return f"Signal={digit.char}\r\nDuration={digit.duration_ms}\r\n".encode("ascii")


def format_dtmf(char: str) -> bytes:
    """The character alone; flash as its event code 16, as "!" is no key."""
    digit = Digit(char)
    return (str(event_code(FLASH)) if digit.char == FLASH else digit.char).encode("ascii")


def format_dtmf_info(
    char: str, duration_ms: int = DEFAULT_DURATION_MS, kind: str = DTMF_RELAY_TYPE
) -> tuple[str, bytes]:
    """(Content-Type, body) of an INFO carrying a digit in the format the peer expects."""
    if kind == DTMF_RELAY_TYPE:
        return DTMF_RELAY_TYPE, format_dtmf_relay(char, duration_ms)
    if kind == DTMF_TYPE:
        return DTMF_TYPE, format_dtmf(char)
    raise ValueError(f"no DTMF INFO format {kind!r}; use {DTMF_RELAY_TYPE} or {DTMF_TYPE}")


def _text(body: bytes, kind: str) -> str:
    if len(body) > _MAX_BODY:
        raise DtmfInfoError(f"{kind} body of {len(body)} bytes is too long for one digit")
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise DtmfInfoError(f"{kind} body is not ASCII text") from None
    if not text.strip():
        raise DtmfInfoError(f"{kind} body is empty")
    return text


def _signal(value: str) -> str:
    if value.isdigit() and len(value) <= 2:
        char = event_char(int(value))  # "5" is key 5 either way; "10" is *, "16" is flash
        if char is not None:
            return char
    elif len(value) == 1:
        try:
            return EVENT_CHARS[event_code(value)]  # upper-cases a-d
        except DtmfError:
            pass
    raise DtmfInfoError(f"DTMF signal {value[:20]!r} is not 0-9 * # A-D, ! or an event code 0-16")


def _duration(value: str | None) -> int:
    if value is None:
        return DEFAULT_DURATION_MS
    if not value.isdigit() or len(value) > 9:
        raise DtmfInfoError(f"DTMF Duration {value[:20]!r} is not a whole number of ms")
    ms = int(value)
    # Some phones send Duration=0 when they do not know: treat it as absent, not as an error.
    return ms or DEFAULT_DURATION_MS
