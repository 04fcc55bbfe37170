"""StreamFramer: cutting TCP/TLS byte streams into SIP messages (RFC 3261 §18.3, RFC 5626)."""

from __future__ import annotations

import pytest

from sbc.sip.framing import (
    FramedMessage,
    FramerEvent,
    FramingError,
    KeepAlivePong,
    StreamFramer,
)


def options(call_id: str, body: bytes = b"", length_header: str = "Content-Length") -> bytes:
    head = (
        "OPTIONS sip:sbc@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-" + call_id + "\r\n"
        "From: <sip:a@127.0.0.1>;tag=1\r\n"
        "To: <sip:sbc@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Max-Forwards: 70\r\n"
        f"{length_header}: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body


def messages(events: list[FramerEvent]) -> list[bytes]:
    return [e.data for e in events if isinstance(e, FramedMessage)]


def feed_bytewise(framer: StreamFramer, data: bytes) -> list[FramerEvent]:
    events: list[FramerEvent] = []
    for i in range(len(data)):
        events.extend(framer.feed(data[i : i + 1]))
    return events


def test_one_message_in_one_chunk() -> None:
    msg = options("a", b"v=0\r\n")
    framer = StreamFramer()
    assert framer.feed(msg) == [FramedMessage(msg)]
    assert framer.buffered == 0


def test_byte_at_a_time_feeding_yields_each_message_once() -> None:
    first, second = options("a", b"hello"), options("b")
    framer = StreamFramer()
    events = feed_bytewise(framer, first + second)
    assert messages(events) == [first, second]
    assert all(isinstance(e, FramedMessage) for e in events)


def test_several_messages_in_one_chunk() -> None:
    batch = [options(str(i), b"x" * i) for i in range(5)]
    framer = StreamFramer()
    assert messages(framer.feed(b"".join(batch))) == batch


def test_message_split_across_chunks_at_every_offset() -> None:
    msg = options("split", b"0123456789")
    for cut in range(1, len(msg)):
        framer = StreamFramer()
        events = framer.feed(msg[:cut])
        assert events == [], cut
        assert messages(framer.feed(msg[cut:])) == [msg], cut


def test_body_is_exactly_content_length_bytes_and_rest_is_next_message() -> None:
    msg = options("a", b"abc")
    framer = StreamFramer()
    events = framer.feed(msg + b"OPTIONS sip:x SIP/2.0\r\n")
    assert messages(events) == [msg]
    assert framer.buffered == len(b"OPTIONS sip:x SIP/2.0\r\n")


def test_compact_form_l_is_accepted_case_insensitively() -> None:
    msg = options("a", b"body", length_header="l")
    assert messages(StreamFramer().feed(msg)) == [msg]
    msg = options("b", b"body", length_header="CONTENT-length ")
    assert messages(StreamFramer().feed(msg)) == [msg]


def test_folded_content_length_value_is_read() -> None:
    msg = (
        b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n"
        b"Content-Length:\r\n  4\r\n\r\nbody"
    )
    assert messages(StreamFramer().feed(msg)) == [msg]


def test_leading_crlfs_before_a_message_are_skipped() -> None:
    msg = options("a")
    events = StreamFramer().feed(b"\r\n" + msg)
    assert events == [FramedMessage(msg)]


def test_rfc5626_double_crlf_ping_gets_single_crlf_pong() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == [KeepAlivePong()]
    assert KeepAlivePong().data == b"\r\n"
    assert framer.buffered == 0


def test_rfc5626_ping_fed_byte_at_a_time_and_between_messages() -> None:
    msg = options("a")
    framer = StreamFramer()
    events = feed_bytewise(framer, msg + b"\r\n\r\n" + msg + b"\r\n\r\n\r\n\r\n")
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "FramedMessage",
        "KeepAlivePong",
        "FramedMessage",
        "KeepAlivePong",
        "KeepAlivePong",
    ]


def test_lone_crlf_pong_from_peer_is_ignored() -> None:
    msg = options("a")
    events = StreamFramer().feed(b"\r\n" + msg)
    assert not any(isinstance(e, KeepAlivePong) for e in events)


def test_rfc3261_18_3_missing_content_length_on_stream_is_an_error() -> None:
    msg = options("a").replace(b"Content-Length: 0\r\n", b"")
    framer = StreamFramer()
    events = framer.feed(msg + options("b"))
    assert len(events) == 1
    error = events[0]
    assert isinstance(error, FramingError)
    assert error.status == 400
    assert "Content-Length" in error.reason
    # The head is kept so the caller can build a 400 carrying the request's Via, Call-ID...
    assert error.head == msg
    assert framer.failed
    assert framer.feed(options("c")) == []


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "", "99999999999999"])
def test_bad_content_length_is_an_error(value: str) -> None:
    msg = options("a").replace(b"Content-Length: 0", f"Content-Length: {value}".encode())
    events = StreamFramer().feed(msg)
    assert len(events) == 1 and isinstance(events[0], FramingError)
    assert events[0].status == 400


def test_conflicting_content_length_headers_are_an_error() -> None:
    msg = options("a").replace(b"Content-Length: 0\r\n", b"Content-Length: 0\r\nl: 3\r\n")
    events = StreamFramer().feed(msg + b"abc")
    assert len(events) == 1 and isinstance(events[0], FramingError)


def test_oversize_body_is_refused_before_it_is_buffered() -> None:
    framer = StreamFramer(max_message_size=1000)
    head = options("a").replace(b"Content-Length: 0", b"Content-Length: 5000")
    events = framer.feed(head)
    assert len(events) == 1
    error = events[0]
    assert isinstance(error, FramingError)
    assert error.status == 513
    assert error.head == head


def test_oversize_headers_are_refused_without_waiting_for_their_end() -> None:
    framer = StreamFramer(max_message_size=1000)
    events = framer.feed(b"OPTIONS sip:x SIP/2.0\r\n" + b"X-Junk: " + b"j" * 2000)
    assert len(events) == 1
    error = events[0]
    assert isinstance(error, FramingError)
    assert error.status == 513
    assert error.head == b""
    assert framer.buffered == 0


def test_message_exactly_at_the_size_limit_passes() -> None:
    msg = options("a", b"b" * 100)
    framer = StreamFramer(max_message_size=len(msg))
    assert messages(framer.feed(msg)) == [msg]
    framer = StreamFramer(max_message_size=len(msg) - 1)
    assert isinstance(framer.feed(msg)[0], FramingError)


def test_byte_at_a_time_header_scan_is_not_quadratic() -> None:
    # 60 KB of headers fed one byte at a time must finish quickly (the scan resumes).
    big = options("a").replace(b"Max-Forwards", b"X-Pad: " + b"p" * 60000 + b"\r\nMax-Forwards")
    framer = StreamFramer(max_message_size=70000)
    assert messages(feed_bytewise(framer, big)) == [big]
