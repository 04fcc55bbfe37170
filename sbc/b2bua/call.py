"""One call as the B2BUA sees it (sans-I/O): leg A answers the INVITE that came in, leg B is a
new INVITE of ours toward the target, and everything that happens on one leg is turned into
what must happen on the other. Inputs and actions are in sbc.b2bua.api; the adapter
(sbc.calls) owns sockets, transactions, timers and the relay.

What stays on its own leg: Call-ID, tags, branches, CSeq, Via, Contact, Record-Route, route
sets, every header not explicitly allowed across, SDP addresses and o= lines (topology hiding,
TRAPS #6). What each leg keeps for itself: 100rel (RFC 3262) and session timers (RFC 4028)
are run per leg, so one side's support never depends on the other's.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import itertools
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from sbc.b2bua.api import (
    AllocateMedia,
    CallAction,
    CallEnded,
    CallSetup,
    CancelRequest,
    Cdr,
    DialogOpened,
    LegId,
    LogEvent,
    PlayDtmf,
    ReleaseMedia,
    SendRequest,
    SendResponse,
    SendStateless,
    Target,
    UpdateMedia,
)
from sbc.b2bua.leg import (
    ACCEPT,
    ALLOW,
    AwaitAck,
    Leg,
)
from sbc.b2bua.sdp import SDP_TYPE, cross, remotes_of, same_session, sdp_of
from sbc.b2bua.timer import SessionTimer, answer_timer, min_se, session_expires, supports_timer
from sbc.dtmf_info import (
    DTMF_INFO_TYPES,
    DTMF_RELAY_TYPE,
    DtmfInfoError,
    format_dtmf_relay,
    parse_dtmf_info,
)
from sbc.sdp import (
    NegotiationState,
    OfferAnswerError,
    OriginState,
    SdpError,
    SessionDescription,
)
from sbc.sdp.crypto import SrtpPolicy
from sbc.sip.challenge import ChallengeAnswerer
from sbc.sip.dialog import (
    Dialog,
    DialogError,
    DialogSet,
    DialogState,
    GiveUp,
    ReliableProvisionalRetransmitter,
    RSeqCheck,
    TwoXXRetransmitter,
    is_reliable,
)
from sbc.sip.errors import ParseError
from sbc.sip.message import Request, Response, make_response, new_tag, parse
from sbc.sip.peer import Peer, response_peer
from sbc.sip.transaction import TxnKey, new_branch
from sbc.sip.uri import SipUri, parse_uri
from sbc.topology import (
    asserted_identity,
    crossing_headers,
    reason_header,
    sanitized_reason,
)
from trunks.selection import counts_as_trunk_failure

Actions = list[CallAction]

# Responses from the far side that must not reach the caller as they are.
_MAPPED_STATUS = {
    # A challenge from the trunk is ours to answer (trunk auth comes with trunks); the PBX
    # cannot answer it and would only see the trunk's realm.
    401: (403, "Forbidden"),
    407: (403, "Forbidden"),
    # A redirect would hand the caller the far side's addresses (topology hiding).
    300: (480, "Temporarily Unavailable"),
    301: (480, "Temporarily Unavailable"),
    302: (480, "Temporarily Unavailable"),
    305: (480, "Temporarily Unavailable"),
    380: (480, "Temporarily Unavailable"),
}
# Headers of a final failure that may cross: the RFC 3326 cause and the retry hint.
_FAILURE_HEADERS = ("Reason", "Retry-After")


SdpView = tuple[SessionDescription | None, SessionDescription | None]


class Phase(enum.Enum):
    SETUP = "setup"  # leg A has no final answer yet
    ANSWERED = "answered"  # leg A got our 2xx: the call is up
    ENDED = "ended"


@dataclass(slots=True)
class _Out:
    """A request we sent in a client transaction, and why."""

    purpose: str  # 'invite' | 'relay' | 'bye' | 'prack' | 'refresh'
    leg: Leg
    request: Request
    peer_key: TxnKey | None = None  # relay: the server transaction on the other leg
    peer_request: Request | None = None
    peer_source: Peer | None = None
    offer: bool = False  # it carried an offer (roll back on a non-2xx)
    ack: SendStateless | None = None  # our ACK for its 2xx (an INVITE), sent again on resends
    dset: DialogSet | None = None  # an INVITE attempt on leg B: the dialogs its answers make


class Call:
    """A call from its INVITE until both legs are gone. See sbc.b2bua.api for the contract."""

    def __init__(
        self,
        setup: CallSetup,
        invite_key: TxnKey,
        invite: Request,
        source: Peer,
        now: float,
        *,
        t1: float = 0.5,
        t2: float = 4.0,
    ) -> None:
        if not setup.targets:
            raise ValueError(f"call {setup.call_key}: routing gave no target")
        self.setup = setup
        self.target = setup.targets[0]
        self._target_index = 0
        self._answerer = _answerer(self.target)
        self._setup_at: float | None = None  # the target's setup_timeout runs out
        self._a_saw_sdp = False  # leg A got SDP in an 18x: the call stays on this target
        self.invite = invite
        self.invite_key = invite_key
        self.source = source
        self.t1, self.t2 = t1, t2
        self.a = Leg(LegId.A, setup.a_local, setup.a_policy, source)
        self.b = Leg(LegId.B, self.target.local, self.target.policy, self.target.dest)
        self.a_tag = new_tag()
        self.b_call_id = secrets.token_hex(16)  # no host part: nothing of ours to leak either
        self.b_tag = new_tag()
        self.phase = Phase.SETUP
        self.started = now
        self.answered: float | None = None
        self.status = 0  # final status leg A got
        self.ended = False
        self.cancelled = False  # leg A gave up (CANCEL, BYE, timeout) before an answer

        self._b_invite: Request | None = None
        self._b_dset: DialogSet | None = None
        self._b_invite_key: TxnKey | None = None
        self._b_invite_done = False
        self._b_dialogs: set[str] = set()  # remote tags of leg B dialogs announced
        self._b_ack: Request | None = None  # our ACK for leg B's 2xx, resent on its retransmits
        self._b_late: Dialog | None = None
        # Leg B's reliable 18x offering (late offer), whose PRACK waits for A's answer.
        self._b_prack_wait: tuple[Dialog, Response] | None = (
            None  # answered leg B dialog waiting for A's ACK (late offer)
        )
        self._invite_retries = 0
        self._a_preview: SessionDescription | None = None  # answer shown A in an unreliable 18x
        self._a_queue: list[Response] = []  # reliable 1xx waiting for the PRACK of the last
        self._out_by_tag: dict[str, _Out] = {}
        self._out_by_key: dict[TxnKey, _Out] = {}
        # Per leg, the ACK for the 2xx to our last re-INVITE, by that INVITE's key.
        self._reacks: dict[LegId, tuple[TxnKey, SendStateless]] = {}
        self._tags = itertools.count(1)
        self._media = "none"  # 'none' | 'allocating' | 'ready'
        self._after_media: list[Callable[[float], Actions]] = []
        self._no_answer_at: float | None = now + setup.no_answer_timeout
        self._give_up_at: float | None = None  # leg B never finished after our CANCEL
        self._ended_by = "sbc"
        self._end_reason = ""
        self._closing_at: float | None = None  # ended, but a BYE waits for an ACK (§15)

    # ================================================================== inputs: leg A setup
    def start(self, now: float) -> Actions:
        invite, a = self.invite, self.a
        try:
            a.dialog = Dialog.from_uas(invite, self.a_tag, a.contact)
        except DialogError as exc:
            return self._reject(exc.status or 400, str(exc)[:100], now)
        a.learn_peer(invite)
        policy = a.policy
        if "100rel" in invite.option_tags("Require") and not policy.supports_100rel:
            # RFC 3262 §4: a UAS that will not send reliable provisionals must not pretend to.
            return self._reject(420, "Bad Extension", now, [("Unsupported", "100rel")])
        timer, floor = answer_timer(
            invite, interval=policy.session_expires, minimum=policy.min_se, now=now
        )
        if floor is not None:
            # RFC 4028 §9: too short an interval is refused with our minimum.
            return self._reject(422, "Session Interval Too Small", now, [("Min-SE", str(floor))])
        a.timer = timer
        actions: Actions = [
            DialogOpened(LegId.A, invite.call_id, self.a_tag, invite.from_tag or "")
        ]
        try:
            offer = sdp_of(invite)
            if offer is not None:
                a.oa.remote_offer(offer)
        except SdpError as exc:
            return actions + self._reject(exc.status, _short(exc), now)
        if offer is None:
            return actions + self._send_invite_b(now)  # late offer: leg B's 2xx will offer
        return actions + self._with_media(len(offer.media), self._send_invite_b, now)

    def _send_invite_b(self, now: float) -> Actions:
        if self.phase is not Phase.SETUP or self.cancelled:
            return self._end(now) if self.cancelled else []
        a, b, target = self.a, self.b, self.target
        actions: Actions = []
        body = b""
        offer = a.oa.remote_pending
        if offer is not None:
            try:
                out, b.origin = cross(
                    offer,
                    b.endpoints,
                    _origin(b),
                    dtmf=self._dtmf_toward(b),
                    srtp=self._srtp_toward(b),
                    codecs=(a.policy.codecs, b.policy.codecs),
                )
            except SdpError as exc:
                a.oa.rollback()
                return self._reject(exc.status, _short(exc), now)
            b.oa.local_offer(out)
            body = bytes(out)
            actions.append(UpdateMedia(LegId.A, remotes_of(offer)))
        invite = self._build_invite_b(body, cseq=1 + self._invite_retries)
        actions.append(self._send_invite_attempt(invite))
        if target.setup_timeout > 0:
            self._setup_at = now + target.setup_timeout
        actions.append(
            LogEvent(
                "call.invite_sent",
                (("target", target.name), ("b_call_id", self.b_call_id)),
                debug=True,
            )
        )
        return actions

    def _send_invite_attempt(self, invite: Request) -> SendRequest:
        """Send one INVITE of leg B (first try, or again after 422/401/407): the attempt it
        replaces, if any, no longer decides anything (its late 2xx is ACKed and ended)."""
        self._retire_invite()
        self._b_invite = invite
        self._b_dset = dset = DialogSet(invite, self.b.contact)
        self._b_invite_done = False
        send = self._send(self.b, invite, "invite", dest=self.target.dest)
        self._out_by_tag[send.tag].dset = dset
        return send

    def _retire_invite(self) -> None:
        key = self._b_invite_key
        out = None if key is None else self._out_by_key.get(key)
        if out is not None and out.purpose == "invite":
            out.purpose = "retired"
        self._b_invite_key = None

    def _build_invite_b(
        self, body: bytes, cseq: int, auth: tuple[str, str] | None = None
    ) -> Request:
        invite, b, target = self.invite, self.b, self.target
        display = invite.from_.display
        from_addr = f"{display} <{target.from_uri}>" if display else f"<{target.from_uri}>"
        forwards = invite.max_forwards
        forwards = 70 if forwards is None else max(0, min(70, forwards - 1))
        policy = b.policy
        supported = "100rel, timer" if policy.supports_100rel else "timer"
        headers = [
            ("Via", f"{b.via()};branch={new_branch()}"),
            ("Max-Forwards", str(forwards)),
            ("From", f"{from_addr};tag={self.b_tag}"),
            ("To", f"<{target.to_uri}>"),
            ("Call-ID", self.b_call_id),
            ("CSeq", f"{cseq} INVITE"),
            ("Contact", b.contact),
            ("Allow", ALLOW),
            ("Supported", supported),
            *b.agent_header("User-Agent"),
        ]
        if policy.session_expires > 0:
            interval = max(policy.session_expires, self._min_se_b)
            headers.append(("Session-Expires", str(interval)))
            headers.append(("Min-SE", str(max(policy.min_se, self._min_se_b, 90))))
        if target.identity is not None and policy.pai == "pass":
            # The trunk's own identity (RFC 3325): the number the carrier knows us by.
            host = b.local.host if ":" not in b.local.host else f"[{b.local.host}]"
            headers.append(("P-Asserted-Identity", f"<sip:{target.identity}@{host}>"))
        else:
            headers.extend(asserted_identity(invite, policy.pai, b.local.host))
        headers.extend(crossing_headers(invite, "INVITE", policy.allowed_headers))
        if auth is not None:
            headers.append(auth)
        if body:
            headers.append(("Content-Type", SDP_TYPE))
        return Request("INVITE", target.request_uri, headers, body)

    _min_se_b = 0  # raised by a 422 from leg B (RFC 4028 §7.4)

    # ================================================================== inputs: requests
    def on_request(
        self, leg_id: LegId, key: TxnKey, request: Request, source: Peer, now: float
    ) -> Actions:
        if self.ended:
            return [SendResponse(leg_id, key, make_response(request, 481))]
        method = request.method
        leg = self._leg(leg_id)
        if self._closing_at is not None:
            return self._while_closing(leg, key, request, now)
        if method == "CANCEL":
            return self._on_cancel(leg, key, request, now)
        dialog = leg.dialog
        if dialog is None:
            return [SendResponse(leg_id, key, make_response(request, 481))]
        if leg is self.b and request.from_tag != dialog.remote_tag:
            return self._other_fork(key, request)
        try:
            refused = dialog.receive_request(request)
        except DialogError:
            refused = make_response(request, 481)
        if refused is not None:
            return [self._respond(leg, key, refused)]
        try:
            if method == "BYE":
                return self._on_bye(leg, key, request, now)
            if method in ("INVITE", "UPDATE"):
                return self._on_offer_request(leg, key, request, source, now)
            if method == "PRACK":
                return self._on_prack(leg, key, request, now)
            if method == "OPTIONS":
                headers = [("Allow", ALLOW), ("Accept", ACCEPT), ("Supported", "100rel, timer")]
                return [self._answer(leg, key, request, 200, headers=headers)]
            if method == "REFER" and leg.policy.refer != "relay":
                return [self._answer(leg, key, request, 603, "Decline")]
            if method == "INFO" and self._dtmf_toward(self._other(leg)) == "add":
                return self._info_to_rtp(leg, key, request, source, now)
            if method in ("INFO", "MESSAGE", "NOTIFY", "REFER"):
                return self._relay_request(leg, key, request, source, now, None)
            return [self._answer(leg, key, request, 501, headers=[("Allow", ALLOW)])]
        except (DialogError, ParseError) as exc:
            # A malformed header the dialog rules choked on: the request gets 400, the call
            # goes on as it was.
            status = exc.status if isinstance(exc, DialogError) and exc.status else 400
            return [self._answer(leg, key, request, status, _short(exc))]

    def _other_fork(self, key: TxnKey, request: Request) -> Actions:
        """A request in an early dialog of leg B that is not the one the call follows (the
        INVITE forked, RFC 3261 §12.1.2): that fork hanging up gets its 200 and ends only its
        own dialog; anything else from it gets 481 and does not touch the call."""
        dset = self._b_dset
        fork = None if dset is None else dset.dialogs.get(request.from_tag or "")
        if fork is None or request.method != "BYE":
            return [SendResponse(LegId.B, key, make_response(request, 481))]
        try:
            refused = fork.receive_request(request)
        except DialogError:
            refused = make_response(request, 481)
        ok = refused or make_response(request, 200, headers=self.b.agent_header("Server"))
        return [SendResponse(LegId.B, key, ok)]

    def _on_cancel(self, leg: Leg, key: TxnKey, request: Request, now: float) -> Actions:
        # RFC 3261 §8.2.6.2: a response outside a dialog carries a To tag; §9.2: the one of
        # the INVITE's response.
        to_tag = self.a_tag if leg.id is LegId.A else None
        ok = make_response(request, 200, to_tag=to_tag, headers=leg.agent_header("Server"))
        actions: Actions = [SendResponse(leg.id, key, ok)]
        relayed = self._relayed_invite(leg, request)
        if relayed is not None:
            # A re-INVITE we relayed and the other leg has not answered: CANCEL it there;
            # its 487 comes back to this leg as the re-INVITE's answer (§9.1, §9.2).
            return [*actions, CancelRequest(relayed[0].id, relayed[1])]
        if leg.id is not LegId.A or self.phase is not Phase.SETUP or self.cancelled:
            return actions  # RFC 3261 §9.2: the INVITE was answered already; 200 is all
        actions.append(LogEvent("call.cancelled", (("by", "a"),)))
        reason = request.header("Reason")
        return actions + self._abandon(now, 487, "Request Terminated", "a", reason or "cancel")

    def _relayed_invite(self, leg: Leg, cancel: Request) -> tuple[Leg, TxnKey] | None:
        """The other leg's INVITE transaction carrying the re-INVITE this CANCEL targets."""
        branch = cancel.via.branch
        for key, out in self._out_by_key.items():
            request = out.peer_request
            if (
                out.purpose == "relay"
                and request is not None
                and request.method == "INVITE"
                and out.leg is not leg
                and request.via.branch == branch
            ):
                return out.leg, key
        return None

    def _abandon(self, now: float, status: int, text: str, by: str, why: str) -> Actions:
        """Leg A gets a final failure before any answer; leg B's INVITE is cancelled. The call
        ends when leg B's INVITE finishes (a 200 crossing the CANCEL is ACKed and BYEd)."""
        self.cancelled = True
        self._ended_by, self._end_reason = by, why
        actions = self._final_to_a(status, text)
        if self._b_invite_key is not None and not self._b_invite_done:
            actions.append(CancelRequest(LegId.B, self._b_invite_key))
            # §9.1: the INVITE transaction ends 64*T1 after the CANCEL at the latest; this
            # is the call's own guard should it not.
            self._give_up_at = now + 64 * self.t1 + 5
            return actions
        # Leg B may have answered already (a late offer waiting for relay ports): its dialog
        # is confirmed and ends with ACK and BYE, not silently.
        actions += self._bye(self.b, [reason_header("SIP", 487, "Caller gave up")])
        return actions + self._end(now)

    def _on_bye(self, leg: Leg, key: TxnKey, request: Request, now: float) -> Actions:
        leg.done = True
        actions: Actions = [self._answer(leg, key, request, 200)]
        reason = request.header("Reason")
        why = reason or "bye"
        if self.phase is Phase.SETUP:
            if leg.id is LegId.A:  # the caller may end an early dialog with BYE (§15)
                return actions + self._abandon(now, 487, "Request Terminated", "a", why)
            # A callee must not BYE an early dialog; treat it as leg B refusing the call.
            return actions + self._abandon(now, 480, "Temporarily Unavailable", "b", why)
        other = self._other(leg)
        headers = [("Reason", reason)] if reason else []
        actions += self._bye(other, headers)
        self._ended_by, self._end_reason = leg.id.value, why
        return actions + self._end(now)

    def _on_prack(self, leg: Leg, key: TxnKey, request: Request, now: float) -> Actions:
        # The dialog checked the RAck against our outstanding reliable 1xx (RFC 3262 §3).
        actions: Actions = [self._answer(leg, key, request, 200)]
        if leg.reliable is not None:
            leg.reliable.prack_received()
            leg.reliable = None
        if (
            leg.id is LegId.A
            and self._b_prack_wait is not None
            and self.a.oa.state is NegotiationState.LOCAL_OFFER_SENT
        ):
            actions += self._early_answer_from_a(request)
        if leg.id is LegId.A and self._a_queue and self.phase is Phase.SETUP:
            actions += self._send_a_reliable(self._a_queue.pop(0), now)
        return actions

    def _on_offer_request(
        self, leg: Leg, key: TxnKey, request: Request, source: Peer, now: float
    ) -> Actions:
        """A re-INVITE or UPDATE: a session refresh we answer ourselves, or a new offer that
        crosses to the other leg."""
        method = request.method
        try:
            sdp = sdp_of(request)
        except SdpError as exc:
            return [self._answer(leg, key, request, exc.status, _short(exc))]
        if method == "INVITE" and self.phase is not Phase.ANSWERED:
            return [self._answer(leg, key, request, 491)]  # §14.2 rules: one at a time
        timer = leg.timer
        if timer is not None:
            asked = session_expires(request)
            if asked is not None and 0 < asked.interval < max(leg.policy.min_se, 90):
                floor = str(max(leg.policy.min_se, 90))
                return [self._answer(leg, key, request, 422, headers=[("Min-SE", floor)])]
        oa = leg.oa
        if sdp is None and method == "UPDATE":
            return self._refreshed_locally(leg, key, request, source, now, None)
        if sdp is None:
            # An offerless re-INVITE: offer what is in force again (RFC 3261 §14.2); the
            # answer comes in the ACK. A pure refresh: the other leg need not hear of it.
            current = oa.local_current
            if current is None or oa.offer_pending:
                return [self._answer(leg, key, request, 491)]
            oa.local_offer(current)
            leg.await_ack = AwaitAck(request.cseq.number)
            return self._refreshed_locally(leg, key, request, source, now, current)
        if same_session(oa.remote_current, sdp) and oa.local_current is not None:
            try:
                oa.remote_offer(sdp)
                oa.local_answer(oa.local_current)
            except (OfferAnswerError, SdpError) as exc:
                status = getattr(exc, "status", None) or 500
                return [self._answer(leg, key, request, status)]
            return self._refreshed_locally(leg, key, request, source, now, oa.local_current)
        return self._relay_request(leg, key, request, source, now, sdp)

    def _refreshed_locally(
        self,
        leg: Leg,
        key: TxnKey,
        request: Request,
        source: Peer,
        now: float,
        body: SessionDescription | None,
    ) -> Actions:
        headers = self._timer_answer_headers(leg, request, now)
        response = self._build_answer(leg, request, 200, None, headers, body)
        actions: Actions = [self._respond(leg, key, response)]
        if request.method == "INVITE":
            self._retransmit_2xx(leg, response, response_peer(request.via, source), now)
        return actions

    # ================================================================== relaying
    def _relay_request(
        self,
        leg: Leg,
        key: TxnKey,
        request: Request,
        source: Peer,
        now: float,
        sdp: SessionDescription | None,
    ) -> Actions:
        """Send `request` on in the other leg's dialog, its offer rewritten for that leg."""
        other = self._other(leg)
        method = request.method
        if other.dialog is None or other.done or other.dialog.state is DialogState.TERMINATED:
            return [self._answer(leg, key, request, 481)]
        actions: Actions = []
        body = request.body
        headers = crossing_headers(request, method, other.policy.allowed_headers)
        if sdp is not None:
            if (method == "INVITE" and other.dialog.invite_in_progress) or other.oa.offer_pending:
                # Their re-INVITE crosses ours on the other leg (glare, RFC 3261 §14.2).
                return [self._answer(leg, key, request, 491)]
            try:
                leg.oa.remote_offer(sdp)
            except (OfferAnswerError, SdpError) as exc:
                status = getattr(exc, "status", None) or 500
                return [self._answer(leg, key, request, status)]
            try:
                out, other.origin = cross(
                    sdp,
                    other.endpoints,
                    _origin(other),
                    dtmf=self._dtmf_toward(other),
                    srtp=self._srtp_toward(other),
                    codecs=(leg.policy.codecs, other.policy.codecs),
                )
                other.oa.local_offer(out)
            except (SdpError, OfferAnswerError) as exc:
                leg.oa.rollback()
                return [self._answer(leg, key, request, getattr(exc, "status", 488) or 488)]
            body = bytes(out)
            actions.append(UpdateMedia(leg.id, remotes_of(sdp)))
            headers.append(("Content-Type", SDP_TYPE))
        elif body:
            headers.append(("Content-Type", request.content_type or "application/octet-stream"))
        if method in ("INVITE", "UPDATE"):
            headers += [("Allow", ALLOW), ("Supported", "timer")]
            if other.timer is not None:
                headers.append(("Session-Expires", other.timer.header(uac=True)))
        try:
            out_request = other.new_request(method, headers, body)
        except DialogError as exc:
            if sdp is not None:
                other.oa.rollback()
                leg.oa.rollback()
            return [self._answer(leg, key, request, 500, _short(exc))]
        actions.append(
            self._send(
                other,
                out_request,
                "relay",
                peer_key=key,
                peer_request=request,
                peer_source=source,
                offer=sdp is not None,
            )
        )
        return actions

    def _relayed_response(self, out: _Out, response: Response, now: float) -> Actions:
        other = out.leg  # where we sent it
        leg = self._other(other)  # where it came from
        request = out.peer_request
        assert request is not None and out.peer_key is not None
        status = response.status
        if status < 200:
            return []
        method = request.method
        actions: Actions = []
        if other.dialog is not None:
            try:
                other.dialog.receive_response(response)
            except DialogError:
                pass
        if status >= 300:
            if out.offer:
                other.oa.rollback()
                leg.oa.rollback()
                if leg.oa.remote_current is not None:  # TRAPS #2: the old session stays
                    actions.append(UpdateMedia(leg.id, remotes_of(leg.oa.remote_current)))
            mapped, text = _map_failure(response)
            extra = [(n, v) for n, v in response.headers() if n.lower() in ("retry-after",)]
            actions.append(self._answer(leg, out.peer_key, request, mapped, text, extra))
            if status in (408, 481):
                # §12.2.1.2: the other leg's dialog is gone; so is the call. After a 408 a
                # BYE still goes there, best effort, in case only that request was lost.
                other.done = other.done or status == 481
                hdr = reason_header("SIP", status, "Far end dialog gone")
                return actions + self._teardown(now, "b" if other.id is LegId.B else "a", hdr)
            return actions
        # 2xx
        if method == "INVITE" and other.dialog is not None:
            ack = other.dialog.create_ack(
                response.cseq.number, via=other.via(), branch=new_branch()
            )
            out.ack = SendStateless(other.id, ack, self._dialog_dest(other))
            actions.append(out.ack)
        if other.timer is not None and method in ("INVITE", "UPDATE"):
            other.timer.refreshed(now, session_expires(response), uac=True)
        body: SessionDescription | None = None
        if out.offer:
            try:
                answer = _answer_in(other, response)
                actions.append(UpdateMedia(other.id, remotes_of(answer)))
                body, leg.origin = cross(
                    answer,
                    leg.endpoints,
                    _origin(leg),
                    dtmf=self._dtmf_toward(leg),
                    srtp=self._srtp_toward(leg),
                    offered=self._offered_to_other(leg),
                    answers=leg.oa.remote_pending,
                )
                leg.oa.local_answer(body)
            except (SdpError, OfferAnswerError) as exc:
                # The far side accepted but its answer is unusable: refuse on this leg, and
                # end the call, since the far side now runs a session we cannot describe.
                leg.oa.rollback()
                actions.append(self._answer(leg, out.peer_key, request, 488, _short(exc)))
                hdr = reason_header("SIP", 488, "Unusable answer")
                return actions + self._teardown(now, "sbc", hdr)
        headers: list[tuple[str, str]] = []
        if method in ("INVITE", "UPDATE"):
            headers = self._timer_answer_headers(leg, request, now)
        else:
            headers = crossing_headers(response, method, leg.policy.allowed_headers)
        response_out = self._build_answer(
            leg, request, status, sanitized_reason(response) or None, headers, body
        )
        actions.append(self._respond(leg, out.peer_key, response_out))
        if method == "INVITE":
            dest = response_peer(request.via, out.peer_source or leg.dest)
            self._retransmit_2xx(leg, response_out, dest, now)
        return actions

    # ================================================================== inputs: ACK
    def on_ack(self, leg_id: LegId, request: Request, now: float) -> Actions:
        if self.ended:
            return []
        leg = self._leg(leg_id)
        if leg.two_xx is not None and leg.two_xx.acknowledges(request):
            leg.two_xx.ack_received()
            leg.two_xx = None
            if leg.pending_bye is not None:
                return self._flush_bye(leg, now)
        if self._closing_at is not None:
            return []
        waiting = leg.await_ack
        if waiting is None or request.cseq.number != waiting.cseq:
            return []
        leg.await_ack = None
        try:
            answer = sdp_of(request)
            if answer is None:
                raise SdpError("ACK carries no answer to the offer in our 2xx", status=488)
            leg.oa.remote_answer(answer)
        except (SdpError, OfferAnswerError):
            leg.oa.rollback() if leg.oa.offer_pending else None
            hdr = reason_header("SIP", 488, "No usable answer in ACK")
            return self._teardown(now, leg.id.value, hdr)
        actions: Actions = [UpdateMedia(leg.id, remotes_of(answer))]
        late = self._b_late
        if leg.id is LegId.A and late is not None:
            # Initial late offer: leg B's 2xx offered, A answered in its ACK; now ACK leg B.
            b = self.b
            try:
                out, b.origin = cross(
                    answer,
                    b.endpoints,
                    _origin(b),
                    dtmf=self._dtmf_toward(b),
                    srtp=self._srtp_toward(b),
                    offered=self._offered_to_other(b),
                    answers=b.oa.remote_pending,
                )
                b.oa.local_answer(out)
            except (SdpError, OfferAnswerError):
                hdr = reason_header("SIP", 488, "No usable answer")
                return actions + self._teardown(now, "a", hdr)  # ACKs leg B, then BYE
            self._b_late = None
            ack = late.create_ack(
                via=b.via(),
                branch=new_branch(),
                headers=[("Content-Type", SDP_TYPE)],
                body=bytes(out),
            )
            self._b_ack = ack
            actions.append(SendStateless(LegId.B, ack, self._dialog_dest(b)))
        return actions

    # ================================================================== inputs: responses
    def request_sent(self, leg: LegId, tag: str, key: TxnKey) -> None:
        out = self._out_by_tag.pop(tag, None)
        if out is None:
            return
        self._out_by_key[key] = out
        if out.purpose == "invite":
            self._b_invite_key = key

    def on_response(self, leg: LegId, key: TxnKey, response: Response, now: float) -> Actions:
        out = self._out_by_key.get(key)
        if out is None:
            # A 2xx to a re-INVITE of ours resent (the transaction layer passes those on,
            # RFC 6026 §7.2): our ACK was lost, so it goes again (RFC 3261 §13.2.2.4), or the
            # far end ends the session once its 2xx retransmissions run out (§13.3.1.4).
            reack = self._reacks.get(leg)
            if reack is None or reack[0] != key or self.ended or response.status // 100 != 2:
                return []
            return [reack[1]]
        if self._closing_at is not None and out.purpose == "bye" and not self.ended:
            return self._closing_bye(key, out, response, now)
        if (self.ended or self._closing_at is not None) and out.purpose != "invite":
            return []  # whoever waited for this answer got 487 when the call ended
        if out.purpose == "retired":
            return self._retired_response(out, response)
        if response.status >= 200 and out.purpose != "invite":
            del self._out_by_key[key]
        if out.purpose == "invite":
            return self._b_invite_response(response, now)
        if response.status in (401, 407):
            resent = self._resend_with_auth(out, response)
            if resent is not None:
                return resent
        if out.purpose == "relay":
            actions = self._relayed_response(out, response, now)
        elif out.purpose == "refresh":
            actions = self._refresh_response(out, response, now)
        else:
            return []  # BYE, PRACK: nothing follows from their answers
        if out.ack is not None:
            self._reacks[out.leg.id] = (key, out.ack)
        return actions

    def _retired_response(self, out: _Out, response: Response) -> Actions:
        """An answer to an INVITE attempt we replaced or gave up on: a 2xx still makes a
        dialog on the far side, which gets its ACK and a BYE (like a second fork's 2xx)."""
        if not 200 <= response.status < 300 or out.dset is None:
            return []
        try:
            dialog = out.dset.receive(response)
            if dialog is None:
                return []
            ack = dialog.create_ack(via=out.leg.via(), branch=new_branch())
            bye = dialog.create_request("BYE", via=out.leg.via(), branch=new_branch())
        except DialogError:
            return []
        dest = self._dialog_dest_of(dialog)
        return [SendStateless(out.leg.id, ack, dest), self._send(out.leg, bye, "bye", dest=dest)]

    def _resend_with_auth(self, out: _Out, response: Response) -> Actions | None:
        """A request of ours in leg B's dialog challenged (401/407): once more with
        credentials and the next CSeq (RFC 3261 §22.2), so BYE, re-INVITE, REFER... pass a
        trunk that challenges everything. None: not ours to answer."""
        leg = out.leg
        dialog = leg.dialog
        if self._answerer is None or leg is not self.b or dialog is None:
            return None
        header = self._answerer.answer(out.request, response)
        if header is None:
            return None
        request = parse(bytes(out.request))
        if not isinstance(request, Request):
            return None
        method = request.method
        seq = dialog.local_seq + 1
        dialog.local_seq = seq
        if method == "INVITE":
            dialog.invite_cseq = dialog.outgoing_invite = seq
        request.set_header("Via", f"{leg.via()};branch={new_branch()}")
        request.set_header("CSeq", f"{seq} {method}")
        request.set_header(*header)
        send = self._send(
            leg,
            request,
            out.purpose,
            peer_key=out.peer_key,
            peer_request=out.peer_request,
            peer_source=out.peer_source,
            offer=out.offer,
        )
        return [send]

    def _b_invite_response(self, response: Response, now: float) -> Actions:
        status = response.status
        dset = self._b_dset
        if status == 100 or dset is None:
            return []
        if status >= 200:
            self._b_invite_done = True
            self._setup_at = None
        if status in (401, 407) and not self.cancelled and self.phase is Phase.SETUP:
            answered = self._answer_invite_challenge(response, now)
            if answered is not None:
                return answered
        try:
            dialog = dset.receive(response)
        except DialogError as exc:
            if status >= 200 and status < 300 and not self.ended:
                # A 2xx we cannot make a dialog of (no Contact): nothing to ACK it with.
                self._ended_by, self._end_reason = "b", _short(exc)
                return self._final_or_end(now, 502, "Bad Gateway")
            return [
                LogEvent("call.bad_response", (("status", str(status)), ("error", _short(exc))))
            ]
        actions: Actions = []
        if dialog is not None and dialog.remote_tag not in self._b_dialogs and not self.ended:
            self._b_dialogs.add(dialog.remote_tag)
            actions.append(DialogOpened(LegId.B, self.b_call_id, self.b_tag, dialog.remote_tag))
        if status < 200:
            return actions + self._b_provisional(dialog, response, now)
        if status < 300:
            assert dialog is not None
            return actions + self._b_answered(dialog, response, now)
        return actions + self._b_failed(response, now)

    def _b_provisional(self, dialog: Dialog | None, response: Response, now: float) -> Actions:
        if self.phase is not Phase.SETUP or self.cancelled or self.ended:
            return []
        b, a = self.b, self.a
        actions: Actions = []
        reliable = False
        if dialog is not None:
            b.dialog = dialog  # early requests (UPDATE, INFO) go to the latest early dialog
            if is_reliable(response):
                try:
                    if dialog.reliable.receive(response) is not RSeqCheck.NEW:
                        return []
                    early_offer = self._early_offer(dialog, response, now)
                    if early_offer is not None:
                        return early_offer
                    prack = dialog.create_prack(
                        response,
                        via=b.via(),
                        branch=new_branch(),
                        headers=b.agent_header("User-Agent"),
                    )
                except DialogError as exc:
                    return [LogEvent("call.bad_provisional", (("error", _short(exc)),))]
                actions.append(self._send(b, prack, "prack"))
                reliable = True
        try:
            sdp = sdp_of(response)
        except SdpError:
            sdp = None  # a broken early SDP only costs early media
        answer: SessionDescription | None = None
        if sdp is not None and b.oa.state is NegotiationState.LOCAL_OFFER_SENT:
            try:
                if reliable:
                    b.oa.remote_answer(sdp)
                else:
                    b.oa.remote_provisional_answer(sdp)
                answer = sdp
            except (OfferAnswerError, SdpError):
                answer = None
        if answer is not None:
            actions.append(UpdateMedia(LegId.B, remotes_of(answer)))
        body: SessionDescription | None = None
        if answer is not None and a.oa.state is NegotiationState.REMOTE_OFFER_RECEIVED:
            try:
                body, a.origin = cross(
                    answer,
                    a.endpoints,
                    _origin(a),
                    dtmf=self._dtmf_toward(a),
                    srtp=self._srtp_toward(a),
                    offered=self._offered_to_other(a),
                    answers=a.oa.remote_pending,
                )
            except SdpError:
                body = None
        headers = [("Contact", a.contact), ("Allow", ALLOW), *a.agent_header("Server")]
        response_a = self._build_a_response(
            response.status, sanitized_reason(response), headers, body
        )
        to_a_reliably = a.policy.supports_100rel and (
            "100rel" in self.invite.option_tags("Require") or (a.peer_100rel and body is not None)
        )
        if to_a_reliably:
            if body is not None:
                self._a_queue.append(response_a)
                if a.reliable is None:
                    actions += self._send_a_reliable(self._a_queue.pop(0), now)
                return actions
            if a.reliable is not None:
                return actions  # one unacknowledged reliable 1xx at a time (RFC 3262 §3)
            return actions + self._send_a_reliable(response_a, now)
        if body is not None:
            self._a_preview = body
        actions.append(SendResponse(LegId.A, self.invite_key, response_a))
        return actions

    def _early_offer(self, dialog: Dialog, response: Response, now: float) -> Actions | None:
        """Leg A sent no offer and leg B offers in a reliable 18x: the offer goes to A in a
        reliable 18x of ours, and B's PRACK waits for the answer A's PRACK brings (RFC 3262
        §5: the PRACK must carry it). None when this 18x is no such offer, or A cannot take
        part (no 100rel): then B is PRACKed at once and its offer left to the 2xx."""
        b, a = self.b, self.a
        if b.oa.state is not NegotiationState.NO_OFFER or self._b_prack_wait is not None:
            return None
        try:
            sdp = sdp_of(response)
        except SdpError:
            return None
        if sdp is None or not (a.policy.supports_100rel and a.peer_100rel):
            return None
        try:
            b.oa.remote_offer(sdp)
        except (OfferAnswerError, SdpError):
            return None
        self._b_prack_wait = (dialog, response)

        def offer_to_a(at: float) -> Actions:
            if self.ended or self.cancelled:
                return []
            try:
                out, a.origin = cross(
                    sdp,
                    a.endpoints,
                    _origin(a),
                    dtmf=self._dtmf_toward(a),
                    srtp=self._srtp_toward(a),
                    codecs=(b.policy.codecs, a.policy.codecs),
                )
                a.oa.local_offer(out)
            except (SdpError, OfferAnswerError):
                b.oa.rollback()
                return self._prack_b(None)
            headers = [("Contact", a.contact), ("Allow", ALLOW), *a.agent_header("Server")]
            reason = sanitized_reason(response)
            response_a = self._build_a_response(response.status, reason, headers, out)
            actions: Actions = [UpdateMedia(LegId.B, remotes_of(sdp))]
            if a.reliable is not None:
                self._a_queue.append(response_a)
                return actions
            return actions + self._send_a_reliable(response_a, at)

        return self._with_media(len(sdp.media), offer_to_a, now)

    def _prack_b(self, answer: SessionDescription | None) -> Actions:
        """Send the PRACK held for leg B's reliable 18x offer, with the answer when there."""
        waiting, self._b_prack_wait = self._b_prack_wait, None
        if waiting is None:
            return []
        dialog, response = waiting
        b = self.b
        headers = b.agent_header("User-Agent")
        body = b""
        if answer is not None:
            headers = [*headers, ("Content-Type", SDP_TYPE)]
            body = bytes(answer)
        prack = dialog.create_prack(
            response, via=b.via(), branch=new_branch(), headers=headers, body=body
        )
        return [self._send(b, prack, "prack")]

    def _early_answer_from_a(self, request: Request) -> Actions:
        """Leg A's PRACK answering the offer leg B made in a reliable 18x."""
        a, b = self.a, self.b
        try:
            answer = sdp_of(request)
            if answer is None:
                raise SdpError("PRACK without the answer to our offer", status=488)
            a.oa.remote_answer(answer)
            out, b.origin = cross(
                answer,
                b.endpoints,
                _origin(b),
                dtmf=self._dtmf_toward(b),
                srtp=self._srtp_toward(b),
                offered=self._offered_to_other(b),
                answers=b.oa.remote_pending,
            )
            b.oa.local_answer(out)
        except (SdpError, OfferAnswerError) as exc:
            if a.oa.offer_pending:
                a.oa.rollback()
            if b.oa.offer_pending:
                b.oa.rollback()
            return [LogEvent("call.early_answer_unusable", (("error", _short(exc)),))] + (
                self._prack_b(None)
            )
        return [UpdateMedia(LegId.A, remotes_of(answer)), *self._prack_b(out)]

    def _send_a_reliable(self, response: Response, now: float) -> Actions:
        a = self.a
        assert a.dialog is not None
        try:
            a.dialog.reliable.stamp(response)
        except DialogError:
            return []
        if response.body and a.oa.state is NegotiationState.REMOTE_OFFER_RECEIVED:
            try:
                a.oa.local_answer(SessionDescription.parse(response.body))
            except (OfferAnswerError, SdpError):
                pass
        response.set_header("Require", "100rel")
        a.reliable = ReliableProvisionalRetransmitter(response, now, self.t1)
        a.reliable_key = self.invite_key
        return [SendResponse(LegId.A, self.invite_key, response)]

    def _b_answered(self, dialog: Dialog, response: Response, now: float) -> Actions:
        b, a = self.b, self.a
        dset = self._b_dset
        assert dset is not None
        if dialog is not dset.confirmed:
            # A second 2xx from another fork: ACK it and end it (RFC 3261 §13.2.2.4).
            ack = dialog.create_ack(via=b.via(), branch=new_branch())
            bye = dialog.create_request("BYE", via=b.via(), branch=new_branch())
            return [
                SendStateless(LegId.B, ack, self._dialog_dest_of(dialog)),
                self._send(b, bye, "bye", dest=self._dialog_dest_of(dialog)),
            ]
        if self._b_ack is not None:
            return [SendStateless(LegId.B, self._b_ack, self._dialog_dest(b))]  # retransmitted 2xx
        if self._b_late is not None:
            return []  # its ACK waits for leg A's answer
        b.dialog = dialog
        b.learn_peer(response)
        if self.phase is not Phase.SETUP or self.cancelled or self.ended:
            # The answer crossed our CANCEL (or leg A is gone): ACK it, then end it.
            actions = self._ack_b(dialog)
            hdr = reason_header("SIP", 487, "Caller gave up")
            actions += self._bye(b, [hdr])
            return actions + self._end(now)
        try:
            sdp = sdp_of(response)
        except SdpError as exc:
            return self._b_unusable(dialog, now, _short(exc))
        state = b.oa.state
        if state is NegotiationState.NO_OFFER and sdp is not None:
            return self._b_late_offer(dialog, response, sdp, now)
        answer: SessionDescription | None = None
        if state is NegotiationState.LOCAL_OFFER_SENT:
            answer = sdp or b.oa.remote_early
            if answer is None:
                return self._b_unusable(dialog, now, "2xx without an answer to our offer")
            try:
                b.oa.remote_answer(answer)
            except (OfferAnswerError, SdpError) as exc:
                return self._b_unusable(dialog, now, _short(exc))
        actions = self._ack_b(dialog)
        body: SessionDescription | None = None
        if answer is not None:
            actions.append(UpdateMedia(LegId.B, remotes_of(answer)))
            if a.oa.state is NegotiationState.REMOTE_OFFER_RECEIVED:
                try:
                    body, a.origin = cross(
                        answer,
                        a.endpoints,
                        _origin(a),
                        dtmf=self._dtmf_toward(a),
                        srtp=self._srtp_toward(a),
                        offered=self._offered_to_other(a),
                        answers=a.oa.remote_pending,
                    )
                    a.oa.local_answer(body)
                except (SdpError, OfferAnswerError) as exc:
                    return actions + self._b_unusable(dialog, now, _short(exc), acked=True)
        elif a.oa.state is NegotiationState.REMOTE_OFFER_RECEIVED and self._a_preview is not None:
            body = self._a_preview
            a.oa.local_answer(body)
        b.timer = self._uac_timer(response, now)
        return actions + self._answer_a(response, body, now)

    def _b_late_offer(
        self, dialog: Dialog, response: Response, sdp: SessionDescription, now: float
    ) -> Actions:
        """Leg A sent no offer, leg B's 2xx brings one: it goes to A in our 2xx, and leg B's
        ACK waits for the answer in A's ACK (RFC 3261 §13.2.1)."""
        b = self.b
        try:
            b.oa.remote_offer(sdp)
        except (OfferAnswerError, SdpError) as exc:
            return self._b_unusable(dialog, now, _short(exc))
        self._b_late = dialog
        b.timer = self._uac_timer(response, now)

        def offer_to_a(at: float) -> Actions:
            a = self.a
            if self.ended:
                return []
            try:
                out, a.origin = cross(
                    sdp,
                    a.endpoints,
                    _origin(a),
                    dtmf=self._dtmf_toward(a),
                    srtp=self._srtp_toward(a),
                    codecs=(b.policy.codecs, a.policy.codecs),
                )
                a.oa.local_offer(out)
            except (SdpError, OfferAnswerError) as exc:
                self._b_late = None
                return self._b_unusable(dialog, at, _short(exc))
            actions: Actions = [UpdateMedia(LegId.B, remotes_of(sdp))]
            actions += self._answer_a(response, out, at)
            a.await_ack = AwaitAck(self.invite.cseq.number)
            return actions

        return self._with_media(len(sdp.media), offer_to_a, now)

    def _b_unusable(self, dialog: Dialog, now: float, why: str, *, acked: bool = False) -> Actions:
        """Leg B answered with something we cannot use: ACK and BYE it, 502 for leg A."""
        actions = [] if acked else self._ack_b(dialog)
        self.b.dialog = dialog
        actions += self._bye(self.b, [reason_header("SIP", 488, "Unusable answer")])
        self._ended_by, self._end_reason = "b", why
        actions += self._final_to_a(502, "Bad Gateway")
        return actions + self._end(now)

    def _ack_b(self, dialog: Dialog) -> Actions:
        ack = dialog.create_ack(
            via=self.b.via(), branch=new_branch(), headers=self.b.agent_header("User-Agent")
        )
        self._b_ack = ack
        return [SendStateless(LegId.B, ack, self._dialog_dest_of(dialog))]

    def _answer_a(self, response: Response, body: SessionDescription | None, now: float) -> Actions:
        """Relay leg B's 2xx to leg A, with our own Contact and leg A's session timer."""
        a = self.a
        headers = [("Contact", a.contact), ("Allow", ALLOW), *a.agent_header("Server")]
        supported = ["timer"]
        if a.timer is not None:
            a.timer.last = now
            headers.append(("Session-Expires", a.timer.header(uac=False)))
            if a.timer.peer_supports:
                headers.append(("Require", "timer"))
        headers.append(("Supported", ", ".join(supported)))
        answer = self._build_a_response(
            response.status, sanitized_reason(response) or None, headers, body
        )
        actions: Actions = [SendResponse(LegId.A, self.invite_key, answer)]
        assert a.dialog is not None
        a.dialog.response_sent(answer)
        self._stop_a_reliable()
        self._retransmit_2xx(a, answer, response_peer(self.invite.via, self.source), now)
        self.phase = Phase.ANSWERED
        self.answered = now
        self.status = answer.status
        self._no_answer_at = None
        actions.append(LogEvent("call.answered", (("status", str(answer.status)),), debug=True))
        return actions

    def _b_failed(self, response: Response, now: float) -> Actions:
        status = response.status
        if self.ended:
            return []
        if self.cancelled or self.phase is not Phase.SETUP:
            return self._end(now)
        if status == 422 and self._invite_retries < 2:
            # RFC 4028 §7.4: retry with the interval the far side asks for at least.
            wanted = min_se(response)
            if wanted is not None and wanted > max(self.b.policy.session_expires, self._min_se_b):
                self._min_se_b = wanted
                self._invite_retries += 1
                return self._retry_invite_b(now)
        if counts_as_trunk_failure(status, self.target.fail_on_6xx):
            index = self._can_fail_over()
            if index is not None:
                return self._fail_over(index, now, f"{status} {sanitized_reason(response)}")
        mapped, text = _map_failure(response)
        if status in (401, 407):
            # A challenge we could not (or no longer) answer: wrong or missing credentials
            # for this trunk. The PBX gets 403, never the trunk's challenge.
            mapped, text = 403, "Forbidden"
        self._ended_by = "b"
        self._end_reason = response.header("Reason") or f"{status} {sanitized_reason(response)}"
        extra = [(n, v) for n, v in response.headers() if n.lower() in ("reason", "retry-after")]
        actions = self._final_to_a(mapped, text, extra)
        return actions + self._end(now)

    def _retry_invite_b(self, now: float, auth: tuple[str, str] | None = None) -> Actions:
        old = self._b_invite
        assert old is not None
        self._b_dialogs.clear()
        self.b.dialog = None
        invite = self._build_invite_b(old.body, cseq=1 + self._invite_retries, auth=auth)
        return [self._send_invite_attempt(invite)]

    def _answer_invite_challenge(self, response: Response, now: float) -> Actions | None:
        """401/407 to leg B's INVITE: the same INVITE again with credentials, CSeq one up,
        same Call-ID and tags (RFC 3261 §22.2); the PBX never sees the challenge. None when
        there is nothing (more) to answer with."""
        old = self._b_invite
        if self._answerer is None or old is None or self._invite_retries >= 4:
            return None
        header = self._answerer.answer(old, response)
        if header is None:
            return None
        self._invite_retries += 1
        return [
            LogEvent("call.auth_answered", (("status", str(response.status)),), debug=True),
            *self._retry_invite_b(now, auth=header),
        ]

    def _can_fail_over(self) -> int | None:
        """The index of the next target to try, or None: none left, leg A gave up, or leg A
        has heard early media from this one (moving on would change what it heard). Only
        targets on the same interface qualify: the relay's leg B ports are bound there."""
        if self.cancelled or self.phase is not Phase.SETUP or self.ended or self._a_saw_sdp:
            return None
        interface = self.target.local.interface
        targets = self.setup.targets
        for index in range(self._target_index + 1, len(targets)):
            if targets[index].local.interface == interface:
                return index
        return None

    def _fail_over(self, index: int, now: float, why: str) -> Actions:
        """Leg B failed on this target (TRAPS #11: 408, 5xx, timeouts, transport errors):
        the same leg A goes on with a fresh leg B toward the next target."""
        actions: Actions = []
        key = self._b_invite_key
        if key is not None and not self._b_invite_done:
            actions.append(CancelRequest(LegId.B, key))  # a setup timeout: stop that attempt
        self._retire_invite()
        old, target = self.target, self.setup.targets[index]
        actions.append(
            LogEvent("call.failover", (("from", old.name), ("to", target.name), ("why", why)))
        )
        self._target_index = index
        self.target = target
        self._answerer = _answerer(target)
        b = Leg(LegId.B, target.local, target.policy, target.dest)
        b.endpoints, b.origin = self.b.endpoints, self.b.origin
        self.b = b
        self.b_call_id = secrets.token_hex(16)
        self.b_tag = new_tag()
        self._b_invite = None
        self._b_dset = None
        self._b_invite_done = False
        self._b_dialogs = set()
        self._b_ack = None
        self._b_late = None
        self._b_prack_wait = None
        self._invite_retries = 0
        self._min_se_b = 0
        self._setup_at = None
        return actions + self._send_invite_b(now)

    def _uac_timer(self, response: Response, now: float) -> SessionTimer | None:
        """Leg B's session timer from its 2xx (RFC 4028 §7.2). Without Session-Expires there
        we still refresh ourselves: the carrier's silence must not keep a call up forever."""
        policy = self.b.policy
        if policy.session_expires <= 0:
            return None
        got = session_expires(response)
        supports = supports_timer(response)
        if got is None or got.interval <= 0:
            interval = max(policy.session_expires, self._min_se_b, 90)
            return SessionTimer(interval, True, now, supports)
        return SessionTimer(got.interval, got.refresher != "uas", now, supports)

    # ================================================================== failures
    def on_failure(self, leg_id: LegId, key: TxnKey, reason: str, now: float) -> Actions:
        if self.ended:
            return []
        if self._closing_at is not None:
            out = self._out_by_key.pop(key, None)
            return self._end(now) if out is not None and out.purpose == "bye" else []
        out = self._out_by_key.pop(key, None)
        if out is None:
            if key == self.invite_key and self.phase is not Phase.ENDED:
                # Our answer to leg A could not be delivered: the caller is gone.
                return self._teardown(now, "a", reason_header("SIP", 408, "Caller unreachable"))
            return []
        timeout = reason == "TimedOut"
        if out.purpose == "retired":
            return []
        if out.purpose == "invite":
            self._b_invite_done = True
            if self.cancelled or self.phase is not Phase.SETUP:
                return self._end(now)
            index = self._can_fail_over()
            if index is not None:
                return self._fail_over(index, now, reason)
            self._ended_by, self._end_reason = "b", reason
            status, text = (408, "Request Timeout") if timeout else (503, "Service Unavailable")
            return self._final_to_a(status, text) + self._end(now)
        if out.purpose == "relay" and out.peer_key is not None and out.peer_request is not None:
            leg = self._other(out.leg)
            actions: Actions = []
            if out.offer:
                out.leg.oa.rollback() if out.leg.oa.offer_pending else None
                leg.oa.rollback() if leg.oa.offer_pending else None
            actions.append(self._answer(leg, out.peer_key, out.peer_request, 408))
            # No answer at all (§12.2.1.2): end the call; the far leg still gets a BYE in
            # case only this request was lost, so nothing is left billing there.
            hdr = reason_header("SIP", 408, "Far end not responding")
            return actions + self._teardown(now, out.leg.id.value, hdr)
        if out.purpose == "refresh":
            hdr = reason_header("SIP", 408, "Session refresh failed")
            return self._teardown(now, out.leg.id.value, hdr)
        return []

    # ================================================================== media
    def _with_media(self, streams: int, then: Callable[[float], Actions], now: float) -> Actions:
        """Run `then` once relay ports exist (asking for them the first time)."""
        if self._media == "ready":
            return then(now)
        self._after_media.append(then)
        if self._media == "allocating":
            return []
        self._media = "allocating"
        return [AllocateMedia(max(1, streams))]

    def on_media_ready(
        self,
        endpoints_a: tuple[tuple[str, int] | None, ...],
        endpoints_b: tuple[tuple[str, int] | None, ...],
        now: float,
    ) -> Actions:
        self.a.endpoints = tuple(endpoints_a)
        self.b.endpoints = tuple(endpoints_b)
        self._media = "ready"
        pending, self._after_media = self._after_media, []
        actions: Actions = []
        for then in pending:
            if self.ended:
                break
            actions += then(now)
        return actions

    def on_media_timeout(self, now: float) -> Actions:
        if self.ended or self.phase is not Phase.ANSWERED:
            return []  # early media may well be silent
        return self._teardown(now, "sbc", reason_header("SIP", 408, "Media timeout"))

    def hangup(self, reason: str, now: float) -> Actions:
        if self.ended:
            return []
        if self.phase is Phase.SETUP:
            if self.cancelled:
                return self._end(now)
            return self._abandon(now, 503, "Service Unavailable", "sbc", reason)
        return self._teardown(now, "sbc", reason_header("SIP", 503, reason[:60] or "Hangup"))

    # ================================================================== timers
    def next_deadline(self) -> float | None:
        if self.ended:
            return None
        times: list[float] = []
        if self._no_answer_at is not None and self.phase is Phase.SETUP and not self.cancelled:
            times.append(self._no_answer_at)
        if self._give_up_at is not None:
            times.append(self._give_up_at)
        if self._setup_at is not None and self.phase is Phase.SETUP:
            times.append(self._setup_at)
        limit = self._duration_limit()
        if limit is not None:
            times.append(limit)
        for leg in (self.a, self.b):
            for retransmitter in (leg.two_xx, leg.reliable):
                if retransmitter is not None:
                    deadline = retransmitter.next_deadline()
                    if deadline is not None:
                        times.append(deadline)
            if (
                leg.timer is not None
                and self.phase is Phase.ANSWERED
                and self._closing_at is None
                and not leg.timer.refreshing
            ):
                times.append(leg.timer.due())
        return min(times) if times else None

    def on_timer(self, now: float) -> Actions:
        if self.ended:
            return []
        actions: Actions = []
        if self._give_up_at is not None and now >= self._give_up_at:
            self._give_up_at = None
            return self._end(now)
        if self._setup_at is not None and now >= self._setup_at:
            self._setup_at = None
            index = self._can_fail_over()
            if index is not None:
                return self._fail_over(index, now, "setup timeout")
        if (
            self._no_answer_at is not None
            and now >= self._no_answer_at
            and self.phase is Phase.SETUP
            and not self.cancelled
        ):
            self._no_answer_at = None
            actions.append(LogEvent("call.no_answer", ()))
            return actions + self._abandon(now, 408, "Request Timeout", "sbc", "no answer")
        limit = self._duration_limit()
        if limit is not None and now >= limit:
            actions.append(
                LogEvent(
                    "call.max_duration", (("answered_for", f"{now - (self.answered or now):.1f}"),)
                )
            )
            hdr = reason_header("SIP", 503, "Maximum call duration")
            return actions + self._teardown(now, "sbc", hdr)
        for leg in (self.a, self.b):
            actions += self._retransmit_due(leg, now)
            if self.ended:
                return actions
        if self.phase is Phase.ANSWERED and self._closing_at is None:
            for leg in (self.a, self.b):
                timer = leg.timer
                if timer is not None and not timer.refreshing and now >= timer.due():
                    actions += self._session_timer_due(leg, timer, now)
                    if self.ended:
                        return actions
        return actions

    def _duration_limit(self) -> float | None:
        """When an answered call reaches its maximum duration (a toll-fraud rule)."""
        limit, deadline = self.setup.max_duration, self.setup.deadline
        if self.answered is None or self.phase is not Phase.ANSWERED:
            return None
        if self._closing_at is not None:
            return None
        ends = [t for t in (deadline, None if limit is None else self.answered + limit) if t]
        return min(ends) if ends else None

    def _retransmit_due(self, leg: Leg, now: float) -> Actions:
        actions: Actions = []
        two_xx = leg.two_xx
        if two_xx is not None:
            result = two_xx.on_timer(now)
            if isinstance(result, GiveUp):
                if leg.pending_bye is not None:
                    return actions + self._flush_bye(leg, now)  # §15: or until it times out
                leg.two_xx = None
                # §13.3.1.4: no ACK for our 2xx: the session ends with BYE, on both legs.
                return self._teardown(now, leg.id.value, reason_header("SIP", 408, "No ACK"))
            if result is not None and leg.two_xx_dest is not None:
                actions.append(SendStateless(leg.id, result, leg.two_xx_dest))
        reliable = leg.reliable
        if reliable is not None and leg.reliable_key is not None:
            result = reliable.on_timer(now)
            if isinstance(result, GiveUp):
                leg.reliable = None
                # RFC 3262 §3: no PRACK in 64*T1: reject the INVITE with a 5xx.
                if self.phase is Phase.SETUP and not self.cancelled:
                    return actions + self._abandon(now, 504, "Server Time-out", "a", "no PRACK")
            elif result is not None:
                actions.append(SendResponse(leg.id, leg.reliable_key, result))
        return actions

    def _session_timer_due(self, leg: Leg, timer: SessionTimer, now: float) -> Actions:
        if not timer.we_refresh:
            # RFC 4028 §10: no refresh came in time: the session is dead.
            hdr = reason_header("SIP", 408, "Session timer expired")
            return self._teardown(now, leg.id.value, hdr)
        dialog = leg.dialog
        if dialog is None or leg.done:
            return []
        if dialog.invite_in_progress or leg.oa.offer_pending:
            timer.last = now - timer.interval / 2 + 2  # busy with an offer: try again shortly
            return []
        headers = [
            ("Session-Expires", timer.header(uac=True)),
            ("Supported", "timer"),
            ("Allow", ALLOW),
        ]
        if timer.peer_supports:
            headers.append(("Require", "timer"))
        timer.refreshing = True
        if "UPDATE" in leg.peer_allow:
            # RFC 4028 §7.1: UPDATE without a body refreshes without touching the media.
            return [self._send(leg, leg.new_request("UPDATE", headers), "refresh")]
        current = leg.oa.local_current
        body = b""
        offer = False
        if current is not None:
            leg.oa.local_offer(current)  # the same version: no change (RFC 3264 §8)
            headers.append(("Content-Type", SDP_TYPE))
            body = bytes(current)
            offer = True
        request = leg.new_request("INVITE", headers, body)
        return [self._send(leg, request, "refresh", offer=offer)]

    def _refresh_response(self, out: _Out, response: Response, now: float) -> Actions:
        leg = out.leg
        status = response.status
        timer = leg.timer
        if status < 200 or timer is None:
            return []
        timer.refreshing = False
        actions: Actions = []
        method = out.request.method
        if leg.dialog is not None:
            try:
                leg.dialog.receive_response(response)
            except DialogError:
                pass
        if 200 <= status < 300:
            if method == "INVITE" and leg.dialog is not None:
                ack = leg.dialog.create_ack(
                    response.cseq.number, via=leg.via(), branch=new_branch()
                )
                out.ack = SendStateless(leg.id, ack, self._dialog_dest(leg))
                actions.append(out.ack)
            if out.offer:
                try:
                    answer = _answer_in(leg, response)
                    actions.append(UpdateMedia(leg.id, remotes_of(answer)))
                except (SdpError, OfferAnswerError):
                    leg.oa.rollback() if leg.oa.offer_pending else None
            timer.refreshed(now, session_expires(response), uac=True)
            return actions
        if out.offer and leg.oa.offer_pending:
            leg.oa.rollback()
        if status in (408, 481):
            leg.done = leg.done or status == 481  # after a 408 the BYE may still get there
            hdr = reason_header("SIP", status, "Session refresh failed")
            return actions + self._teardown(now, leg.id.value, hdr)
        if status == 422:
            wanted = min_se(response)
            if wanted is not None:
                timer.interval = max(timer.interval, wanted)
        elif status == 491:
            # RFC 3261 §14.1: retry after a random wait: 2.1-4 s when we own the dialog's
            # Call-ID (leg B, whose INVITE we sent), 0-2 s otherwise.
            low, high = (2.1, 4.0) if leg is self.b else (0.0, 2.0)
            timer.last = now - timer.interval / 2 + random.uniform(low, high)
            return actions
        elif method == "UPDATE":
            leg.peer_allow = leg.peer_allow - {"UPDATE"}  # refresh with re-INVITE instead
        timer.last = now - timer.interval / 2 + min(10.0, timer.interval / 4)
        return actions

    # ================================================================== ending
    def _teardown(self, now: float, by: str, reason: tuple[str, str]) -> Actions:
        """End an answered call (or one being set up) on both legs, with RFC 3326 Reason."""
        if self.ended:
            return []
        if self.phase is Phase.SETUP:
            if self.cancelled:
                return self._end(now)
            return self._abandon(now, 500, "Server Internal Error", by, reason[1])
        self._ended_by = by
        self._end_reason = self._end_reason or reason[1]
        actions: Actions = []
        for leg in (self.a, self.b):
            actions += self._bye(leg, [reason])
        return actions + self._end(now)

    def _bye(self, leg: Leg, headers: list[tuple[str, str]]) -> Actions:
        dialog = leg.dialog
        if leg.done or dialog is None or dialog.state is not DialogState.CONFIRMED:
            return []
        leg.done = True
        actions = self._ack_late_b() if leg is self.b else []
        if leg.two_xx is not None and not leg.two_xx.done:
            # RFC 3261 §15: the callee side must not BYE before the ACK of its 2xx (or the
            # end of its retransmissions); the call stays in closing until then.
            leg.pending_bye = headers
            return actions
        try:
            bye = leg.new_request("BYE", headers)
        except DialogError:
            return actions
        return [*actions, self._send(leg, bye, "bye")]

    def _ack_late_b(self) -> Actions:
        """Leg B's 2xx offered (late offer) and leg A's answer never came: that 2xx still gets
        its ACK, with a valid answer rejecting every stream, before the BYE that ends the
        dialog (RFC 3261 §13.2.2.4); a BYE alone leaves the far side retransmitting its 2xx."""
        late, self._b_late = self._b_late, None
        if late is None:
            return []
        b = self.b
        headers = b.agent_header("User-Agent")
        body = b""
        offer = b.oa.remote_pending
        if offer is not None:
            try:
                rejected, b.origin = cross(
                    offer, (), _origin(b), dtmf=self._dtmf_toward(b), srtp=self._srtp_toward(b)
                )  # no endpoints: all port 0
                headers.append(("Content-Type", SDP_TYPE))
                body = bytes(rejected)
            except SdpError:
                pass
        ack = late.create_ack(via=b.via(), branch=new_branch(), headers=headers, body=body)
        self._b_ack = ack
        return [SendStateless(LegId.B, ack, self._dialog_dest_of(late))]

    def _final_or_end(self, now: float, status: int, text: str) -> Actions:
        if self.phase is Phase.SETUP and not self.cancelled:
            return self._final_to_a(status, text) + self._end(now)
        return self._end(now)

    def _while_closing(self, leg: Leg, key: TxnKey, request: Request, now: float) -> Actions:
        """A request in a call that is over but for a BYE held for an ACK: a BYE from that
        side ends it at once (no need for ours); anything else finds no dialog."""
        if request.method != "BYE":
            return [SendResponse(leg.id, key, make_response(request, 481))]
        actions: Actions = [SendResponse(leg.id, key, make_response(request, 200))]
        if leg.pending_bye is not None:
            leg.pending_bye = None
            leg.two_xx = None
            actions += self._end(now)
        return actions

    def _bye_may_be_challenged(self) -> bool:
        """Our BYE toward a target we hold credentials for is still unanswered."""
        if self._answerer is None:
            return False
        outs = (*self._out_by_key.values(), *self._out_by_tag.values())
        return any(out.purpose == "bye" and out.leg is self.b for out in outs)

    def _closing_bye(self, key: TxnKey, out: _Out, response: Response, now: float) -> Actions:
        if response.status < 200:
            return []
        self._out_by_key.pop(key, None)
        if response.status in (401, 407):
            resent = self._resend_with_auth(out, response)
            if resent is not None:
                return resent
        return self._end(now)

    def _flush_bye(self, leg: Leg, now: float) -> Actions:
        """Send the BYE held for the ACK of our 2xx; end the call if nothing else waits."""
        headers, leg.pending_bye = leg.pending_bye, None
        leg.two_xx = None
        actions: Actions = []
        if headers is not None and leg.dialog is not None:
            try:
                actions.append(self._send(leg, leg.new_request("BYE", headers), "bye"))
            except DialogError:
                pass
        if self._closing_at is not None:
            actions += self._end(now)
        return actions

    def _end(self, now: float) -> Actions:
        if self.ended:
            return []
        if (
            self.a.pending_bye is not None
            or self.b.pending_bye is not None
            or self._bye_may_be_challenged()
        ):
            if self._closing_at is not None:
                return []
            # Over, but a BYE waits for an ACK (§15), or our BYE to a trunk that challenges
            # may need its credentials: media and pending requests go now, the CallEnded
            # when that BYE is done.
            self._closing_at = now
            return [*self._answer_pending(), ReleaseMedia(), LogEvent("call.closing", ())]
        actions = [] if self._closing_at is not None else self._answer_pending()
        self.ended = True
        self.phase = Phase.ENDED
        self._after_media.clear()
        self.a.two_xx = self.b.two_xx = None
        self.a.reliable = self.b.reliable = None
        cdr = Cdr(
            call_key=self.setup.call_key,
            direction=self.setup.direction,
            a_call_id=self.invite.call_id,
            b_call_id=self.b_call_id if self._b_invite is not None else None,
            caller=self.setup.caller,
            callee=self.setup.callee,
            callee_rewritten=self.setup.callee_rewritten,
            target=self.target.name,
            start=self.started,
            answer=self.answered,
            end=now if self._closing_at is None else self._closing_at,
            status=self.status,
            ended_by=self._ended_by,
            reason=self._end_reason,
        )
        return [*actions, ReleaseMedia(), CallEnded(cdr)]

    def _answer_pending(self) -> Actions:
        """A final answer to every request still waiting for the other leg's: RFC 3261 §15.1.2
        (487 to requests pending when the dialog ends); unanswered, their server transactions
        would never finish."""
        actions: Actions = []
        for out in (*self._out_by_key.values(), *self._out_by_tag.values()):
            if out.purpose == "relay" and out.peer_key is not None and out.peer_request:
                leg = self._other(out.leg)
                actions.append(self._answer(leg, out.peer_key, out.peer_request, 487))
        return actions

    # ================================================================== responses to A
    def _reject(
        self, status: int, text: str, now: float, headers: list[tuple[str, str]] | None = None
    ) -> Actions:
        self._ended_by, self._end_reason = "sbc", text
        return self._final_to_a(status, text, headers or []) + self._end(now)

    def _final_to_a(
        self, status: int, text: str | None, headers: list[tuple[str, str]] | None = None
    ) -> Actions:
        """A final failure to leg A's INVITE (once)."""
        if self.status >= 200 or self.phase is not Phase.SETUP:
            return []
        self.status = status
        self._stop_a_reliable()
        extra = [*(headers or []), *self.a.agent_header("Server")]
        response = self._build_a_response(status, text, extra, None)
        if self.a.dialog is not None:
            try:
                self.a.dialog.response_sent(response)
            except DialogError:
                pass
        return [SendResponse(LegId.A, self.invite_key, response)]

    def _stop_a_reliable(self) -> None:
        if self.a.reliable is not None:
            self.a.reliable.stop()
            self.a.reliable = None
        self._a_queue.clear()

    def _build_a_response(
        self,
        status: int,
        reason: str | None,
        headers: list[tuple[str, str]],
        body: SessionDescription | None,
    ) -> Response:
        data = b""
        if body is not None:
            data = bytes(body)
            headers = [*headers, ("Content-Type", SDP_TYPE)]
            if status < 200:
                self._a_saw_sdp = True  # early media heard: no failover from here on
        return make_response(
            self.invite, status, reason or None, to_tag=self.a_tag, headers=headers, body=data
        )

    # ================================================================== helpers
    # ================================================================== media views
    def media_views(self) -> tuple[SdpView, SdpView]:
        """(what we sent, what the peer sent) per leg, A then B, as the media flows now:
        the agreed pair, else the early one (an answer in an 18x), else what is on offer.
        The adapter derives the relay's stream settings (codec, keys, DTMF) from them."""
        a, b = self.a.oa, self.b.oa
        return (
            (
                a.local_current or self._a_preview or a.local_pending,
                a.remote_current or a.remote_pending,
            ),
            (b.local_current or b.local_pending, b.remote_current or b.remote_early),
        )

    # ================================================================== DTMF translation
    def _info_to_rtp(
        self, leg: Leg, key: TxnKey, request: Request, source: Peer, now: float
    ) -> Actions:
        """An INFO from a side that signals DTMF that way, toward a side that expects RFC
        4733: answered here and played as telephone-events on the other leg. An INFO that
        carries something else (or nothing) is relayed as usual."""
        ctype = (request.content_type or "").split(";", 1)[0].strip().lower()
        if ctype not in DTMF_INFO_TYPES:
            return self._relay_request(leg, key, request, source, now, None)
        try:
            digit = parse_dtmf_info(ctype, request.body)
        except DtmfInfoError as exc:
            return [self._answer(leg, key, request, 400, _short(exc))]
        other = self._other(leg)
        return [
            self._answer(leg, key, request, 200),
            PlayDtmf(other.id, digit.char, digit.duration_ms),
        ]

    def on_dtmf(self, leg_id: LegId, digit: str, duration_ms: int, now: float) -> Actions:
        """The relay heard a digit (RFC 4733) from `leg_id`'s side; the other side signals
        DTMF with INFO: send it one (application/dtmf-relay, the common form)."""
        leg = self._leg(leg_id)
        other = self._other(leg)
        if self.ended or self._closing_at is not None or self._dtmf_toward(other) != "strip":
            return []
        if other.dialog is None or other.done or other.dialog.state is not DialogState.CONFIRMED:
            return []
        body = format_dtmf_relay(digit, duration_ms)
        headers = [("Content-Type", DTMF_RELAY_TYPE)]
        return [
            self._send(other, other.new_request("INFO", headers, body), "dtmf"),
            LogEvent("call.dtmf_info", (("leg", other.id.value), ("digit", digit)), debug=True),
        ]

    def _srtp_toward(self, leg: Leg) -> tuple[SrtpPolicy, SrtpPolicy]:
        """(SRTP policy of the side the SDP comes from, of `leg`'s side, which it goes to)."""
        return SrtpPolicy(self._other(leg).policy.srtp), SrtpPolicy(leg.policy.srtp)

    def _offered_to_other(self, leg: Leg) -> SessionDescription | None:
        """Our offer on the other leg, which the answer crossing to `leg` answers."""
        oa = self._other(leg).oa
        return oa.local_pending or oa.local_current

    def _dtmf_toward(self, leg: Leg) -> str:
        """How SDP crossing to `leg` treats telephone-event when the two sides signal DTMF
        differently (the relay and INFO translate between them)."""
        mine, theirs = leg.policy.dtmf, self._other(leg).policy.dtmf
        if mine == theirs:
            return ""
        return "strip" if mine == "info" else "add"

    def _leg(self, leg_id: LegId) -> Leg:
        return self.a if leg_id is LegId.A else self.b

    def _other(self, leg: Leg) -> Leg:
        return self.b if leg is self.a else self.a

    def _send(
        self,
        leg: Leg,
        request: Request,
        purpose: str,
        *,
        dest: Peer | None = None,
        peer_key: TxnKey | None = None,
        peer_request: Request | None = None,
        peer_source: Peer | None = None,
        offer: bool = False,
    ) -> SendRequest:
        tag = str(next(self._tags))
        self._out_by_tag[tag] = _Out(
            purpose, leg, request, peer_key, peer_request, peer_source, offer
        )
        return SendRequest(leg.id, request, dest or self._dialog_dest(leg), tag)

    def _dialog_dest(self, leg: Leg) -> Peer:
        if leg.dialog is None:
            return leg.dest
        return self._dialog_dest_of(leg.dialog, leg)

    def _dialog_dest_of(self, dialog: Dialog, leg: Leg | None = None) -> Peer:
        """Where an in-dialog request goes. Toward the PBX: where its INVITE came from (it
        may sit behind NAT). Toward a trunk: the first route or the remote target when it
        names an address, else the trunk's proxy (there is no DNS resolution yet)."""
        leg = leg or self.b
        if leg is self.a:
            return leg.dest
        uri, routes = dialog.request_target()
        first = routes[0].strip().lstrip("<").split(">", 1)[0] if routes else uri
        try:
            parsed = parse_uri(first)
        except ParseError:
            return leg.dest
        if not isinstance(parsed, SipUri):
            return leg.dest
        host = parsed.host.strip("[]")
        if not _is_ip_literal(host):
            return leg.dest
        transport = (parsed.params.get("transport") or leg.dest.transport or "udp").lower()
        default = 5061 if parsed.scheme == "sips" or transport == "tls" else 5060
        return Peer(transport, host, parsed.port or default, leg.dest.listener)

    def _respond(self, leg: Leg, key: TxnKey, response: Response) -> SendResponse:
        if leg.dialog is not None:
            try:
                leg.dialog.response_sent(response)
            except DialogError:
                pass
        return SendResponse(leg.id, key, response)

    def _answer(
        self,
        leg: Leg,
        key: TxnKey,
        request: Request,
        status: int,
        reason: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> SendResponse:
        response = self._build_answer(leg, request, status, reason, headers or [], None)
        return self._respond(leg, key, response)

    def _build_answer(
        self,
        leg: Leg,
        request: Request,
        status: int,
        reason: str | None,
        headers: list[tuple[str, str]],
        body: SessionDescription | None,
    ) -> Response:
        extra = [*headers, *leg.agent_header("Server")]
        if 200 <= status < 300 and request.method in ("INVITE", "UPDATE", "REFER", "NOTIFY"):
            extra.insert(0, ("Contact", leg.contact))  # target refresh answers name us
        data = b""
        if body is not None:
            data = bytes(body)
            extra.append(("Content-Type", SDP_TYPE))
        return make_response(request, status, reason, headers=extra, body=data)

    def _timer_answer_headers(
        self, leg: Leg, request: Request, now: float
    ) -> list[tuple[str, str]]:
        """Session-Expires (and Require: timer) for our 2xx to a refresh on `leg`; the 2xx
        itself is the refresh (RFC 4028 §9)."""
        headers = [("Allow", ALLOW), ("Supported", "timer")]
        timer = leg.timer
        if timer is None:
            return headers
        asked = session_expires(request)
        if asked is not None and asked.interval > 0:
            timer.interval = asked.interval
            if asked.refresher is not None:
                timer.we_refresh = asked.refresher == "uas"
        timer.peer_supports = timer.peer_supports or supports_timer(request)
        timer.last = now
        headers.append(("Session-Expires", timer.header(uac=False)))
        if timer.peer_supports:
            headers.append(("Require", "timer"))
        return headers

    def _retransmit_2xx(self, leg: Leg, response: Response, dest: Peer, now: float) -> None:
        leg.two_xx = TwoXXRetransmitter(response, now, self.t1, self.t2)
        leg.two_xx_dest = dest


def _answer_in(leg: Leg, response: Response) -> SessionDescription:
    """The SDP answer a 2xx brings to the offer we made on `leg`, taken into its offer/answer
    state; SdpError (488) or OfferAnswerError when it brings none that fits."""
    answer = sdp_of(response)
    if answer is None:
        raise SdpError("2xx carries no answer to our offer", status=488)
    leg.oa.remote_answer(answer)
    return answer


def _origin(leg: Leg) -> OriginState:
    assert leg.origin is not None
    return leg.origin


def _map_failure(response: Response) -> tuple[int, str | None]:
    status = response.status
    mapped = _MAPPED_STATUS.get(status)
    if mapped is not None:
        return mapped
    if status >= 700 or status < 300:
        return 500, None
    return status, sanitized_reason(response) or None


def _short(exc: Exception) -> str:
    text = str(exc).replace("\r", " ").replace("\n", " ")
    return text[:100]


@functools.lru_cache(maxsize=4096)
def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _answerer(target: Target) -> ChallengeAnswerer | None:
    secret = target.credentials
    if secret is None:
        return None
    return ChallengeAnswerer(secret.username, secret.password, secret.realm)
