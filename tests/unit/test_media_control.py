"""The media control protocol (sans-I/O): framing across arbitrary chunk boundaries, the hello
and its version, size limits, unknown commands, the update allowlist, and typed values
(enums, addresses, bytes, dataclasses) through JSON and back."""

from __future__ import annotations

import json
import random
import struct
from dataclasses import dataclass
from enum import Enum

import pytest

from media.control import (
    MAX_FRAME,
    PROTOCOL_VERSION,
    UPDATE_METHODS,
    BadRequest,
    Command,
    ControlDecoder,
    ErrorCode,
    ErrorReply,
    Event,
    EventKind,
    Hello,
    Message,
    ProtocolError,
    Reply,
    Request,
    allocate_request,
    encode,
    update_request,
)
from media.relay import ChannelStats, LegStats, MediaRelay, MediaTimeout, SessionStats
from media.session import Address, Leg
from media.wire import ArgumentError, coerce_call, decode_result, from_wire, to_wire

HELLO = Hello(PROTOCOL_VERSION, "worker", {"pid": 42})


def raw_frame(obj: object) -> bytes:
    payload = json.dumps(obj).encode()
    return struct.pack("!I", len(payload)) + payload


def greeted(max_frame: int = MAX_FRAME) -> ControlDecoder:
    decoder = ControlDecoder(max_frame)
    assert decoder.feed(encode(HELLO)) == [HELLO]
    return decoder


SAMPLE: list[Message] = [
    allocate_request(1, "call-1", 2, "127.0.0.1", "127.0.0.2"),
    update_request(2, "call-1", "set_remote", {"stream": 0, "leg": Leg.B, "remote": ("::1", 4000)}),
    Reply(1, {"endpoints": {"a": [["127.0.0.1", 30000]], "b": [None]}}),
    ErrorReply(3, ErrorCode.SESSION, "media session call-1: no stream 7 (it has 2)"),
    Event(EventKind.TIMEOUT, {"session": "call-1", "streams": [0], "timeout": 60.0}),
    Request(4, Command.HEALTH, {}),
]


# ---------------------------------------------------------------------------- framing


def test_messages_survive_any_chunking() -> None:
    stream = encode(HELLO) + b"".join(encode(message) for message in SAMPLE)
    expected = [HELLO, *[as_received(m) for m in SAMPLE]]
    rng = random.Random(7)
    for _ in range(50):
        decoder = ControlDecoder()
        got: list[object] = []
        position = 0
        while position < len(stream):
            size = rng.randint(1, 9)
            got += decoder.feed(stream[position : position + size])
            position += size
        assert got == expected
        assert decoder.buffered == 0


def as_received(message: Message) -> Message:
    """What the peer sees: tuples become lists, enums their values (typed back later)."""
    decoder = greeted()
    (decoded,) = decoder.feed(encode(message))
    assert isinstance(decoded, Hello | Request | Reply | ErrorReply | Event)
    return decoded


def test_byte_at_a_time_and_several_frames_in_one_chunk() -> None:
    decoder = greeted()
    frames = encode(SAMPLE[0]) + encode(SAMPLE[5])
    got = [m for i in range(len(frames)) for m in decoder.feed(frames[i : i + 1])]
    assert [type(m) for m in got] == [Request, Request]
    decoder2 = greeted()
    assert len(decoder2.feed(frames * 3)) == 6


def test_a_partial_frame_waits_for_the_rest() -> None:
    decoder = greeted()
    frame = encode(SAMPLE[0])
    assert decoder.feed(frame[:3]) == []  # not even the whole length
    assert decoder.feed(frame[3:-1]) == []
    assert decoder.buffered == len(frame) - 1
    assert len(decoder.feed(frame[-1:])) == 1


def test_request_fields_come_back() -> None:
    (request,) = greeted().feed(encode(SAMPLE[1]))
    assert isinstance(request, Request)
    assert request.id == 2 and request.command is Command.UPDATE and request.key == "call-1"
    assert request.args == {
        "key": "call-1",
        "method": "set_remote",
        "kwargs": {"stream": 0, "leg": "b", "remote": ["::1", 4000]},
    }


def test_an_oversized_frame_is_refused_on_its_header() -> None:
    decoder = greeted(max_frame=1000)
    # Only the length has arrived: refused without waiting for (or buffering) the payload.
    with pytest.raises(ProtocolError, match="1001 bytes exceeds the 1000-byte limit"):
        decoder.feed(struct.pack("!I", 1001))


def test_an_oversized_message_is_not_sent() -> None:
    huge = Event(EventKind.STATS, {"blob": "x" * MAX_FRAME})
    with pytest.raises(ProtocolError, match="exceeds"):
        encode(huge)


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "holds a list"),
        (b'{"type": "gossip"}', "unknown type 'gossip'"),
        (b'{"type": "reply", "id": -1}', "valid id"),
        (b'{"type": "reply", "id": true}', "valid id"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_malformed_frames_break_the_channel(payload: bytes, error: str) -> None:
    decoder = greeted()
    with pytest.raises(ProtocolError, match=error):
        decoder.feed(struct.pack("!I", len(payload)) + payload)


# ---------------------------------------------------------------------------- hello


def test_hello_must_come_first() -> None:
    with pytest.raises(ProtocolError, match="'request' before its hello"):
        ControlDecoder().feed(encode(SAMPLE[0]))


def test_another_version_is_refused_with_what_to_do() -> None:
    frame = raw_frame({"type": "hello", "version": PROTOCOL_VERSION + 1, "role": "worker"})
    with pytest.raises(ProtocolError, match="version 2, this side speaks 1: run the same"):
        ControlDecoder().feed(frame)


def test_a_second_hello_is_refused() -> None:
    decoder = greeted()
    with pytest.raises(ProtocolError, match="second hello"):
        decoder.feed(encode(HELLO))


def test_hello_is_kept() -> None:
    decoder = greeted()
    assert decoder.peer_hello == HELLO


# ---------------------------------------------------------------------------- requests


def test_unknown_command_is_a_bad_request_the_channel_survives() -> None:
    decoder = greeted()
    frame = raw_frame({"type": "request", "id": 9, "command": "reboot", "args": {}})
    # The request after it, in the same chunk, still decodes: the channel survives.
    bad, after = decoder.feed(frame + encode(SAMPLE[5]))
    assert after == SAMPLE[5]
    assert isinstance(bad, BadRequest)
    assert bad.id == 9 and "unknown command 'reboot'" in bad.message and "allocate" in bad.message
    reply = bad.reply()
    assert reply == ErrorReply(9, ErrorCode.BAD_REQUEST, bad.message)


@pytest.mark.parametrize("method", ["close", "_teardown", "session", "__init__", None])
def test_update_methods_outside_the_allowlist_are_refused_on_arrival(method: object) -> None:
    frame = raw_frame(
        {
            "type": "request",
            "id": 3,
            "command": "update",
            "args": {"key": "call-1", "method": method, "kwargs": {}},
        }
    )
    (bad,) = greeted().feed(frame)
    assert isinstance(bad, BadRequest)
    assert "is not allowed" in bad.message and "set_remote" in bad.message


def test_update_methods_outside_the_allowlist_are_never_sent() -> None:
    with pytest.raises(ValueError, match="update method 'close' is not allowed"):
        update_request(1, "call-1", "close", {})


def test_the_allowlist_names_real_relay_methods() -> None:
    assert UPDATE_METHODS == {
        "set_remote",
        "relatch",
        "add_streams",
        "disable_stream",
        "configure",
        "play_dtmf",
    }
    assert all(callable(getattr(MediaRelay, name)) for name in UPDATE_METHODS)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ({"method": "relatch", "kwargs": {}}, "args.key must name the session"),
        ({"key": "k", "method": "relatch", "kwargs": []}, "kwargs must be an object"),
        ({"key": "k", "method": "relatch", "kwargs": {"key": "x"}}, "goes in args.key"),
    ],
)
def test_malformed_update_args_are_bad_requests(args: dict[str, object], error: str) -> None:
    frame = raw_frame({"type": "request", "id": 5, "command": "update", "args": args})
    (bad,) = greeted().feed(frame)
    assert isinstance(bad, BadRequest) and error in bad.message


def test_an_error_code_from_a_newer_peer_is_still_an_error() -> None:
    frame = raw_frame({"type": "error", "id": 1, "code": "solar_flare", "message": "m"})
    assert greeted().feed(frame) == [ErrorReply(1, ErrorCode.INTERNAL, "m")]


def test_an_event_kind_from_a_newer_peer_is_passed_on_for_the_receiver_to_skip() -> None:
    frame = raw_frame({"type": "event", "kind": "quality", "data": {"mos": 4.2}})
    assert greeted().feed(frame) == [Event("quality", {"mos": 4.2})]


# ---------------------------------------------------------------------------- typed values


class Color(Enum):
    RED = "red"


@dataclass(frozen=True, slots=True)
class Keys:
    suite: str
    key: bytes
    color: Color | None = None


def test_values_go_to_json_and_back_by_type() -> None:
    keys = Keys("AES_CM_128_HMAC_SHA1_80", bytes(range(30)), Color.RED)
    wire = json.loads(json.dumps(to_wire(keys)))
    assert from_wire(wire, Keys) == keys
    assert from_wire(to_wire(("::1", 5004)), Address) == ("::1", 5004)
    assert from_wire(None, Address | None) is None
    assert from_wire([1, 2], tuple[int, ...]) == (1, 2)
    assert from_wire(3, float) == 3.0 and isinstance(from_wire(3, float), float)


@pytest.mark.parametrize(
    ("value", "hint", "error"),
    [
        ("c", Leg, "'c' is not one of 'a', 'b'"),
        (["h", 1, 2], Address, "expected 2 items"),
        (True, int, "expected an integer"),
        ("!!", bytes, "base64"),
        ("1", int | None, "is not a"),
        ({"suite": "x"}, Keys, "key"),
    ],
)
def test_values_of_the_wrong_type_say_where(value: object, hint: object, error: str) -> None:
    with pytest.raises(ArgumentError, match=error):
        from_wire(value, hint, "kwargs")


def test_relay_stats_round_trip() -> None:
    channel = ChannelStats(5, 860, 1, 0, 0, ("127.0.0.20", 4000), True)
    stats = SessionStats(
        "call-1",
        (LegStats(0, Leg.A, ("127.0.0.1", 30000), channel, channel),),
    )
    wire = json.loads(json.dumps(to_wire(stats)))
    assert from_wire(wire, SessionStats) == stats
    assert from_wire(to_wire(MediaTimeout("k", (0, 1), 60.0)), MediaTimeout).streams == (0, 1)


def test_arguments_are_checked_and_typed_from_the_relay_signature() -> None:
    kwargs = coerce_call(
        MediaRelay.set_remote,
        {"key": "k", "stream": 0, "leg": "b", "remote": ["127.0.0.2", 4000]},
        "update set_remote",
    )
    assert kwargs == {"key": "k", "stream": 0, "leg": Leg.B, "remote": ("127.0.0.2", 4000)}
    with pytest.raises(ArgumentError, match="no parameter 'srtp_key'.*remote_rtcp"):
        coerce_call(MediaRelay.set_remote, {"srtp_key": "x"}, "update set_remote")
    with pytest.raises(ArgumentError, match="missing stream, leg, remote"):
        coerce_call(MediaRelay.set_remote, {"key": "k"}, "update set_remote")
    with pytest.raises(ArgumentError, match=r"update relatch\.leg: 'c'"):
        coerce_call(MediaRelay.relatch, {"key": "k", "leg": "c"}, "update relatch")


def test_a_new_parameter_needs_no_protocol_change() -> None:
    class FutureRelay:
        def set_remote(
            self,
            key: str,
            stream: int,
            leg: Leg,
            remote: Address | None,
            srtp: Keys | None = None,
        ) -> None: ...

    keys = Keys("AEAD_AES_128_GCM", b"\x01" * 28)
    request = update_request(
        1, "k", "set_remote", {"stream": 0, "leg": Leg.A, "remote": None, "srtp": keys}
    )
    (decoded,) = greeted().feed(encode(request))
    assert isinstance(decoded, Request)
    arguments = {"key": "k", **decoded.args["kwargs"]}
    kwargs = coerce_call(FutureRelay().set_remote, arguments, "update set_remote")
    assert kwargs["srtp"] == keys and kwargs["leg"] is Leg.A


def test_results_are_typed_by_the_return_annotation() -> None:
    assert decode_result(MediaRelay.add_streams, [1, 2]) == [1, 2]
    assert decode_result(MediaRelay.set_remote, None) is None
