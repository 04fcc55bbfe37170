"""The B2BUA call model (sans-I/O): a Call per INVITE, two independent legs, and the actions
the adapter carries out for it. The contract is in sbc.b2bua.api."""

from sbc.b2bua.api import (
    AllocateMedia,
    CallAction,
    CallEnded,
    CallSetup,
    CancelRequest,
    Cdr,
    DialogOpened,
    DigestSecret,
    LegId,
    LegPolicy,
    LocalEndpoint,
    LogEvent,
    PlayDtmf,
    ReleaseMedia,
    SendRequest,
    SendResponse,
    SendStateless,
    Target,
    UpdateMedia,
)
from sbc.b2bua.call import Call, Phase

__all__ = [
    "AllocateMedia",
    "Call",
    "CallAction",
    "CallEnded",
    "CallSetup",
    "CancelRequest",
    "Cdr",
    "DialogOpened",
    "DigestSecret",
    "LegId",
    "LegPolicy",
    "LocalEndpoint",
    "LogEvent",
    "Phase",
    "ReleaseMedia",
    "SendRequest",
    "SendResponse",
    "SendStateless",
    "Target",
    "PlayDtmf",
    "UpdateMedia",
]
