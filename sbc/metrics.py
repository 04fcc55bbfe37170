"""Prometheus metrics for the SBC, on a registry of its own.

Two kinds of series live here:

* event counters and histograms, moved by the signalling code when something happens
  (a SIP message, a call ending, a worker's counter deltas). Their label children are
  looked up once and cached in dicts, so an event costs a dict lookup and a locked add;
* live state (active calls, trunk and registration health, blocks, media workers) read
  from callables at scrape time, so nothing is counted twice or left to drift when a code
  path forgets a decrement.

Media packets are never counted here: workers count them and send deltas every few
seconds (`media_deltas`, the WorkerPool's `on_stats`).

The HTTP exposition (`start_http`) serves from prometheus_client's daemon thread. The live
sources read the event loop's dicts, so once `bind_loop` is called every scrape runs them
on the loop thread (one hop per scrape) instead of racing the loop from the HTTP thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sbc.sip.message import Message, Request, Response

# Methods we count under their own name; anything else a peer sends (scanners invent
# methods) is counted as OTHER, so a label value can never come from the wire unchecked.
SIP_METHODS = frozenset(
    {
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "UPDATE",
        "INFO",
        "REFER",
        "NOTIFY",
        "SUBSCRIBE",
        "MESSAGE",
        "PUBLISH",
    }
)
OTHER = "OTHER"
_STATUS_CLASSES = ("other", "1xx", "2xx", "3xx", "4xx", "5xx", "6xx")

# Post-dial delay and answer time: a LAN PBX answers 100 in ~10 ms, a mobile callee rings
# for up to ~30 s before a carrier gives up; the buckets are dense where SLAs sit (< 3 s).
SETUP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0)
# Answered call durations: short (failed IVR, wrong number) to long conference calls.
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
# MOS 1 (unusable) .. 4.5 (G.711 ceiling of the E-model); 3.6 and 4.0 are the usual alert
# and "toll quality" lines.
MOS_BUCKETS = (1.0, 1.5, 2.0, 2.5, 3.0, 3.3, 3.6, 3.8, 4.0, 4.2, 4.4, 4.5)
# Loss above 1% is audible, 5% is bad, beyond 20% the stream is effectively broken.
LOSS_BUCKETS = (0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
# Interarrival jitter (RFC 3550): 20-30 ms is what jitter buffers absorb without loss.
JITTER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5)

# Worker counter names (media.worker.COUNTERS) -> (metric, extra label value).
_MEDIA_COUNTERS = {
    "packets": ("packets", ""),
    "bytes": ("bytes", ""),
    "dropped_source": ("dropped", "source"),
    "dropped_no_remote": ("dropped", "no_remote"),
    "send_errors": ("send_errors", ""),
}

# SignallingService.stats() keys -> gauge name and help. Unknown keys are skipped so a new
# stat never renames or adds a series behind the dashboards' back.
_SERVICE_GAUGES = {
    "calls": ("sbc_calls_live", "Live calls (every state, from the call table)."),
    "call_dialogs": ("sbc_call_dialogs_live", "Dialogs filed under live calls."),
    "transactions": ("sbc_sip_transactions_live", "SIP transactions in the layer."),
    "media_sessions": ("sbc_media_sessions_active", "Media relay sessions open."),
    "media_ports_in_use": ("sbc_media_ports_in_use", "Media relay ports allocated."),
}

# trunks.registration.RegistrationStatus values: every state gets a 0/1 series
# (Prometheus state-set style), so `== 0` alerts work when a state is left.
REGISTRATION_STATES = (
    "registering",
    "registered",
    "backoff",
    "failed",
    "unregistering",
    "unregistered",
)
_SCRAPE_HOP_TIMEOUT = 2.0  # seconds a scrape waits for the event loop before giving up


class CdrLike(Protocol):
    """What `call_ended` reads of sbc.b2bua.Cdr."""

    @property
    def direction(self) -> str: ...
    @property
    def status(self) -> int: ...
    @property
    def start(self) -> float: ...
    @property
    def answer(self) -> float | None: ...
    @property
    def end(self) -> float: ...


class BlockLike(Protocol):
    """What the active-blocks collector reads of sbc.policy.guard.BlockInfo."""

    @property
    def kind(self) -> Any: ...  # a StrEnum (str() is its value) or a str
    @property
    def reason(self) -> Any: ...


class WorkerLike(Protocol):
    """What the worker collector reads of media.pool.WorkerInfo."""

    @property
    def index(self) -> int: ...
    @property
    def alive(self) -> bool: ...
    @property
    def sessions(self) -> int: ...
    @property
    def streams(self) -> int: ...
    @property
    def restarts(self) -> int: ...


@dataclass(slots=True)
class _Sources:
    """The live-state callables; each None until the service hands it over."""

    service: Callable[[], Mapping[str, int]] | None = None
    calls: Callable[[], Mapping[tuple[str, str], int]] | None = None
    trunks: Callable[[], Mapping[str, str]] | None = None
    blocks: Callable[[], Iterable[BlockLike]] | None = None
    workers: Callable[[], Iterable[WorkerLike]] | None = None
    transport: Callable[[], Mapping[str, int]] | None = None
    loop: asyncio.AbstractEventLoop | None = None


@dataclass(slots=True)
class _Snapshot:
    """Live state copied in one go (on the loop thread when bound), then turned into
    metric families off the loop."""

    service: dict[str, int] = field(default_factory=dict)
    calls: dict[tuple[str, str], int] = field(default_factory=dict)
    trunks: dict[str, str] = field(default_factory=dict)
    blocks: dict[tuple[str, str], int] = field(default_factory=dict)
    workers: list[tuple[str, bool, int, int, int]] = field(default_factory=list)
    transport: dict[str, int] = field(default_factory=dict)


class Metrics:
    """Every SBC metric, on a private CollectorRegistry (tests build as many as they like).

    Event methods are called on the event loop thread; the collectors may be scraped
    from any thread."""

    def __init__(self, *, process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._sources = _Sources()
        self._http: tuple[WSGIServer, threading.Thread] | None = None
        self._build_signalling()
        self._build_calls()
        self._build_media()
        self.registry.register(_LiveCollector(self._sources))
        if process:
            # CPU seconds, resident memory, open fds of this (the main) process.
            ProcessCollector(registry=self.registry)
        # Label children cached per label tuple: `.labels()` validates and locks each time.
        self._sip_in: dict[tuple[str | int, str], Counter] = {}
        self._sip_out: dict[tuple[str | int, str], Counter] = {}
        self._children: dict[tuple[Any, ...], Any] = {}

    # ------------------------------------------------------------------ metric families

    def _build_signalling(self) -> None:
        registry = self.registry
        self._sip_messages = Counter(
            "sbc_sip_messages",
            "SIP messages by direction, method (requests) or status class (responses).",
            ["direction", "method", "transport"],
            registry=registry,
        )
        self._parse_errors = Counter(
            "sbc_sip_parse_errors",
            "Datagrams or stream messages that did not parse as SIP.",
            ["transport"],
            registry=registry,
        )
        self._txn_failures = Counter(
            "sbc_sip_transaction_failures",
            "Client transactions ended by timeout (Timer B/F) or transport error.",
            ["method", "kind"],
            registry=registry,
        )
        self._rejections = Counter(
            "sbc_admission_rejections",
            "New calls refused by an admission or fraud rule.",
            ["rule"],
            registry=registry,
        )
        self._blocks = Counter(
            "sbc_security_blocks",
            "Sources or usernames blocked by the edge guard.",
            ["kind", "reason"],
            registry=registry,
        )

    def _build_calls(self) -> None:
        registry = self.registry
        self._attempts = Counter(
            "sbc_call_attempts",
            "Calls admitted and started (INVITE routed and through admission).",
            ["direction"],
            registry=registry,
        )
        self._outcomes = Counter(
            "sbc_call_outcomes",
            "Ended calls by the final status leg A saw.",
            ["direction", "status_class"],
            registry=registry,
        )
        self._setup = Histogram(
            "sbc_call_setup_seconds",
            "INVITE received to leg B's first 18x (stage=progress) or to its 2xx (answer).",
            ["direction", "stage"],
            buckets=SETUP_BUCKETS,
            registry=registry,
        )
        self._duration = Histogram(
            "sbc_call_duration_seconds",
            "Answered calls: answer to end.",
            ["direction"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )

    def _build_media(self) -> None:
        registry = self.registry
        self._media_packets = Counter(
            "sbc_media_packets",
            "RTP/RTCP packets relayed, from the workers' counter deltas.",
            ["worker"],
            registry=registry,
        )
        self._media_bytes = Counter(
            "sbc_media_bytes",
            "RTP/RTCP bytes relayed, from the workers' counter deltas.",
            ["worker"],
            registry=registry,
        )
        self._media_dropped = Counter(
            "sbc_media_packets_dropped",
            "Media packets dropped: from an unexpected source, or with no remote to send to.",
            ["worker", "reason"],
            registry=registry,
        )
        self._media_send_errors = Counter(
            "sbc_media_send_errors",
            "Media packets the relay failed to send.",
            ["worker"],
            registry=registry,
        )
        self._loss = Histogram(
            "sbc_media_packet_loss_ratio",
            "Per stream direction at teardown: fraction of expected RTP packets lost.",
            buckets=LOSS_BUCKETS,
            registry=registry,
        )
        self._jitter = Histogram(
            "sbc_media_jitter_seconds",
            "Per stream direction at teardown: RFC 3550 interarrival jitter.",
            buckets=JITTER_BUCKETS,
            registry=registry,
        )
        self._mos = Histogram(
            "sbc_media_mos",
            "Per stream direction at teardown: estimated MOS (simplified E-model).",
            buckets=MOS_BUCKETS,
            registry=registry,
        )

    # ------------------------------------------------------------------ live sources

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run the live sources on `loop` when scraped from another thread."""
        self._sources.loop = loop

    def watch_service(self, source: Callable[[], Mapping[str, int]]) -> None:
        """SignallingService.stats: live calls, dialogs, transactions, media sessions/ports."""
        self._sources.service = source

    def watch_calls(self, source: Callable[[], Mapping[tuple[str, str], int]]) -> None:
        """Live calls per (trunk, direction): sbc_calls_active."""
        self._sources.calls = source

    def watch_trunks(self, source: Callable[[], Mapping[str, str]]) -> None:
        """TrunkService.states: trunk and gateway health, registration states."""
        self._sources.trunks = source

    def watch_blocks(self, source: Callable[[], Iterable[BlockLike]]) -> None:
        """The guard's live blocks (e.g. `lambda: guard.blocks(now())`)."""
        self._sources.blocks = source

    def watch_workers(self, source: Callable[[], Iterable[WorkerLike]]) -> None:
        """WorkerPool.workers: media worker up, sessions, streams, restarts."""
        self._sources.workers = source

    def watch_transport(self, source: Callable[[], Mapping[str, int]]) -> None:
        """TransportCounters.as_dict: what the connection limits refused or closed."""
        self._sources.transport = source

    # ------------------------------------------------------------------ signalling events

    def message_in(self, message: Request | Response, transport: str) -> None:
        """A parsed SIP message arrived (once per message: keep it a lookup and an add)."""
        self._count_message(self._sip_in, "in", message, transport)

    def message_out(self, message: Message, transport: str) -> None:
        """A SIP message was handed to the transport (retransmissions included)."""
        self._count_message(self._sip_out, "out", message, transport)

    def _count_message(
        self,
        cache: dict[tuple[str | int, str], Counter],
        direction: str,
        message: Message,
        transport: str,
    ) -> None:
        # Responses are keyed by status // 100 (an int: no string built per message).
        if isinstance(message, Request):
            kind: str | int = message.method
        elif isinstance(message, Response):
            kind = message.status // 100
        else:
            return
        child = cache.get((kind, transport))
        if child is None:
            child = self._message_child(cache, direction, kind, transport)
        child.inc()

    def _message_child(
        self,
        cache: dict[tuple[str | int, str], Counter],
        direction: str,
        kind: str | int,
        transport: str,
    ) -> Counter:
        label = _method_label(kind) if isinstance(kind, str) else _status_class(kind * 100)
        child = self._sip_messages.labels(direction, label, transport)
        # Only well-known keys are cached: an invented method must not grow the dict.
        if label != OTHER and label != "other":
            cache[(kind, transport)] = child
        return child

    def parse_error(self, transport: str) -> None:
        self._child(self._parse_errors, transport).inc()

    def transaction_failed(self, method: str, kind: str) -> None:
        """kind: 'timeout' (TimedOut) or 'transport' (TransportFailed)."""
        self._child(self._txn_failures, _method_label(method), kind).inc()

    def admission_rejected(self, rule: str) -> None:
        self._child(self._rejections, rule).inc()

    def security_blocked(self, kind: str, reason: str) -> None:
        self._child(self._blocks, str(kind), str(reason)).inc()

    # ------------------------------------------------------------------ call events

    def call_attempt(self, direction: str) -> None:
        self._child(self._attempts, direction).inc()

    def call_progress(self, direction: str, seconds: float) -> None:
        """Leg B's first 18x, `seconds` after the INVITE arrived (post-dial delay)."""
        self._child(self._setup, direction, "progress").observe(seconds)

    def call_answered(self, direction: str, seconds: float) -> None:
        """The call's 2xx, `seconds` after the INVITE arrived."""
        self._child(self._setup, direction, "answer").observe(seconds)

    def call_ended(self, cdr: CdrLike) -> None:
        """Outcome by status class; duration for answered calls."""
        self._child(self._outcomes, cdr.direction, _status_class(cdr.status)).inc()
        if cdr.answer is not None:
            self._child(self._duration, cdr.direction).observe(max(0.0, cdr.end - cdr.answer))

    # ------------------------------------------------------------------ media events

    def media_deltas(self, worker: int, deltas: Mapping[str, int]) -> None:
        """WorkerPool.on_stats: counters grown in `worker` since its last report."""
        name = str(worker)
        for counter, value in deltas.items():
            known = _MEDIA_COUNTERS.get(counter)
            if known is None or value <= 0:
                continue  # a newer worker's counter, or nothing grew
            metric, reason = known
            self._media_child(metric, name, reason).inc(value)

    def _media_child(self, metric: str, worker: str, reason: str) -> Any:
        if metric == "packets":
            return self._child(self._media_packets, worker)
        if metric == "bytes":
            return self._child(self._media_bytes, worker)
        if metric == "dropped":
            return self._child(self._media_dropped, worker, reason)
        return self._child(self._media_send_errors, worker)

    def media_quality(self, report: Mapping[str, Any]) -> None:
        """One stream direction at teardown (QualityReport.to_dict()). Directions that
        carried no RTP are skipped: they would pile up at loss 0 and hide real loss."""
        if not report.get("packets"):
            return
        loss = report.get("loss_fraction")
        if loss is not None:
            # Duplicates make `lost` negative; the ratio is clamped to its meaning.
            self._loss.observe(min(1.0, max(0.0, float(loss))))
        jitter = report.get("jitter_ms")
        if jitter is not None:
            self._jitter.observe(float(jitter) / 1000.0)
        mos = report.get("mos")
        if mos is not None:
            self._mos.observe(float(mos))

    # ------------------------------------------------------------------ exposition

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    def start_http(self, host: str, port: int) -> int:
        """Serve /metrics on (host, port) from a daemon thread; returns the bound port
        (useful with port 0). `host` must be the configured address: prometheus_client
        defaults to 0.0.0.0, which would publish call and security data on every
        interface, the SIP-facing ones included."""
        if self._http is not None:
            raise RuntimeError("metrics HTTP server already running")
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = (server, thread)
        return int(server.server_port)

    def stop_http(self) -> None:
        if self._http is None:
            return
        server, thread = self._http
        self._http = None
        server.shutdown()
        server.server_close()
        thread.join(timeout=5.0)

    def metric_names(self) -> set[str]:
        """Every series name PromQL can select here (counters with _total, histograms
        with _bucket/_sum/_count), for checking dashboards and alert rules."""
        names: set[str] = set()
        for family in self.registry.collect():
            names.update(_sample_names(family))
        return names

    # ------------------------------------------------------------------ helpers

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = metric.labels(*labels)
            self._children[key] = child
        return child


class _LiveCollector(Collector):
    """Families computed from the live-state callables at each scrape."""

    def __init__(self, sources: _Sources) -> None:
        self._sources = sources

    def describe(self) -> Iterable[Metric]:
        # Families without samples: registration checks names, metric_names lists them.
        return list(_families(_Snapshot()))

    def collect(self) -> Iterable[Metric]:
        return list(_families(self._snapshot()))

    def _snapshot(self) -> _Snapshot:
        loop = self._sources.loop
        if loop is None or not loop.is_running() or _on_loop(loop):
            return _read(self._sources)
        done: concurrent.futures.Future[_Snapshot] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(_read(self._sources))
            except BaseException as exc:  # handed to the scraping thread
                done.set_exception(exc)

        loop.call_soon_threadsafe(run)
        try:
            return done.result(timeout=_SCRAPE_HOP_TIMEOUT)
        except concurrent.futures.TimeoutError:
            # A stalled loop: answer the event counters without live state rather than
            # hang the scrape (the missing series are the alert).
            return _Snapshot()


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _read(sources: _Sources) -> _Snapshot:
    """Copy the live state into plain data (runs on the loop thread when bound)."""
    snap = _Snapshot()
    if sources.service is not None:
        snap.service = dict(sources.service())
    if sources.calls is not None:
        snap.calls = dict(sources.calls())
    if sources.trunks is not None:
        snap.trunks = dict(sources.trunks())
    if sources.blocks is not None:
        for block in sources.blocks():
            key = (str(block.kind), str(block.reason))
            snap.blocks[key] = snap.blocks.get(key, 0) + 1
    if sources.workers is not None:
        snap.workers = [
            (str(w.index), w.alive, w.sessions, w.streams, w.restarts) for w in sources.workers()
        ]
    if sources.transport is not None:
        snap.transport = dict(sources.transport())
    return snap


def _families(snap: _Snapshot) -> Iterator[Metric]:
    yield from _service_families(snap.service)
    active = GaugeMetricFamily(
        "sbc_calls_active", "Live calls per trunk and direction.", labels=["trunk", "direction"]
    )
    for (trunk, direction), count in sorted(snap.calls.items()):
        active.add_metric([trunk, direction], count)
    yield active
    yield from _trunk_families(snap.trunks)
    blocks = GaugeMetricFamily(
        "sbc_security_blocks_active",
        "Blocks and username locks in force now.",
        labels=["kind", "reason"],
    )
    for (kind, reason), count in sorted(snap.blocks.items()):
        blocks.add_metric([kind, reason], count)
    yield blocks
    yield from _worker_families(snap.workers)
    transport = CounterMetricFamily(
        "sbc_transport_events",
        "Connections refused or closed by the transport limits, by event.",
        labels=["event"],
    )
    for event, count in sorted(snap.transport.items()):
        transport.add_metric([event], count)
    yield transport


def _service_families(stats: Mapping[str, int]) -> Iterator[Metric]:
    for key, (name, help_text) in _SERVICE_GAUGES.items():
        family = GaugeMetricFamily(name, help_text)
        if key in stats:
            family.add_metric([], stats[key])
        yield family


def _trunk_families(states: Mapping[str, str]) -> Iterator[Metric]:
    """TrunkService.states keys: 'trunk' (health), 'trunk host:port' (one gateway of
    several), 'trunk aor' (a registration); health values are up/down, registration
    values are RegistrationStatus values."""
    trunks = GaugeMetricFamily("sbc_trunk_up", "Trunk health by probing (1 up).", labels=["trunk"])
    gateways = GaugeMetricFamily(
        "sbc_trunk_gateway_up", "Health of each probed trunk address.", labels=["trunk", "gateway"]
    )
    registrations = GaugeMetricFamily(
        "sbc_registration_state",
        "1 for the registration's current state, 0 for the others.",
        labels=["trunk", "aor", "state"],
    )
    for key, state in sorted(states.items()):
        trunk, _, rest = key.partition(" ")
        if state in ("up", "down"):
            up = 1.0 if state == "up" else 0.0
            if rest:
                gateways.add_metric([trunk, rest], up)
            else:
                trunks.add_metric([trunk], up)
            continue
        for known in REGISTRATION_STATES:
            registrations.add_metric([trunk, rest, known], 1.0 if known == state else 0.0)
    yield trunks
    yield gateways
    yield registrations


def _worker_families(workers: list[tuple[str, bool, int, int, int]]) -> Iterator[Metric]:
    up = GaugeMetricFamily("sbc_media_worker_up", "Media worker alive (1).", labels=["worker"])
    sessions = GaugeMetricFamily(
        "sbc_media_worker_sessions", "Media sessions per worker.", labels=["worker"]
    )
    streams = GaugeMetricFamily(
        "sbc_media_streams_active", "Media streams relayed per worker.", labels=["worker"]
    )
    restarts = CounterMetricFamily(
        "sbc_media_worker_restarts", "Times the worker was restarted.", labels=["worker"]
    )
    for index, alive, count, stream_count, restart_count in workers:
        up.add_metric([index], 1.0 if alive else 0.0)
        sessions.add_metric([index], count)
        streams.add_metric([index], stream_count)
        restarts.add_metric([index], restart_count)
    yield from (up, sessions, streams, restarts)


def _sample_names(family: Metric) -> set[str]:
    name = family.name
    if family.type == "counter":
        return {f"{name}_total"}
    if family.type == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    if family.type == "summary":
        return {name, f"{name}_sum", f"{name}_count"}
    if family.type == "info":
        return {f"{name}_info"}
    return {name}


def _method_label(method: str) -> str:
    return method if method in SIP_METHODS else OTHER


def _status_class(status: int) -> str:
    klass = status // 100
    return _STATUS_CLASSES[klass] if 1 <= klass <= 6 else "other"
