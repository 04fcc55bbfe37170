"""RFC 3261 §17 transaction layer with the RFC 6026 corrections (sans-I/O): four state
machines, message matching, and one timer heap."""

from sbc.sip.transaction.client import (
    ClientInviteState,
    ClientInviteTransaction,
    ClientNonInviteState,
    ClientNonInviteTransaction,
    build_ack,
    build_cancel,
)
from sbc.sip.transaction.events import (
    AckReceived,
    Action,
    Event,
    RequestReceived,
    ResponseReceived,
    Send,
    StrayResponse,
    Terminated,
    TimedOut,
    TransportFailed,
    TxnKey,
)
from sbc.sip.transaction.layer import MAGIC_COOKIE, TransactionLayer, new_branch
from sbc.sip.transaction.machine import TransactionError, TransactionStateError, Trigger
from sbc.sip.transaction.server import (
    ServerInviteState,
    ServerInviteTransaction,
    ServerNonInviteState,
    ServerNonInviteTransaction,
    build_trying,
)
from sbc.sip.transaction.timers import Timer, TimerSettings

__all__ = [
    "MAGIC_COOKIE",
    "AckReceived",
    "Action",
    "ClientInviteState",
    "ClientInviteTransaction",
    "ClientNonInviteState",
    "ClientNonInviteTransaction",
    "Event",
    "RequestReceived",
    "ResponseReceived",
    "Send",
    "ServerInviteState",
    "ServerInviteTransaction",
    "ServerNonInviteState",
    "ServerNonInviteTransaction",
    "StrayResponse",
    "Terminated",
    "TimedOut",
    "Timer",
    "TimerSettings",
    "TransactionError",
    "TransactionLayer",
    "TransactionStateError",
    "TransportFailed",
    "Trigger",
    "TxnKey",
    "build_ack",
    "build_cancel",
    "build_trying",
    "new_branch",
]
