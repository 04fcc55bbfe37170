"""The media relay in N worker processes (signalling side, asyncio): starts the workers on
slices of the port range, picks one per new session, speaks the control protocol to them, and
replaces a worker that dies. Offers the MediaRelay API that sbc.calls uses."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from media.balancing import BalancingPolicy, NoWorkerAvailable, RestartBackoff, WorkerBalancer
from media.control import (
    PROTOCOL_VERSION,
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
from media.plan import LegMedia
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
from media.wire import decode_result, from_wire
from media.worker import WorkerSettings
from sbc.log import get_logger

log = get_logger("media.pool")

_ROOT = Path(__file__).resolve().parents[1]  # where `python -m media.worker` finds `media`
_ENDPOINTS = list[Address | None]


class WorkerLost(MediaRelayError):
    """The worker holding the session died before it answered; the session is gone."""


class WorkerTimeout(MediaRelayError):
    """The worker did not answer in time (overloaded or hung)."""


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One worker as operators and metrics see it."""

    index: int
    pid: int | None
    ports: tuple[int, int]
    alive: bool
    sessions: int
    streams: int
    restarts: int
    health: Mapping[str, Any]  # the last heartbeat: sessions, streams, pairs, loop lag
    returncode: int | None  # how the process ended (None while it runs)


@dataclass(frozen=True, slots=True)
class WorkerSession:
    """What open_session returns: where the session lives and its endpoints per leg."""

    key: str
    worker: int
    endpoints_a: tuple[Address | None, ...]
    endpoints_b: tuple[Address | None, ...]


@dataclass(frozen=True, slots=True)
class _Pending:
    label: str  # the command (or update method) for error messages
    key: str | None
    future: asyncio.Future[Any] | None  # None: nobody waits (set_remote, relatch)
    quiet: bool = False  # an error answer is expected and not worth a warning


class _Worker:
    """One worker process, from spawn to death (a restart makes a new one)."""

    __slots__ = (
        "index",
        "ports",
        "transport",
        "decoder",
        "pending",
        "next_id",
        "sessions",
        "endpoints",
        "allocating",
        "pid",
        "started",
        "last_seen",
        "health",
        "ready",
        "exited",
        "dead",
    )

    def __init__(self, index: int, ports: tuple[int, int], loop: asyncio.AbstractEventLoop):
        self.index = index
        self.ports = ports
        self.transport: asyncio.SubprocessTransport | None = None
        self.decoder = ControlDecoder()
        self.pending: dict[int, _Pending] = {}
        self.next_id = 1
        self.sessions: dict[str, int] = {}  # key -> live streams (pending allocations included)
        self.endpoints: dict[str, dict[Leg, _ENDPOINTS]] = {}
        self.allocating: set[str] = set()
        self.pid: int | None = None
        self.started = loop.time()
        self.last_seen = self.started
        self.health: Mapping[str, Any] = {}
        self.ready: asyncio.Future[None] = loop.create_future()  # its hello arrived
        self.exited: asyncio.Future[int | None] = loop.create_future()
        self.dead: str | None = None  # why it is gone, once it is

    @property
    def name(self) -> str:
        return f"media worker {self.index} (pid {self.pid})"

    def write(self, message: Message) -> None:
        transport = self.transport
        if transport is None:
            raise WorkerLost(f"{self.name} is not running")
        stdin = transport.get_pipe_transport(0)
        if stdin is None or stdin.is_closing():
            raise WorkerLost(f"{self.name}: its control channel is closed")
        stdin.write(encode(message))  # type: ignore[attr-defined]

    def kill(self) -> None:
        """SIGKILL, unless the process has ended already."""
        if self.transport is not None and self.transport.get_returncode() is None:
            try:
                self.transport.kill()
            except ProcessLookupError:
                pass  # gone between the check and the signal


class _WorkerProtocol(asyncio.SubprocessProtocol):
    """Hands a worker's output, channel end and exit to the pool, tagged with the worker."""

    def __init__(self, pool: WorkerPool, worker: _Worker) -> None:
        self.pool = pool
        self.worker = worker

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.worker.transport = transport  # type: ignore[assignment]
        self.worker.pid = self.worker.transport.get_pid()  # type: ignore[union-attr]

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        if fd == 1:
            self.pool._received(self.worker, data if isinstance(data, bytes) else data.encode())

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            # EOF on the channel: the kernel closes it the instant the process dies, before
            # the exit status is collected, so this is the earliest sign of death.
            self.pool._die(self.worker, "control channel closed", kill_after=EXIT_GRACE)

    def process_exited(self) -> None:
        self.pool._exited(self.worker)


LostCallback = Callable[[list[str], str], None]
# A worker closes its channel a moment before it exits (it closes its sockets, logs, tears
# the interpreter down): killing it at once would hide its real exit status.
EXIT_GRACE = 1.0


class WorkerPool:
    """N MediaRelay processes behind the MediaRelay API. Call `await start()` first.

    `on_lost(keys, reason)` is called when a worker dies with the sessions it held (those
    whose allocation had completed); those keys are forgotten at once, so `key in pool` is
    False and the call can end without closing media. `on_timeout` gets MediaTimeout as
    from MediaRelay; `on_started(info)` each time a worker becomes ready (restarts too);
    `on_stats(worker, deltas)` the counter deltas workers send (for metrics)."""

    def __init__(
        self,
        port_range: tuple[int, int],
        *,
        workers: int | str = "auto",
        policy: BalancingPolicy | str = BalancingPolicy.LEAST_STREAMS,
        weights: Sequence[float] | None = None,
        timeout: float | None = 60.0,
        hold_timeout: float | None = 3600.0,
        strict_source: bool = True,
        check_interval: float = DEFAULT_CHECK_INTERVAL,
        heartbeat: float = 1.0,
        hang_after: float | None = None,
        stats_interval: float = 5.0,
        request_timeout: float = 5.0,
        start_timeout: float = 10.0,
        restart_delay: float = 0.2,
        restart_max_delay: float = 30.0,
        log_level: str = "info",
        log_format: str = "kv",
        python: str = sys.executable,
    ) -> None:
        count = _worker_count(workers)
        low, high = port_range
        parts = PortPool(low, high).split(count)
        self.slices = [(part.low, part.high) for part in parts]
        self.capacity = sum(part.capacity for part in parts)  # port pairs
        self._balancer = WorkerBalancer(count, policy, weights)
        for index in range(count):
            self._balancer.set_alive(index, False)  # until its hello arrives
        self._settings = [
            WorkerSettings(
                ports=part,
                index=index,
                timeout=timeout,
                hold_timeout=hold_timeout,
                strict_source=strict_source,
                check_interval=check_interval,
                heartbeat=heartbeat,
                stats_interval=stats_interval,
            )
            for index, part in enumerate(self.slices)
        ]
        self.heartbeat = heartbeat
        # Several missed heartbeats, and never under 3 s: a GC pause or a burst of calls
        # must not get a healthy worker killed.
        self.hang_after = hang_after if hang_after is not None else max(5 * heartbeat, 3.0)
        self.request_timeout = request_timeout
        self.start_timeout = start_timeout
        self._backoff = [RestartBackoff(restart_delay, restart_max_delay) for _ in range(count)]
        self._restarts = [0] * count
        self._log_options = [f"--log-level={log_level}", f"--log-format={log_format}"]
        self._python = python
        self._workers: list[_Worker | None] = [None] * count
        self._owner: dict[str, _Worker] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.TimerHandle | None = None
        self._watch_due = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._closing = False
        self.counters: dict[str, int] = {}  # totals of the workers' stats deltas
        self.on_timeout: Callable[[MediaTimeout], None] | None = None
        self.on_dtmf: Callable[[DtmfHeard], None] | None = None
        self.on_lost: LostCallback | None = None
        self.on_started: Callable[[WorkerInfo], None] | None = None
        self.on_stats: Callable[[int, Mapping[str, int]], None] | None = None

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Start every worker and wait for each to say hello. MediaRelayError (after
        stopping those that did start) when one cannot start."""
        if self._loop is not None:
            raise RuntimeError("WorkerPool.start() called twice")
        self._loop = asyncio.get_running_loop()
        results = await asyncio.gather(
            *(self._start_worker(index) for index in range(len(self._workers))),
            return_exceptions=True,
        )
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            await self.close()
            raise failures[0]
        self._running = True
        self._watch_due = self._loop.time() + self.heartbeat
        self._watchdog = self._loop.call_at(self._watch_due, self._watch)

    async def close(self) -> None:
        """Stop every worker: close its channel (it closes its sockets and exits), wait,
        and kill those that do not exit in time. Sessions still open are dropped."""
        if self._closing:
            return
        self._closing = True
        self._running = False
        if self._watchdog is not None:
            self._watchdog.cancel()
        for timer in self._timers.values():
            timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        workers = [w for w in self._workers if w is not None and w.transport is not None]
        for worker in workers:
            stdin = worker.transport.get_pipe_transport(0) if worker.transport else None
            if stdin is not None:
                stdin.close()  # EOF: the worker's cue to close its sockets and exit
        await _wait_exited(workers, 5.0)
        for worker in workers:
            if not worker.exited.done():
                log.warning("media.worker_killed", worker=worker.index, pid=worker.pid)
                worker.kill()
        await _wait_exited(workers, 2.0)
        for worker in workers:
            self._die(worker, "worker pool closed")
            if worker.transport is not None:
                worker.transport.close()
        self._owner.clear()

    # ------------------------------------------------------------------ the MediaRelay API

    def __contains__(self, key: str) -> bool:
        return key in self._owner

    def __len__(self) -> int:
        return len(self._owner)

    @property
    def pairs_in_use(self) -> int:
        """Port pairs held by sessions (each stream holds one per leg)."""
        return 2 * sum(self._balancer.streams(index) for index in range(len(self._workers)))

    async def open_session(self, key: str, streams: int, host_a: str, host_b: str) -> WorkerSession:
        """Allocate the session on the worker the policy picks; a worker whose ports are
        exhausted passes it to the next. Raises PortsExhausted or MediaRelayError."""
        if key in self._owner:
            raise MediaRelayError(f"media session {key} already exists")
        refused: list[int] = []
        exhausted: PortsExhausted | None = None
        while True:
            try:
                index = self._balancer.choose(streams, refused)
            except NoWorkerAvailable as exc:
                if exhausted is not None:
                    raise exhausted from None
                raise MediaRelayError(f"media session {key}: {exc}") from None
            worker = self._workers[index]
            if worker is None:  # cannot happen: a living index has its worker
                refused.append(index)
                continue
            try:
                return await self._allocate(worker, key, streams, host_a, host_b)
            except PortsExhausted as exc:
                refused.append(index)
                exhausted = exc

    async def add_streams(self, key: str, count: int) -> list[int]:
        result: list[int] = await self.apply(key, "add_streams", count=count)
        return result

    def set_remote(
        self,
        key: str,
        stream: int,
        leg: Leg,
        remote: Address | None,
        remote_rtcp: Address | None = None,
    ) -> None:
        """Sent at once, not awaited: updates of one session reach its worker in order, and
        a failure is logged as media.update_failed (as sbc.calls logs a local one)."""
        self.apply_nowait(
            key, "set_remote", stream=stream, leg=leg, remote=remote, remote_rtcp=remote_rtcp
        )

    def relatch(self, key: str, leg: Leg, stream: int | None = None) -> None:
        self.apply_nowait(key, "relatch", leg=leg, stream=stream)

    def configure(self, key: str, stream: int, leg: Leg, media: LegMedia) -> None:
        self.apply_nowait(key, "configure", stream=stream, leg=leg, media=media)

    def play_dtmf(self, key: str, stream: int, leg: Leg, digit: str, duration_ms: int) -> None:
        self.apply_nowait(
            key, "play_dtmf", stream=stream, leg=leg, digit=digit, duration_ms=duration_ms
        )

    def endpoints(self, key: str, leg: Leg) -> list[Address | None]:
        """From the cache filled by the worker's answers: no round trip."""
        worker = self._owned(key)
        cached = worker.endpoints.get(key)
        if cached is None:
            raise MediaRelayError(f"media session {key} is still being allocated")
        return list(cached[leg])

    async def disable_stream(self, key: str, stream: int) -> None:
        await self.apply(key, "disable_stream", stream=stream)

    async def close_session(self, key: str) -> SessionStats:
        """Forget the session at once (`key in pool` is False), then close it on its worker
        and return the final counters."""
        worker = self._owned(key)
        self._forget(worker, key)
        request = functools.partial(Request, command=Command.DELETE, args={"key": key})
        result = await self._request(worker, request, _Pending("delete", key, None))
        stats: SessionStats = from_wire(result, SessionStats, "delete result")
        return stats

    async def stats(self, key: str) -> SessionStats:
        """The session's counters (a round trip: MediaRelay.stats is synchronous)."""
        worker = self._owned(key)
        request = functools.partial(Request, command=Command.STATS, args={"key": key})
        result = await self._request(worker, request, _Pending("stats", key, None))
        stats: SessionStats = from_wire(result, SessionStats, "stats result")
        return stats

    # ------------------------------------------------------------------ generic updates

    async def apply(self, key: str, method: str, **kwargs: Any) -> Any:
        """Call relay method `method` (one of control.UPDATE_METHODS) on the session's
        worker and return its result, typed by MediaRelay's annotation. New relay
        parameters pass through here without protocol changes."""
        worker = self._owned(key)
        request = functools.partial(update_request, key=key, method=method, kwargs=kwargs)
        result = await self._request(worker, request, _Pending(method, key, None))
        return decode_result(getattr(MediaRelay, method), result.get("result"))

    def apply_nowait(self, key: str, method: str, **kwargs: Any) -> None:
        """Like `apply`, without waiting: errors are logged, not raised."""
        worker = self._owned(key)
        request = functools.partial(update_request, key=key, method=method, kwargs=kwargs)
        self._post(worker, request, _Pending(method, key, None))

    # ------------------------------------------------------------------ inspection

    def worker_of(self, key: str) -> int:
        """The index of the worker relaying the session."""
        return self._owned(key).index

    @property
    def workers(self) -> list[WorkerInfo]:
        return [self._info(index) for index in range(len(self._workers))]

    async def health(self) -> dict[int, Mapping[str, Any]]:
        """Ask every living worker for its health now (a round trip each, in parallel)."""
        living = [w for w in self._workers if w is not None and w.dead is None]
        request = functools.partial(Request, command=Command.HEALTH, args={})
        answers = await asyncio.gather(
            *(self._request(w, request, _Pending("health", None, None)) for w in living),
            return_exceptions=True,
        )
        return {
            worker.index: answer
            for worker, answer in zip(living, answers, strict=True)
            if not isinstance(answer, BaseException)
        }

    def _info(self, index: int) -> WorkerInfo:
        worker = self._workers[index]
        alive = worker is not None and worker.dead is None and self._balancer.alive(index)
        return WorkerInfo(
            index=index,
            pid=None if worker is None else worker.pid,
            ports=self.slices[index],
            alive=alive,
            sessions=0 if worker is None else len(worker.sessions),
            streams=self._balancer.streams(index),
            restarts=self._restarts[index],
            health={} if worker is None else dict(worker.health),
            returncode=_returncode(worker),
        )

    # ------------------------------------------------------------------ sessions

    async def _allocate(
        self, worker: _Worker, key: str, streams: int, host_a: str, host_b: str
    ) -> WorkerSession:
        # Counted before the answer so concurrent allocations spread instead of all
        # landing on the worker that looked least busy.
        self._owner[key] = worker
        worker.sessions[key] = streams
        worker.allocating.add(key)
        self._balancer.add(worker.index, max(streams, 0))
        request = functools.partial(
            allocate_request, key=key, streams=streams, host_a=host_a, host_b=host_b
        )
        try:
            result = await self._request(worker, request, _Pending("allocate", key, None))
        except (asyncio.CancelledError, WorkerTimeout):
            self._forget(worker, key)
            self._abandon(worker, key)
            raise
        except BaseException:
            self._forget(worker, key)
            raise
        finally:
            worker.allocating.discard(key)
        if worker.dead is not None:
            # Died between its answer and now: the session went with it, and on_lost did
            # not name it (it was still allocating), so the caller must hear it here.
            raise WorkerLost(f"{worker.name} died right after allocating {key}: {worker.dead}")
        self._cache_endpoints(worker, key, result["endpoints"])
        ends = worker.endpoints.get(key, {})
        return WorkerSession(
            key, worker.index, tuple(ends.get(Leg.A, ())), tuple(ends.get(Leg.B, ()))
        )

    def _abandon(self, worker: _Worker, key: str) -> None:
        """Nobody waits for this allocation any more, but the worker may still complete it:
        queue a delete behind it so no session is left without a call."""
        if worker.dead is not None:
            return
        request = functools.partial(Request, command=Command.DELETE, args={"key": key})
        try:
            self._post(worker, request, _Pending("delete", key, None, quiet=True))
        except MediaRelayError:
            pass  # the worker died meanwhile: its sessions went with it

    def _owned(self, key: str) -> _Worker:
        try:
            return self._owner[key]
        except KeyError:
            raise MediaRelayError(f"no media session {key}") from None

    def _forget(self, worker: _Worker, key: str) -> None:
        if self._owner.get(key) is worker:
            del self._owner[key]
        streams = worker.sessions.pop(key, 0)
        worker.endpoints.pop(key, None)
        if worker.dead is None and streams > 0:
            self._balancer.remove(worker.index, streams)

    def _cache_endpoints(self, worker: _Worker, key: str, wire: Any) -> None:
        """The endpoints a worker reported; their count of enabled streams is the session's
        weight in the balancing."""
        if self._owner.get(key) is not worker:
            return  # closed or lost meanwhile
        ends = {
            leg: from_wire(wire[leg.value], _ENDPOINTS, f"endpoints.{leg.value}") for leg in Leg
        }
        streams = sum(1 for end in ends[Leg.A] if end is not None)
        previous = worker.sessions.get(key, 0)
        worker.sessions[key] = streams
        worker.endpoints[key] = ends
        if streams > previous:
            self._balancer.add(worker.index, streams - previous)
        elif streams < previous:
            self._balancer.remove(worker.index, previous - streams)

    # ------------------------------------------------------------------ requests

    def _post(self, worker: _Worker, build: Callable[[int], Request], pending: _Pending) -> int:
        if worker.dead is not None:
            raise WorkerLost(f"{worker.name} is gone ({worker.dead})")
        request_id = worker.next_id
        request = build(request_id)  # may refuse (method not allowed) before anything is sent
        worker.write(request)
        worker.next_id += 1
        worker.pending[request_id] = pending
        return request_id

    async def _request(
        self, worker: _Worker, build: Callable[[int], Request], pending: _Pending
    ) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        pending = _Pending(pending.label, pending.key, future, pending.quiet)
        request_id = self._post(worker, build, pending)
        try:
            async with asyncio.timeout(self.request_timeout):
                return await future
        except TimeoutError:
            worker.pending.pop(request_id, None)
            raise WorkerTimeout(
                f"{worker.name} did not answer {pending.label}{_for(pending.key)} within"
                f" {self.request_timeout} s (overloaded or hung; it is killed and restarted"
                " if its heartbeats stop)"
            ) from None

    def _received(self, worker: _Worker, data: bytes) -> None:
        if worker.dead is not None:
            return
        loop = self._loop or asyncio.get_running_loop()
        worker.last_seen = loop.time()
        try:
            messages = worker.decoder.feed(data)
        except ProtocolError as exc:
            log.error("media.worker_protocol_error", worker=worker.index, error=str(exc))
            self._die(worker, f"protocol error: {exc}")
            return
        for message in messages:
            if isinstance(message, Reply | ErrorReply):
                self._settle(worker, message)
            elif isinstance(message, Event):
                self._event(worker, message)
            elif isinstance(message, Hello) and not worker.ready.done():
                worker.ready.set_result(None)

    def _settle(self, worker: _Worker, reply: Reply | ErrorReply) -> None:
        pending = worker.pending.pop(reply.id, None)
        if pending is None:
            return  # answered after we stopped waiting (timeout)
        if isinstance(reply, ErrorReply):
            if pending.future is not None:
                if not pending.future.done():
                    pending.future.set_exception(_error(worker, pending, reply))
            elif not pending.quiet:
                log.warning(
                    "media.update_failed",
                    call=pending.key,
                    worker=worker.index,
                    method=pending.label,
                    error=reply.message,
                )
            return
        result = reply.result
        if pending.key is not None and isinstance(result, dict) and "endpoints" in result:
            if pending.label != "allocate":  # allocate caches them itself, once counted
                self._cache_endpoints(worker, pending.key, result["endpoints"])
        if pending.future is not None and not pending.future.done():
            pending.future.set_result(result)

    def _event(self, worker: _Worker, event: Event) -> None:
        if event.kind == EventKind.TIMEOUT:
            timeout: MediaTimeout = from_wire(event.data, MediaTimeout, "timeout event")
            if self._owner.get(timeout.session) is worker and self.on_timeout is not None:
                self.on_timeout(timeout)
        elif event.kind == EventKind.DTMF:
            heard: DtmfHeard = from_wire(event.data, DtmfHeard, "dtmf event")
            if self._owner.get(heard.session) is worker and self.on_dtmf is not None:
                self.on_dtmf(heard)
        elif event.kind == EventKind.HEALTH:
            worker.health = event.data
        elif event.kind == EventKind.STATS:
            deltas = {name: int(value) for name, value in event.data.items()}
            for name, value in deltas.items():
                self.counters[name] = self.counters.get(name, 0) + value
            if self.on_stats is not None:
                self.on_stats(worker.index, deltas)
        # Other kinds come from a newer worker: skipped.

    # ------------------------------------------------------------------ workers

    async def _start_worker(self, index: int) -> _Worker:
        loop = asyncio.get_running_loop()
        worker = _Worker(index, self.slices[index], loop)
        self._workers[index] = worker
        command = [
            self._python,
            "-m",
            "media.worker",
            *self._settings[index].arguments(),
            *self._log_options,
        ]
        try:
            await loop.subprocess_exec(
                lambda: _WorkerProtocol(self, worker),
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=None,  # the worker logs to the SBC's own stderr
                env=_environment(),
            )
        except OSError as exc:
            self._die(worker, f"cannot run {self._python}: {exc}")
            self._schedule_restart(worker)
            raise MediaRelayError(
                f"media worker {index}: cannot run {self._python}: {exc}"
            ) from None
        try:
            worker.write(Hello(PROTOCOL_VERSION, "controller", {"pid": os.getpid()}))
            async with asyncio.timeout(self.start_timeout):
                await worker.ready
        except (TimeoutError, WorkerLost) as exc:
            reason = worker.dead or f"no hello within {self.start_timeout} s"
            self._die(worker, reason)
            raise MediaRelayError(
                f"media worker {index} (ports {_span(worker.ports)}) did not start: {reason};"
                " its log lines say why"
            ) from exc
        worker.last_seen = loop.time()
        self._balancer.set_alive(index, True)
        log.info(
            "media.worker_ready",
            worker=index,
            pid=worker.pid,
            ports=_span(worker.ports),
            restarts=self._restarts[index],
        )
        if self.on_started is not None:
            self.on_started(self._info(index))
        return worker

    def _die(self, worker: _Worker, reason: str, kill_after: float = 0.0) -> None:
        """Everything that follows a worker's death, once: fail what waits on it, forget
        and report its sessions, stop routing to it, make sure the process is gone
        (`kill_after` seconds from now if it has not exited by then)."""
        if worker.dead is not None:
            return
        worker.dead = reason
        if self._workers[worker.index] is worker:
            self._balancer.set_alive(worker.index, False)
        for pending in worker.pending.values():
            if pending.future is not None and not pending.future.done():
                pending.future.set_exception(
                    WorkerLost(
                        f"{worker.name} died before answering {pending.label}"
                        f"{_for(pending.key)}: {reason}"
                    )
                )
        worker.pending.clear()
        if not worker.ready.done():
            worker.ready.set_exception(WorkerLost(f"{worker.name} died: {reason}"))
            worker.ready.exception()  # retrieved: nobody may be waiting any more
        lost = [key for key in worker.sessions if key not in worker.allocating]
        for key in worker.sessions:
            if self._owner.get(key) is worker:
                del self._owner[key]
        worker.sessions.clear()
        worker.endpoints.clear()
        if self._closing:
            return  # close() gives workers their time to exit and kills the stragglers
        # A worker that closed its channel but runs on would still hold its ports.
        if kill_after > 0:
            (self._loop or asyncio.get_running_loop()).call_later(kill_after, worker.kill)
        else:
            worker.kill()
        returncode = None if worker.transport is None else worker.transport.get_returncode()
        log.warning(
            "media.worker_died",
            worker=worker.index,
            pid=worker.pid,
            reason=reason,
            status=_status(returncode),
            sessions=len(lost),
        )
        if lost and self.on_lost is not None:
            try:
                self.on_lost(lost, f"{worker.name} lost: {reason}")
            except Exception:
                log.exception("media.on_lost_failed", worker=worker.index, sessions=len(lost))

    def _exited(self, worker: _Worker) -> None:
        returncode = None if worker.transport is None else worker.transport.get_returncode()
        if not worker.exited.done():
            worker.exited.set_result(returncode)
        self._die(worker, f"process ended ({_status(returncode)})")
        self._schedule_restart(worker)

    def _schedule_restart(self, worker: _Worker) -> None:
        """The same port slice gets a new process once the old one is gone (its sockets
        closed), after a back-off that grows while it keeps dying young."""
        index = worker.index
        if not self._running or self._closing or self._workers[index] is not worker:
            return
        loop = self._loop or asyncio.get_running_loop()
        backoff = self._backoff[index]
        delay = backoff.delay(loop.time() - worker.started)
        log.warning(
            "media.worker_restarting",
            worker=index,
            status=_status(worker.exited.result() if worker.exited.done() else None),
            delay=delay,
            deaths_in_a_row=backoff.failures,
        )
        self._timers[index] = loop.call_later(delay, self._restart, index)

    def _restart(self, index: int) -> None:
        self._timers.pop(index, None)
        if self._closing:
            return
        self._restarts[index] += 1
        task = asyncio.ensure_future(self._start_worker(index))
        self._tasks.add(task)
        task.add_done_callback(self._restarted)

    def _restarted(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Its exit (or the failed spawn) has already scheduled the next attempt.
            log.error("media.worker_restart_failed", error=str(task.exception()))

    def _watch(self) -> None:
        """Kill a worker whose heartbeats stopped: a stuck loop relays nothing either."""
        loop = self._loop or asyncio.get_running_loop()
        now = loop.time()
        late = now - self._watch_due
        self._watch_due = now + self.heartbeat
        self._watchdog = loop.call_at(self._watch_due, self._watch)
        if late > self.heartbeat:
            # Our own loop was stalled: the heartbeats may sit unread in the pipes. Judge
            # the workers again once we have listened for a while.
            for worker in self._workers:
                if worker is not None:
                    worker.last_seen = max(worker.last_seen, now)
            return
        for worker in self._workers:
            if worker is None or worker.dead is not None or not worker.ready.done():
                continue
            silent = now - worker.last_seen
            if silent > self.hang_after:
                log.error("media.worker_hung", worker=worker.index, pid=worker.pid, silent=silent)
                self._die(worker, f"no heartbeat for {silent:.1f} s (hung); killed")


# ---------------------------------------------------------------------------- helpers


def _worker_count(workers: int | str) -> int:
    if workers == "auto":
        return os.cpu_count() or 1
    if isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1:
        return workers
    raise ValueError(f"media workers: {workers!r} is neither 'auto' nor a number >= 1")


def _error(worker: _Worker, pending: _Pending, reply: ErrorReply) -> Exception:
    """The exception MediaRelay itself would raise, so callers handle both alike."""
    if reply.code is ErrorCode.PORTS_EXHAUSTED:
        return PortsExhausted(f"media worker {worker.index}: {reply.message}")
    if reply.code is ErrorCode.SESSION:
        return MediaSessionError(reply.message)
    if reply.code is ErrorCode.RELAY:
        return MediaRelayError(reply.message)
    if reply.code is ErrorCode.BAD_REQUEST:
        return MediaRelayError(
            f"{worker.name} refused {pending.label}{_for(pending.key)}: {reply.message}"
            " (the SBC and its media worker disagree: are both from the same release?)"
        )
    return MediaRelayError(
        f"{worker.name} failed {pending.label}{_for(pending.key)}: {reply.message}"
        " (the worker's log has the traceback)"
    )


def _returncode(worker: _Worker | None) -> int | None:
    if worker is None or worker.transport is None:
        return None
    return worker.transport.get_returncode()


def _for(key: str | None) -> str:
    return "" if key is None else f" for {key}"


def _span(ports: tuple[int, int]) -> str:
    return f"{ports[0]}-{ports[1]}"


def _status(returncode: int | None) -> str:
    if returncode is None:
        return "exit status not known yet"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
    return env


async def _wait_exited(workers: Sequence[_Worker], timeout: float) -> None:
    waiting = [worker.exited for worker in workers if not worker.exited.done()]
    if waiting:
        await asyncio.wait(waiting, timeout=timeout)
