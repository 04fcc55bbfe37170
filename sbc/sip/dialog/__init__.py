"""RFC 3261 §12 dialogs for the B2BUA's two legs (sans-I/O): dialog state and in-dialog
requests, the table that matches messages to dialogs, forking, 2xx and 100rel bookkeeping."""

from sbc.sip.dialog.core import (
    MAX_FORWARDS,
    TARGET_REFRESH,
    TRANSITIONS,
    Dialog,
    DialogEvent,
    DialogKey,
    DialogState,
    Role,
    ends_dialog,
)
from sbc.sip.dialog.errors import DialogError, DialogStateError
from sbc.sip.dialog.reliable import (
    RAck,
    ReliableProvisionals,
    RSeqCheck,
    is_reliable,
    parse_rack,
    parse_rseq,
    rack_of,
)
from sbc.sip.dialog.retransmit import (
    GiveUp,
    ReliableProvisionalRetransmitter,
    ResponseRetransmitter,
    TwoXXRetransmitter,
)
from sbc.sip.dialog.table import DialogSet, DialogTable, message_key

__all__ = [
    "MAX_FORWARDS",
    "TARGET_REFRESH",
    "TRANSITIONS",
    "Dialog",
    "DialogError",
    "DialogEvent",
    "DialogKey",
    "DialogSet",
    "DialogState",
    "DialogStateError",
    "DialogTable",
    "GiveUp",
    "RAck",
    "RSeqCheck",
    "ReliableProvisionalRetransmitter",
    "ReliableProvisionals",
    "ResponseRetransmitter",
    "Role",
    "TwoXXRetransmitter",
    "ends_dialog",
    "is_reliable",
    "message_key",
    "parse_rack",
    "parse_rseq",
    "rack_of",
]
