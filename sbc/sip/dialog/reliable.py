"""RFC 3262 reliable provisional responses, as far as one dialog's state goes: the RSeq we
stamp on our own reliable 1xx, the RAck a PRACK must carry, and the RSeq order we accept."""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass

from sbc.sip.dialog.errors import DialogError
from sbc.sip.message import Request, Response

RSEQ_MAX = 2**32 - 1  # RFC 3262 §7.1: 1*DIGIT in 1 .. 2**32 - 1
_INITIAL_MAX = (
    2**31 - 1
)  # §3: the first RSeq is drawn from 1 .. 2**31 - 1, leaving room to count up


@dataclass(frozen=True, slots=True)
class RAck:
    """The RAck value (RFC 3262 §7.2): which reliable provisional response a PRACK acknowledges."""

    rseq: int
    cseq: int
    method: str

    def __str__(self) -> str:
        return f"{self.rseq} {self.cseq} {self.method}"


def _number(text: str, what: str, maximum: int) -> int:
    if not text.isdigit() or len(text) > 10 or not 0 < int(text) <= maximum:
        raise DialogError(f"{what}: {text[:20]!r} is not a number in 1..{maximum}", status=400)
    return int(text)


def parse_rseq(value: str) -> int:
    return _number(value.strip(" \t"), "RSeq header", RSEQ_MAX)


def parse_rack(value: str) -> RAck:
    parts = value.split()
    if len(parts) != 3:
        raise DialogError("RAck header: expected '<RSeq> <CSeq number> <method>'", status=400)
    rseq = _number(parts[0], "RAck header", RSEQ_MAX)
    cseq = _number(parts[1], "RAck header", 2**31 - 1)
    return RAck(rseq, cseq, parts[2])


def is_reliable(response: Response) -> bool:
    """A provisional response sent reliably: 101-199 with Require: 100rel (RFC 3262 §4)."""
    return 100 < response.status < 200 and "100rel" in response.option_tags("Require")


class RSeqCheck(enum.Enum):
    """What a UAC does with a received reliable provisional response (RFC 3262 §4)."""

    NEW = "new and in order: process it and PRACK it"
    RETRANSMISSION = "already seen: ignore it (our PRACK's own transaction retransmits)"
    OUT_OF_ORDER = "RSeq skips ahead: neither PRACK nor process it"


@dataclass(slots=True)
class ReliableProvisionals:
    """100rel bookkeeping of one dialog, both directions.

    Sending (we are the UAS): `stamp()` puts the next RSeq on a reliable 1xx; the PRACK that
    acknowledges it is checked with `acknowledge()`. Receiving (we are the UAC): `receive()`
    says whether a reliable 1xx is new, and `rack_for()` builds the RAck of its PRACK.
    """

    next_rseq: int | None = None  # None until the first reliable 1xx picks a random start
    unacked: RAck | None = None  # our reliable 1xx that no PRACK has acknowledged yet
    remote_rseq: int | None = None  # RSeq of the last in-order reliable 1xx received
    remote_cseq: int | None = None  # CSeq number of the request those 1xx answer

    # ----- we send reliable provisionals -------------------------------------------------
    def stamp(self, response: Response) -> RAck:
        """Add RSeq (and Require: 100rel) to an outgoing 101-199 response; returns the RAck
        the PRACK for it will carry. The caller retransmits it until `acknowledge()`."""
        if not 100 < response.status < 200:
            # RFC 3262 §3: 100 is hop-by-hop and cannot be reliable; finals use ACK.
            raise DialogError(f"only 101-199 responses are sent reliably, not {response.status}")
        if self.unacked is not None:
            raise DialogError(
                f"reliable provisional RSeq {self.unacked.rseq} is not acknowledged yet: "
                "RFC 3262 §3 allows one outstanding at a time; send this one after its PRACK"
            )
        rseq = self.next_rseq
        if rseq is None:
            rseq = secrets.randbelow(_INITIAL_MAX) + 1
        if rseq > RSEQ_MAX:
            raise DialogError("RSeq space exhausted in this dialog (RFC 3262 §7.1)")
        self.next_rseq = rseq + 1
        response.set_header("RSeq", str(rseq))
        if "100rel" not in response.option_tags("Require"):
            response.add_header("Require", "100rel")
        cseq = response.cseq
        rack = RAck(rseq, cseq.number, cseq.method)
        self.unacked = rack
        return rack

    def acknowledge(self, rack: RAck) -> bool:
        """A PRACK arrived carrying `rack`: True (and no longer outstanding) when it names our
        unacknowledged reliable 1xx; False means answer the PRACK 481 (RFC 3262 §3)."""
        if self.unacked is not None and rack == self.unacked:
            self.unacked = None
            return True
        return False

    # ----- we receive reliable provisionals -----------------------------------------------
    def receive(self, response: Response) -> RSeqCheck:
        """Classify a reliable 1xx received in this dialog (RFC 3262 §4): the first for a
        request may carry any RSeq, each later one exactly one more."""
        value = response.header("RSeq")
        if value is None:
            raise DialogError(f"reliable {response.status} response has no RSeq header")
        rseq = parse_rseq(value)
        cseq = response.cseq.number
        last = self.remote_rseq
        if self.remote_cseq != cseq or last is None:
            self.remote_cseq, self.remote_rseq = cseq, rseq
            return RSeqCheck.NEW
        if rseq == last + 1:
            self.remote_rseq = rseq
            return RSeqCheck.NEW
        return RSeqCheck.RETRANSMISSION if rseq <= last else RSeqCheck.OUT_OF_ORDER

    @staticmethod
    def rack_for(response: Response) -> RAck:
        """The RAck of the PRACK for a received reliable 1xx (RFC 3262 §7.2)."""
        value = response.header("RSeq")
        if value is None:
            raise DialogError(f"reliable {response.status} response has no RSeq header")
        cseq = response.cseq
        return RAck(parse_rseq(value), cseq.number, cseq.method)


def rack_of(prack: Request) -> RAck:
    """The RAck a received PRACK carries; DialogError(400) when missing or malformed."""
    value = prack.header("RAck")
    if value is None:
        raise DialogError("PRACK has no RAck header (RFC 3262 §7.2)", status=400)
    return parse_rack(value)
