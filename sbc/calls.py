"""The asyncio side of calls: finds the Call a message belongs to, feeds it, and carries out
what it asks (send through the transaction layer, open and steer relay ports, log the CDR).

The decisions live in the sans-I/O Call (sbc.b2bua); this module only looks things up in
dicts and moves events, so the per-message path stays a few lookups long.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from media.backend import MediaBackend
from media.plan import LegMedia
from media.relay import DtmfHeard, MediaTimeout, SessionStats
from media.session import Leg
from sbc.b2bua import (
    AllocateMedia,
    Call,
    CallAction,
    CallEnded,
    CallSetup,
    CancelRequest,
    DialogOpened,
    LegId,
    LocalEndpoint,
    LogEvent,
    PlayDtmf,
    ReleaseMedia,
    SendRequest,
    SendResponse,
    SendStateless,
    UpdateMedia,
)
from sbc.b2bua.call import SdpView
from sbc.b2bua.media_plan import plan_leg
from sbc.cdr import CdrRecord, CdrWriter, WallClock
from sbc.log import get_logger
from sbc.metrics import Metrics
from sbc.sip.message import Request, Response
from sbc.sip.peer import Peer
from sbc.sip.transaction import Action, TransactionLayer, TxnKey

log = get_logger("call")

DialogKey = tuple[str, str, str]  # (Call-ID, local tag, remote tag)
_MEDIA_LEG = {LegId.A: Leg.A, LegId.B: Leg.B}


@dataclass(slots=True)
class _Entry:
    """A live call and every key the adapter filed it under (removed together at the end)."""

    call: Call
    setup: CallSetup
    dialogs: list[DialogKey] = field(default_factory=list)
    transactions: list[TxnKey] = field(default_factory=list)
    media: bool = False
    # The SDP the relay's stream settings were last derived from, per leg (identity
    # compared after every batch of actions), and those settings.
    views: tuple[SdpView, SdpView] | None = None
    plans: dict[LegId, tuple[LegMedia | None, ...]] = field(default_factory=dict)
    deadline: float | None = None
    target: str = ""  # the trunk or PBX leg B goes to, as counted in per_target
    ticket: object = None  # the admission policy's hold on this call, given back at its end
    started: float = 0.0  # the INVITE's arrival (adapter clock): setup times
    progressed: bool = False  # leg B sent its first provisional answer (beyond 100)


class CallAdapter:
    """Owns the live calls. `execute` is the SignallingService's way to run transaction-layer
    actions (sends) it gets back from the layer."""

    def __init__(
        self,
        transactions: TransactionLayer,
        relay: MediaBackend,
        execute: Callable[[Iterable[Action], float], None],
        now: Callable[[], float],
    ) -> None:
        self.transactions = transactions
        self.relay = relay
        self._execute = execute
        self._now = now
        self.calls: dict[str, _Entry] = {}
        self._by_dialog: dict[DialogKey, tuple[_Entry, LegId]] = {}
        self._by_txn: dict[TxnKey, tuple[_Entry, LegId]] = {}
        self._timers: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._per_target: dict[str, int] = {}  # live calls per trunk/PBX (max_calls, least_calls)
        self.idle = asyncio.Event()  # set while no call is live (a shutdown drain waits on it)
        self.idle.set()
        relay.on_timeout = self._media_timeout
        relay.on_dtmf = self._media_dtmf
        relay.on_lost = self._media_lost

    def __len__(self) -> int:
        return len(self.calls)

    def per_target(self, name: str) -> int:
        return self._per_target.get(name, 0)

    # Told when a call ends, with the ticket attached to it (sbc.policy gives back what the
    # call held); and when failover moves a call to another trunk (the policy moves it).
    on_call_end: Callable[[object, float], None] | None = None
    # Operations: metrics counted at call events, a CDR written at each end (None: off).
    metrics: Metrics | None = None
    cdr: CdrWriter | None = None
    wall: WallClock = WallClock(0.0)
    on_target_moved: Callable[[object, str, float], None] | None = None

    def attach(self, key: str, ticket: object) -> None:
        entry = self.calls.get(key)
        if entry is not None:
            entry.ticket = ticket
        elif self.on_call_end is not None:
            self.on_call_end(ticket, self._now())  # ended already (answered at once, failed)

    def _count(self, entry: _Entry) -> None:
        """Keep per_target right as calls start, move to another trunk, and end."""
        name = "" if entry.call.ended else entry.call.target.name
        if name == entry.target:
            return
        moved = bool(entry.target and name)
        if entry.target:
            self._per_target[entry.target] -= 1
        if name:
            self._per_target[name] = self._per_target.get(name, 0) + 1
        entry.target = name
        if moved and entry.ticket is not None and self.on_target_moved is not None:
            self.on_target_moved(entry.ticket, name, self._now())

    @property
    def indexed(self) -> tuple[int, int]:
        """(dialogs, transactions) still filed under some call: zero once calls are gone."""
        return len(self._by_dialog), len(self._by_txn)

    # ----- finding the call a message belongs to ------------------------------------------
    def new_call(
        self, setup: CallSetup, key: TxnKey, invite: Request, source: Peer, now: float
    ) -> None:
        settings = self.transactions.settings
        call = Call(setup, key, invite, source, now, t1=settings.t1, t2=settings.t2)
        entry = _Entry(call, setup, started=now)
        self.calls[setup.call_key] = entry
        self.idle.clear()
        if self.metrics is not None:
            self.metrics.call_attempt(setup.direction)
        self._file_txn(entry, LegId.A, key)
        log.info(
            "call.new",
            call=setup.call_key,
            direction=setup.direction,
            caller=setup.caller,
            callee=setup.callee_rewritten,
            target=setup.targets[0].name if setup.targets else None,
        )
        self._run(entry, call.start(now), now)

    def for_request(self, request: Request) -> tuple[_Entry, LegId] | None:
        """The call and leg of an in-dialog request: our tag is its To tag (RFC 3261 §12.2.2)."""
        to_tag = request.to_tag
        if to_tag is None:
            return None
        return self._by_dialog.get((request.call_id, to_tag, request.from_tag or ""))

    def for_transaction(self, key: TxnKey) -> tuple[_Entry, LegId] | None:
        return self._by_txn.get(key)

    # ----- inputs ---------------------------------------------------------------------------
    def request(
        self, found: tuple[_Entry, LegId], key: TxnKey, request: Request, source: Peer, now: float
    ) -> None:
        entry, leg = found
        self._file_txn(entry, leg, key)
        self._run(entry, entry.call.on_request(leg, key, request, source, now), now)

    def ack(self, found: tuple[_Entry, LegId], request: Request, now: float) -> None:
        entry, leg = found
        self._run(entry, entry.call.on_ack(leg, request, now), now)

    def response(self, key: TxnKey, response: Response, now: float) -> bool:
        found = self._by_txn.get(key)
        if found is None:
            return False
        entry, leg = found
        if (
            not entry.progressed
            and leg is LegId.B
            and 100 < response.status < 200
            and response.cseq.method == "INVITE"
        ):
            entry.progressed = True
            if self.metrics is not None:
                self.metrics.call_progress(entry.setup.direction, now - entry.started)
        self._run(entry, entry.call.on_response(leg, key, response, now), now)
        return True

    def failure(self, key: TxnKey, reason: str, now: float) -> bool:
        found = self._by_txn.get(key)
        if found is None:
            return False
        entry, leg = found
        self._run(entry, entry.call.on_failure(leg, key, reason, now), now)
        return True

    def transaction_ended(self, key: TxnKey) -> None:
        found = self._by_txn.pop(key, None)
        if found is not None:
            try:
                found[0].transactions.remove(key)
            except ValueError:
                pass

    def hangup(self, key: str, reason: str) -> bool:
        """End one call on both legs (operator's request); False when it is not live."""
        entry = self.calls.get(key)
        if entry is None:
            return False
        now = self._now()
        self._run(entry, entry.call.hangup(reason, now), now)
        if self.rearm is not None:
            self.rearm()
        return True

    def hangup_all(self, reason: str) -> None:
        now = self._now()
        for entry in list(self.calls.values()):
            self._run(entry, entry.call.hangup(reason, now), now)

    # ----- timers: one heap for all calls; the service arms one loop timer ----------------
    def next_deadline(self) -> float | None:
        timers = self._timers
        while timers:
            deadline, _, key = timers[0]
            entry = self.calls.get(key)
            if entry is not None and entry.deadline == deadline:
                return deadline
            heapq.heappop(timers)  # stale: the call ended or moved its deadline
        return None

    def on_timer(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, _, key = heapq.heappop(timers)
            entry = self.calls.get(key)
            if entry is None or entry.deadline != deadline:
                continue
            entry.deadline = None
            self._run(entry, entry.call.on_timer(now), now)

    def _schedule(self, entry: _Entry) -> None:
        deadline = entry.call.next_deadline()
        if deadline != entry.deadline:
            entry.deadline = deadline
            if deadline is not None:
                heapq.heappush(self._timers, (deadline, next(self._seq), entry.setup.call_key))

    # ----- carrying out a call's actions -------------------------------------------------------
    def _run(self, entry: _Entry, actions: list[CallAction], now: float) -> None:
        call_key = entry.setup.call_key
        for action in actions:
            if isinstance(action, SendRequest):
                dest = self._with_listener(entry, action.leg, action.dest)
                key, sent = self.transactions.send_request(action.request, dest, now)
                self._file_txn(entry, action.leg, key)
                entry.call.request_sent(action.leg, action.tag, key)
                self._execute(sent, now)
            elif isinstance(action, SendResponse):
                self._execute(
                    self.transactions.send_response(action.key, action.response, now), now
                )
            elif isinstance(action, SendStateless):
                dest = self._with_listener(entry, action.leg, action.dest)
                self._execute(self.transactions.send_stateless(action.message, dest), now)
            elif isinstance(action, CancelRequest):
                self._execute(self.transactions.cancel(action.key, now), now)
            elif isinstance(action, DialogOpened):
                dialog = (action.call_id, action.local_tag, action.remote_tag)
                self._by_dialog[dialog] = (entry, action.leg)
                entry.dialogs.append(dialog)
            elif isinstance(action, AllocateMedia):
                self._spawn(self._allocate(entry, action.streams))
            elif isinstance(action, UpdateMedia):
                self._update_media(entry, action)
            elif isinstance(action, PlayDtmf):
                self._play_dtmf(entry, action)
            elif isinstance(action, ReleaseMedia):
                self._release_media(entry)
            elif isinstance(action, CallEnded):
                self._end(entry, action)
            elif isinstance(action, LogEvent):
                emit = log.debug if action.debug else log.info
                emit(action.event, call=call_key, **dict(action.fields))
                if action.event == "call.answered" and self.metrics is not None:
                    self.metrics.call_answered(entry.setup.direction, now - entry.started)
        if entry.media:
            views = entry.call.media_views()
            if not _same_views(views, entry.views):
                self._configure_media(entry, views)
        if call_key in self.calls:
            self._schedule(entry)
        if entry.target != ("" if entry.call.ended else entry.call.target.name):
            self._count(entry)

    def _with_listener(self, entry: _Entry, leg: LegId, dest: Peer) -> Peer:
        if dest.listener:
            return dest
        local = self._local(entry, leg)
        return Peer(dest.transport or local.transport, dest.host, dest.port, local.listener)

    @staticmethod
    def _local(entry: _Entry, leg: LegId) -> LocalEndpoint:
        if leg is LegId.A:
            return entry.setup.a_local
        return entry.call.target.local  # the target leg B goes to now (failover moves it)

    def _file_txn(self, entry: _Entry, leg: LegId, key: TxnKey) -> None:
        self._by_txn[key] = (entry, leg)
        entry.transactions.append(key)

    def _end(self, entry: _Entry, ended: CallEnded) -> None:
        cdr = ended.cdr
        key = entry.setup.call_key
        log.info(
            "call.ended",
            call=key,
            status=cdr.status,
            ended_by=cdr.ended_by,
            reason=cdr.reason,
            a_call_id=cdr.a_call_id,
            b_call_id=cdr.b_call_id,
            target=cdr.target,
            duration=round(cdr.end - cdr.answer, 3) if cdr.answer is not None else 0,
        )
        self.calls.pop(key, None)
        if not self.calls:
            self.idle.set()
        if self.metrics is not None:
            self.metrics.call_ended(cdr)
        if self.cdr is not None:
            self.cdr.call_ended(
                CdrRecord.from_cdr(
                    cdr,
                    self.wall,
                    origin=entry.setup.origin,
                    caller_rewritten=entry.call.target.identity or None,
                )
            )
        if entry.ticket is not None and self.on_call_end is not None:
            ticket, entry.ticket = entry.ticket, None
            self.on_call_end(ticket, self._now())
        for dialog in entry.dialogs:
            if self._by_dialog.get(dialog, (None,))[0] is entry:
                del self._by_dialog[dialog]
        # Transactions still running (a BYE's 200 retransmissions, Timer K...) finish in the
        # transaction layer; responses for them no longer find a call and are dropped.
        for txn in entry.transactions:
            if self._by_txn.get(txn, (None,))[0] is entry:
                del self._by_txn[txn]
        if entry.media:
            self._release_media(entry)

    # ----- media ------------------------------------------------------------------------
    async def _allocate(self, entry: _Entry, streams: int) -> None:
        setup = entry.setup
        key = setup.call_key
        try:
            await self.relay.open_session(
                key, streams, setup.a_local.media_address, setup.targets[0].local.media_address
            )
        except Exception as exc:  # ports exhausted, address not local...
            log.error("media.allocate_failed", call=key, error=str(exc))
            if key in self.calls:
                now = self._now()
                self._run(entry, entry.call.hangup("media allocation failed", now), now)
            return
        if key not in self.calls:  # the call ended while the ports were being bound
            await self.relay.close_session(key)
            return
        entry.media = True
        ends_a = _advertised(self.relay.endpoints(key, Leg.A), setup.a_local)
        ends_b = _advertised(self.relay.endpoints(key, Leg.B), setup.targets[0].local)
        now = self._now()
        self._run(entry, entry.call.on_media_ready(ends_a, ends_b, now), now)
        self._rearm()

    def _update_media(self, entry: _Entry, action: UpdateMedia) -> None:
        key = entry.setup.call_key
        if not entry.media:
            return
        leg = _MEDIA_LEG[action.leg]
        for index, remote in enumerate(action.remotes):
            try:
                self.relay.set_remote(key, index, leg, remote)
            except Exception as exc:  # a stream the relay no longer has
                log.warning("media.update_failed", call=key, stream=index, error=str(exc))

    def _configure_media(self, entry: _Entry, views: tuple[SdpView, SdpView]) -> None:
        """Codec, SRTP keys and DTMF handling of each stream, as the latest SDP says."""
        old = entry.views
        entry.views = views
        key = entry.setup.call_key
        for index, (leg_id, (ours, theirs)) in enumerate(
            zip((LegId.A, LegId.B), views, strict=True)
        ):
            if old is not None and old[index][0] is ours and old[index][1] is theirs:
                continue  # this leg's SDP did not change
            if ours is None or theirs is None:
                continue  # an offer not answered yet: nothing agreed to configure
            leg = entry.call.a if leg_id is LegId.A else entry.call.b
            plans = plan_leg(ours, theirs, leg.policy.dtmf)
            if plans == entry.plans.get(leg_id):
                continue
            entry.plans[leg_id] = plans
            for index, plan in enumerate(plans):
                if plan is None:
                    continue
                try:
                    self.relay.configure(key, index, _MEDIA_LEG[leg_id], plan)
                except Exception as exc:  # a stream the relay no longer has, unusable keys
                    log.warning("media.configure_failed", call=key, stream=index, error=str(exc))

    def _play_dtmf(self, entry: _Entry, action: PlayDtmf) -> None:
        key = entry.setup.call_key
        plans = entry.plans.get(action.leg, ())
        stream = next(
            (i for i, p in enumerate(plans) if p is not None and p.events_out is not None), None
        )
        if not entry.media or stream is None:
            log.warning(
                "media.dtmf_dropped", call=key, digit=action.digit, why="no telephone-event"
            )
            return
        try:
            self.relay.play_dtmf(
                key, stream, _MEDIA_LEG[action.leg], action.digit, action.duration_ms
            )
        except Exception as exc:
            log.warning("media.dtmf_dropped", call=key, digit=action.digit, why=str(exc))

    def _media_lost(self, keys: list[str], reason: str) -> None:
        """A media worker died with these calls' streams: end each call cleanly (BYE both
        ways, CDR) rather than leave parties listening to nothing."""
        now = self._now()
        for key in keys:
            entry = self.calls.get(key)
            if entry is None:
                continue
            entry.media = False  # the session died with the worker: nothing to close
            log.warning("media.lost", call=key, reason=reason)
            self._run(entry, entry.call.hangup("media relay lost", now), now)
        self._rearm()

    def _media_dtmf(self, heard: DtmfHeard) -> None:
        entry = self.calls.get(heard.session)
        if entry is None:
            return
        now = self._now()
        leg = LegId.A if heard.leg is Leg.A else LegId.B
        self._run(entry, entry.call.on_dtmf(leg, heard.digit, heard.duration_ms, now), now)
        self._rearm()

    def _release_media(self, entry: _Entry) -> None:
        if not entry.media:
            return
        entry.media = False
        key = entry.setup.call_key
        if key in self.relay:
            self._spawn(self._close_media(key))

    async def _close_media(self, key: str) -> None:
        try:
            stats = await self.relay.close_session(key)
        except Exception as exc:
            log.warning("media.release_failed", call=key, error=str(exc))
            return
        log.debug("media.released", call=key, legs=len(stats.legs))
        _log_quality(key, stats)
        if self.cdr is not None:
            self.cdr.media_quality(key, stats.streams)
        if self.metrics is not None:
            for stream in stats.streams:
                for report in (stream.from_a, stream.from_b):
                    self.metrics.media_quality(report.to_dict())

    def _media_timeout(self, timeout: MediaTimeout) -> None:
        entry = self.calls.get(timeout.session)
        if entry is None:
            return
        now = self._now()
        self._run(entry, entry.call.on_media_timeout(now), now)
        self._rearm()

    # ----- plumbing -------------------------------------------------------------------------
    rearm: Callable[[], None] | None = None

    def _rearm(self) -> None:
        if self.rearm is not None:
            self.rearm()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _advertised(
    endpoints: list[tuple[str, int] | None], local: LocalEndpoint
) -> tuple[tuple[str, int] | None, ...]:
    """Relay endpoints as SDP must name them: the advertised address behind NAT."""
    if local.sdp_address is None:
        return tuple(endpoints)
    return tuple(None if e is None else (local.sdp_address, e[1]) for e in endpoints)


def _same_views(new: tuple[SdpView, SdpView], old: tuple[SdpView, SdpView] | None) -> bool:
    """Identity, not equality: descriptions are immutable and replaced when they change."""
    if old is None:
        return False
    return all(
        n is o
        for pair_new, pair_old in zip(new, old, strict=True)
        for n, o in zip(pair_new, pair_old, strict=True)
    )


def _log_quality(key: str, stats: SessionStats) -> None:
    """One line per stream and direction at the end of a call: what the CDR will carry."""
    for stream in stats.streams:
        for source, report, srtp in (
            ("a", stream.from_a, stream.srtp_a),
            ("b", stream.from_b, stream.srtp_b),
        ):
            if report.packets == 0 and report.rtcp_packets == 0:
                continue
            log.info(
                "media.quality",
                call=key,
                stream=stream.stream,
                source=source,
                codec=report.codec,
                packets=report.packets,
                lost=report.lost,
                loss=round(report.loss_fraction, 4),
                jitter_ms=round(report.jitter_ms, 2),
                rtt_ms=None if report.rtt_ms is None else round(report.rtt_ms, 1),
                mos=None if report.mos is None else round(report.mos, 2),
                srtp_auth_failures=None if srtp is None else srtp.auth_failures,
            )
