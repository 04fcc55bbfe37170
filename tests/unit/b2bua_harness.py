"""A sans-I/O harness for sbc.b2bua.Call: it drives one call as sbc.calls.CallAdapter does
(request_sent reported at once, AllocateMedia answered after the batch, one virtual clock)
and plays the PBX (leg A) and the ITSP (leg B) with messages parsed from bytes."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sbc.b2bua import (
    AllocateMedia,
    Call,
    CallAction,
    CallEnded,
    CallSetup,
    Cdr,
    LegId,
    LegPolicy,
    LocalEndpoint,
    ReleaseMedia,
    SendRequest,
    SendResponse,
    SendStateless,
    Target,
)
from sbc.sdp import SessionDescription, parse_sdp
from sbc.sip.message import REASONS, Request, Response, header_key, parse
from sbc.sip.peer import Peer
from sbc.sip.transaction import TxnKey

A, B = LegId.A, LegId.B
T = TypeVar("T")
Actions = list[CallAction]

# Distinct addresses per role, so a leak shows: the PBX and SBC internal side on 127.0.0.x
# (the PBX's proxy 127.0.0.30), the SBC's public side 198.51.100.7, the ITSP on 127.0.0.20
# behind its edge proxy 127.0.0.21, the relay's ports on 10.0.0.1 (leg A) / 10.0.0.2 (leg B).
PBX_HOST, PBX_PORT = "127.0.0.10", 5070
PBX_MEDIA = ("127.0.0.10", 20000)
SBC_A = ("127.0.0.1", 5060)
SBC_B = ("198.51.100.7", 5080)
ITSP_HOST, ITSP_PORT = "127.0.0.20", 5090
ITSP_PROXY = "127.0.0.21"
ITSP_MEDIA = ("127.0.0.20", 30000)
RELAY_A, RELAY_B = "10.0.0.1", "10.0.0.2"

A_LISTENER = "internal/udp:127.0.0.1:5060"
B_LISTENER = "external/udp:127.0.0.2:5080"
PBX_SOURCE = Peer("udp", PBX_HOST, PBX_PORT, A_LISTENER)
ITSP_SOURCE = Peer("udp", ITSP_PROXY, 5090, B_LISTENER)
ITSP_DEST = Peer("udp", ITSP_HOST, ITSP_PORT, "")

A_CALL_ID = "pbx-call-77@127.0.0.10"
A_FROM_TAG = "pbxtag77"
PBX_USER_AGENT = "PBX-Secret/7.7"
ITSP_SERVER = "Carrier-Softswitch/9.9"
OUR_AGENT = "SBC/1"

CALLEE = "+4930123456"
B_REQUEST_URI = f"sip:{CALLEE}@{ITSP_HOST}:{ITSP_PORT}"
B_TO_URI = f"sip:{CALLEE}@{ITSP_HOST}"
B_FROM_URI = f"sip:201@{SBC_B[0]}"

# What must never appear in a message on the other leg (TRAPS #6).
A_SIDE_SECRETS = (
    "127.0.0.1",  # our internal side; as a prefix also the PBX's 127.0.0.10 and 127.0.0.11
    "127.0.0.30",
    A_CALL_ID.split("@")[0],
    A_FROM_TAG,
    PBX_USER_AGENT,
    "X-Pbx",
    "internal-secret",
    RELAY_A,
    "pbxsession",
)
B_SIDE_SECRETS = (
    ITSP_HOST,
    ITSP_PROXY,
    SBC_B[0],
    ITSP_SERVER,
    "itsp-tag",
    "X-Carrier",
    "carrier-secret",
    RELAY_B,
    "itspsession",
)


def relay_endpoints(host: str, base: int, streams: int) -> tuple[tuple[str, int], ...]:
    return tuple((host, base + 2 * i) for i in range(streams))


# ----------------------------------------------------------------------------- SDP


def sdp(
    media: tuple[str, int] = PBX_MEDIA,
    *,
    user: str = "pbx",
    session: str = "pbxsession",
    sess_id: int = 1000,
    version: int = 1,
    direction: str = "sendrecv",
    formats: Sequence[int] = (0, 8, 101),
    streams: int = 1,
    ice: bool = False,
) -> bytes:
    """An audio offer or answer; `streams` audio m-lines on consecutive even ports."""
    host, port = media
    names = {0: "PCMU/8000", 8: "PCMA/8000", 18: "G729/8000", 101: "telephone-event/8000"}
    lines = [
        "v=0",
        f"o={user} {sess_id} {version} IN IP4 {host}",
        f"s={session}",
        f"c=IN IP4 {host}",
        "t=0 0",
    ]
    for index in range(streams):
        lines.append(f"m=audio {port + 2 * index} RTP/AVP {' '.join(map(str, formats))}")
        lines += [f"a=rtpmap:{pt} {names[pt]}" for pt in formats]
        if ice:
            lines += [
                "a=ice-ufrag:Xy12",
                "a=ice-pwd:asd88fgpdd777uzjYhagZg0123",
                f"a=candidate:1 1 UDP 2130706431 {host} {port + 2 * index} typ host",
            ]
        lines.append(f"a={direction}")
    return ("\r\n".join(lines) + "\r\n").encode()


def itsp_sdp(**kwargs: Any) -> bytes:
    args: dict[str, Any] = {
        "user": "itsp",
        "session": "itspsession",
        "sess_id": 5000,
        "formats": (8, 101),
    }
    args.update(kwargs)
    return sdp(ITSP_MEDIA, **args)


def body_sdp(message: Request | Response) -> SessionDescription:
    assert message.body, f"{message!r} carries no body"
    assert message.content_type == "application/sdp"
    return parse_sdp(message.body)


def media_ports(message: Request | Response) -> list[tuple[str, int]]:
    """(c= address, m= port) of every stream in the message's SDP."""
    desc = body_sdp(message)
    out = []
    for index, section in enumerate(desc.media):
        conn = desc.media_connection(index)
        assert conn is not None
        out.append((conn.address, section.port))
    return out


def directions(message: Request | Response) -> list[str]:
    desc = body_sdp(message)
    return [str(desc.media_direction(i)) for i in range(len(desc.media))]


# ----------------------------------------------------------------------------- setup


A_LOCAL = LocalEndpoint(
    interface="internal",
    transport="udp",
    host=SBC_A[0],
    port=SBC_A[1],
    listener=A_LISTENER,
    media_address=RELAY_A,
    user_agent=OUR_AGENT,
)
B_LOCAL = LocalEndpoint(
    interface="external",
    transport="udp",
    host=SBC_B[0],
    port=SBC_B[1],
    listener=B_LISTENER,
    media_address=RELAY_B,
    user_agent=OUR_AGENT,
)


def make_setup(
    *,
    a_policy: LegPolicy | None = None,
    b_policy: LegPolicy | None = None,
    no_answer_timeout: float = 180.0,
) -> CallSetup:
    target = Target(
        kind="trunk",
        name="itsp-a",
        dest=ITSP_DEST,
        request_uri=B_REQUEST_URI,
        to_uri=B_TO_URI,
        from_uri=B_FROM_URI,
        local=B_LOCAL,
        policy=b_policy or LegPolicy(),
    )
    return CallSetup(
        call_key="edge7-call-1",
        direction="outbound",
        caller="201",
        callee="0301234567",
        callee_rewritten=CALLEE,
        a_local=A_LOCAL,
        a_policy=a_policy or LegPolicy(),
        targets=(target,),
        no_answer_timeout=no_answer_timeout,
    )


# ----------------------------------------------------------------------------- messages


def build_request(
    method: str,
    uri: str,
    headers: Iterable[tuple[str, str]],
    body: bytes = b"",
    content_type: str | None = "application/sdp",
) -> Request:
    lines = [f"{method} {uri} SIP/2.0", *(f"{n}: {v}" for n, v in headers)]
    if body and content_type:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    message = parse(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    assert isinstance(message, Request)
    message.check()
    return message


def build_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str = "application/sdp",
) -> Response:
    """A response to `request` as a far-end UA writes it (RFC 3261 §8.2.6), parsed from bytes."""
    lines = [f"SIP/2.0 {status} {REASONS.get(status, 'Unknown') if reason is None else reason}"]
    for name, value in request.headers():
        key = header_key(name)
        if key in ("via", "from", "call-id", "cseq"):
            lines.append(f"{name}: {value}")
        elif key == "to":
            tagged = to_tag is not None and request.to_tag is None
            lines.append(f"To: {value};tag={to_tag}" if tagged else f"To: {value}")
    lines += [f"{n}: {v}" for n, v in headers]
    if body:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    message = parse(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    assert isinstance(message, Response)
    return message


def server_key(request: Request) -> TxnKey:
    via = request.via
    method = "INVITE" if request.method == "ACK" else request.method
    return TxnKey(True, via.branch or "", method, f"{via.host}:{via.port or 5060}")


def client_key(request: Request) -> TxnKey:
    return TxnKey(False, request.via.branch or "", request.method)


class Pbx:
    """Leg A's far end: the PBX (behind its record-routing proxy) that places the call."""

    def __init__(self) -> None:
        self.cseq = 1
        self.sbc_tag: str | None = None  # our To tag, from the first response with one
        self._branches = itertools.count(1)

    def _via(self) -> tuple[str, str]:
        return (
            "Via",
            f"SIP/2.0/UDP {PBX_HOST}:{PBX_PORT};branch=z9hG4bK-pbx-{next(self._branches)};rport",
        )

    def invite(
        self,
        body: bytes = b"",
        *,
        supported: str | None = "100rel, timer",
        headers: Iterable[tuple[str, str]] = (),
    ) -> Request:
        hdrs = [
            self._via(),
            ("Record-Route", "<sip:127.0.0.30;lr>"),
            ("Max-Forwards", "70"),
            ("From", f'"Alice" <sip:201@{PBX_HOST}>;tag={A_FROM_TAG}'),
            ("To", f"<sip:0301234567@{SBC_A[0]}>"),
            ("Call-ID", A_CALL_ID),
            ("CSeq", "1 INVITE"),
            ("Contact", f"<sip:201@{PBX_HOST}:{PBX_PORT};ob>"),
            ("User-Agent", PBX_USER_AGENT),
            ("X-Pbx-Route", "internal-secret-42"),
            ("Allow", "INVITE, ACK, CANCEL, BYE, UPDATE, PRACK, INFO"),
            *([("Supported", supported)] if supported else []),
            *headers,
        ]
        return build_request("INVITE", f"sip:0301234567@{SBC_A[0]}:{SBC_A[1]}", hdrs, body)

    def cancel(self, invite: Request) -> Request:
        """RFC 3261 §9.1: same Request-URI, Call-ID, From, To, CSeq number and top Via."""
        hdrs = [
            (n, v) for n, v in invite.headers() if header_key(n) in ("via", "from", "to", "call-id")
        ]
        hdrs += [("Max-Forwards", "70"), ("CSeq", f"{invite.cseq.number} CANCEL")]
        return build_request("CANCEL", invite.uri, hdrs)

    def request(
        self,
        method: str,
        body: bytes = b"",
        *,
        cseq: int | None = None,
        headers: Iterable[tuple[str, str]] = (),
        content_type: str | None = "application/sdp",
    ) -> Request:
        """A request in the call's dialog (after our first tagged response)."""
        assert self.sbc_tag is not None, "no dialog with the SBC yet"
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        hdrs = [
            self._via(),
            ("Route", "<sip:127.0.0.30;lr>"),
            ("Max-Forwards", "70"),
            ("From", f'"Alice" <sip:201@{PBX_HOST}>;tag={A_FROM_TAG}'),
            ("To", f"<sip:0301234567@{SBC_A[0]}>;tag={self.sbc_tag}"),
            ("Call-ID", A_CALL_ID),
            ("CSeq", f"{cseq} {method}"),
            ("User-Agent", PBX_USER_AGENT),
            ("X-Pbx-Route", "internal-secret-42"),
        ]
        if method in ("INVITE", "UPDATE", "REFER", "NOTIFY"):
            hdrs.append(("Contact", f"<sip:201@{PBX_HOST}:{PBX_PORT};ob>"))
        hdrs += headers
        return build_request(method, f"sip:{SBC_A[0]}:{SBC_A[1]}", hdrs, body, content_type)

    def ack(self, cseq: int = 1, body: bytes = b"") -> Request:
        return self.request("ACK", body, cseq=cseq)

    def respond(
        self,
        request: Request,
        status: int,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> Response:
        extra = list(headers)
        if 200 <= status < 300 and request.method in ("INVITE", "UPDATE"):
            extra.insert(0, ("Contact", f"<sip:201@{PBX_HOST}:{PBX_PORT};ob>"))
        extra.append(("User-Agent", PBX_USER_AGENT))
        return build_response(request, status, headers=extra, body=body)


class Itsp:
    """Leg B's far end: the carrier (behind its edge proxy, which record-routes)."""

    def __init__(self) -> None:
        self.cseq = 100
        self._branches = itertools.count(1)
        self.invite: Request | None = None  # the INVITE of ours it answers
        self.tag = "itsp-tag-1"

    def respond(
        self,
        request: Request,
        status: int,
        reason: str | None = None,
        *,
        tag: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        contact: bool = True,
    ) -> Response:
        if request.method == "INVITE" and request.to_tag is None:
            self.invite = request
        extra: list[tuple[str, str]] = []
        if request.method == "INVITE" and request.to_tag is None and status > 100:
            extra.append(("Record-Route", f"<sip:{ITSP_PROXY}:5090;lr>"))
        if contact and 100 < status < 300 and request.method in ("INVITE", "UPDATE"):
            extra.append(("Contact", f"<sip:{CALLEE}@{ITSP_HOST}:{ITSP_PORT}>"))
        extra += [("Server", ITSP_SERVER), ("X-Carrier-Info", "carrier-secret"), *headers]
        to_tag = (tag or self.tag) if status > 100 else None
        return build_response(request, status, reason, to_tag=to_tag, headers=extra, body=body)

    def request(
        self,
        method: str,
        body: bytes = b"",
        *,
        cseq: int | None = None,
        tag: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        content_type: str | None = "application/sdp",
    ) -> Request:
        """A request in the dialog its answer to our INVITE made."""
        invite = self.invite
        assert invite is not None, "the ITSP answered no INVITE yet"
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        contact = invite.contacts
        assert contact
        hdrs = [
            ("Via", f"SIP/2.0/UDP {ITSP_PROXY}:5090;branch=z9hG4bK-itsp-{next(self._branches)}"),
            ("Max-Forwards", "69"),
            ("From", f"<{B_TO_URI}>;tag={tag or self.tag}"),
            ("To", invite.header("From") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{cseq} {method}"),
            ("Server", ITSP_SERVER),
            ("X-Carrier-Info", "carrier-secret"),
        ]
        if method in ("INVITE", "UPDATE", "REFER", "NOTIFY"):
            hdrs.append(("Contact", f"<sip:{CALLEE}@{ITSP_HOST}:{ITSP_PORT}>"))
        hdrs += headers
        return build_request(method, contact[0].uri, hdrs, body, content_type)

    def ack(self, cseq: int, body: bytes = b"") -> Request:
        return self.request("ACK", body, cseq=cseq)


# ----------------------------------------------------------------------------- the harness


@dataclass
class Harness:
    """One Call, its two far ends, the actions it returned, and a virtual clock."""

    setup: CallSetup = field(default_factory=make_setup)
    invite_body: bytes | None = None  # None: the PBX's default offer; b"": no offer (late offer)
    supported: str | None = "100rel, timer"
    invite_headers: tuple[tuple[str, str], ...] = ()
    now: float = 1000.0
    t1: float = 0.5
    t2: float = 4.0
    auto_media: bool = True
    pbx: Pbx = field(default_factory=Pbx)
    itsp: Itsp = field(default_factory=Itsp)
    log: Actions = field(default_factory=list)
    pending_media: list[AllocateMedia] = field(default_factory=list)
    sent: dict[TxnKey, SendRequest] = field(default_factory=dict)
    timeline: list[tuple[float, CallAction]] = field(default_factory=list)
    audit: bool = True  # check every message for the other side's addresses, ids and headers

    def __post_init__(self) -> None:
        body = sdp() if self.invite_body is None else self.invite_body
        self.invite = self.pbx.invite(body, supported=self.supported, headers=self.invite_headers)
        self.invite_key = server_key(self.invite)
        self.started = self.now
        self.call = Call(
            self.setup, self.invite_key, self.invite, PBX_SOURCE, self.now, t1=self.t1, t2=self.t2
        )
        self._tags: set[str] = set()

    # ----- the adapter's part ----------------------------------------------------------------
    def feed(self, actions: list[CallAction]) -> Actions:
        """Carry out what the call asked, like CallAdapter._run: report request_sent at once,
        answer AllocateMedia once the batch is done. Returns every action, media ones too."""
        ended_before = any(isinstance(a, CallEnded) for a in self.log)
        for action in actions:
            if ended_before:
                # After CallEnded the adapter forgets the call: only a 481 to a request that
                # still reached it may come out.
                assert isinstance(action, SendResponse) and action.response.status == 481, (
                    f"action after CallEnded: {action!r}"
                )
            if isinstance(action, SendRequest):
                assert action.tag not in self._tags, f"request tag {action.tag} used twice"
                self._tags.add(action.tag)
                key = client_key(action.request)
                self.sent[key] = action
                self.call.request_sent(action.leg, action.tag, key)
            if isinstance(action, CallEnded):
                assert not ended_before, "CallEnded twice"
                index = actions.index(action)
                assert any(isinstance(a, ReleaseMedia) for a in actions[:index]), (
                    "ReleaseMedia must come before CallEnded"
                )
                assert action is actions[-1], "CallEnded must be the last action"
                assert self.call.ended
                assert self.call.next_deadline() is None
            if self.audit:
                self._audit(action)
        self.log.extend(actions)
        self.timeline.extend((self.now, action) for action in actions)
        out = list(actions)
        allocations = [a for a in actions if isinstance(a, AllocateMedia)]
        if self.auto_media:
            for allocate in allocations:
                out += self.media_ready(allocate.streams)
        else:
            self.pending_media += allocations
        return out

    def _audit(self, action: CallAction) -> None:
        """Topology hiding (TRAPS #6): nothing of one side in any message on the other leg."""
        if not isinstance(action, SendRequest | SendResponse | SendStateless):
            return
        message = (
            action.message
            if isinstance(action, SendStateless)
            else (action.request if isinstance(action, SendRequest) else action.response)
        )
        if action.leg is A:
            assert_no_leak([message], (*B_SIDE_SECRETS, self.call.b_call_id, self.call.b_tag))
        else:
            assert_no_leak([message], (*A_SIDE_SECRETS, A_CALL_ID, self.call.a_tag))

    def sent_at(self, action: CallAction) -> float:
        """When the call returned `action` (virtual clock)."""
        for at, item in self.timeline:
            if item is action:
                return at
        raise AssertionError(f"{action!r} was never returned")

    def media_ready(self, streams: int) -> Actions:
        ends_a = relay_endpoints(RELAY_A, 40000, streams)
        ends_b = relay_endpoints(RELAY_B, 50000, streams)
        return self.feed(self.call.on_media_ready(ends_a, ends_b, self.now))

    # ----- inputs ----------------------------------------------------------------------------
    def start(self) -> Actions:
        return self.feed(self.call.start(self.now))

    def from_a(self, request: Request) -> Actions:
        key = server_key(request)
        if request.method == "ACK":
            return self.feed(self.call.on_ack(A, request, self.now))
        return self.feed(self.call.on_request(A, key, request, PBX_SOURCE, self.now))

    def from_b(self, request: Request) -> Actions:
        if request.method == "ACK":
            return self.feed(self.call.on_ack(B, request, self.now))
        key = server_key(request)
        return self.feed(self.call.on_request(B, key, request, ITSP_SOURCE, self.now))

    def answer(self, send: SendRequest, response: Response) -> Actions:
        """`response` arrives for a request the call sent."""
        key = client_key(send.request)
        return self.feed(self.call.on_response(send.leg, key, response, self.now))

    def b_answers(
        self, send: SendRequest, status: int, reason: str | None = None, **kwargs: Any
    ) -> Actions:
        response = self.itsp.respond(send.request, status, reason, **kwargs)
        return self.answer(send, response)

    def a_answers(self, send: SendRequest, status: int, **kwargs: Any) -> Actions:
        response = self.pbx.respond(send.request, status, **kwargs)
        return self.answer(send, response)

    def fail(self, send: SendRequest, reason: str) -> Actions:
        return self.feed(self.call.on_failure(send.leg, client_key(send.request), reason, self.now))

    def advance(self, seconds: float) -> Actions:
        """Move the clock on, firing the call's timer at each deadline on the way, as the
        adapter's single loop timer would."""
        until = self.now + seconds
        out: Actions = []
        for _ in range(10_000):
            deadline = self.call.next_deadline()
            if deadline is None or deadline > until:
                break
            self.now = max(self.now, deadline)
            out += self.feed(self.call.on_timer(self.now))
        else:
            raise AssertionError(f"the call's deadline never moves on (stuck at {deadline})")
        self.now = until
        return out

    def media_timeout(self) -> Actions:
        return self.feed(self.call.on_media_timeout(self.now))

    def hangup(self, reason: str = "shutdown") -> Actions:
        return self.feed(self.call.hangup(reason, self.now))

    # ----- common steps ----------------------------------------------------------------------
    def b_invite(self) -> SendRequest:
        return last(sends(self.log, B, "INVITE"))

    def ring(self, status: int = 180, **kwargs: Any) -> Actions:
        out = self.b_answers(self.b_invite(), status, **kwargs)
        self.learn_a_tag(out)
        return out

    def learn_a_tag(self, actions: Actions) -> None:
        for response in responses(actions, A):
            if response.response.to_tag and response.key == self.invite_key:
                self.pbx.sbc_tag = response.response.to_tag

    def answered(self, body: bytes | None = None, **kwargs: Any) -> Actions:
        """Leg B's 200 to our INVITE (with the ITSP's answer unless `body` says otherwise)."""
        out = self.b_answers(
            self.b_invite(), 200, body=itsp_sdp() if body is None else body, **kwargs
        )
        self.learn_a_tag(out)
        return out

    def established(self, **kwargs: Any) -> Actions:
        """start, ring, 200 from B, ACK from A: the call is up."""
        out = self.start()
        out += self.ring()
        out += self.answered(**kwargs)
        out += self.from_a(self.pbx.ack())
        return out


# ----------------------------------------------------------------------------- queries


def sends(
    actions: Iterable[CallAction], leg: LegId, method: str | None = None
) -> list[SendRequest]:
    return [
        a
        for a in actions
        if isinstance(a, SendRequest)
        and a.leg is leg
        and (method is None or a.request.method == method)
    ]


def responses(
    actions: Iterable[CallAction], leg: LegId, status: int | None = None
) -> list[SendResponse]:
    return [
        a
        for a in actions
        if isinstance(a, SendResponse)
        and a.leg is leg
        and (status is None or a.response.status == status)
    ]


def stateless(actions: Iterable[CallAction], leg: LegId) -> list[SendStateless]:
    return [a for a in actions if isinstance(a, SendStateless) and a.leg is leg]


def acks(actions: Iterable[CallAction], leg: LegId) -> list[Request]:
    out = []
    for a in stateless(actions, leg):
        if isinstance(a.message, Request) and a.message.method == "ACK":
            out.append(a.message)
    return out


def wire(actions: Iterable[CallAction], leg: LegId) -> list[Request | Response]:
    """Every SIP message the actions put on the wire of `leg`."""
    out: list[Request | Response] = []
    for a in actions:
        if isinstance(a, SendRequest) and a.leg is leg:
            out.append(a.request)
        elif isinstance(a, SendResponse) and a.leg is leg:
            out.append(a.response)
        elif isinstance(a, SendStateless) and a.leg is leg:
            out.append(a.message)
    return out


def of_type(actions: Iterable[CallAction], kind: type[T]) -> list[T]:
    return [a for a in actions if isinstance(a, kind)]


def cdr_of(actions: Iterable[CallAction]) -> Cdr:
    ended = of_type(actions, CallEnded)
    assert len(ended) == 1, f"expected one CallEnded, got {len(ended)}"
    return ended[0].cdr


def last(items: Sequence[T]) -> T:
    assert items, "nothing of that kind was sent"
    return items[-1]


def one(items: Sequence[T]) -> T:
    assert len(items) == 1, f"expected exactly one, got {len(items)}: {items!r}"
    return items[0]


def assert_no_leak(messages: Iterable[Request | Response], secrets: Iterable[str]) -> None:
    secrets = tuple(secrets)
    for message in messages:
        text = bytes(message).decode("utf-8", "replace")
        for secret in secrets:
            assert secret not in text, f"{secret!r} leaks in:\n{text}"
