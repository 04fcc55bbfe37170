"""The media control protocol (sans-I/O) between the signalling process and a media worker:
length-prefixed JSON frames carrying a versioned hello, requests, replies and events. The same
bytes run over a worker's stdin/stdout pipes today and over a QUIC stream to a remote node.

Framing: a 4-byte big-endian length, then that many bytes of UTF-8 JSON holding one object.
Why: the length lets a reader refuse an oversized frame before buffering it and never depends
on the payload's content (unlike newline framing); JSON is in the standard library, readable
in a capture, and carries new keyword arguments without a schema change; control messages are
a few per call, so its cost (a few microseconds) does not matter. Typed values (enums,
addresses, SRTP keys as base64) are converted by media.wire from the relay's annotations.
"""

from __future__ import annotations

import enum
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from media.wire import to_wire

PROTOCOL_VERSION = 1
MAX_FRAME = 1 << 20  # bytes of JSON; a session's stats are ~1 KiB, so this is only a guard
_LENGTH = struct.Struct("!I")


class ProtocolError(Exception):
    """The peer broke the protocol (oversized or malformed frame, wrong version): the channel
    cannot be trusted any more and must be closed."""


class Command(enum.StrEnum):
    ALLOCATE = "allocate"  # open a session: streams and the two leg hosts -> endpoints per leg
    UPDATE = "update"  # call one relay method from UPDATE_METHODS on a session
    DELETE = "delete"  # close a session -> its final stats
    STATS = "stats"  # a session's counters now
    HEALTH = "health"  # the worker's load and liveness


# The relay methods a controller may call through `update`. Listed, not discovered: a worker
# must never run an arbitrary method (close, or a private one) because a peer named it.
UPDATE_METHODS = frozenset(
    {"set_remote", "relatch", "add_streams", "disable_stream", "configure", "play_dtmf"}
)
# Commands whose args name a session with "key"; requests for one key run in order.
KEYED_COMMANDS = frozenset({Command.ALLOCATE, Command.UPDATE, Command.DELETE, Command.STATS})


class ErrorCode(enum.StrEnum):
    BAD_REQUEST = "bad_request"  # the controller sent something the worker does not accept
    PORTS_EXHAUSTED = "ports_exhausted"  # the worker's port slice is full
    SESSION = "session"  # the session refused it (unknown or disabled stream, released)
    RELAY = "relay"  # the relay refused it (no such session, bind failure)
    INTERNAL = "internal"  # a bug in the worker; its log has the traceback


class EventKind(enum.StrEnum):
    TIMEOUT = "timeout"  # a session's streams carried no media for the timeout (MediaTimeout)
    HEALTH = "health"  # periodic heartbeat with the worker's load
    STATS = "stats"  # counter deltas since the last stats event
    DTMF = "dtmf"  # a digit heard for a side that takes DTMF as SIP INFO (DtmfHeard)


# ---------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Hello:
    """The first message each side sends. `role` is "worker" or "controller"; `info` says who
    is speaking (pid, port slice) for logs."""

    version: int
    role: str
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    command: Command
    args: Mapping[str, Any]

    @property
    def key(self) -> str | None:
        """The session this request is about (None for health)."""
        key = self.args.get("key")
        return key if isinstance(key, str) else None


@dataclass(frozen=True, slots=True)
class Reply:
    id: int
    result: Any = None


@dataclass(frozen=True, slots=True)
class ErrorReply:
    id: int
    code: ErrorCode
    message: str


@dataclass(frozen=True, slots=True)
class Event:
    """Unsolicited, from the worker. `kind` stays a plain string so that a controller skips
    kinds a newer worker added instead of failing on them."""

    kind: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BadRequest:
    """A well-framed request the decoder refused (unknown command, method not allowed): the
    channel stays usable and the receiver answers `reply()`."""

    id: int
    message: str

    def reply(self) -> ErrorReply:
        return ErrorReply(self.id, ErrorCode.BAD_REQUEST, self.message)


Message = Hello | Request | Reply | ErrorReply | Event


def allocate_request(
    id: int, key: str, streams: int, host_a: str, host_b: str, **extra: Any
) -> Request:
    """`extra` goes to MediaRelay.open_session as keyword arguments (future SRTP settings)."""
    args = {"key": key, "streams": streams, "host_a": host_a, "host_b": host_b, **extra}
    return Request(id, Command.ALLOCATE, args)


def update_request(id: int, key: str, method: str, kwargs: Mapping[str, Any]) -> Request:
    """A call of relay method `method` on session `key`; refused here, before it is sent,
    when the method is not in UPDATE_METHODS."""
    problem = _update_problem(method, kwargs)
    if problem is not None:
        raise ValueError(problem)
    return Request(id, Command.UPDATE, {"key": key, "method": method, "kwargs": dict(kwargs)})


# ---------------------------------------------------------------------------- encoding


def encode(message: Message) -> bytes:
    """One frame. Enums, tuples, bytes and dataclasses inside are turned into JSON values."""
    payload = json.dumps(
        _to_object(message), separators=(",", ":"), allow_nan=False, ensure_ascii=False
    ).encode()
    if len(payload) > MAX_FRAME:
        raise ProtocolError(
            f"media control frame of {len(payload)} bytes exceeds the {MAX_FRAME}-byte limit"
        )
    return _LENGTH.pack(len(payload)) + payload


def _to_object(message: Message) -> dict[str, Any]:
    if isinstance(message, Request):
        return {
            "type": "request",
            "id": message.id,
            "command": str(message.command),
            "args": to_wire(message.args),
        }
    if isinstance(message, Reply):
        return {"type": "reply", "id": message.id, "result": to_wire(message.result)}
    if isinstance(message, ErrorReply):
        return {
            "type": "error",
            "id": message.id,
            "code": str(message.code),
            "message": message.message,
        }
    if isinstance(message, Event):
        return {"type": "event", "kind": message.kind, "data": to_wire(message.data)}
    return {
        "type": "hello",
        "version": message.version,
        "role": message.role,
        "info": to_wire(message.info),
    }


# ---------------------------------------------------------------------------- decoding


class ControlDecoder:
    """Turns byte chunks, cut anywhere, into messages. The first message must be a Hello of
    our version; it is kept in `peer_hello` and returned like the others."""

    __slots__ = ("max_frame", "peer_hello", "_buffer")

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self.peer_hello: Hello | None = None
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame waiting for the rest."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Message | BadRequest]:
        """The messages completed by `data`; ProtocolError when the stream is broken."""
        buffer = self._buffer
        buffer += data
        messages: list[Message | BadRequest] = []
        offset = 0
        while len(buffer) - offset >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer, offset)
            if length > self.max_frame:
                # Refused on the header alone: the peer must not make us buffer it.
                raise ProtocolError(
                    f"media control frame of {length} bytes exceeds the {self.max_frame}-byte"
                    " limit (a peer of another protocol, or a corrupted stream)"
                )
            end = offset + _LENGTH.size + length
            if len(buffer) < end:
                break
            payload = bytes(buffer[offset + _LENGTH.size : end])
            offset = end
            messages.append(self._message(payload))
        if offset:
            del buffer[:offset]
        return messages

    def _message(self, payload: bytes) -> Message | BadRequest:
        try:
            obj = json.loads(payload)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ProtocolError(f"media control frame is not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise ProtocolError(f"media control frame holds a {type(obj).__name__}, not an object")
        message = _parse(obj)
        if self.peer_hello is None:
            if not isinstance(message, Hello):
                raise ProtocolError(f"media control peer sent '{obj.get('type')}' before its hello")
            self.peer_hello = message
        elif isinstance(message, Hello):
            raise ProtocolError("media control peer sent a second hello")
        return message


def _parse(obj: dict[str, Any]) -> Message | BadRequest:
    kind = obj.get("type")
    if kind == "request":
        return _parse_request(obj)
    if kind == "reply":
        return Reply(_id(obj), obj.get("result"))
    if kind == "error":
        return _parse_error(obj)
    if kind == "event":
        return Event(_text(obj, "kind"), _mapping(obj, "data"))
    if kind == "hello":
        return _parse_hello(obj)
    raise ProtocolError(f"media control message of unknown type {kind!r}")


def _parse_hello(obj: dict[str, Any]) -> Hello:
    version = obj.get("version")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"media control peer speaks protocol version {version!r}, this side speaks"
            f" {PROTOCOL_VERSION}: run the same SBC release on the signalling and media nodes"
        )
    return Hello(PROTOCOL_VERSION, _text(obj, "role"), _mapping(obj, "info"))


def _parse_request(obj: dict[str, Any]) -> Request | BadRequest:
    request_id = _id(obj)
    name = obj.get("command")
    try:
        command = Command(str(name))
    except ValueError:
        known = ", ".join(c.value for c in Command)
        return BadRequest(request_id, f"unknown command {name!r} (known: {known})")
    args = obj.get("args", {})
    if not isinstance(args, dict):
        return BadRequest(request_id, f"{command}: args must be an object")
    if command in KEYED_COMMANDS and not isinstance(args.get("key"), str):
        return BadRequest(request_id, f"{command}: args.key must name the session")
    if command is Command.UPDATE:
        problem = _update_problem(args.get("method"), args.get("kwargs", {}))
        if problem is not None:
            return BadRequest(request_id, problem)
    return Request(request_id, command, args)


def _update_problem(method: Any, kwargs: Any) -> str | None:
    if method not in UPDATE_METHODS:
        allowed = ", ".join(sorted(UPDATE_METHODS))
        return f"update method {method!r} is not allowed (allowed: {allowed})"
    if not isinstance(kwargs, Mapping):
        return f"update {method}: kwargs must be an object"
    if "key" in kwargs:
        return f"update {method}: the session key goes in args.key, not in kwargs"
    return None


def _parse_error(obj: dict[str, Any]) -> ErrorReply:
    try:
        code = ErrorCode(str(obj.get("code")))
    except ValueError:
        code = ErrorCode.INTERNAL  # a code a newer peer added: still an error
    return ErrorReply(_id(obj), code, str(obj.get("message", "")))


def _id(obj: dict[str, Any]) -> int:
    value = obj.get("id")
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"media control {obj.get('type')} without a valid id: {value!r}")
    return value


def _text(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise ProtocolError(f"media control {obj.get('type')}: {name} must be a string")
    return value


def _mapping(obj: dict[str, Any], name: str) -> Mapping[str, Any]:
    value = obj.get(name, {})
    if not isinstance(value, dict):
        raise ProtocolError(f"media control {obj.get('type')}: {name} must be an object")
    return value
