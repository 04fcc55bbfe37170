"""Structured logging: line format, quoting, JSON, masking of secrets, disabled levels."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from sbc.log import configure, get_logger

TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """configure() writes to a buffer; the root logger is restored afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    buffer = io.StringIO()
    configure("debug", "kv", buffer)
    yield buffer
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def lines(buffer: io.StringIO) -> list[str]:
    return buffer.getvalue().splitlines()


def kv_pairs(line: str) -> dict[str, str]:
    """Parse one kv line back, undoing the quoting."""
    pairs: dict[str, str] = {}
    for match in re.finditer(r'(\S+?)=("(?:[^"\\]|\\.)*"|\S*)', line):
        key, value = match.group(1), match.group(2)
        if value.startswith('"'):
            value = json.loads(value)
        pairs[key] = value
    return pairs


def test_kv_line_format(output: io.StringIO) -> None:
    get_logger("transport").info("listener.started", transport="udp", addr="127.0.0.1:5060")
    (line,) = lines(output)
    assert re.fullmatch(
        rf"ts={TS} level=info logger=transport event=listener.started "
        r"transport=udp addr=127\.0\.0\.1:5060",
        line,
    ), line


def test_call_comes_first_after_event(output: io.StringIO) -> None:
    get_logger("b2bua").warning("call.failed", status=503, call="a84b4c76e66710@pc33")
    (line,) = lines(output)
    assert " event=call.failed call=a84b4c76e66710@pc33 status=503" in line
    assert " level=warning " in line


def test_bound_fields_are_added(output: io.StringIO) -> None:
    log = get_logger("b2bua").bind(call="c-1")
    log.info("call.answered", leg="b")
    assert lines(output)[0].endswith("event=call.answered call=c-1 leg=b")


def test_values_with_spaces_quotes_and_newlines_stay_on_one_line(output: io.StringIO) -> None:
    reason = 'Service "Unavailable"\r\nnext = line\\'
    get_logger("sip").info("response", reason=reason, empty="", none=None, flag=True)
    (line,) = lines(output)
    pairs = kv_pairs(line)
    assert pairs["reason"] == reason
    assert pairs["empty"] == ""
    assert pairs["none"] == "null" and pairs["flag"] == "true"


def test_control_characters_are_escaped(output: io.StringIO) -> None:
    get_logger("sip").info("garbage", data="a\x00b\x1bc\u2028d")
    (line,) = lines(output)
    assert kv_pairs(line)["data"] == "a\x00b\x1bc\u2028d"
    assert "\x00" not in line and "\u2028" not in line


def test_reserved_field_names_do_not_overwrite_the_header(output: io.StringIO) -> None:
    get_logger("sip").info("txn.failed", event="TimedOut", level=3)
    pairs = kv_pairs(lines(output)[0])
    assert pairs["event"] == "txn.failed" and pairs["event_"] == "TimedOut"
    assert pairs["level"] == "info" and pairs["level_"] == "3"


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "auth_password",
        "secret",
        "client_secret",
        "authorization",
        "Proxy_Authorization",
    ],
)
def test_secret_fields_are_masked(output: io.StringIO, key: str) -> None:
    get_logger("trunks").info("register", **{key: "hunter2", "user": "alice"})
    (line,) = lines(output)
    assert "hunter2" not in line
    assert kv_pairs(line)[key] == "***"
    assert kv_pairs(line)["user"] == "alice"


def test_authorization_headers_inside_a_message_are_masked(output: io.StringIO) -> None:
    message = (
        "REGISTER sip:itsp SIP/2.0\r\n"
        'Authorization: Digest username="alice", response="6629fae49393a05397450978507c4ef1"\r\n'
        'proxy-authorization: Digest response="deadbeef"\r\n'
        "Via: SIP/2.0/UDP 10.0.0.1\r\n\r\n"
    )
    get_logger("sip").debug("sip.sent", msg=message)
    (line,) = lines(output)
    logged = kv_pairs(line)["msg"]
    assert "6629fae4" not in logged and "deadbeef" not in logged
    assert "Authorization: ***\r\n" in logged and "proxy-authorization: ***\r\n" in logged
    assert "Via: SIP/2.0/UDP 10.0.0.1" in logged


def test_json_format(output: io.StringIO) -> None:
    configure("info", "json", output)
    get_logger("transport").info(
        "listener.started",
        addr="127.0.0.1:5060",
        port=5060,
        call="x1",
        password="p",
        extra=("a", 1),
    )
    (line,) = lines(output)
    record = json.loads(line)
    assert list(record)[:5] == ["ts", "level", "logger", "event", "call"]
    assert re.fullmatch(TS, record["ts"])
    assert record["level"] == "info" and record["logger"] == "transport"
    assert record["event"] == "listener.started" and record["call"] == "x1"
    assert record["port"] == 5060 and record["password"] == "***"
    assert record["extra"] == "('a', 1)"


def test_disabled_level_formats_nothing(output: io.StringIO) -> None:
    configure("warning", "kv", output)
    formatted: list[str] = []

    class Expensive:
        def __str__(self) -> str:
            formatted.append("str")
            return "expensive"

    log = get_logger("media")
    log.info("relay.packet", value=Expensive())
    log.debug("relay.packet", value=Expensive())
    assert lines(output) == [] and formatted == []
    log.warning("relay.slow", value=Expensive())
    assert formatted == ["str"]
    assert lines(output)[0].endswith("event=relay.slow value=expensive")


def test_reconfigure_replaces_the_handler(output: io.StringIO) -> None:
    configure("info", "kv", output)
    configure("info", "kv", output)
    get_logger("app").info("once")
    assert len(lines(output)) == 1


def test_foreign_stdlib_records_are_formatted_too(output: io.StringIO) -> None:
    logging.getLogger("asyncio").error("Task %s was destroyed", "t1")
    (line,) = lines(output)
    assert re.fullmatch(
        rf"ts={TS} level=error logger=asyncio event=log "
        r'msg="Task t1 was destroyed"',
        line,
    ), line


def test_exception_is_logged_on_one_line(output: io.StringIO) -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        get_logger("app").exception("timer.failed", call="c9")
    (line,) = lines(output)
    pairs = kv_pairs(line)
    assert pairs["call"] == "c9"
    assert pairs["exc"] == "ValueError: bad\nvalue"
    assert pairs["traceback"].startswith("Traceback (most recent call last):")


def test_logger_names_are_shown_without_the_package_prefix(output: io.StringIO) -> None:
    get_logger("sbc.transport").info("a")
    get_logger("media.relay").info("b")
    assert [kv_pairs(line)["logger"] for line in lines(output)] == ["transport", "media.relay"]
    assert get_logger("transport").name == "sbc.transport"


def test_invalid_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="log level 'loud'"):
        configure("loud", "kv", io.StringIO())
    with pytest.raises(ValueError, match="log format 'xml'"):
        configure("info", "xml", io.StringIO())
