"""Sans-I/O framing of SIP messages on a byte stream (TCP, TLS): Content-Length delimits the
body (RFC 3261 §18.3), CRLF keep-alives are answered (RFC 5626 §3.5.1), sizes are capped."""

from __future__ import annotations

from dataclasses import dataclass

CRLF = b"\r\n"
_HEADER_END = b"\r\n\r\n"
_PING = b"\r\n\r\n"
_CONTENT_LENGTH_NAMES = (b"content-length", b"l")


@dataclass(frozen=True, slots=True)
class FramedMessage:
    """One complete SIP message: start line, headers, blank line and exactly its body."""

    data: bytes


@dataclass(frozen=True, slots=True)
class KeepAlivePong:
    """The peer sent a double-CRLF ping; write `data` (a single CRLF) back to it."""

    data: bytes = CRLF


@dataclass(frozen=True, slots=True)
class FramingError:
    """The stream cannot be framed any further: answer if possible, then close it.

    `head` holds the message's start line and headers when they were read completely (so a
    400/513 can copy Via, From, To, Call-ID and CSeq from it); otherwise it is empty.
    `status` is the response code that fits: 400 for a missing or bad Content-Length,
    513 (Message Too Large, RFC 3261 §21.5.14) for a message over the size cap.
    """

    reason: str
    status: int
    head: bytes = b""


FramerEvent = FramedMessage | KeepAlivePong | FramingError


class StreamFramer:
    """Cuts a byte stream into SIP messages.

    Feed bytes as they arrive; `feed()` returns the events they complete, in order. After a
    `FramingError` the framer is `failed` and ignores further input: the stream has lost
    its message boundaries and the connection must be closed.
    """

    __slots__ = ("max_message_size", "failed", "_buf", "_scan_from", "_head_len", "_total")

    def __init__(self, max_message_size: int = 65535) -> None:
        self.max_message_size = max_message_size
        self.failed = False
        self._buf = bytearray()
        # Where to resume searching for the end of the headers (byte-at-a-time input must not
        # make the search quadratic).
        self._scan_from = 0
        # Once the headers are complete: their length (blank line included) and the length of
        # the whole message; -1 while still reading headers.
        self._head_len = -1
        self._total = -1

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[FramerEvent]:
        if self.failed:
            return []
        self._buf += data
        events: list[FramerEvent] = []
        while True:
            event = self._next_event()
            if event is None:
                return events
            events.append(event)
            if isinstance(event, FramingError):
                self.failed = True
                self._buf.clear()
                return events

    def _next_event(self) -> FramerEvent | None:
        if self._head_len < 0:
            keepalive = self._skip_crlfs()
            if keepalive is not None or not self._buf:
                return keepalive
            error = self._read_head()
            if error is not None or self._head_len < 0:
                return error
        if len(self._buf) < self._total:
            return None
        message = bytes(self._buf[: self._total])
        del self._buf[: self._total]
        self._head_len = -1
        self._total = -1
        self._scan_from = 0
        return FramedMessage(message)

    def _skip_crlfs(self) -> KeepAlivePong | None:
        """Consume CRLFs found between messages; a double CRLF is a keep-alive ping."""
        buf = self._buf
        while buf[:2] == CRLF:
            if buf[:4] == _PING:
                del buf[:4]
                return KeepAlivePong()
            if len(buf) < 4 and _PING.startswith(bytes(buf)):
                # Maybe the first half of a ping: wait for the rest.
                return None
            del buf[:2]  # a lone CRLF (a pong, or padding before a message): ignore
        return None

    def _read_head(self) -> FramingError | None:
        buf = self._buf
        end = buf.find(_HEADER_END, max(self._scan_from, 0))
        if end < 0:
            if len(buf) > self.max_message_size:
                return FramingError(
                    f"Message headers larger than {self.max_message_size} bytes", 513
                )
            # The terminator may straddle this chunk and the next one.
            self._scan_from = max(len(buf) - 3, 0)
            return None
        head_len = end + 4
        head = bytes(buf[:head_len])
        length = _content_length(head)
        if isinstance(length, str):
            return FramingError(length, 400, head)
        if head_len + length > self.max_message_size:
            return FramingError(
                f"Message of {head_len + length} bytes exceeds the limit of "
                f"{self.max_message_size} bytes",
                513,
                head,
            )
        self._head_len = head_len
        self._total = head_len + length
        return None


def _content_length(head: bytes) -> int | str:
    """The Content-Length of a message head, or the reason it has no usable one.

    RFC 3261 §18.3: on a stream the header is mandatory; the compact form is `l`
    (§7.3.3), names are case-insensitive and folded continuation lines are allowed.
    """
    values: list[bytes] = []
    lines = head.split(CRLF)
    for index in range(1, len(lines)):
        line = lines[index]
        colon = line.find(b":")
        if colon <= 0 or line[:1] in (b" ", b"\t"):
            continue
        name = line[:colon].rstrip(b" \t").lower()
        if name not in _CONTENT_LENGTH_NAMES:
            continue
        value = line[colon + 1 :]
        # Fold continuation lines (RFC 3261 §7.3.1) into the value.
        follow = index + 1
        while follow < len(lines) and lines[follow][:1] in (b" ", b"\t"):
            value += b" " + lines[follow]
            follow += 1
        values.append(value.strip(b" \t"))
    if not values:
        return "Missing Content-Length header (required on stream transports)"
    first = values[0]
    if any(value != first for value in values[1:]):
        return "Conflicting Content-Length headers"
    if not first.isdigit() or len(first) > 10:
        return f"Invalid Content-Length value {first.decode('latin-1')!r}"
    return int(first)
