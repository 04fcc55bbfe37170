"""What the transaction layer hands back: Send actions for the transport and events for the
transaction user (TU), plus the key that names a transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from sbc.sip.message import Message, Request, Response
from sbc.sip.peer import Peer


class TxnKey(NamedTuple):
    """Names one transaction. Client keys are (branch, method) as RFC 3261 §17.1.3 matches
    responses; server keys add the top Via sent-by (§17.2.3). Server transactions created by
    RFC 2543 requests (no magic cookie) get a synthetic branch unique to this layer.

    A NamedTuple: hashed in C on every dict lookup, and (holding only strings) untracked by
    the cyclic collector while tens of thousands of transactions wait out their timers."""

    server: bool
    branch: str
    method: str
    sent_by: str = ""


@dataclass(frozen=True, slots=True)
class Send:
    """Pass `message` to the transport for `peer`."""

    peer: Peer
    message: Message


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request created server transaction `txn_key`; answer with send_response().

    For a CANCEL, `cancel_target` is the INVITE server transaction it cancels (RFC 3261 §9.2),
    or None: then the TU should answer the CANCEL with 481.
    """

    txn_key: TxnKey
    request: Request
    source: Peer
    cancel_target: TxnKey | None = None


@dataclass(frozen=True, slots=True)
class AckReceived:
    """An ACK that no transaction absorbed: the end-to-end ACK for a 2xx (RFC 6026 §7.1)."""

    request: Request
    source: Peer


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response for client transaction `txn_key` (retransmissions already filtered, except
    2xx to INVITE, which all reach the TU: RFC 6026 §7.2)."""

    txn_key: TxnKey
    response: Response


@dataclass(frozen=True, slots=True)
class StrayResponse:
    """A response matching no client transaction (RFC 3261 §18.1.2): e.g. a 2xx retransmission
    after Timer M, or a forked 2xx; the TU (dialog layer) decides what to do with it."""

    response: Response
    source: Peer


@dataclass(frozen=True, slots=True)
class TimedOut:
    """Timer B or F (client: no final response), or Timer H (INVITE server: no ACK came)."""

    txn_key: TxnKey


@dataclass(frozen=True, slots=True)
class TransportFailed:
    """The transport could not deliver a message of this transaction (RFC 3261 §17.1.4, §17.2.4)."""

    txn_key: TxnKey


@dataclass(frozen=True, slots=True)
class Terminated:
    """The transaction reached Terminated and the layer forgot it."""

    txn_key: TxnKey


Event = (
    RequestReceived
    | AckReceived
    | ResponseReceived
    | StrayResponse
    | TimedOut
    | TransportFailed
    | Terminated
)
Action = Send | Event
