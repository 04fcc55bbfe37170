"""The running SBC process: binds the transports, feeds received messages through the
transaction layer, answers requests, keeps one timer for the whole stack, stops on a signal."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import signal
import ssl
import sys
import time
from collections.abc import Callable, Iterable

from media.backend import MediaBackend
from media.pool import WorkerPool
from media.ports import PortPool
from media.relay import MediaRelay
from media.worker import COUNTERS as MEDIA_COUNTERS
from sbc.api import ApiServer, read_token
from sbc.b2bua import CallSetup
from sbc.calls import CallAdapter
from sbc.cdr import CdrError, CdrRecord, CdrWriter, WallClock
from sbc.config import Config, ConfigError, Pbx, load_config
from sbc.control_plane import ServiceControl
from sbc.hep import HepSender
from sbc.inbound_auth import Accepted, Challenge, InboundAuth
from sbc.log import get_logger
from sbc.metrics import Metrics
from sbc.policy import Admitted, Policy, RequestInfo, Ticket
from sbc.policy.guard import Blocked, BlockKind, EdgeGuard, TrustedEntry, Verdict
from sbc.resolve import is_literal, resolve_trunks
from sbc.routing import Rejection, Router
from sbc.sip.errors import ParseError
from sbc.sip.framing import FramingError
from sbc.sip.message import Request, Response, error_response, make_response, new_tag, parse
from sbc.sip.peer import Peer, stamp_via
from sbc.sip.transaction import (
    AckReceived,
    Action,
    RequestReceived,
    ResponseReceived,
    Send,
    StrayResponse,
    Terminated,
    TimedOut,
    TimerSettings,
    TransactionLayer,
    TransportFailed,
    TxnKey,
)
from sbc.sip.uri import parse_uri
from sbc.sip.validation import ACCEPT, ALLOW, SUPPORTED_OPTIONS, check_request
from sbc.trace import Tracer
from sbc.transport import ListenerError, TransportLayer
from sbc.transport.tls import TlsSetupError, server_context
from sbc.trunk_service import TrunkService

log = get_logger("app")
sip_log = get_logger("sip")
security_log = get_logger("security")

SUPPORTED = ", ".join(sorted(SUPPORTED_OPTIONS))
# Methods that only make sense inside a dialog or against an existing transaction: without
# one they get 481 (RFC 3261 §12.2.2, §15.1.2); the others would create something new.
_IN_DIALOG_METHODS = frozenset({"BYE", "PRACK", "UPDATE", "INFO", "NOTIFY"})

EXIT_OK = 0
EXIT_FAILURE = 1


class SignallingService:
    """Wires TransportLayer <-> TransactionLayer <-> the request answering rules.

    The decisions live in the sans-I/O modules; this class only moves bytes, events and
    the clock between them, and re-arms one `loop.call_at` to the transaction layer's next
    deadline after every input (the aioquic asyncio adapter pattern).
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        sip = config.sip
        self.transactions = TransactionLayer(
            TimerSettings(t1=sip.t1, t2=sip.t2, t4=sip.t4),
            max_per_source=sip.max_transactions_per_source,
            exempt=lambda host: self.guard.is_trusted(host),
        )
        self.transport = TransportLayer(
            config.interfaces.values(),
            self.on_message,
            on_transport_error=self.on_transport_error,
            framing_reply=self.framing_reply,
            max_message_size=sip.max_message_size,
            limits=config.connections,
        )
        self._max_headers = config.connections.max_headers
        self._server_header: tuple[tuple[str, str], ...] = (
            (("Server", sip.user_agent),) if sip.user_agent else ()
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.router = self._new_router(config)
        low, high = config.media.port_range
        self.relay: MediaBackend
        media = config.media
        if media.workers > 0:
            self.relay = WorkerPool(
                media.port_range,
                workers=media.workers,
                policy=media.balancing,
                weights=media.worker_weights or None,
                timeout=media.timeout,
                hold_timeout=media.hold_timeout or None,
                strict_source=media.strict_source,
                log_level=config.log.level,
                log_format=config.log.format,
            )
        else:
            self.relay = MediaRelay(
                PortPool(low, high),
                timeout=media.timeout,
                hold_timeout=media.hold_timeout or None,
                strict_source=media.strict_source,
            )
        self.calls = CallAdapter(self.transactions, self.relay, self._handle, self._now)
        self.calls.rearm = self._arm_timer
        self.trunks = TrunkService(config, self.router, self.transactions, self._handle)
        self.inbound_auth = InboundAuth(config.pbxs)
        # Admission limits and toll-fraud rules for new calls; the edge guard (flood,
        # scanners, brute force) for every message. Trusted: the PBXs' networks, and trunk
        # addresses once DNS has resolved them.
        self.policy = Policy(config.policy)
        self._trunk_names = frozenset(trunk.name for trunk in config.trunks)
        self.guard = EdgeGuard(config.guard, self._trusted())
        self.calls.on_call_end = self._call_ended
        self.calls.on_target_moved = self._call_moved
        capture = config.capture
        self._hep: HepSender | None = None
        if capture.hep is not None:
            self._hep = HepSender(
                (capture.hep.host, capture.hep.port), capture.hep_id, capture.hep_password
            )
        self._tracer = Tracer(sys.stderr.write) if capture.trace else None
        self.metrics = self._new_metrics()
        self.calls.metrics = self.metrics
        self.cdr: CdrWriter | None = None
        cdr_options = dict(
            batch_size=config.cdr.batch_size,
            flush_interval=config.cdr.flush_interval,
            max_queue=config.cdr.max_queue,
        )
        if config.cdr.path is not None:
            os.makedirs(os.path.dirname(config.cdr.path) or ".", exist_ok=True)
            self.cdr = CdrWriter.sqlite(config.cdr.path, **cdr_options)
        elif config.cdr.dsn is not None:
            try:  # connects now: an unreachable database stops the start with its reason
                self.cdr = CdrWriter.postgres(config.cdr.dsn, **cdr_options)
            except CdrError as exc:
                raise StartupError(f"cdr.dsn: {exc}") from exc
        if self.cdr is not None:
            self.calls.cdr = self.cdr
        self._dns_task: asyncio.Task[None] | None = None
        self._reload_lock = asyncio.Lock()
        self.disabled_trunks: set[str] = set()  # taken out of routing by the operator (API)
        self._counters_task: asyncio.Task[None] | None = None
        self._api: ApiServer | None = None
        self._draining = False
        self._reloads: set[asyncio.Task[None]] = set()

    def now(self) -> float:
        return self._now()

    async def _start_api(self) -> None:
        settings = self.config.api
        if settings.listen is None:
            return
        try:
            token = read_token(settings.token_file)
        except (OSError, ValueError) as exc:
            raise StartupError(f"api.token_file {settings.token_file}: {exc}") from None
        context = None
        if settings.tls is not None:
            try:
                context = server_context(settings.tls)
            except TlsSetupError as exc:
                raise StartupError(f"api.tls: {exc}") from None
        self._api = ApiServer(ServiceControl(self), token, read_timeout=settings.read_timeout)
        host, port = await self._api.start(settings.listen.host, settings.listen.port, tls=context)
        scheme = "https" if context is not None else "http"
        log.info("sbc.api_listening", address=f"{host}:{port}", url=f"{scheme}://{host}:{port}")

    def _new_metrics(self) -> Metrics:
        """Counters at events; gauges read at scrape time from the state itself, so they
        cannot drift from it."""
        metrics = Metrics()
        metrics.watch_service(self.stats)
        metrics.watch_trunks(lambda: self.trunks.states())
        metrics.watch_blocks(lambda: self.guard.blocks(self._now()))
        metrics.watch_transport(self.transport.counters.as_dict)
        metrics.watch_calls(self._active_calls)
        if isinstance(self.relay, WorkerPool):
            pool = self.relay
            metrics.watch_workers(lambda: pool.workers)
            pool.on_stats = metrics.media_deltas
        return metrics

    async def _media_counters(self, relay: MediaRelay, every: float = 5.0) -> None:
        """The in-process relay's packet counters as deltas, as workers send theirs."""
        reported = dict.fromkeys(MEDIA_COUNTERS, 0)
        while True:
            await asyncio.sleep(every)
            totals = relay.counters(MEDIA_COUNTERS, closed=True)
            deltas = {n: totals[n] - reported[n] for n in MEDIA_COUNTERS if totals[n] > reported[n]}
            reported.update(totals)
            if deltas:
                self.metrics.media_deltas(0, deltas)

    def _active_calls(self) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        for entry in self.calls.calls.values():
            direction = entry.setup.direction
            trunk = entry.target if direction == "outbound" else entry.setup.origin
            key = (trunk or "", direction)
            counts[key] = counts.get(key, 0) + 1
        return counts

    def _new_router(self, config: Config) -> Router:
        # Routing asks the trunks' health (probes) and their live calls at each new call.
        return Router(
            config,
            health=lambda name: name not in self.disabled_trunks and self.trunks.health(name),
            gateway_up=lambda name, gateway: self.trunks.gateway_up(name, gateway),
            calls=lambda name: self.calls.per_target(name),
        )

    def spawn_reload(self, path: str) -> None:
        """SIGHUP: reload in the background, one reload at a time."""

        async def run() -> None:
            async with self._reload_lock:
                try:
                    await self.reload(path)
                except Exception:
                    log.exception("config.reload_failed")

        task = asyncio.ensure_future(run())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self, path: str) -> list[str]:
        """Read `path` and, when valid, run new calls on it; calls already up finish on the
        settings they started with (each holds its own CallSetup). Returns the problems
        that refused it ([] when applied); the running configuration then stays."""
        try:
            new = load_config(path)
        except ConfigError as exc:
            problems = [str(issue) for issue in exc.issues]
        else:
            problems = _needs_restart(self.config, new)
        if not problems and self._api is not None and new.api.tls is not None:
            try:
                server_context(new.api.tls)  # its files load: checked before anything changes
            except TlsSetupError as exc:
                problems = [f"{new.source}: api.tls: {exc} (the reload was not applied)"]
        if not problems:
            # Also when the interfaces are unchanged: the TLS files are read again, so
            # `systemctl reload` after a certificate renewal serves the new one.
            try:
                added, removed = await self.transport.update(new.interfaces.values())
            except (ListenerError, TlsSetupError) as exc:
                problems = [f"{new.source}: {exc} (the reload was not applied)"]
            else:
                if added or removed:
                    log.info("config.listeners", added=",".join(added), removed=",".join(removed))
        if not problems and self._api is not None and new.api.tls is not None:
            try:
                self._api.renew_certificate(new.api.tls.cert, new.api.tls.key)
            except (OSError, ssl.SSLError) as exc:  # changed since the check just above
                log.warning("config.api_certificate_kept", error=str(exc))
        if problems:
            for problem in problems:
                log.warning("config.reload_refused", problem=problem)
            return problems
        old = self.config
        self.config = new
        router = self._new_router(new)
        router.set_trunk_addresses(await resolve_trunks(new))
        self.router = router
        trunks = TrunkService(new, router, self.transactions, self._handle)
        previous, self.trunks = self.trunks, trunks
        trunks.start(self._now(), previous=previous)
        self._trunk_names = frozenset(trunk.name for trunk in new.trunks)
        self.inbound_auth = InboundAuth(new.pbxs, secret=self.inbound_auth.secret)
        self.policy.reconfigure(new.policy)
        if new.guard != old.guard:
            # New thresholds: blocks in force are dropped with the old guard (logged).
            for info in self.guard.blocks(self._now()):
                security_log.info("security.unblocked_by_reload", key=info.key)
            self.guard = EdgeGuard(new.guard, self._trusted())
        else:
            self.guard.set_trusted(self._trusted())
        self._tls_server_names()
        self._arm_timer()
        log.info(
            "config.reloaded",
            source=new.source,
            pbxs=len(new.pbxs),
            trunks=len(new.trunks),
            live_calls=len(self.calls),
        )
        return []

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.calls.wall = WallClock.capture(self._loop.time)
        self.metrics.bind_loop(self._loop)
        listen = self.config.metrics.listen
        if listen is not None:
            port = self.metrics.start_http(listen.host, listen.port)
            log.info("sbc.metrics_listening", address=f"{listen.host}:{port}")
        self._warn_sdes_in_clear()
        if isinstance(self.relay, MediaRelay):
            self._counters_task = asyncio.ensure_future(self._media_counters(self.relay))
        await self._start_api()
        await self.relay.start()
        await self.transport.start()
        self.router.set_trunk_addresses(await resolve_trunks(self.config))
        self.guard.set_trusted(self._trusted())
        self._tls_server_names()
        self.trunks.start(self._now())
        if any(not is_literal(trunk.proxy.host) for trunk in self.config.trunks):
            self._dns_task = asyncio.ensure_future(self._refresh_dns())
        self._arm_timer()

    def _warn_sdes_in_clear(self) -> None:
        """SDES (RFC 4568 §8) puts the SRTP keys in the SDP: only TLS keeps them secret.
        Allowed (many carriers do it), but said once at start so nobody mistakes it for
        end-to-end protection."""
        sides = [("pbx", p.name, p.transport, p.srtp) for p in self.config.pbxs]
        sides += [("trunk", t.name, t.transport, t.srtp) for t in self.config.trunks]
        for kind, name, transport, srtp in sides:
            if srtp != "off" and transport != "tls":
                log.warning(
                    "config.srtp_keys_in_clear",
                    side=kind,
                    name=name,
                    transport=transport,
                    why="SDES keys travel in the SDP; use transport tls to protect them",
                )

    async def _refresh_dns(self) -> None:
        """Resolve trunk names again now and then: a carrier that moves a gateway is followed
        without a restart. A name that fails this time keeps the addresses it had."""
        while True:
            await asyncio.sleep(self.config.dns.refresh)
            try:
                found = await resolve_trunks(self.config)
            except Exception:
                log.exception("trunk.resolve_error")
                continue
            current: dict[str, Iterable[str | tuple[str, int]]] = {
                trunk.name: self.router.gateways(trunk.name) for trunk in self.config.trunks
            }
            current.update(found)
            before = {name: self.router.gateways(name) for name in current}
            self.router.set_trunk_addresses(current)
            self.guard.set_trusted(self._trusted())
            self._tls_server_names()
            if any(self.router.gateways(name) != gateways for name, gateways in before.items()):
                self.trunks.gateways_changed(self._now())
                self._arm_timer()

    async def close(self) -> None:
        if self._dns_task is not None:
            self._dns_task.cancel()
        if self._counters_task is not None:
            self._counters_task.cancel()
        drain = self.config.calls.drain_timeout
        if drain > 0 and self.calls.calls:
            # New calls get 503 meanwhile (_route); live ones may end by themselves.
            self._draining = True
            log.info("sbc.draining", calls=len(self.calls), for_s=drain)
            try:
                await asyncio.wait_for(self.calls.idle.wait(), drain)
            except TimeoutError:
                pass
        if self.calls.calls:
            # End live calls on both legs (BYE with a Reason, 503 for those still ringing)
            # rather than leave the PBX and the carrier holding calls nobody relays.
            live = len(self.calls.calls)
            self.calls.hangup_all("SBC shutting down")
            log.info("sbc.calls_ended_on_shutdown", calls=live)
            await asyncio.sleep(0)  # let the transports flush what was just sent
        self.trunks.stop(self._now())
        for _ in range(40):  # up to 2 s for the registrars to confirm the un-REGISTERs
            if not self.trunks.unregistering:
                break
            await asyncio.sleep(0.05)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.calls.close()
        await self.relay.close()
        await self.transport.close()
        self.metrics.stop_http()
        if self._api is not None:
            await self._api.close()
        if self.cdr is not None:
            # Every record queued (the media reports come out of relay.close()) reaches
            # the disk before the process ends.
            await asyncio.get_running_loop().run_in_executor(None, self.cdr.close)

    def stats(self) -> dict[str, int]:
        """What is alive right now: after traffic stops and 64*T1 passes, all zero."""
        dialogs, call_transactions = self.calls.indexed
        return {
            "calls": len(self.calls),
            "call_dialogs": dialogs,
            "call_transactions": call_transactions,
            "transactions": len(self.transactions),
            "media_sessions": len(self.relay),
            "media_ports_in_use": self.relay.pairs_in_use * 2,
        }

    def log_stats(self) -> None:
        log.info("sbc.stats", **self.stats())
        for name, state in self.trunks.states().items():
            log.info("sbc.trunk_state", trunk=name, state=state)
        now = self._now()
        for block in self.guard.blocks(now):
            security_log.info(
                "sbc.security_block",
                key=block.key,
                kind=block.kind.value,
                reason=block.reason.value,
                hits=block.hits,
                left_s=round(block.until - now, 1),
            )
        policy = self.policy.snapshot(now)
        for rule, count in sorted(policy.get("rejections", {}).items()):
            log.info("sbc.policy_rejections", rule=rule, count=count)
        if isinstance(self.relay, WorkerPool):
            for worker in self.relay.workers:
                log.info(
                    "sbc.media_worker",
                    worker=worker.index,
                    pid=worker.pid,
                    alive=worker.alive,
                    sessions=worker.sessions,
                    streams=worker.streams,
                    restarts=worker.restarts,
                    ports=f"{worker.ports[0]}-{worker.ports[1]}",
                )

    @property
    def listener_names(self) -> list[str]:
        return list(self.transport.listeners)

    # ------------------------------------------------------------------ input

    def on_message(self, data: bytes, source: Peer) -> None:
        """Every SIP message from every listener arrives here (the per-message hot path)."""
        now = self._now()
        guard = self.guard
        if not guard.admit(source.host, now):
            self._guard_events()  # a flooding or blocked source: no answer, nothing parsed
            return
        if self._hep is not None:
            self._capture(data, source, inbound=True)
        try:
            message = parse(data, max_headers=self._max_headers)
            # Via, From, To, Call-ID and CSeq are parsed on first use; parsing them here
            # (work the transaction and dialog layers need anyway) keeps a malformed one
            # from surfacing as an error halfway through a call's handling: a request gets
            # its 400, a response is dropped and logged (a response is never answered).
            message.check()
            self.metrics.message_in(message, source.transport)
            if self._tracer is not None:
                self._tracer.message(time.time(), True, source, message, listener=source.listener)
            if isinstance(message, Request):
                if self._unwelcome(message, source, now):
                    return
                stamp_via(message, source)
            actions = self.transactions.receive(message, source, now)
        except ParseError as err:
            self._parse_error(data, err, source)
            return
        self._handle(actions, now)
        self._arm_timer()

    def _capture(self, data: bytes, peer: Peer, *, inbound: bool) -> None:
        """A copy to the HEP collector (RFC-less but de facto: Homer, sngrep)."""
        assert self._hep is not None
        listener = self.transport.listeners.get(peer.listener)
        local = (listener.host, listener.port) if listener is not None else ("0.0.0.0", 0)
        remote = (peer.host, peer.port)
        src, dst = (remote, local) if inbound else (local, remote)
        self._hep.capture(data, src, dst, peer.transport or "udp", time.time())

    def _unwelcome(self, request: Request, source: Peer, now: float) -> bool:
        """Requests dropped before any transaction exists (so no answer, not even 100): from
        an unknown source on an interface that answers strangers nothing, or from a known
        scanner."""
        guard = self.guard
        if guard.drops_unknown(source, self.router.knows):
            return True
        verdict = guard.inspect(
            source.host, request.header("User-Agent"), request.header("From"), now
        )
        if verdict is Verdict.DROP:
            self._guard_events()
            return True
        return False

    def _guard_events(self) -> None:
        events = self.guard.take_events()
        if not events:
            return
        for event in events:
            if isinstance(event, Blocked) and event.kind is BlockKind.SOURCE:
                ended = self.transactions.abandon_source(event.key, self._call_owns)
                self._handle(ended, self._now())
            if isinstance(event, Blocked):
                self.metrics.security_blocked(event.kind.value, event.reason.value)
                security_log.warning(
                    "security.blocked",
                    key=event.key,
                    kind=event.kind.value,
                    reason=event.reason.value,
                    detail=event.detail,
                    for_s=round(event.until - self._now(), 1),
                )
            else:
                security_log.info(
                    "security.unblocked",
                    key=event.key,
                    kind=event.kind.value,
                    reason=event.reason.value,
                    hits=event.hits,
                    manual=event.manual,
                )
        self._arm_timer()

    def _tls_server_names(self) -> None:
        """A TLS trunk named by DNS is reached at resolved addresses; its certificate is
        checked (and SNI sent) for the configured name, not for the address."""
        for trunk in self.config.trunks:
            if trunk.transport != "tls" or is_literal(trunk.proxy.host):
                continue
            for host, port in self.router.gateways(trunk.name):
                self.transport.set_tls_server_name(host, port, trunk.proxy.host)

    def _call_owns(self, key: TxnKey) -> bool:
        return self.calls.for_transaction(key) is not None

    def _trusted(self) -> list[TrustedEntry]:
        """Never blocked by the guard: every PBX's trusted networks and trunk address."""
        trusted: list[TrustedEntry] = [
            net for pbx in self.config.pbxs for net in pbx.trusted_sources
        ]
        for trunk in self.config.trunks:
            # Before DNS has answered, a trunk is known only by its name: nothing to trust.
            trusted.extend(h for h, _ in self.router.gateways(trunk.name) if is_literal(h))
        return trusted

    def _parse_error(self, data: bytes, err: ParseError, source: Peer) -> None:
        self.metrics.parse_error(source.transport)
        if self.guard.drops_unknown(source, self.router.knows):
            return  # a stranger on a silent interface learns nothing, not even a 400
        answer = error_response(data, err)
        sip_log.warning(
            "sip.parse_error",
            reason=err.reason,
            source=str(source),
            answered=answer.status if answer is not None else None,
        )
        if answer is not None:
            # The request never reached the transaction layer, so the answer goes straight
            # back where the bytes came from (RFC 3581 behaviour: source address and port).
            self.transport.send(source, bytes(answer))

    def framing_reply(self, error: FramingError, source: Peer) -> bytes | None:
        """The answer written before a TCP/TLS connection with a framing error is closed.
        Counted by the edge guard like a message (garbage over TCP floods like any other),
        and never written to a stranger on an interface that answers strangers nothing."""
        if not self.guard.admit(source.host, self._now()):
            self._guard_events()
            return None
        if not error.head or self.guard.drops_unknown(source, self.router.knows):
            return None
        answer = error_response(error.head, ParseError(error.reason, error.status))
        return bytes(answer) if answer is not None else None

    def on_transport_error(self, peer: Peer, reason: str, context: object) -> None:
        """A send failed (RFC 3261 §17.1.4, §17.2.4): tell the transaction that sent it."""
        if not isinstance(context, Request | Response):
            return
        try:
            key = _transaction_key(context)
        except ParseError:
            return
        now = self._now()
        self._handle(self.transactions.transport_error(key, now), now)
        self._arm_timer()

    # ------------------------------------------------------------------ actions and events

    def _handle(self, actions: Iterable[Action], now: float) -> None:
        for action in actions:
            if isinstance(action, Send):
                self.transport.send_message(action.peer, action.message)
                self.metrics.message_out(action.message, action.peer.transport)
                if self._hep is not None:
                    self._capture(bytes(action.message), action.peer, inbound=False)
                if self._tracer is not None:
                    self._tracer.message(
                        time.time(),
                        False,
                        action.peer,
                        action.message,
                        listener=action.peer.listener,
                    )
            elif isinstance(action, RequestReceived):
                self._answer(action, now)
            elif isinstance(action, AckReceived):
                found = self.calls.for_request(action.request)
                if found is not None:
                    self.calls.ack(found, action.request, now)
            elif isinstance(action, ResponseReceived):
                key, response = action.txn_key, action.response
                if not self.calls.response(key, response, now) and not self.trunks.response(
                    key, response, now
                ):
                    sip_log.debug("sip.response_ignored", status=response.status)
            elif isinstance(action, StrayResponse):
                sip_log.debug("sip.response_ignored", status=action.response.status)
            elif isinstance(action, TimedOut | TransportFailed):
                kind = type(action).__name__
                self.metrics.transaction_failed(
                    action.txn_key.method,
                    "timeout" if isinstance(action, TimedOut) else "transport",
                )
                if not self.calls.failure(action.txn_key, kind, now) and not self.trunks.failure(
                    action.txn_key, kind, now
                ):
                    sip_log.warning(
                        "sip.transaction_failed",
                        kind=kind,
                        branch=action.txn_key.branch,
                        method=action.txn_key.method,
                    )
            elif isinstance(action, Terminated):
                self.calls.transaction_ended(action.txn_key)

    def _answer(self, event: RequestReceived, now: float) -> None:
        request = event.request
        method = request.method
        sip_log.debug("sip.request_received", method=method, source=str(event.source))
        # Headers are parsed lazily: a malformed one may only surface here, and must still
        # get its 400 through the transaction that now exists.
        try:
            response = check_request(request, local_target=method == "OPTIONS")
            if response is None:
                response = self._route(event, now)
        except ParseError as err:
            response = error_response(bytes(request), err)
        if response is None:
            return
        if self.guard.blocked(event.source.host, now):
            # Handling this request blocked its source (the guess that trips the digest
            # lockout, one unknown number too many): it gets no answer either.
            self._handle(self.transactions.abandon(event.txn_key), now)
            return
        sip_log.debug(
            "sip.response_sent", method=method, status=response.status, source=str(event.source)
        )
        self._handle(self.transactions.send_response(event.txn_key, response, now), now)

    def _route(self, event: RequestReceived, now: float) -> Response | None:
        """Hand the request to its call, start a new call, or answer it here."""
        request = event.request
        method = request.method
        if method == "ACK":
            return None
        if method == "CANCEL":
            # RFC 3261 §9.2: the call answers a CANCEL of its INVITE; once the INVITE has its
            # final answer the CANCEL just gets 200; without a matching INVITE, 481.
            if event.cancel_target is None:
                return make_response(request, 481, headers=self._server_header)
            found = self.calls.for_transaction(event.cancel_target)
            if found is not None:
                self.calls.request(found, event.txn_key, request, event.source, now)
                return None
            return make_response(request, 200, headers=self._server_header)
        if request.to_tag is not None:
            found_dialog = self.calls.for_request(request)
            if found_dialog is not None:
                self.calls.request(found_dialog, event.txn_key, request, event.source, now)
                return None
            return make_response(request, 481, headers=self._server_header)
        if method in _IN_DIALOG_METHODS:
            return make_response(request, 481, headers=self._server_header)
        if method == "INVITE":
            if self._draining:
                # Shutting down: new calls elsewhere, please (RFC 3261 §21.5.4).
                headers = [("Retry-After", "60"), *self._server_header]
                return make_response(request, 503, to_tag=new_tag(), headers=headers)
            setup = self.router.route(request, event.source)
            if isinstance(setup, Rejection) and setup.status == 403:
                # Not from a trusted source or trunk: a PBX user may prove itself (digest).
                pbx = self.router.auth_pbx(event.source)
                if pbx is not None:
                    answer = self._authenticate(request, event.source, pbx, now)
                    if answer is not None:
                        return answer
                    setup = self.router.route(request, event.source, as_pbx=pbx.name)
            if isinstance(setup, Rejection):
                sip_log.info(
                    "call.rejected",
                    status=setup.status,
                    reason=setup.log_reason,
                    source=str(event.source),
                )
                if setup.status in (404, 484):
                    # Dialling around for numbers that exist is how scanners map a PBX.
                    self.guard.unknown_user(event.source.host, now)
                    self._guard_events()
                if self.router.knows(event.source):
                    # A PBX or trunk's attempt that routing refused (no route, too short):
                    # billing and troubleshooting want it; strangers' 403s would only
                    # fill the disk for a scanner.
                    self._rejected_cdr(request, setup.status, setup.log_reason, "routing")
                return make_response(
                    request,
                    setup.status,
                    setup.reason,
                    to_tag=new_tag(),
                    headers=[*setup.headers, *self._server_header],
                )
            return self._admit(setup, event, now)
        if method == "OPTIONS":
            headers = [("Allow", ALLOW), ("Accept", ACCEPT), ("Supported", SUPPORTED)]
            headers.extend(self._server_header)
            return make_response(request, 200, to_tag=new_tag(), headers=headers)
        if method == "REGISTER":
            pbx = self.router.auth_pbx(event.source)
            if pbx is not None:
                return self._authenticate(request, event.source, pbx, now) or self._registered(
                    request
                )
            # The SBC is no registrar: a policy answer (RFC 4475 §3.3.7 allows one).
            return make_response(
                request,
                403,
                "Registration Not Accepted",
                to_tag=new_tag(),
                headers=self._server_header,
            )
        return make_response(
            request, 404, "No Route", to_tag=new_tag(), headers=self._server_header
        )

    def _admit(self, setup: CallSetup, event: RequestReceived, now: float) -> Response | None:
        """Admission limits and toll-fraud rules for a routed call (sbc.policy): a refusal
        is answered here with its status, Retry-After and Reason (RFC 3326); an admitted
        call carries its ticket, and its duration limits, into the call."""
        first = setup.targets[0]
        outbound = setup.direction == "outbound"
        info = RequestInfo(
            direction=setup.direction,
            source_ip=event.source.host,
            caller=setup.caller,
            callee=setup.callee_rewritten,
            pbx=setup.origin if outbound else first.name,
            trunk=first.name if outbound else setup.origin,
            route=setup.route,
        )
        verdict = self.policy.admit(info, now, time.time())
        if not isinstance(verdict, Admitted):
            self.metrics.admission_rejected(verdict.rule)
            if self.cdr is not None and self.config.cdr.rejected:
                self.cdr.call_ended(
                    CdrRecord.rejected(
                        at=time.time(),
                        status=verdict.status,
                        reason=verdict.detail,
                        rule=verdict.rule,
                        call_key=setup.call_key,
                        direction=setup.direction,
                        a_call_id=event.request.call_id,
                        caller=setup.caller,
                        callee=setup.callee,
                        callee_rewritten=setup.callee_rewritten,
                        trunk=info.trunk,
                        pbx=info.pbx,
                    )
                )
            sip_log.info(
                "call.rejected",
                call=setup.call_key,
                status=verdict.status,
                rule=verdict.rule,
                reason=verdict.detail,
                source=str(event.source),
            )
            return make_response(
                event.request,
                verdict.status,
                verdict.reason_phrase,
                to_tag=new_tag(),
                headers=[*verdict.headers(), *self._server_header],
            )
        if verdict.max_duration is not None:
            setup = dataclasses.replace(
                setup, max_duration=verdict.max_duration, deadline=verdict.deadline
            )
        self.calls.new_call(setup, event.txn_key, event.request, event.source, now)
        self.calls.attach(setup.call_key, verdict.ticket)
        return None

    def _rejected_cdr(self, request: Request, status: int, reason: str, rule: str) -> None:
        if self.cdr is None or not self.config.cdr.rejected:
            return
        try:
            caller = getattr(request.from_.uri, "user", None) or ""
            callee = getattr(parse_uri(request.uri), "user", None) or ""
        except (ParseError, ValueError):
            caller, callee = "", ""
        self.cdr.call_ended(
            CdrRecord.rejected(
                at=time.time(),
                status=status,
                reason=reason,
                rule=rule,
                a_call_id=request.call_id,
                caller=caller,
                callee=callee,
            )
        )

    def _call_ended(self, ticket: object, now: float) -> None:
        if isinstance(ticket, Ticket):
            self.policy.ended(ticket, now)

    def _call_moved(self, ticket: object, trunk: str, now: float) -> None:
        """Failover took the call to another trunk: the trunk's limits count it there. The
        INVITE is already on its way, so an over-limit move is logged, not undone."""
        if not isinstance(ticket, Ticket) or trunk not in self._trunk_names:
            return
        refused = self.policy.move(ticket, trunk, now)
        if refused is not None:
            sip_log.warning("call.failover_over_limit", trunk=trunk, rule=refused.rule)

    def _authenticate(
        self, request: Request, source: Peer, pbx: Pbx, now: float
    ) -> Response | None:
        """The challenge or refusal for a request from a PBX user, or None: accepted."""
        outcome = self.inbound_auth.check(request, pbx, now)
        if isinstance(outcome, Accepted):
            if self.guard.auth_result(source.host, outcome.username, True, now) is Verdict.FORBID:
                self._guard_events()
                return make_response(request, 403, to_tag=new_tag(), headers=self._server_header)
            sip_log.info("auth.accepted", pbx=pbx.name, user=outcome.username, source=str(source))
            return None
        if isinstance(outcome, Challenge):
            headers = [*outcome.headers, *self._server_header]
            return make_response(request, outcome.status, to_tag=new_tag(), headers=headers)
        # Counted and logged for the security policy (brute force shows up here); the
        # password and the digest response never are.
        if outcome.status == 403:
            unknown = outcome.why.startswith("unknown-user")
            user = None if unknown else outcome.username
            self.guard.auth_result(source.host, user, False, now)
            if unknown:
                self.guard.unknown_user(source.host, now)
            self._guard_events()
        sip_log.warning(
            "auth.refused",
            pbx=pbx.name,
            user=outcome.username,
            source=str(source),
            method=request.method,
            why=outcome.why,
            failures=self.inbound_auth.failures,
        )
        return make_response(request, outcome.status, to_tag=new_tag(), headers=self._server_header)

    def _registered(self, request: Request) -> Response:
        """200 to an authenticated REGISTER: the PBX's calls are routed by configuration
        (its `address`), so the binding is acknowledged, not stored; we grant at most an
        hour (RFC 3261 §10.3 step 7)."""
        asked = request.header("Expires")
        expires = int(asked) if asked is not None and asked.strip().isdigit() else 3600
        headers = [("Contact", c) for c in request.header_values("Contact")]
        headers.append(("Expires", str(min(expires, 3600))))
        headers.extend(self._server_header)
        return make_response(request, 200, to_tag=new_tag(), headers=headers)

    # ------------------------------------------------------------------ the one timer

    def _arm_timer(self) -> None:
        deadline = self.transactions.next_deadline()
        others = (
            self.calls.next_deadline(),
            self.trunks.next_deadline(),
            self.guard.next_deadline(),
        )
        for other in others:
            if other is not None and (deadline is None or other < deadline):
                deadline = other
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None and self._loop is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        deadline = self._timer_at
        self._timer = None
        self._timer_at = None
        # call_at may fire a hair early (clock granularity); never hand the layer a time
        # before the deadline it asked for.
        now = self._now()
        if deadline is not None and now < deadline:
            now = deadline
        try:
            self._handle(self.transactions.on_timer(now), now)
            self.calls.on_timer(now)
            self.trunks.on_timer(now)
            self.guard.on_timer(now)
            self._guard_events()
        except Exception:
            log.exception("timer.handler_failed")
        self._arm_timer()

    def _now(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()


def _transaction_key(message: Request | Response) -> TxnKey:
    """The transaction that sent `message`: a request (or the ACK of a non-2xx) belongs to
    the client transaction of its branch (RFC 3261 §17.1.3), a response to the server
    transaction of its top Via branch and sent-by (§17.2.3)."""
    via = message.via
    branch = via.branch or ""
    if isinstance(message, Request):
        method = "INVITE" if message.method == "ACK" else message.method
        return TxnKey(False, branch, method)
    port = via.port if via.port is not None else (5061 if via.transport.upper() == "TLS" else 5060)
    return TxnKey(True, branch, message.cseq.method, f"{via.host.lower()}:{port}")


async def serve(config: Config, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set. Raises ListenerError (nothing left bound) when a listener
    cannot be started."""
    service = SignallingService(config)
    await service.start()
    _tune_gc()
    loop = asyncio.get_running_loop()
    try:
        # `kill -USR1 <pid>`: one sbc.stats line (live calls, transactions, media ports).
        loop.add_signal_handler(signal.SIGUSR1, service.log_stats)
        # `kill -HUP <pid>` (systemctl reload): read the file again; new calls use it.
        if config.source:
            loop.add_signal_handler(signal.SIGHUP, lambda: service.spawn_reload(config.source))
    except (NotImplementedError, RuntimeError):  # no signals here (not the main thread)
        pass
    # Announced only once the handlers are in place: a SIGHUP sent on seeing this line
    # must reload, not end the process (SIGHUP's default action).
    log.info(
        "sbc.ready",
        node=config.node,
        listeners=",".join(service.listener_names),
        loop=type(loop).__module__.partition(".")[0],
    )
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        for signum in (signal.SIGUSR1, signal.SIGHUP):
            try:
                loop.remove_signal_handler(signum)
            except (NotImplementedError, RuntimeError):
                pass
        await service.close()
        log.info("sbc.stopped", node=config.node)


class StartupError(Exception):
    """Something the configuration names cannot be used at start (a token file...)."""


# What a reload cannot change in a running process (sockets are bound, workers started):
# named so the operator knows a restart is needed, and the reload is refused as a whole.
_RESTART_KEYS = (
    "node",
    "log",
    "sip",
    "media",
    "connections",
    "cdr",
    "metrics",
    "api",
)


def _needs_restart(old: Config, new: Config) -> list[str]:
    problems = [
        f"{new.source}: {key}: changed; this takes a restart (the reload was not applied)"
        for key in _RESTART_KEYS
        if getattr(old, key) != getattr(new, key)
    ]
    # Listeners may come and go (the transport rebinds) and TLS settings change for new
    # connections; what calls already hold may not: an interface's media and advertised
    # addresses, and whether it answers strangers.
    for name, interface in old.interfaces.items():
        changed = new.interfaces.get(name)
        if (
            changed is not None
            and dataclasses.replace(changed, listen=interface.listen, tls=interface.tls)
            != interface
        ):
            problems.append(
                f"{new.source}: interfaces.{name}: only its listen list and tls settings may"
                " change without a restart (the reload was not applied)"
            )
    return problems


def _tune_gc() -> None:
    """Under load tens of thousands of transactions live for Timer J/H (32 s), and the
    default collector rescans them over and over: measured on the OPTIONS path, freezing
    what start-up allocated and collecting the young generation less often cut the time per
    request by about a quarter."""
    gc.freeze()
    gc.set_threshold(20_000, 20, 10)


def run(config: Config) -> int:
    """Run the SBC until SIGINT or SIGTERM; returns the process exit code."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(_main(config))


async def _main(config: Config) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await serve(config, stop)
    except ListenerError as exc:
        log.error("sbc.listener_failed", listener=exc.listener.name, error=exc.reason)
        return EXIT_FAILURE
    except StartupError as exc:
        log.error("sbc.start_failed", error=str(exc))
        return EXIT_FAILURE
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return EXIT_OK


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop where installed (a fraction of the per-datagram cost), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop
