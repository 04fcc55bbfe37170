"""What crosses the boundary of the B2BUA call model (sans-I/O): the inputs the adapter
feeds a Call, the actions a Call returns, and the plain data both share.

The adapter (sbc.signalling) owns the transaction layer, the dialog table, the media relay
and the sockets. It creates a Call for each new INVITE that routing accepted, hands it every
message and timer of its two legs, and carries out the actions the Call returns. The Call
never sees a socket, a clock or a transaction object: only messages, TxnKeys and `now`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from sbc.sip.message import Request, Response
from sbc.sip.peer import Peer
from sbc.sip.transaction import TxnKey


class LegId(enum.Enum):
    """Leg A answers the INVITE that created the call; leg B sends the INVITE onward."""

    A = "a"
    B = "b"

    @property
    def other(self) -> LegId:
        return LegId.B if self is LegId.A else LegId.A


@dataclass(frozen=True, slots=True)
class LocalEndpoint:
    """Our side of one leg: what Via, Contact and SDP on that leg may name (topology hiding:
    only the interface of that leg, never the other one)."""

    interface: str  # config interface name, e.g. 'internal'
    transport: str  # 'udp' | 'tcp' | 'tls' (the Via transport in upper case on the wire)
    host: str  # address written into Via sent-by and Contact (advertise, else listen host)
    port: int  # our listening port on that interface for `transport`
    listener: str  # Peer.listener name the adapter sends through
    media_address: str  # where the relay binds this leg's ports
    user_agent: str | None = None  # User-Agent/Server written on this leg; None: none
    sdp_address: str | None = None  # what SDP c=/o= name (the advertised, NAT-public address);
    # None: media_address. The adapter hands the Call relay endpoints already carrying it.


@dataclass(frozen=True, slots=True)
class LegPolicy:
    """Per-side rules from config (trunk or PBX settings) applied to the leg facing it."""

    codecs: tuple[str, ...] = ()  # allowed codecs in order; () keeps the offer's
    allowed_headers: tuple[str, ...] = ()  # extra headers (lower-case names) that may cross
    pai: str = "pass"  # 'pass' | 'strip' (RFC 3325 P-Asserted-Identity toward this side)
    refer: str = "reject"  # 'reject' (603) | 'relay'
    supports_100rel: bool = True
    session_expires: int = 1800  # RFC 4028 interval we ask for on this leg; 0 disables timers
    min_se: int = 90
    # How this side signals DTMF: 'rfc4733' (telephone-event in RTP) or 'info' (SIP INFO,
    # application/dtmf-relay). When the two sides differ, the SBC translates.
    dtmf: str = "rfc4733"
    # SRTP toward this side (RFC 4568 SDES): 'off' plain RTP, 'optional' offer both and take
    # what the peer chooses, 'required' SRTP or the call is refused (488).
    srtp: str = "off"


@dataclass(frozen=True, slots=True)
class DigestSecret:
    """Credentials for the target's digest challenges (401/407 on our requests)."""

    username: str  # the digest username
    password: str
    realm: str | None = None  # answer only this realm's challenges; None: any

    def __repr__(self) -> str:  # never print the password
        return f"DigestSecret(username={self.username!r}, realm={self.realm!r}, password='***')"


@dataclass(frozen=True, slots=True)
class Target:
    """Where leg B goes: one trunk gateway or the PBX."""

    kind: str  # 'trunk' | 'pbx'
    name: str  # trunk or PBX name from config
    dest: Peer  # where the INVITE is sent (listener filled in by the adapter)
    request_uri: str  # Request-URI of leg B's INVITE, e.g. 'sip:+4930123456@127.0.0.1:5090'
    to_uri: str  # To URI of leg B
    from_uri: str  # From URI of leg B (caller identity after rewriting; host is ours)
    local: LocalEndpoint  # our side toward the target
    policy: LegPolicy = field(default_factory=LegPolicy)
    credentials: DigestSecret | None = None  # None: a challenge fails this target
    setup_timeout: float = 0  # s without a final answer before the next target; 0: none
    fail_on_6xx: bool = False  # 6xx moves on to the next target (else it is the answer)
    identity: str | None = None  # the number asserted toward it (From user and PAI); None: caller's


@dataclass(frozen=True, slots=True)
class CallSetup:
    """Everything a new Call needs besides the INVITE: decided by routing and the adapter."""

    call_key: str  # unique id of the call (embeds the node name); on every log line and CDR
    direction: str  # 'outbound' (PBX -> trunk) | 'inbound' (trunk -> PBX)
    caller: str  # calling number/user as received
    callee: str  # called number as received
    callee_rewritten: str  # after number rewriting
    a_local: LocalEndpoint  # our side toward the caller (leg A)
    a_policy: LegPolicy
    targets: tuple[Target, ...]  # tried in order: the next one when one fails (TRAPS #11)
    no_answer_timeout: float = 180.0  # seconds from INVITE to final answer before CANCEL+408
    max_duration: float | None = None  # seconds from answer to BYE on both legs (toll fraud)
    deadline: float | None = None  # the latest end, on the call's clock, whatever the answer
    origin: str = ""  # the PBX or trunk the call came from (config name)
    route: str = ""  # the route that matched, e.g. 'outbound[0]' (policy rules, logs)


# ----- inputs: the adapter calls these methods on a Call ------------------------------------
#
#   call = Call(setup, invite_key, invite, source, now)        -> then call.start(now)
#   call.start(now) -> list[Action]
#   call.on_request(leg, key, request, source, now) -> list[Action]   # a request on a leg
#         (in-dialog requests and CANCEL; `key` is its server transaction)
#   call.on_ack(leg, request, now) -> list[Action]            # ACK for a 2xx on that leg
#   call.on_response(leg, key, response, now) -> list[Action] # response to a request we sent
#   call.on_failure(leg, key, reason, now) -> list[Action]    # transaction timeout/transport error
#   call.on_media_ready(endpoints_a, endpoints_b, now) -> list[Action]
#         (answer to AllocateMedia: one (host, port) per stream per leg, same order)
#   call.on_media_timeout(now) -> list[Action]                # no RTP for media.timeout
#   call.hangup(reason, now) -> list[Action]                  # operator / shutdown
#   call.next_deadline() -> float | None ; call.on_timer(now) -> list[Action]
#   call.ended -> bool  (True once CallEnded was returned; the adapter then forgets the call)


# ----- actions: what a Call asks the adapter to do ------------------------------------------


@dataclass(frozen=True, slots=True)
class SendRequest:
    """Send a new request on a leg in a client transaction. The adapter reports the TxnKey
    back through `Call.request_sent(leg, tag, key)` before handing the Call anything else,
    so responses can be matched: `tag` is the Call's own handle for this request."""

    leg: LegId
    request: Request
    dest: Peer
    tag: str


@dataclass(frozen=True, slots=True)
class SendResponse:
    """Answer a request received on `leg` through its server transaction `key`."""

    leg: LegId
    key: TxnKey
    response: Response


@dataclass(frozen=True, slots=True)
class SendStateless:
    """Send without a transaction: the ACK for a 2xx, and 2xx retransmissions."""

    leg: LegId
    message: Request | Response
    dest: Peer


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """CANCEL the INVITE client transaction `key` on `leg` (RFC 3261 §9.1)."""

    leg: LegId
    key: TxnKey


@dataclass(frozen=True, slots=True)
class DialogOpened:
    """Register a dialog of this call so in-dialog requests find it: (Call-ID, local tag,
    remote tag) as seen from us on that leg."""

    leg: LegId
    call_id: str
    local_tag: str
    remote_tag: str


@dataclass(frozen=True, slots=True)
class AllocateMedia:
    """Allocate relay ports for `streams` m-lines on both legs; the adapter answers with
    Call.on_media_ready. Several calls may be in flight: it is per call."""

    streams: int


@dataclass(frozen=True, slots=True)
class UpdateMedia:
    """Where a leg's media goes after an offer or answer from that side: one (host, port)
    per stream, None for a rejected stream (port 0). A change moves the latch (TRAPS #8)."""

    leg: LegId
    remotes: tuple[tuple[str, int] | None, ...]


@dataclass(frozen=True, slots=True)
class PlayDtmf:
    """Send a DTMF digit as RFC 4733 telephone-events in RTP toward `leg` (its side spoke
    SIP INFO on the other leg)."""

    leg: LegId
    digit: str
    duration_ms: int


@dataclass(frozen=True, slots=True)
class ReleaseMedia:
    """Free the call's relay ports."""


@dataclass(frozen=True, slots=True)
class Cdr:
    call_key: str
    direction: str
    a_call_id: str
    b_call_id: str | None
    caller: str
    callee: str
    callee_rewritten: str
    target: str | None  # trunk or PBX name
    start: float  # INVITE received (adapter clock)
    answer: float | None
    end: float
    status: int  # final status of the call attempt as seen by leg A
    ended_by: str  # 'a' | 'b' | 'sbc'
    reason: str  # Reason header text or why the SBC ended it


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The call is over on both legs; nothing of it may remain after this."""

    cdr: Cdr


@dataclass(frozen=True, slots=True)
class LogEvent:
    """A structured log line about this call (the adapter adds call=<call_key>)."""

    event: str
    fields: tuple[tuple[str, str], ...] = ()
    debug: bool = False  # progress detail; call.new and call.ended already tell the story


CallAction = (
    SendRequest
    | SendResponse
    | SendStateless
    | CancelRequest
    | DialogOpened
    | AllocateMedia
    | UpdateMedia
    | PlayDtmf
    | ReleaseMedia
    | CallEnded
    | LogEvent
)
