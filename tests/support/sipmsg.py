"""Build raw SIP requests for tests, and read the few fields tests check in raw replies."""

from __future__ import annotations

import itertools
import re

_counter = itertools.count(1)


def sip_request(
    method: str = "OPTIONS",
    target: tuple[str, int] = ("127.0.0.1", 5060),
    *,
    transport: str = "UDP",
    source: tuple[str, int] = ("127.0.0.1", 5999),
    branch: str | None = None,
    call_id: str | None = None,
    cseq: int = 1,
    cseq_method: str | None = None,
    to_tag: str | None = None,
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
    content_length: bool = True,
    via: bool = True,
) -> bytes:
    """A well-formed request (RFC 3261 §8.1.1) with unique branch and Call-ID by default."""
    n = next(_counter)
    host, port = target
    shown = f"[{host}]" if ":" in host else host
    src_host = f"[{source[0]}]" if ":" in source[0] else source[0]
    branch = branch or f"z9hG4bK-test-{n}-{id(body) & 0xFFFF:x}"
    call_id = call_id or f"test-{n}-{id(target) & 0xFFFFFF:x}@{source[0]}"
    to = f"<sip:sbc@{shown}:{port}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [f"{method} sip:sbc@{shown}:{port} SIP/2.0"]
    if via:
        lines.append(f"Via: SIP/2.0/{transport} {src_host}:{source[1]};branch={branch};rport")
    lines += [
        "Max-Forwards: 70",
        f"From: <sip:test@{src_host}>;tag=from-{n}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
        f"Contact: <sip:test@{src_host}:{source[1]}>",
    ]
    lines += [f"{name}: {value}" for name, value in headers]
    if content_length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def status_of(reply: bytes | None) -> int | None:
    """The status code of a raw response, or None."""
    if not reply:
        return None
    match = re.match(rb"SIP/2\.0 (\d{3}) ", reply)
    return int(match.group(1)) if match else None


def status_line(reply: bytes) -> str:
    return reply.split(b"\r\n", 1)[0].decode("utf-8", "replace")


def header(reply: bytes, name: str) -> str | None:
    """First value of header `name` (case-insensitive, full names only) in a raw message."""
    head = reply.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    for line in head.split("\r\n")[1:]:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == name.lower():
            return value.strip()
    return None
