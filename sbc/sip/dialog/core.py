"""One RFC 3261 §12 dialog (sans-I/O): its state, how it is created from an INVITE and its
answers, the requests it sends (route set, CSeq, Contact) and the checks on those it receives."""

from __future__ import annotations

import dataclasses
import enum
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from sbc.sip.dialog.errors import DialogError, DialogStateError
from sbc.sip.dialog.reliable import ReliableProvisionals, rack_of
from sbc.sip.errors import ParseError
from sbc.sip.headers import MAX_CSEQ, NameAddr
from sbc.sip.message import Message, Request, Response, header_key, make_response
from sbc.sip.uri import SipUri, parse_uri

# Methods whose 2xx replaces the remote target with the Contact of the request (received) or
# of the response (sent): RFC 3261 §12.2, RFC 3311 (UPDATE), RFC 6665 (SUBSCRIBE, NOTIFY),
# RFC 3515 (REFER). Requests of these methods carry our Contact.
TARGET_REFRESH = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})
# Headers create_request() writes itself; a caller passing one would contradict dialog state.
_OWNED = frozenset({"via", "from", "to", "call-id", "cseq", "route"})
MAX_FORWARDS = 70  # RFC 3261 §8.1.1.6


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class Role(enum.Enum):
    UAC = "UAC"  # we sent the request that created the dialog
    UAS = "UAS"  # we answered it


class DialogEvent(enum.Enum):
    CONFIRM = "2xx to the dialog-creating request"
    SEND_BYE = "sending BYE"
    RECV_BYE = "receiving BYE"
    END = "ending the dialog"


_S, _E = DialogState, DialogEvent
TRANSITIONS: dict[tuple[DialogState, DialogEvent], DialogState] = {
    (_S.EARLY, _E.CONFIRM): _S.CONFIRMED,
    (_S.CONFIRMED, _E.CONFIRM): _S.CONFIRMED,  # a retransmitted 2xx
    (_S.EARLY, _E.SEND_BYE): _S.TERMINATED,  # caller side only: §15 (checked in create_request)
    (_S.CONFIRMED, _E.SEND_BYE): _S.TERMINATED,
    # Resending our own BYE with credentials after 401/407 (§22.2) needs a new CSeq.
    (_S.TERMINATED, _E.SEND_BYE): _S.TERMINATED,
    (_S.EARLY, _E.RECV_BYE): _S.TERMINATED,
    (_S.CONFIRMED, _E.RECV_BYE): _S.TERMINATED,
    # 481/408/timeouts (§12.2.1.2), a non-2xx final to the INVITE (§12.3), local teardown.
    (_S.EARLY, _E.END): _S.TERMINATED,
    (_S.CONFIRMED, _E.END): _S.TERMINATED,
    (_S.TERMINATED, _E.END): _S.TERMINATED,
}


class DialogKey(NamedTuple):
    """The dialog ID (RFC 3261 §12): Call-ID, local tag, remote tag ('' when the peer sent
    none, as RFC 2543 peers may)."""

    call_id: str
    local_tag: str
    remote_tag: str


def ends_dialog(response: Response) -> bool:
    """Whether the response to an in-dialog request means the dialog is gone: 481 or 408
    (RFC 3261 §12.2.1.2), or any final answer to our BYE (§15.1.1). For an INVITE dialog the
    caller ends it with a BYE unless the answer was to a BYE or a 481."""
    if response.status in (408, 481):
        return True
    return response.status >= 200 and response.cseq.method == "BYE"


@dataclass(slots=True, eq=False)
class Dialog:
    """The state of one dialog. Build it with from_uac() / from_uas() (or a DialogSet for an
    INVITE we send, which handles forking); the B2BUA owns one per leg.

    `local_uri` / `remote_uri` are the From / To name-addrs without tags; `route_set` the
    Route values in the order requests carry them; `remote_target` the URI requests go to.
    """

    role: Role
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    remote_target: str
    local_contact: str
    route_set: list[str] = field(default_factory=list)
    local_seq: int = 0  # UAS: 'empty' until we send; our first request then gets CSeq 1
    remote_seq: int | None = None
    secure: bool = False
    state: DialogState = DialogState.EARLY
    invite_cseq: int | None = None  # our last INVITE's CSeq number: what its 2xx ACK carries
    reliable: ReliableProvisionals = field(default_factory=ReliableProvisionals)
    # INVITE transactions in progress, by CSeq number (for §14 glare and ACK numbering).
    outgoing_invite: int | None = None
    incoming_invite: int | None = None
    bye_sent: bool = False
    # Contact URI of received target-refresh requests, applied when we answer them 2xx.
    _pending_targets: dict[int, str] = field(default_factory=dict, init=False, repr=False)

    # ----- creation ---------------------------------------------------------------------
    @classmethod
    def from_uac(
        cls, request: Request, response: Response, local_contact: str, *, over_tls: bool = False
    ) -> Dialog:
        """The dialog a 101-199 with a To tag (early) or a 2xx (confirmed) creates for a
        request we sent (RFC 3261 §12.1.2). `over_tls`: the request went over TLS."""
        status = response.status
        remote_tag = response.to_tag
        if not 100 < status < 300 or remote_tag is None:
            raise DialogError(f"a {status} response without To tag creates no dialog (§12.1.2)")
        local_tag = request.from_tag
        if local_tag is None:
            raise DialogError(f"our {request.method} has no From tag: it cannot start a dialog")
        if response.call_id != request.call_id or response.from_tag != local_tag:
            raise DialogError("the response does not answer this request (Call-ID or From tag)")
        target = _contact_uri(response)
        if target is None:
            if status >= 200:
                raise DialogError(
                    f"{status} to {request.method} has no Contact: no remote target to send "
                    "in-dialog requests to (RFC 3261 §12.1.2)"
                )
            target = request.uri  # a lax 18x: the 2xx will bring the real target
        number = request.cseq.number
        confirmed = status >= 200
        return cls(
            role=Role.UAC,
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=_without_tag(request.from_),
            remote_uri=_without_tag(request.to),
            remote_target=target,
            local_contact=_as_name_addr(local_contact),
            route_set=_route_set(response, reverse=True),
            local_seq=number,
            secure=over_tls and _is_sips(request.uri),
            state=DialogState.CONFIRMED if confirmed else DialogState.EARLY,
            invite_cseq=number if request.method == "INVITE" else None,
            outgoing_invite=None if confirmed or request.method != "INVITE" else number,
        )

    @classmethod
    def from_uas(
        cls, request: Request, local_tag: str, local_contact: str, *, over_tls: bool = False
    ) -> Dialog:
        """The (early) dialog we create by answering `request` with a To tag of `local_tag`
        (RFC 3261 §12.1.1); response_sent() or confirm() moves it on. DialogError.status is
        the answer for a request that cannot make a dialog."""
        if request.to_tag is not None:
            raise DialogError(f"{request.method} with a To tag is inside a dialog already")
        target = _contact_uri(request)
        if target is None:
            raise DialogError(
                f"{request.method} has no usable Contact header: a dialog needs a remote "
                "target (RFC 3261 §8.1.1.8)",
                status=400,
            )
        number = request.cseq.number
        return cls(
            role=Role.UAS,
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=request.from_tag or "",
            local_uri=_without_tag(request.to),
            remote_uri=_without_tag(request.from_),
            remote_target=target,
            local_contact=_as_name_addr(local_contact),
            route_set=_route_set(request, reverse=False),
            remote_seq=number,
            secure=over_tls and _is_sips(request.uri),
            incoming_invite=number if request.method == "INVITE" else None,
        )

    @property
    def key(self) -> DialogKey:
        return DialogKey(self.call_id, self.local_tag, self.remote_tag)

    @property
    def invite_in_progress(self) -> bool:
        """An INVITE transaction runs in either direction: no new INVITE now (§14.1)."""
        return self.outgoing_invite is not None or self.incoming_invite is not None

    def _fire(self, event: DialogEvent) -> None:
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            raise DialogStateError(f"{self.call_id}/{self.remote_tag}", self.state, event)
        self.state = new

    def confirm(self, response: Response) -> None:
        """A 2xx to the dialog-creating request: received (UAC, the route set and remote
        target are taken anew from it, §13.2.2.4) or sent by us (UAS)."""
        if not 200 <= response.status < 300:
            raise DialogError(f"a {response.status} does not confirm a dialog; only a 2xx does")
        if response.to_tag != (self.remote_tag if self.role is Role.UAC else self.local_tag):
            raise DialogError("the 2xx's To tag belongs to another dialog of this call")
        # Read the 2xx before changing anything, so that a bad one leaves the dialog as it was.
        renewal: tuple[str, list[str]] | None = None
        if self.role is Role.UAC and self.state is DialogState.EARLY:
            target = _contact_uri(response)
            if target is None:
                raise DialogError(
                    "2xx has no Contact: no remote target to send in-dialog requests to"
                )
            renewal = target, _route_set(response, reverse=True)
        self._fire(DialogEvent.CONFIRM)
        if response.cseq.method == "INVITE":
            if self.role is Role.UAC and self.outgoing_invite == response.cseq.number:
                self.outgoing_invite = None
            elif self.role is Role.UAS and self.incoming_invite == response.cseq.number:
                self.incoming_invite = None
        if renewal is not None:
            self.remote_target, self.route_set = renewal

    def terminate(self) -> None:
        """End the dialog without a BYE of ours: a 481/408 answer, a timeout, a non-2xx final
        answer to the INVITE, or local teardown."""
        self._fire(DialogEvent.END)

    # ----- sending requests ---------------------------------------------------------------
    def create_request(
        self,
        method: str,
        *,
        via: str,
        branch: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> Request:
        """A new request in this dialog (RFC 3261 §12.2.1.1) with CSeq one above the last.

        `via` is the top Via value (the caller owns addresses); `branch`, when given, is added
        to it. `headers` come after the dialog's own (a Contact or Max-Forwards there replaces
        ours); a body needs its Content-Type in `headers`."""
        if method in ("ACK", "CANCEL"):
            raise DialogError(
                "ACK for a 2xx: use create_ack(); CANCEL: the transaction layer builds it "
                "from the INVITE (RFC 3261 §9.1)"
            )
        if self.state is DialogState.TERMINATED and not (method == "BYE" and self.bye_sent):
            raise DialogError(f"dialog {self.call_id} is terminated: no {method} can be sent in it")
        if method == "BYE" and self.state is DialogState.EARLY and self.role is Role.UAS:
            raise DialogError(
                "the callee must not send BYE in an early dialog (RFC 3261 §15): answer the "
                "INVITE with a final error response instead"
            )
        if method == "INVITE" and self.invite_in_progress:
            raise DialogError(
                "an INVITE transaction is in progress in this dialog (RFC 3261 §14.1): send "
                "the re-INVITE after its final response"
            )
        seq = self.local_seq + 1
        if seq > MAX_CSEQ:
            raise DialogError("CSeq space of this dialog is exhausted (RFC 3261 §8.1.1.5: < 2**31)")
        if method == "BYE":
            self._fire(DialogEvent.SEND_BYE)
            self.bye_sent = True
        self.local_seq = seq
        if method == "INVITE":
            self.invite_cseq = self.outgoing_invite = seq
        contact = method in TARGET_REFRESH
        return self._build(method, f"{seq} {method}", via, branch, headers, body, contact)

    def create_ack(
        self,
        invite_cseq: int | None = None,
        *,
        via: str,
        branch: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> Request:
        """The ACK for a 2xx to our INVITE (RFC 3261 §13.2.2.4): built like any in-dialog
        request, with the INVITE's CSeq number (default: our last INVITE) and its own branch.
        Credentials the INVITE carried go in `headers`."""
        number = self.invite_cseq if invite_cseq is None else invite_cseq
        if number is None:
            raise DialogError("no INVITE was sent in this dialog: there is no 2xx to ACK")
        return self._build("ACK", f"{number} ACK", via, branch, headers, body, False)

    def create_prack(
        self,
        response: Response,
        *,
        via: str,
        branch: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> Request:
        """The PRACK for a reliable 1xx received in this dialog (RFC 3262 §4, §7.2)."""
        rack = self.reliable.rack_for(response)
        extra = [("RAck", str(rack)), *headers]
        return self.create_request("PRACK", via=via, branch=branch, headers=extra, body=body)

    def _build(
        self,
        method: str,
        cseq: str,
        via: str,
        branch: str | None,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        contact: bool,
    ) -> Request:
        extra = list(headers)
        given = {header_key(name) for name, _ in extra}
        owned = given & _OWNED
        if owned:
            raise DialogError(f"{', '.join(sorted(owned))}: the dialog writes these itself")
        if branch is not None:
            via = f"{via};branch={branch}"
        if ";branch=" not in via.replace(" ", "").lower():
            raise DialogError(f"top Via {via!r} has no branch: pass branch=new_branch()")
        uri, routes = self.request_target()
        out: list[tuple[str, str]] = [("Via", via)]
        if "max-forwards" not in given:
            out.append(("Max-Forwards", str(MAX_FORWARDS)))
        if routes:
            out.append(("Route", ", ".join(routes)))
        out.append(("From", f"{self.local_uri};tag={self.local_tag}"))
        out.append(
            (
                "To",
                f"{self.remote_uri};tag={self.remote_tag}" if self.remote_tag else self.remote_uri,
            )
        )
        out.append(("Call-ID", self.call_id))
        out.append(("CSeq", cseq))
        if contact and "contact" not in given:
            out.append(("Contact", self.local_contact))
        out.extend(extra)
        return Request(method, uri, out, body)

    def request_target(self) -> tuple[str, list[str]]:
        """Request-URI and Route values for the next request (RFC 3261 §12.2.1.1): the remote
        target with the route set as Route when the first hop is a loose router (;lr);
        otherwise the first hop becomes the Request-URI and the remote target the last Route."""
        routes = self.route_set
        if not routes:
            return self.remote_target, []
        first = _route_uri(routes[0])
        parsed = parse_uri(first)
        if isinstance(parsed, SipUri) and "lr" in parsed.params:
            return self.remote_target, list(routes)
        # Strict router: Request-URI takes its URI minus what a Request-URI may not hold
        # (the method parameter and headers, §19.1.1 table 1).
        if isinstance(parsed, SipUri) and ("method" in parsed.params or parsed.headers):
            params = {k: v for k, v in parsed.params.items() if k != "method"}
            first = str(dataclasses.replace(parsed, params=params, headers=""))
        return first, [*routes[1:], f"<{self.remote_target}>"]

    # ----- receiving requests -------------------------------------------------------------
    def receive_request(self, request: Request) -> Response | None:
        """A request the table matched to this dialog (RFC 3261 §12.2.2). Returns the error
        response to send (500 out of order, 491/500 INVITE glare §14.2, 481 PRACK without a
        matching reliable 1xx or dialog terminated, 400 bad RAck or Contact), else None: go
        ahead, and call response_sent() with the answer."""
        self._check_ids(request, remote_from=True)
        method = request.method
        if method == "ACK":
            return None  # never answered; ACK carries the INVITE's CSeq, not a new one
        if self.state is DialogState.TERMINATED:
            return make_response(request, 481)
        number = request.cseq.number
        if self.remote_seq is not None and number < self.remote_seq:
            return make_response(request, 500, "CSeq Out of Order")
        target: str | None = None
        if method in TARGET_REFRESH:
            try:
                target = _contact_uri(request)
            except DialogError as exc:
                return make_response(request, exc.status or 400, str(exc))
        self.remote_seq = number
        if method == "INVITE":
            if self.outgoing_invite is not None:
                return make_response(request, 491)  # §14.2: re-INVITEs crossed
            if self.incoming_invite is not None:
                # §14.2: a second INVITE before we answered the first one.
                retry = ("Retry-After", str(secrets.randbelow(11)))
                return make_response(request, 500, headers=[retry])
            self.incoming_invite = number
        elif method == "PRACK":
            try:
                rack = rack_of(request)
            except DialogError as exc:
                return make_response(request, exc.status or 400, str(exc))
            if not self.reliable.acknowledge(rack):
                return make_response(request, 481)  # RFC 3262 §3
        elif method == "BYE":
            self._fire(DialogEvent.RECV_BYE)
        if target is not None:
            self._pending_targets[number] = target
        return None

    def response_sent(self, response: Response) -> None:
        """Tell the dialog we answered a request it accepted: a final answer ends our INVITE
        transaction; a 2xx confirms an early dialog and applies a target refresh; a non-2xx
        final to the dialog-creating INVITE ends an early dialog (§12.3)."""
        status = response.status
        if status < 200:
            return
        method, number = response.cseq.method, response.cseq.number
        target = self._pending_targets.pop(number, None)
        if method == "INVITE" and self.incoming_invite == number:
            self.incoming_invite = None
            if status < 300:
                if self.state is DialogState.EARLY:
                    self.confirm(response)
            elif self.state is DialogState.EARLY and self.role is Role.UAS:
                self.terminate()
        if target is not None and status < 300 and self.state is not DialogState.TERMINATED:
            self.remote_target = target

    def apply_target_refresh(self, message: Request | Response) -> bool:
        """Take the remote target from the Contact of a target-refresh request we answered 2xx,
        or of a 2xx to one we sent (RFC 3261 §12.2, RFC 3311). True when it changed."""
        method = message.method if isinstance(message, Request) else message.cseq.method
        if method not in TARGET_REFRESH:
            raise DialogError(f"{method} is not a target refresh request")
        if isinstance(message, Response) and not 200 <= message.status < 300:
            raise DialogError(f"a {message.status} refreshes nothing: only a 2xx does")
        target = _contact_uri(message)
        if target is None or target == self.remote_target:
            return False
        self.remote_target = target
        return True

    # ----- receiving responses ------------------------------------------------------------
    def receive_response(self, response: Response) -> None:
        """A response to a request we sent in this dialog: confirms an early dialog on 2xx to
        the INVITE, applies 2xx target refreshes, ends an early dialog on a non-2xx final to
        the INVITE (§12.3). A 481/408 is left to the caller: see ends_dialog()."""
        self._check_ids(response, remote_from=False)
        status = response.status
        if status < 200:
            return
        method, number = response.cseq.method, response.cseq.number
        if method == "INVITE":
            if self.state is DialogState.EARLY and self.role is Role.UAC:
                if status < 300:
                    self.confirm(response)
                    return
                self.outgoing_invite = None
                self.terminate()
                return
            if self.outgoing_invite != number:
                return  # a retransmitted 2xx (they bypass the transaction layer): seen already
            self.outgoing_invite = None
        if status < 300 and method in TARGET_REFRESH and self.state is not DialogState.TERMINATED:
            self.apply_target_refresh(response)

    def _check_ids(self, msg: Message, *, remote_from: bool) -> None:
        local, remote = (msg.to_tag, msg.from_tag) if remote_from else (msg.from_tag, msg.to_tag)
        if (
            msg.call_id != self.call_id
            or local != self.local_tag
            or (remote or "") != self.remote_tag
        ):
            raise DialogError(
                f"message of Call-ID {msg.call_id} tags {local}/{remote} is not in dialog "
                f"{self.call_id} {self.local_tag}/{self.remote_tag}"
            )


# ----- helpers ------------------------------------------------------------------------------


def _without_tag(addr: NameAddr) -> str:
    params = {k: v for k, v in addr.params.items() if k != "tag"}
    return str(NameAddr(addr.uri, addr.display, params))


def _as_name_addr(contact: str) -> str:
    text = contact.strip()
    if not text:
        raise DialogError("local Contact is empty")
    return text if "<" in text else f"<{text}>"


def _contact_uri(msg: Message) -> str | None:
    """The first Contact URI (the remote target), checked to be usable as a Request-URI."""
    try:
        contacts = msg.contacts
        if not contacts:
            return None
        uri = contacts[0].uri
        parse_uri(uri)
    except ParseError as exc:
        raise DialogError(f"Contact header: {exc}", status=400) from None
    return uri


def _route_set(msg: Message, *, reverse: bool) -> list[str]:
    # §12.1.1/§12.1.2: the URIs of Record-Route (parameters kept), in order for the UAS and
    # reversed for the UAC. Checked here so that building a request later cannot fail.
    try:
        uris = [addr.uri for addr in msg.name_addrs("Record-Route")]
        for uri in uris:
            parse_uri(uri)
    except ParseError as exc:
        raise DialogError(f"Record-Route header: {exc}", status=400) from None
    routes = [f"<{uri}>" for uri in uris]
    if reverse:
        routes.reverse()
    return routes


def _route_uri(route: str) -> str:
    lt, gt = route.find("<"), route.find(">")
    return route[lt + 1 : gt] if 0 <= lt < gt else route.strip()


def _is_sips(uri: str) -> bool:
    return uri[:5].lower() == "sips:"


__all__ = [
    "MAX_FORWARDS",
    "TARGET_REFRESH",
    "TRANSITIONS",
    "Dialog",
    "DialogEvent",
    "DialogKey",
    "DialogState",
    "Role",
    "ends_dialog",
]
