"""A media worker process: one MediaRelay on uvloop owning a slice of the port range, served
over the media control protocol (requests on stdin, replies and events on stdout). Started by
media.pool as `python -m media.worker --ports 30000-30499 --index 0`; exits when stdin closes."""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import inspect
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from media.control import (
    PROTOCOL_VERSION,
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
    encode,
)
from media.ports import PortPool, PortsExhausted
from media.relay import (
    DEFAULT_CHECK_INTERVAL,
    DtmfHeard,
    MediaRelay,
    MediaRelayError,
    MediaTimeout,
    SessionStats,
)
from media.session import Address, Leg, MediaSessionError
from media.wire import ArgumentError, coerce_call, to_wire
from sbc.log import configure, get_logger

log = get_logger("media.worker")

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_PROTOCOL = 3  # the controller broke the protocol: the pool restarts us with back-off
COUNTERS = ("packets", "bytes", "dropped_source", "dropped_no_remote", "send_errors")


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    ports: tuple[int, int]  # this worker's slice of media.port_range, both ends included
    index: int = 0
    timeout: float | None = 60.0  # no-media timeout; None: never
    hold_timeout: float | None = 3600.0  # the same for streams on hold; None: never
    strict_source: bool = True
    check_interval: float = DEFAULT_CHECK_INTERVAL
    heartbeat: float = 1.0  # seconds between health events
    stats_interval: float = 5.0  # seconds between counter deltas

    def arguments(self) -> list[str]:
        """The command line options that give a worker these settings."""
        options = [
            f"--ports={self.ports[0]}-{self.ports[1]}",
            f"--index={self.index}",
            f"--timeout={'off' if self.timeout is None else self.timeout}",
            f"--hold-timeout={'off' if self.hold_timeout is None else self.hold_timeout}",
            f"--check-interval={self.check_interval}",
            f"--heartbeat={self.heartbeat}",
            f"--stats-interval={self.stats_interval}",
        ]
        if not self.strict_source:
            options.append("--loose-source")
        return options


# ---------------------------------------------------------------------------- the service


class WorkerService:
    """Serves one control channel for one relay. Requests for one session run in the order
    they arrived (a set_remote never overtakes the allocate before it); requests for
    different sessions do not wait for each other."""

    def __init__(
        self, relay: MediaRelay, settings: WorkerSettings, write: Callable[[bytes], None]
    ) -> None:
        self.relay = relay
        self.settings = settings
        self._write = write
        self._decoder = ControlDecoder()
        self._tails: dict[str, asyncio.Task[None]] = {}  # the last request running per session
        self._keys: set[str] = set()
        self._coroutines: dict[str, bool] = {}  # update method -> must it run in a task?
        self._closed = dict.fromkeys(COUNTERS, 0)  # counters of sessions already closed
        self._reported = dict.fromkeys(COUNTERS, 0)
        self.lag = 0.0  # how late the last heartbeat fired: a busy loop shows here first
        relay.on_timeout = self._media_timeout
        relay.on_dtmf = self._dtmf_heard

    def hello(self) -> Hello:
        info = {
            "pid": os.getpid(),
            "index": self.settings.index,
            "ports": list(self.settings.ports),
            "capacity": self.relay.pool.capacity,
        }
        return Hello(PROTOCOL_VERSION, "worker", info)

    def send(self, message: Message) -> None:
        self._write(encode(message))

    def receive(self, data: bytes) -> None:
        """Bytes from the controller. ProtocolError: the channel is broken, stop serving."""
        for message in self._decoder.feed(data):
            if isinstance(message, Request):
                self._dispatch(message)
            elif isinstance(message, BadRequest):
                self.send(message.reply())
            # The decoder checked the controller's hello; nothing else is meant for a worker.

    async def close(self) -> None:
        """Cancel what is running and close every session (its sockets and ports)."""
        for task in list(self._tails.values()):
            task.cancel()
        await asyncio.gather(*self._tails.values(), return_exceptions=True)
        await self.relay.close()

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, request: Request) -> None:
        key = request.key
        tail = None if key is None else self._tails.get(key)
        if key is None or (tail is None and not self._suspends(request)):
            # Nothing of this session is running and the request cannot suspend: answer at
            # once (set_remote, relatch, stats, health) without creating a task.
            self.send(self._answer_now(request))
            return
        task = asyncio.get_running_loop().create_task(self._answer_later(request, tail))
        self._tails[key] = task
        task.add_done_callback(functools.partial(self._settled, key))

    def _suspends(self, request: Request) -> bool:
        if request.command is Command.UPDATE:
            name = request.args["method"]
            known = self._coroutines.get(name)
            if known is None:
                known = self._coroutines[name] = inspect.iscoroutinefunction(
                    getattr(self.relay, name)
                )
            return known
        return request.command in (Command.ALLOCATE, Command.DELETE)

    def _settled(self, key: str, task: asyncio.Task[None]) -> None:
        if self._tails.get(key) is task:
            del self._tails[key]

    def _answer_now(self, request: Request) -> Reply | ErrorReply:
        try:
            return Reply(request.id, self._run_now(request))
        except Exception as exc:
            return self._failure(request, exc)

    async def _answer_later(self, request: Request, tail: asyncio.Task[None] | None) -> None:
        if tail is not None:
            await asyncio.wait([tail])  # the session's previous request goes first
        try:
            reply: Reply | ErrorReply = Reply(request.id, await self._run_later(request))
        except Exception as exc:
            reply = self._failure(request, exc)
        self.send(reply)

    def _failure(self, request: Request, exc: Exception) -> ErrorReply:
        """The error code tells the pool which exception to raise to its caller."""
        if isinstance(exc, PortsExhausted):
            code = ErrorCode.PORTS_EXHAUSTED
        elif isinstance(exc, ArgumentError):
            code = ErrorCode.BAD_REQUEST
        elif isinstance(exc, MediaSessionError):
            code = ErrorCode.SESSION
        elif isinstance(exc, MediaRelayError):
            code = ErrorCode.RELAY
        else:
            log.exception(
                "media.worker_request_failed",
                worker=self.settings.index,
                call=request.key,
                command=str(request.command),
            )
            code = ErrorCode.INTERNAL
        return ErrorReply(request.id, code, str(exc))

    # ------------------------------------------------------------------ commands

    def _run_now(self, request: Request) -> Any:
        if request.command is Command.HEALTH:
            return self.health()
        key = request.args["key"]
        if request.command is Command.STATS:
            return to_wire(self.relay.stats(key))
        method, kwargs = self._update_call(request)
        before = self._raw_endpoints(key)
        result = method(**kwargs)
        return self._update_result(key, before, result)

    async def _run_later(self, request: Request) -> Any:
        key = request.args["key"]
        if request.command is Command.ALLOCATE:
            kwargs = coerce_call(self.relay.open_session, request.args, "allocate")
            await self.relay.open_session(**kwargs)
            self._keys.add(key)
            return {"endpoints": self._endpoints(key)}
        if request.command is Command.DELETE:
            self._keys.discard(key)
            stats = await self.relay.close_session(key)
            self._count_closed(stats)
            return to_wire(stats)
        if request.command is Command.UPDATE:
            method, kwargs = self._update_call(request)
            before = self._raw_endpoints(key)
            result = method(**kwargs)
            if inspect.isawaitable(result):
                result = await result
            return self._update_result(key, before, result)
        return self._run_now(request)  # stats queued behind a running request of its session

    def _update_call(self, request: Request) -> tuple[Callable[..., Any], dict[str, Any]]:
        name = request.args["method"]  # the decoder checked it against UPDATE_METHODS
        method = getattr(self.relay, name)
        arguments = {"key": request.args["key"], **request.args.get("kwargs", {})}
        return method, coerce_call(method, arguments, f"update {name}")

    def _update_result(self, key: str, before: _Ends, result: Any) -> dict[str, Any]:
        # Endpoints travel back only when the call changed them (streams added or
        # disabled), so the pool's cache stays right whatever method a later release adds.
        answer: dict[str, Any] = {"result": to_wire(result)}
        after = self._raw_endpoints(key)
        if after != before and after is not None:
            answer["endpoints"] = _wire_endpoints(after)
        return answer

    def _raw_endpoints(self, key: str) -> _Ends:
        if key not in self.relay:
            return None
        return tuple(self.relay.endpoints(key, leg) for leg in Leg)

    def _endpoints(self, key: str) -> dict[str, Any] | None:
        ends = self._raw_endpoints(key)
        return None if ends is None else _wire_endpoints(ends)

    # ------------------------------------------------------------------ events

    def _media_timeout(self, timeout: MediaTimeout) -> None:
        self.send(Event(EventKind.TIMEOUT, to_wire(timeout)))

    def _dtmf_heard(self, heard: DtmfHeard) -> None:
        self.send(Event(EventKind.DTMF, to_wire(heard)))

    def health(self) -> dict[str, Any]:
        pool = self.relay.pool
        return {
            "pid": os.getpid(),
            "sessions": len(self.relay),
            "streams": pool.in_use // 2,  # a stream holds one pair per leg
            "pairs_in_use": pool.in_use,
            "pairs_free": pool.available,
            "lag": round(self.lag, 6),
        }

    def stats_delta(self) -> dict[str, int]:
        """Counters grown since the last call. Never negative: a session between leaving the
        relay and reaching the closed totals is briefly counted nowhere."""
        totals = dict(self._closed)
        # Plain sums of the sockets' counters: building every session's stats() (quality
        # snapshots included) cost 25 ms per 1,000 sessions, a pause on the data path.
        for name, value in self.relay.counters(COUNTERS).items():
            totals[name] += value
        delta = {}
        for name in COUNTERS:
            grown = totals[name] - self._reported[name]
            if grown > 0:
                delta[name] = grown
                self._reported[name] = totals[name]
        return delta

    def _count_closed(self, stats: SessionStats) -> None:
        for leg in stats.legs:
            for channel in (leg.rtp, leg.rtcp):
                for name in COUNTERS:
                    self._closed[name] += getattr(channel, name)

    async def run_timers(self) -> None:
        """Heartbeats (the pool takes a silent worker for hung) and counter deltas."""
        loop = asyncio.get_running_loop()
        interval = self.settings.heartbeat
        next_stats = loop.time() + self.settings.stats_interval
        while True:
            due = loop.time() + interval
            await asyncio.sleep(interval)
            now = loop.time()
            self.lag = max(0.0, now - due)
            self.send(Event(EventKind.HEALTH, self.health()))
            if now >= next_stats:
                next_stats = now + self.settings.stats_interval
                delta = self.stats_delta()
                if delta:
                    self.send(Event(EventKind.STATS, delta))


_Ends = tuple[list[Address | None], ...] | None  # per leg, in Leg order; None: no session


def _wire_endpoints(ends: tuple[list[Address | None], ...]) -> dict[str, Any]:
    return {leg.value: to_wire(items) for leg, items in zip(Leg, ends, strict=True)}


# ---------------------------------------------------------------------------- the channel


@dataclass(frozen=True, slots=True)
class _Stop:
    reason: str
    code: int


def _finish(stop: asyncio.Future[_Stop], reason: str, code: int = EXIT_OK) -> None:
    if not stop.done():
        stop.set_result(_Stop(reason, code))


class _ChannelReader(asyncio.Protocol):
    def __init__(self, service: WorkerService, stop: asyncio.Future[_Stop]) -> None:
        self.service = service
        self.stop = stop

    def data_received(self, data: bytes) -> None:
        if self.stop.done():
            return
        try:
            self.service.receive(data)
        except ProtocolError as exc:
            log.error(
                "media.worker_protocol_error", worker=self.service.settings.index, error=str(exc)
            )
            _finish(self.stop, f"protocol error: {exc}", EXIT_PROTOCOL)

    def eof_received(self) -> bool | None:
        _finish(self.stop, "control channel closed")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        _finish(self.stop, "control channel closed")


class _ChannelWriter(asyncio.Protocol):
    def __init__(self, stop: asyncio.Future[_Stop]) -> None:
        self.stop = stop

    def connection_lost(self, exc: Exception | None) -> None:
        # The controller closed its reading end: nobody hears us any more.
        _finish(self.stop, "controller stopped reading")


async def serve(settings: WorkerSettings, read_fd: int = 0, write_fd: int = 1) -> int:
    """Relay media and answer the controller until the channel closes; then close every
    socket. Returns the exit code."""
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[_Stop] = loop.create_future()
    relay = MediaRelay(
        PortPool(*settings.ports),
        timeout=settings.timeout,
        hold_timeout=settings.hold_timeout,
        strict_source=settings.strict_source,
        check_interval=settings.check_interval,
    )
    writer, _ = await loop.connect_write_pipe(
        lambda: _ChannelWriter(stop), os.fdopen(write_fd, "wb", buffering=0)
    )

    def write(data: bytes) -> None:
        if not writer.is_closing():
            writer.write(data)

    service = WorkerService(relay, settings, write)
    service.send(service.hello())
    reader, _ = await loop.connect_read_pipe(
        lambda: _ChannelReader(service, stop), os.fdopen(read_fd, "rb", buffering=0)
    )
    loop.add_signal_handler(signal.SIGTERM, _ignored, settings.index, "SIGTERM")
    timers = loop.create_task(service.run_timers())
    log.info("media.worker_started", worker=settings.index, pid=os.getpid(), ports=_span(settings))
    ending = await stop
    log.info(
        "media.worker_stopping", worker=settings.index, reason=ending.reason, sessions=len(relay)
    )
    timers.cancel()
    reader.close()
    await service.close()
    writer.close()
    loop.remove_signal_handler(signal.SIGTERM)
    return ending.code


def _ignored(index: int, name: str) -> None:
    # systemd (KillMode=control-group) and `kill -- -PGID` signal the SBC and its workers at
    # once. The SBC first ends its calls, then closes our channel: that is when we stop. If
    # the SBC itself dies, the channel closes too, so no worker outlives it.
    log.info("media.worker_signal_ignored", worker=index, signal=name, stops_on="channel close")


def _span(settings: WorkerSettings) -> str:
    return f"{settings.ports[0]}-{settings.ports[1]}"


# ---------------------------------------------------------------------------- entry point


def parse_arguments(argv: Sequence[str] | None) -> tuple[WorkerSettings, str, str]:
    parser = argparse.ArgumentParser(
        prog="python -m media.worker",
        description="A media relay worker, controlled over stdin/stdout by the SBC.",
    )
    parser.add_argument("--ports", required=True, type=_port_range, help="LOW-HIGH")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--timeout", type=_seconds_or_off, default=60.0, help="seconds or off")
    parser.add_argument(
        "--hold-timeout", type=_seconds_or_off, default=3600.0, help="seconds or off"
    )
    parser.add_argument("--check-interval", type=float, default=DEFAULT_CHECK_INTERVAL)
    parser.add_argument("--heartbeat", type=float, default=1.0)
    parser.add_argument("--stats-interval", type=float, default=5.0)
    parser.add_argument("--loose-source", action="store_true", help="follow any new source")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-format", default="kv", choices=("kv", "json"))
    args = parser.parse_args(argv)
    settings = WorkerSettings(
        ports=args.ports,
        index=args.index,
        timeout=args.timeout,
        hold_timeout=args.hold_timeout,
        strict_source=not args.loose_source,
        check_interval=args.check_interval,
        heartbeat=args.heartbeat,
        stats_interval=args.stats_interval,
    )
    return settings, args.log_level, args.log_format


def _port_range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    if not sep or not low.isdigit() or not high.isdigit():
        raise argparse.ArgumentTypeError(f"port range {text!r} is not LOW-HIGH, e.g. 30000-30499")
    return int(low), int(high)


def _seconds_or_off(text: str) -> float | None:
    return None if text in ("off", "none") else float(text)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop where installed: 2-3 us per relayed packet instead of ~14 us."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    settings, level, fmt = parse_arguments(argv)
    # Keep the channel on a private descriptor and point fd 1 at stderr: a stray print() in
    # some library would otherwise write into the control stream and break its framing.
    channel_out = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    # Ctrl-C in a terminal reaches the whole process group. The SBC decides when workers
    # stop (it closes the channel after ending the calls), so the keyboard must not;
    # SIGTERM likewise (see _ignored).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure(level, fmt)
    # Sessions are long-lived objects: freeze what start-up made and collect the young
    # generation less often (one full collection over 1,000 sessions took 14 ms, a pause
    # every stream feels).
    gc.freeze()
    gc.set_threshold(20_000, 20, 10)
    started = time.monotonic()
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            code = runner.run(serve(settings, 0, channel_out))
    except Exception:
        log.exception("media.worker_crashed", worker=settings.index)
        return 1
    log.info(
        "media.worker_stopped",
        worker=settings.index,
        code=code,
        ran=round(time.monotonic() - started, 3),
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
