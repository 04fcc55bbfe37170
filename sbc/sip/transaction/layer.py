"""The transaction layer: owns every client and server transaction, matches incoming messages
to them (RFC 3261 §17.1.3, §17.2.3, §9.2) and keeps one timer heap for all of them."""

from __future__ import annotations

import enum
import heapq
import itertools
import secrets
from collections.abc import Callable

from sbc.sip.headers import Via
from sbc.sip.message import Message, Request, Response, make_response, new_tag
from sbc.sip.peer import Peer, response_peer
from sbc.sip.transaction.client import (
    ClientInviteState,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ClientTransaction,
    build_cancel,
)
from sbc.sip.transaction.events import (
    AckReceived,
    Action,
    RequestReceived,
    Send,
    StrayResponse,
    Terminated,
    TxnKey,
)
from sbc.sip.transaction.machine import TransactionError
from sbc.sip.transaction.server import (
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    ServerTransaction,
)
from sbc.sip.transaction.timers import Timer, TimerSettings

MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 §8.1.1.7
_DEFAULT_PORTS = {"TLS": 5061, "WSS": 443, "WS": 80}  # anything else: 5060 (§18.1.1)
_COMPACT_AT = 1024


def new_branch() -> str:
    """A fresh Via branch: the RFC 3261 magic cookie plus 96 random bits."""
    return MAGIC_COOKIE + secrets.token_urlsafe(12)


def _sent_by(via: Via) -> str:
    port = via.port if via.port is not None else _DEFAULT_PORTS.get(via.transport, 5060)
    return f"{via.host.lower()}:{port}"


def _rfc2543_key(request: Request, method: str, to_tag: str | None) -> tuple[object, ...]:
    """RFC 3261 §17.2.3 matching for requests without the magic cookie: Request-URI, To tag,
    From tag, Call-ID, CSeq and top Via of the request that created the transaction."""
    via = request.via
    # received/rport are what our own transport stamped on the Via, not what the client sent.
    params = tuple(sorted((k, v) for k, v in via.params.items() if k not in ("received", "rport")))
    return (
        request.uri,
        to_tag,
        request.from_tag,
        request.call_id,
        request.cseq.number,
        method,
        via.transport,
        _sent_by(via),
        params,
    )


class TransactionLayer:
    """All transactions of one SIP stack. Inputs take `now`; outputs are Send actions and
    events for the TU. Call on_timer(now) when next_deadline() passes."""

    def __init__(
        self,
        settings: TimerSettings | None = None,
        *,
        max_per_source: int | None = None,
        exempt: Callable[[str], bool] | None = None,
    ) -> None:
        self.settings = settings if settings is not None else TimerSettings()
        # Server transactions one source address may hold at once (each keeps its request
        # for Timer J/H, up to 32 s): beyond it, 503 + Retry-After and no state kept.
        self.max_per_source = max_per_source
        self._per_source: dict[str, int] = {}
        self.refused_per_source = 0
        # Sources the cap does not apply to (a PBX or trunk: their rate is the business);
        # asked only when a source reaches the cap.
        self._exempt = exempt or (lambda host: False)
        self._clients: dict[TxnKey, ClientTransaction] = {}
        self._servers: dict[TxnKey, ServerTransaction] = {}
        self._rfc2543: dict[tuple[object, ...], TxnKey] = {}
        self._heap: list[tuple[float, int, TxnKey, Timer]] = []
        self._seq = itertools.count()
        self._compact_at = _COMPACT_AT

    def __len__(self) -> int:
        return len(self._clients) + len(self._servers)

    def __contains__(self, key: object) -> bool:
        return key in self._clients or key in self._servers

    def state(self, key: TxnKey) -> enum.Enum | None:
        """The state of a live transaction, or None once it is gone (tests, metrics)."""
        txn = self._servers.get(key) if key.server else self._clients.get(key)
        return txn.state if txn is not None else None

    # ----- from the network ------------------------------------------------------------
    def receive(self, msg: Message, source: Peer, now: float) -> list[Action]:
        """A parsed message from `source`. Requests should already carry the received/rport
        stamp (sbc.sip.peer.stamp_via) so that responses find their way back."""
        if isinstance(msg, Response):
            return self._receive_response(msg, source, now)
        if isinstance(msg, Request):
            return self._receive_request(msg, source, now)
        raise TypeError(f"expected a Request or Response, got {type(msg).__name__}")

    def _receive_response(self, resp: Response, source: Peer, now: float) -> list[Action]:
        # RFC 3261 §17.1.3: top Via branch plus CSeq method (CANCEL shares the INVITE branch).
        branch = resp.via.branch
        txn = self._clients.get(TxnKey(False, branch, resp.cseq.method)) if branch else None
        if txn is None:
            return [StrayResponse(resp, source)]  # §18.1.2: strays go to the core
        actions = txn.receive(resp, now)
        if type(txn) is ClientInviteTransaction and txn.cancel_wanted:
            if txn.state is ClientInviteState.PROCEEDING:
                actions += self._send_cancel(txn, now)  # §9.1: the provisional came
            elif txn.state is not ClientInviteState.CALLING:
                txn.cancel_wanted = False  # final answer first: CANCEL would be a no-op
        return self._settle(txn, actions)

    def _receive_request(self, req: Request, source: Peer, now: float) -> list[Action]:
        method = req.method
        via = req.via
        branch = via.branch
        key: TxnKey | None = None
        match_key: tuple[object, ...] | None = None
        if branch is not None and branch.startswith(MAGIC_COOKIE):
            # RFC 3261 §17.2.3: branch, sent-by, and method (an ACK matches its INVITE).
            key = TxnKey(True, branch, "INVITE" if method == "ACK" else method, _sent_by(via))
            txn = self._servers.get(key)
        else:
            txn, match_key = self._match_rfc2543(req, method)
        if method == "ACK":
            if type(txn) is ServerInviteTransaction:
                return self._settle(txn, txn.receive_ack(req, source, now))
            return [AckReceived(req, source)]  # RFC 6026 §7.1: the 2xx ACK is the TU's
        if txn is not None:
            return self._settle(txn, txn.receive_request(req, now))  # a retransmission
        if key is None:
            # No usable branch (RFC 2543 peer): a synthetic one keeps keys unique.
            key = TxnKey(True, f"rfc2543-{next(self._seq)}", method, _sent_by(via))
        return self._new_server(key, req, source, match_key, now)

    def _match_rfc2543(
        self, req: Request, method: str
    ) -> tuple[ServerTransaction | None, tuple[object, ...]]:
        to_tag = req.to_tag
        if method != "ACK":
            match_key = _rfc2543_key(req, method, to_tag)
            key = self._rfc2543.get(match_key)
            return (self._servers.get(key) if key is not None else None), match_key
        # The ACK's To tag is that of our response: the INVITE had either the same tag (a
        # re-INVITE) or none (§17.2.3).
        for invite_tag in (to_tag, None):
            match_key = _rfc2543_key(req, "INVITE", invite_tag)
            key = self._rfc2543.get(match_key)
            txn = self._servers.get(key) if key is not None else None
            if type(txn) is ServerInviteTransaction and txn.response_to_tag == to_tag:
                return txn, match_key
        return None, match_key

    def _new_server(
        self,
        key: TxnKey,
        req: Request,
        source: Peer,
        match_key: tuple[object, ...] | None,
        now: float,
    ) -> list[Action]:
        method = req.method
        dest = response_peer(req.via, source)  # RFC 3261 §18.2.2, RFC 3581 §4
        limit = self.max_per_source
        if limit is not None:
            held = self._per_source.get(source.host, 0)
            if held >= limit and not self._exempt(source.host):
                self.refused_per_source += 1
                busy = make_response(req, 503, headers=[("Retry-After", "5")], to_tag=new_tag())
                return [Send(dest, busy)]
            self._per_source[source.host] = held + 1
        txn: ServerTransaction
        if method == "INVITE":
            txn = ServerInviteTransaction(key, req, source, dest, self.settings)
        else:
            txn = ServerNonInviteTransaction(key, req, source, dest, self.settings)
        txn.match_key = match_key
        self._servers[key] = txn
        if match_key is not None:
            self._rfc2543[match_key] = key
        actions = txn.start(now)
        target = self._cancel_target(req) if method == "CANCEL" else None
        actions.append(RequestReceived(key, req, source, target))
        return self._settle(txn, actions)

    def _cancel_target(self, cancel: Request) -> TxnKey | None:
        """RFC 3261 §9.2: match the CANCEL as if its method were INVITE."""
        via = cancel.via
        branch = via.branch
        if branch is not None and branch.startswith(MAGIC_COOKIE):
            key = TxnKey(True, branch, "INVITE", _sent_by(via))
            return key if key in self._servers else None
        found = self._rfc2543.get(_rfc2543_key(cancel, "INVITE", cancel.to_tag))
        return found if found is not None and found in self._servers else None

    def abandon(self, key: TxnKey) -> list[Action]:
        """End a server transaction without answering (its source was just blocked: an
        answer would tell a scanner we exist). [Terminated] when it existed, else []."""
        txn = self._servers.get(key)
        if txn is None:
            return []
        txn.abort()
        return self._settle(txn, [])

    def abandon_source(self, host: str, keep: Callable[[TxnKey], bool]) -> list[Action]:
        """End, unanswered and without retransmissions, every server transaction of `host`
        except those `keep` names (a call's, which the call ends properly). A source
        blocked after its INVITE was answered 401/407 would otherwise get that answer
        again until Timer H, since its ACKs are dropped now."""
        actions: list[Action] = []
        for key, txn in list(self._servers.items()):
            if txn.source.host == host and not keep(key):
                actions += self.abandon(key)
        return actions

    # ----- from the TU -----------------------------------------------------------------
    def send_request(self, request: Request, dest: Peer, now: float) -> tuple[TxnKey, list[Action]]:
        """Start a client transaction. The TU has put a top Via with a fresh branch (new_branch())."""
        method = request.method
        if method == "ACK":
            raise TransactionError(
                "ACK has no client transaction (RFC 3261 §17.1): use send_stateless()"
            )
        branch = request.via.branch
        if not branch:
            raise TransactionError(
                f"{method} request: top Via has no branch; add one with new_branch()"
            )
        key = TxnKey(False, branch, method)
        if key in self._clients:
            raise TransactionError(
                f"{method} request: branch {branch} is already in use by a live transaction; "
                "every request needs a new branch"
            )
        txn: ClientTransaction
        if method == "INVITE":
            txn = ClientInviteTransaction(key, request, dest, self.settings)
        else:
            txn = ClientNonInviteTransaction(key, request, dest, self.settings)
        self._clients[key] = txn
        return key, self._settle(txn, txn.start(now))

    def send_stateless(self, message: Message, dest: Peer) -> list[Action]:
        """Outside any transaction: the ACK for a 2xx, a 2xx retransmission after Timer L."""
        return [Send(dest, message)]

    def send_response(self, key: TxnKey, response: Response, now: float) -> list[Action]:
        """Send a response through server transaction `key` (it retransmits as needed)."""
        txn = self._servers.get(key)
        if txn is None:
            raise TransactionError(
                f"no server transaction {key.method} {key.branch}: it has ended "
                "(send a late 2xx retransmission with send_stateless())"
            )
        return self._settle(txn, txn.send(response, now))

    def cancel(self, invite_key: TxnKey, now: float) -> list[Action]:
        """CANCEL a client INVITE (RFC 3261 §9.1): sent at once if a provisional came, else
        when the first one comes; nothing once a final response came. The CANCEL's own
        transaction key is TxnKey(False, invite_key.branch, 'CANCEL')."""
        txn = self._clients.get(invite_key)
        if type(txn) is not ClientInviteTransaction or txn.cancel_sent:
            return []
        if txn.state is ClientInviteState.CALLING:
            txn.cancel_wanted = True
            return []
        if txn.state is ClientInviteState.PROCEEDING:
            return self._settle(txn, self._send_cancel(txn, now))
        return []

    def _send_cancel(self, invite: ClientInviteTransaction, now: float) -> list[Action]:
        key = TxnKey(False, invite.key.branch, "CANCEL")
        if key in self._clients:
            return []  # the TU already sent its own CANCEL on this branch
        # §9.1: the CANCEL goes to the same address, port and transport as the INVITE.
        txn = ClientNonInviteTransaction(
            key, build_cancel(invite.request), invite.peer, self.settings
        )
        self._clients[key] = txn
        invite.note_cancel_sent(now)
        return self._settle(txn, txn.start(now))

    def transport_error(self, key: TxnKey, now: float) -> list[Action]:
        """The transport failed to deliver a message of transaction `key` (§17.1.4, §17.2.4)."""
        txn: ClientTransaction | ServerTransaction | None
        txn = self._servers.get(key) if key.server else self._clients.get(key)
        if txn is None:
            return []
        return self._settle(txn, txn.transport_error(now))

    # ----- time ------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def on_timer(self, now: float) -> list[Action]:
        actions: list[Action] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if not self._live(entry):
                continue  # stopped, re-armed or its transaction is gone
            key = entry[2]
            txn: ClientTransaction | ServerTransaction | None
            txn = self._servers.get(key) if key.server else self._clients.get(key)
            if txn is not None:
                actions += self._settle(txn, txn.fire(entry[3], now))
        return actions

    def _live(self, entry: tuple[float, int, TxnKey, Timer]) -> bool:
        key = entry[2]
        txn: ClientTransaction | ServerTransaction | None
        txn = self._servers.get(key) if key.server else self._clients.get(key)
        return txn is not None and txn.timers.get(entry[3]) == entry[0]

    # ----- bookkeeping -----------------------------------------------------------------
    def _settle(
        self, txn: ClientTransaction | ServerTransaction, actions: list[Action]
    ) -> list[Action]:
        """Move the transaction's new timers to the heap; forget it once Terminated."""
        if txn.terminated:
            txn.armed.clear()
            key = txn.key
            if isinstance(txn, ServerInviteTransaction | ServerNonInviteTransaction):
                if self._servers.pop(key, None) is not None and self.max_per_source is not None:
                    host = txn.source.host
                    left = self._per_source.get(host, 1) - 1
                    if left > 0:
                        self._per_source[host] = left
                    else:
                        self._per_source.pop(host, None)
                match_key = txn.match_key
                if match_key is not None and self._rfc2543.get(match_key) == key:
                    del self._rfc2543[match_key]
            else:
                self._clients.pop(key, None)
            actions.append(Terminated(key))
            return actions
        if txn.armed:
            heap = self._heap
            for deadline, timer in txn.armed:
                heapq.heappush(heap, (deadline, next(self._seq), txn.key, timer))
            txn.armed.clear()
            if len(heap) >= self._compact_at:
                self._compact()
        return actions

    def _compact(self) -> None:
        """Drop stale heap entries so stopped timers cannot pile up (amortised O(1))."""
        self._heap = [entry for entry in self._heap if self._live(entry)]
        heapq.heapify(self._heap)
        self._compact_at = max(_COMPACT_AT, 2 * len(self._heap))
