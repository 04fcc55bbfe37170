"""The RFC 4475 torture corpus and what the SBC must do with each message.

Shared by the API-level test and the over-UDP test against the running server. The
expectation table mirrors ../shared/testdata/rfc4475/manifest.tsv; a test checks that both
list the same files so neither can drift.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from sbc.sip.errors import ParseError
from sbc.sip.message import Request, Response, error_response, parse
from sbc.sip.validation import check_request

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "rfc4475"

# "process": valid and processed normally (a request then gets the server's own answer);
# an int: the status a request must be answered with; "drop": a response that must be
# dropped. zeromf is "process" when the SBC is the OPTIONS target itself (the server case)
# and 483 otherwise (tested separately).
EXPECTED: dict[str, str | int] = {
    "wsinv.dat": "process",
    "intmeth.dat": 501,
    "esc01.dat": "process",
    "escnull.dat": "process",
    "esc02.dat": 501,
    "lwsdisp.dat": "process",
    "longreq.dat": "process",
    "dblreq.dat": "process",
    "semiuri.dat": "process",
    "transports.dat": "process",
    "mpart01.dat": "process",
    "unreason.dat": "process",
    "noreason.dat": "process",
    "badinv01.dat": 400,
    "clerr.dat": 400,
    "ncl.dat": 400,
    "scalar02.dat": 400,
    "scalarlg.dat": "drop",
    "quotbal.dat": 400,
    "ltgtruri.dat": 400,
    "lwsruri.dat": 400,
    "lwsstart.dat": 400,
    "trws.dat": 400,
    "escruri.dat": 400,
    "baddate.dat": "process",
    "regbadct.dat": 400,
    "badaspec.dat": 400,
    "baddn.dat": 400,
    "badvers.dat": 505,
    "mismatch01.dat": 400,
    "mismatch02.dat": 400,
    "bigcode.dat": "drop",
    "badbranch.dat": "process",
    "insuf.dat": 400,
    "unkscm.dat": 416,
    "novelsc.dat": 416,
    "unksm2.dat": "process",
    "bext01.dat": 420,
    "invut.dat": 415,
    "regaut01.dat": "process",
    "multi01.dat": 400,
    "mcl01.dat": 400,
    "bcast.dat": "process",
    "zeromf.dat": "process",
    "cparam01.dat": "process",
    "cparam02.dat": "process",
    "regescrt.dat": "process",
    "sdp01.dat": 406,
    "inv2543.dat": "process",
}


@dataclass(frozen=True)
class Case:
    file: str
    section: str
    title: str
    validity: str
    handling: str

    @property
    def data(self) -> bytes:
        return (CORPUS / self.file).read_bytes()

    @property
    def id(self) -> str:
        return f"RFC4475-{self.section}-{self.file.removesuffix('.dat')}"


def manifest() -> list[Case]:
    with open(CORPUS / "manifest.tsv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [
        Case(r["file"], r["section"], r["title"], r["validity"], r["expected handling by an SBC"])
        for r in rows
    ]


@dataclass
class Outcome:
    kind: str | int  # "process", "drop" or the status answered
    message: Request | Response | None = None
    answer: Response | None = None


def handle(data: bytes, *, local_target: bool = True) -> Outcome:
    """What the SBC's front door does with a datagram, minus the sockets."""
    try:
        msg = parse(data)
    except ParseError as err:
        answer = error_response(data, err)
        return Outcome("drop" if answer is None else answer.status, None, answer)
    if isinstance(msg, Response):
        try:
            msg.check()
        except ParseError:
            return Outcome("drop", msg)
        return Outcome("process", msg)
    answer = check_request(msg, local_target=local_target)
    if answer is None:
        return Outcome("process", msg)
    return Outcome(answer.status, msg, answer)
