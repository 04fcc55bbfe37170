"""Message bodies: media types and multipart bodies (RFC 2046 §5.1, RFC 5621), read-only.

The SBC carries bodies byte-for-byte; this module only finds the part it must read (SDP).
"""

from __future__ import annotations

from dataclasses import dataclass

from sbc.sip.errors import ParseError
from sbc.sip.uri import parse_params

MAX_DEPTH = 3  # nested multiparts deeper than this are not searched


@dataclass(frozen=True, slots=True)
class BodyPart:
    media_type: str  # type/subtype, lower case
    params: dict[str, str | None]
    headers: tuple[tuple[str, str], ...]
    payload: bytes


def media_type(content_type: str) -> tuple[str, dict[str, str | None]]:
    """('type/subtype' lower-cased, parameters) of a Content-Type value."""
    mtype, _, params = content_type.partition(";")
    mtype = mtype.strip(" \t").lower()
    if mtype.count("/") != 1:
        raise ParseError(f"Content-Type {content_type[:40]!r} is not type/subtype")
    return mtype, parse_params(params.strip(" \t"), "Content-Type")


def split_multipart(content_type: str, body: bytes) -> list[BodyPart]:
    """The parts of a multipart body (RFC 2046 §5.1.1); ParseError when it is malformed."""
    _, params = media_type(content_type)
    boundary = (params.get("boundary") or "").strip('"')
    if not boundary:
        raise ParseError("multipart body without a boundary parameter")
    delimiter = b"--" + boundary.encode("utf-8", "surrogateescape")
    # The first delimiter may open the body; every later one follows a CRLF.
    chunks = (b"\r\n" + body).split(b"\r\n" + delimiter)
    if len(chunks) < 3:
        raise ParseError("multipart body has no complete part")
    parts: list[BodyPart] = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break  # close-delimiter: the rest is epilogue
        line_end = chunk.find(b"\r\n")
        if line_end < 0:
            raise ParseError("multipart delimiter line not terminated")
        parts.append(_part(chunk[line_end + 2 :]))
    else:
        raise ParseError("multipart body has no closing delimiter")
    return parts


def _part(data: bytes) -> BodyPart:
    if data.startswith(b"\r\n"):
        head, content = b"", data[2:]
    else:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            raise ParseError("multipart part without an empty line after its headers")
        head, content = data[:end], data[end + 4 :]
    headers: list[tuple[str, str]] = []
    for line in head.decode("utf-8", "surrogateescape").split("\r\n") if head else []:
        name, sep, value = line.partition(":")
        if not sep:
            raise ParseError("multipart part header without a colon")
        headers.append((name.strip(" \t"), value.strip(" \t")))
    ctype = next((v for n, v in headers if n.lower() in ("content-type", "c")), "text/plain")
    mtype, params = media_type(ctype)
    return BodyPart(mtype, params, tuple(headers), content)


def find_part(content_type: str | None, body: bytes, wanted: str, depth: int = 0) -> bytes | None:
    """The payload of the first part of media type `wanted` (e.g. application/sdp), looking
    inside multipart bodies; None when there is none."""
    if content_type is None or not body:
        return None
    mtype, _ = media_type(content_type)
    if mtype == wanted:
        return body
    if not mtype.startswith("multipart/") or depth >= MAX_DEPTH:
        return None
    for part in split_multipart(content_type, body):
        ctype = next((v for n, v in part.headers if n.lower() in ("content-type", "c")), None)
        found = find_part(ctype, part.payload, wanted, depth + 1)
        if found is not None:
            return found
    return None
