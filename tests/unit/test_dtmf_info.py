"""DTMF in SIP INFO bodies (sbc.dtmf_info): application/dtmf-relay and application/dtmf as
vendors send them, the errors a malformed body gets (400 / 415), and formatting back."""

from __future__ import annotations

import pytest

from sbc.dtmf_info import (
    DEFAULT_DURATION_MS,
    DTMF_INFO_TYPES,
    DTMF_RELAY_TYPE,
    DTMF_TYPE,
    Digit,
    DtmfInfoError,
    format_dtmf,
    format_dtmf_info,
    format_dtmf_relay,
    parse_dtmf,
    parse_dtmf_info,
    parse_dtmf_relay,
)
from sbc.sip.errors import ParseError

# ---------------------------------------------------------------- application/dtmf-relay


@pytest.mark.parametrize(
    ("body", "digit"),
    [
        (b"Signal=5\r\nDuration=160\r\n", Digit("5", 160)),
        (b"Signal=5\nDuration=160\n", Digit("5", 160)),
        (b"signal=#\r\nDURATION=100", Digit("#", 100)),
        (b"Signal= *\r\nDuration = 250\r\n", Digit("*", 250)),
        (b"Duration=80\r\nSignal=d\r\n", Digit("D", 80)),
        (b"Signal=16\r\nDuration=100\r\n", Digit("!", 100)),
        (b"Signal=!\r\nDuration=300\r\n", Digit("!", 300)),
        (b"Signal=10\r\nDuration=100\r\n", Digit("*", 100)),
        (b"Signal=11\r\nDuration=100\r\n", Digit("#", 100)),
        (b"Signal=0\r\n", Digit("0", DEFAULT_DURATION_MS)),
        (b"Signal=1\r\nDuration=0\r\n", Digit("1", DEFAULT_DURATION_MS)),
        (b"X-Vendor=abc\r\nSignal=9\r\nnoise line\r\n\r\nDuration=200\r\n", Digit("9", 200)),
    ],
)
def test_dtmf_relay_bodies_as_vendors_send_them(body: bytes, digit: Digit) -> None:
    assert parse_dtmf_relay(body) == digit


def test_default_duration_is_250_ms() -> None:
    assert DEFAULT_DURATION_MS == 250
    assert parse_dtmf_relay(b"Signal=3").duration_ms == 250


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"", "body is empty"),
        (b"\r\n\r\n", "body is empty"),
        (b"Duration=160\r\n", "no Signal line"),
        (b"Signal 5\r\nDuration=160\r\n", "no Signal line"),
        (b"Signal=\r\n", "signal '' is not"),
        (b"Signal=E\r\n", "signal 'E' is not"),
        (b"Signal=17\r\n", "signal '17' is not"),
        (b"Signal=55\r\n", "signal '55' is not"),
        (b"Signal=5 5\r\n", "signal '5 5' is not"),
        (b"Signal=5\r\nDuration=abc\r\n", "Duration 'abc' is not a whole number"),
        (b"Signal=5\r\nDuration=-5\r\n", "Duration '-5' is not a whole number"),
        (b"Signal=5\r\nDuration=1.5\r\n", "Duration '1.5' is not a whole number"),
        (b"Signal=5\r\nDuration=99999\r\n", "duration 99999 ms is outside"),
        (b"Signal=5\r\nSignal=6\r\n", "two Signal lines"),
        (b"Signal=5\r\nDuration=1\r\nduration=2\r\n", "two Duration lines"),
        ("Signal=5\r\nDuration=1\r\nNote=\u00e9\r\n".encode(), "not ASCII"),
        (b"Signal=5\r\n" + b"X" * 2000, "too long"),
    ],
)
def test_malformed_dtmf_relay_bodies_name_the_problem(body: bytes, problem: str) -> None:
    with pytest.raises(DtmfInfoError, match=problem) as raised:
        parse_dtmf_relay(body)
    assert raised.value.status == 400
    assert raised.value.reason == str(raised.value)


# ---------------------------------------------------------------- application/dtmf


@pytest.mark.parametrize(
    ("body", "char"),
    [(b"5", "5"), (b"#\r\n", "#"), (b" a ", "A"), (b"11", "#"), (b"16", "!"), (b"!", "!")],
)
def test_dtmf_bodies(body: bytes, char: str) -> None:
    assert parse_dtmf(body) == Digit(char, DEFAULT_DURATION_MS)


@pytest.mark.parametrize(
    ("body", "problem"),
    [(b"", "empty"), (b"12345", "'12345' is not"), (b"Signal=5", "'Signal=5' is not")],
)
def test_malformed_dtmf_bodies(body: bytes, problem: str) -> None:
    with pytest.raises(DtmfInfoError, match=problem):
        parse_dtmf(body)


# ---------------------------------------------------------------- by Content-Type


def test_content_type_picks_the_parser_ignoring_case_and_parameters() -> None:
    relay = b"Signal=7\r\nDuration=120\r\n"
    assert parse_dtmf_info("Application/DTMF-Relay; charset=us-ascii", relay) == Digit("7", 120)
    assert parse_dtmf_info("application/dtmf", b"7") == Digit("7", DEFAULT_DURATION_MS)


def test_other_media_types_get_415() -> None:
    with pytest.raises(DtmfInfoError, match="application/sdp is not") as raised:
        parse_dtmf_info("application/sdp", b"v=0\r\n")
    assert raised.value.status == 415


def test_malformed_content_type_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="not type/subtype") as raised:
        parse_dtmf_info("dtmf-relay", b"Signal=1")
    assert raised.value.status == 400


def test_errors_are_parse_errors_for_the_b2bua() -> None:
    """The B2BUA answers any ParseError with its status and reason."""
    assert issubclass(DtmfInfoError, ParseError)


# ---------------------------------------------------------------- formatting


def test_format_dtmf_relay_round_trips() -> None:
    for char in "0123456789*#ABCD!":
        body = format_dtmf_relay(char, 180)
        assert body.endswith(b"\r\n")
        assert parse_dtmf_relay(body) == Digit(char, 180)
    assert format_dtmf_relay("!", 100) == b"Signal=!\r\nDuration=100\r\n"


def test_format_dtmf_relay_clamps_durations_from_rtp() -> None:
    """The relay's DigitEnded may report 0 ms (an end packet without duration) or a key held
    for minutes; neither may make the B2BUA raise while building the INFO."""
    assert format_dtmf_relay("5", 0) == b"Signal=5\r\nDuration=250\r\n"
    assert format_dtmf_relay("5", 10**6) == b"Signal=5\r\nDuration=60000\r\n"
    with pytest.raises(DtmfInfoError, match="signal 'x'"):
        format_dtmf_relay("x", 100)


def test_format_dtmf_writes_flash_as_its_code() -> None:
    assert format_dtmf("#") == b"#"
    assert format_dtmf("!") == b"16"
    assert parse_dtmf(format_dtmf("!")) == Digit("!")


def test_format_dtmf_info_gives_content_type_and_body() -> None:
    assert format_dtmf_info("3", 90) == (DTMF_RELAY_TYPE, b"Signal=3\r\nDuration=90\r\n")
    assert format_dtmf_info("3", 90, DTMF_TYPE) == (DTMF_TYPE, b"3")
    with pytest.raises(ValueError, match="no DTMF INFO format"):
        format_dtmf_info("3", 90, "text/plain")
    assert DTMF_INFO_TYPES == {"application/dtmf-relay", "application/dtmf"}


@pytest.mark.parametrize(
    ("char", "ms", "problem"),
    [("E", 100, "signal 'E'"), ("12", 100, "signal '12'"), ("5", 0, "duration 0 ms")],
)
def test_digit_checks_its_fields(char: str, ms: int, problem: str) -> None:
    with pytest.raises(DtmfInfoError, match=problem):
        Digit(char, ms)


def test_digits_from_rtp_are_clamped_into_range() -> None:
    assert Digit.clamped("5", 0) == Digit("5", DEFAULT_DURATION_MS)
    assert Digit.clamped("5", 120) == Digit("5", 120)
    assert Digit.clamped("5", 10**6) == Digit("5", 60_000)
