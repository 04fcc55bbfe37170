"""One side of a call as the B2BUA keeps it: our endpoint and policy there, its dialog, its
offer/answer state, the relay ports facing it, and what we retransmit or wait for on it.
What may cross between legs is decided in sbc.topology."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from sbc.b2bua.api import LegId, LegPolicy, LocalEndpoint
from sbc.b2bua.timer import SessionTimer
from sbc.sdp import OfferAnswer, OriginState
from sbc.sip.dialog import Dialog, ReliableProvisionalRetransmitter, TwoXXRetransmitter
from sbc.sip.message import Message, Request
from sbc.sip.peer import Peer
from sbc.sip.transaction import TxnKey, new_branch

Endpoint = tuple[str, int]

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE, INFO, MESSAGE, NOTIFY, REFER"
ACCEPT = "application/sdp"


@dataclass(slots=True)
class AwaitAck:
    """A 2xx we sent on this leg whose ACK will carry the answer to the offer in it (late
    offer, RFC 3261 §13.2.1): what to ACK on the other leg once that answer is here."""

    cseq: int
    other_ack: Request | None = None  # built when the answer arrives
    other_cseq: int | None = None  # CSeq of the INVITE on the other leg to ACK


@dataclass(slots=True, eq=False)
class Leg:
    id: LegId
    local: LocalEndpoint
    policy: LegPolicy
    dest: Peer  # where requests to this leg go (the PBX's source, the trunk's proxy)
    oa: OfferAnswer = field(default_factory=OfferAnswer)
    origin: OriginState | None = None
    dialog: Dialog | None = None
    endpoints: tuple[Endpoint | None, ...] = ()  # the relay's ports facing this leg
    two_xx: TwoXXRetransmitter | None = None  # our 2xx to an INVITE on this leg, until ACK
    two_xx_dest: Peer | None = None
    reliable: ReliableProvisionalRetransmitter | None = None  # our reliable 1xx, until PRACK
    reliable_key: TxnKey | None = None
    timer: SessionTimer | None = None
    await_ack: AwaitAck | None = None
    peer_allow: frozenset[str] = frozenset()
    peer_100rel: bool = False
    # RFC 3261 §15: our BYE on this leg, held until the ACK of our 2xx (or its timeout).
    pending_bye: list[tuple[str, str]] | None = None
    done: bool = False  # BYE sent or received, or the dialog never came to be

    def __post_init__(self) -> None:
        if self.origin is None:
            address = self.local.sdp_address or self.local.media_address
            sess_id = str(secrets.randbelow(2**62) + 1)
            self.origin = OriginState(address, sess_id)

    # ----- addresses we write on this leg (its interface only: topology hiding) -----------
    @property
    def hostport(self) -> str:
        host = self.local.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.local.port}"

    def via(self) -> str:
        return f"SIP/2.0/{self.local.transport.upper()} {self.hostport};rport"

    @property
    def contact(self) -> str:
        transport = self.local.transport.lower()
        suffix = "" if transport == "udp" else f";transport={transport}"
        return f"<sip:{self.hostport}{suffix}>"

    def agent_header(self, name: str) -> list[tuple[str, str]]:
        """User-Agent (requests) or Server (responses), only when configured for this side."""
        return [(name, self.local.user_agent)] if self.local.user_agent else []

    # ----- in-dialog requests -------------------------------------------------------------
    def new_request(
        self, method: str, headers: Iterable[tuple[str, str]] = (), body: bytes = b""
    ) -> Request:
        if self.dialog is None:
            raise RuntimeError(f"leg {self.id.value} has no dialog to send {method} in")
        extra = [*self.agent_header("User-Agent"), *headers]
        return self.dialog.create_request(
            method, via=self.via(), branch=new_branch(), headers=extra, body=body
        )

    def learn_peer(self, message: Message) -> None:
        """What the peer told us it can do (Allow, Supported) in its INVITE or 2xx."""
        allow = message.header_values("Allow")
        if allow:
            self.peer_allow = frozenset(
                m.strip().upper() for value in allow for m in value.split(",") if m.strip()
            )
        tags = message.option_tags("Supported") + message.option_tags("Require")
        self.peer_100rel = "100rel" in tags
