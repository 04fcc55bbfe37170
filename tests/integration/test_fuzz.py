"""Seeded mutation fuzzing of the real `sbc run` process, in both directions: the caller's
side (the PBX toward a trunk, or the trunk toward the PBX) sends mutated INVITEs and other
requests and, for calls that get answered, ACK, hostile RTP/RTCP to the relay, a mutated
in-dialog request and BYE; the called side answers with mutated responses and SDP. The SBC
must log no error (every bad message is answered 400 or dropped where it arrives, never
raised halfway through a call), keep answering, and end every call it started, leaving no
call, dialog or media session behind. The mutations are the same on every run (a random
stream per case and per request); which of them meet which state in the SBC can still
depend on timing, so a failure is likely, not certain, to repeat with its seed."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import time
from pathlib import Path

import pytest

from sbc.sip import parse
from sbc.sip.errors import ParseError
from sbc.sip.message import Response
from tests.support import SbcProcess, free_port, sip_request
from tests.support.mutate import assemble, mutate_lines, sdp_lines
from tests.support.net import UdpResponder

PBX_HOST, ITSP_HOST = "127.0.0.10", "127.0.0.20"
SBC_INTERNAL, SBC_EXTERNAL = "127.0.0.1", "127.0.0.2"
CASES = 250
METHODS = ("INVITE",) * 6 + (
    "OPTIONS", "BYE", "CANCEL", "INFO", "UPDATE", "REGISTER", "MESSAGE", "ACK", "PRACK",
    "REFER", "NOTIFY",
)  # fmt: skip
EXTRA_HEADERS = (
    "Session-Expires: 90", "Session-Expires: 0;refresher=uas", "Supported: timer, 100rel",
    "Require: 100rel", "Min-SE: 99999999", "P-Asserted-Identity: <sip:+1@x>", "Privacy: id",
    "Record-Route: <sip:192.0.2.1;lr>", "Replaces: a;to-tag=b;from-tag=c", "Expires: -1",
)  # fmt: skip
KEYS = (  # SDES key material: good, too short, empty, with lifetime and MKI
    "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz", "x", "",
    "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4",
)  # fmt: skip
NUMBERS = ("15551234567", "+4930123", "00882123", "*99", "", "a b", "%2B1")
STATUSES = (
    "183 Session Progress", "180 Ringing", "486 Busy Here", "503 Service Unavailable",
    "401 Unauthorized", "407 Proxy Authentication Required", "302 Moved",
)  # fmt: skip


class MutatingAnswerer(UdpResponder):
    """The called side: answers INVITE with 200 and SDP (a fifth of the time with something
    else), other requests with 200, ACK with nothing; a third of its answers are mutated."""

    def __init__(self, host: str, port: int, seed: int) -> None:
        super().__init__(host, port)
        self.host, self.port = host, port
        self.seed = seed
        # Each request (by method and branch, so a retransmission gets the same answer) has
        # its own random stream, numbered in order of arrival: the answers do not depend on
        # how the SBC's retransmissions interleave. Used on the responder's thread only.
        self._requests: dict[tuple[str, str], int] = {}

    def answer(self, data: bytes) -> bytes | None:
        text = data.decode(errors="replace")
        first, _, rest = text.partition("\r\n")
        method = first.split(" ")[0]
        if method in ("ACK", "SIP/2.0") or first.count(" ") < 2:
            return None
        branch = re.search(r"branch=([^;\s,]+)", rest)
        key = (method, branch.group(1) if branch else rest)
        rng = random.Random(f"{self.seed}-{self._requests.setdefault(key, len(self._requests))}")
        wanted = ("via:", "from:", "to:", "call-id:", "cseq:", "record-route:")
        headers = [
            h for h in rest.split("\r\n\r\n")[0].split("\r\n") if h.lower().startswith(wanted)
        ]
        status = "200 OK"
        if method == "INVITE" and rng.random() < 0.2:
            status = rng.choice(STATUSES)
        head = [f"SIP/2.0 {status}"]
        for header in headers:
            if header.lower().startswith("to:") and ";tag=" not in header:
                header += f";tag=callee{rng.randrange(1000)}"
            head.append(header)
        head.append(f"Contact: <sip:callee@{self.host}:{self.port}>")
        if status.startswith("401"):
            algorithm = rng.choice(("MD5", "SHA-256", "foo", ""))
            head.append(f'WWW-Authenticate: Digest realm="x", nonce="n", algorithm={algorithm}')
        body = None
        if method == "INVITE" and status[0] in "12":
            head.append("Content-Type: application/sdp")
            body = sdp_lines(rng, self.host, 40000)
        if rng.random() < 0.3:
            head = [head[0], *mutate_lines(rng, head[1:])]
            if body is not None and rng.random() < 0.5:
                body = mutate_lines(rng, body)
        return assemble(rng, head, body)


def _final_for(data: bytes, call_id: str) -> Response | None:
    """`data` if it is a final response in `call_id` (the SBC's 400s to requests whose
    Call-ID was mutated away included: those are for nobody)."""
    try:
        answer = parse(data)
        if isinstance(answer, Response) and answer.status >= 200 and answer.call_id == call_id:
            return answer
    except ParseError:
        pass
    return None


class FuzzCaller:
    """The calling side's socket (bound on `host`) and the requests it sends to `target`."""

    def __init__(self, host: str, target: tuple[str, int], seed: int) -> None:
        self.host = host
        self.target = target
        self.seed = seed
        self.rng = random.Random(seed)  # reseeded per case: case n is the same every run
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        self.media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.media.bind((host, 0))
        self.answered = 0  # INVITEs that got a 200 the caller could ACK

    def close(self) -> None:
        self.sock.close()
        self.media.close()

    def options(self) -> int | None:
        """The status of a clean OPTIONS, sent again like a UA would over UDP (RFC 3261
        §17.1.2.2) if no answer comes; answers still arriving for earlier cases are skipped
        by Call-ID."""
        probe = parse(sip_request("OPTIONS", self.target, source=(self.host, self.port)))
        for _ in range(3):
            self.sock.sendto(bytes(probe), self.target)
            deadline = time.monotonic() + 2.0
            while (left := deadline - time.monotonic()) > 0:
                self.sock.settimeout(left)
                try:
                    answer = _final_for(self.sock.recv(65535), probe.call_id)
                except TimeoutError:
                    break
                if answer is not None:
                    return answer.status
        return None

    def case(self, number: int) -> None:
        rng = self.rng = random.Random(f"{self.seed}-{number}")
        method = rng.choice(METHODS)
        user = rng.choice(NUMBERS)
        call_id = f"fuzz{number}-{rng.randrange(1 << 30)}@caller"
        branch = f"z9hG4bK{rng.randrange(1 << 40)}"
        head = [
            f"{method} sip:{user}@{self.target[0]}:{self.target[1]} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:201@{self.host}>;tag=f{number}",
            f"To: <sip:{user}@{self.target[0]}>",
            f"Call-ID: {call_id}",
            f"CSeq: 1 {method}",
            f"Contact: <sip:201@{self.host}:{self.port}>",
        ]
        if rng.random() < 0.3:
            head.append(rng.choice(EXTRA_HEADERS))
        body = None
        if method in ("INVITE", "UPDATE") or rng.random() < 0.1:
            head.append("Content-Type: application/sdp")
            body = sdp_lines(rng, self.host, 42000)
            if rng.random() < 0.25:
                body = [line.replace("RTP/AVP", "RTP/SAVP") for line in body]
                body.append(f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{rng.choice(KEYS)}")
        if rng.random() < 0.3:
            if rng.random() < 0.8:
                head = [head[0], *mutate_lines(rng, head[1:])]
            else:
                head = mutate_lines(rng, head)
        if body is not None and rng.random() < 0.6:
            body = mutate_lines(rng, body)
        self.sock.sendto(assemble(rng, head, body), self.target)
        self._follow(number, call_id)

    def _follow(self, number: int, call_id: str) -> None:
        """Wait a moment for the final answer to this case's request; a 200 to our INVITE
        gets ACK, hostile media, maybe a mutated in-dialog request, and BYE."""
        deadline = time.monotonic() + 0.08
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                return
            answer = _final_for(data, call_id)
            if answer is None:
                continue
            contact = re.search(r"<([^>]+)>", answer.header("Contact") or "")
            if answer.status == 200 and answer.cseq.method == "INVITE" and contact is not None:
                self.answered += 1
                self._in_dialog(number, call_id, contact.group(1), answer)
            return

    def _in_dialog(self, number: int, call_id: str, target: str, answer: Response) -> None:
        rng = self.rng
        common = [
            "Max-Forwards: 70", f"From: <sip:201@{self.host}>;tag=f{number}",
            f"To: {answer.header('To') or ''}", f"Call-ID: {call_id}",
        ]  # fmt: skip

        def request(method: str, cseq: int, extra: list[str], body: list[str] | None) -> bytes:
            via = f"Via: SIP/2.0/UDP {self.host}:{self.port};branch=z9hG4bK{method}{number}"
            head = [f"{method} {target} SIP/2.0", via, *common, f"CSeq: {cseq} {method}", *extra]
            if method not in ("ACK", "BYE") and rng.random() < 0.4:
                head = [head[0], *mutate_lines(rng, head[1:])]
            if body and rng.random() < 0.5:
                body = mutate_lines(rng, body)
            return assemble(rng, head, body)

        self.sock.sendto(request("ACK", 1, [], None), self.target)
        self._hostile_media(answer)
        if rng.random() < 0.6:
            method = rng.choice(("INVITE", "UPDATE", "INFO", "REFER", "OPTIONS", "MESSAGE"))
            extra = [f"Contact: <sip:201@{self.host}:{self.port}>"]
            body = None
            if method in ("INVITE", "UPDATE"):
                extra.append("Content-Type: application/sdp")
                body = sdp_lines(rng, self.host, 42100)
            elif method == "INFO":
                extra.append("Content-Type: application/dtmf-relay")
                body = [f"Signal={rng.choice('5#x')}", f"Duration={rng.choice(('160', '-1', 'a'))}"]
            elif method == "REFER":
                extra.append(f"Refer-To: {rng.choice(('<sip:300@x>', '', '<>', 'sip:'))}")
            self.sock.sendto(request(method, 2, extra, body), self.target)
        self.sock.sendto(request("BYE", 3, [], None), self.target)

    def _hostile_media(self, answer: Response) -> None:
        """A burst of short, truncated, odd-version, RTCP-typed, telephone-event and random
        packets to the relay address the SBC's answer gave (RTP port and RTCP port)."""
        port = re.search(rb"m=audio (\d+)", answer.body)
        host = re.search(rb"c=IN IP4 ([\d.]+)", answer.body)
        if port is None or host is None:
            return
        address = (host.group(1).decode(), int(port.group(1)))
        rng = self.rng
        for sequence in range(20):
            kind = rng.randrange(5)
            noise = rng.randbytes(rng.randrange(0, 120))
            if kind == 0:  # RTP header with a payload type of any kind
                packet = bytes([0x80, rng.choice((0, 8, 13, 72, 101, 127)), 0, sequence]) + noise
            elif kind == 1:  # RTCP packet types, any length
                packet = bytes([0x80 | rng.randrange(32), rng.randrange(200, 207)]) + noise
            elif kind == 2:  # telephone-event with a random event and flags
                event = bytes([rng.randrange(256), rng.randrange(256), 0, rng.randrange(256)])
                packet = bytes([0x80, 101, 0, sequence, 0, 0, 0, 160, 1, 2, 3, 4]) + event
            elif kind == 3:  # padding and extension bits set, odd CSRC count
                packet = bytes([0xB0 | rng.randrange(16), 0, 0, sequence]) + noise
            else:
                packet = noise
            rtcp = rng.random() < 0.3
            self.media.sendto(packet, (address[0], address[1] + (1 if rtcp else 0)))


def _config(internal: int, external: int, pbx: int, trunk: int, workers: int) -> str:
    low = 34000 + internal % 20 * 100
    return (
        "node: fuzz\nlog: {level: info, format: kv}\n"
        "interfaces:\n"
        f'  internal: {{listen: ["udp:{SBC_INTERNAL}:{internal}"], media_address: {SBC_INTERNAL}}}\n'
        f'  external: {{listen: ["udp:{SBC_EXTERNAL}:{external}"], advertise: {SBC_EXTERNAL},'
        f" media_address: {SBC_EXTERNAL}}}\n"
        f'pbxs: [{{name: pbx, interface: internal, address: "{PBX_HOST}:{pbx}",'
        f" trusted_sources: [{PBX_HOST}/32], dtmf: info, srtp: optional}}]\n"
        f'trunks: [{{name: itsp, interface: external, proxy: "sip:{ITSP_HOST}:{trunk}",'
        " srtp: optional, codecs: [PCMU, PCMA, telephone-event],"
        " credentials: {username: fuzz, password: fuzz}}]\n"
        "routes:\n  outbound: [{match: '.*', trunks: [itsp]}]\n  inbound: [{match: '.*', pbx: pbx}]\n"
        f"media: {{port_range: [{low}, {low + 99}], timeout: 3, workers: {workers}}}\n"
        "calls: {no_answer_timeout: 3}\n"
        "sip: {t1: 0.05}\n"
    )


def _settled_stats(sbc: SbcProcess, timeout: float = 5.0) -> str:
    """The SBC's sbc.stats line once its media ports are back in the pool. Sessions are
    gone when a call ends; their sockets close a few loop turns later, and only then are the
    ports released, so ask again (each answer awaited) until they are, or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        mark = len(sbc.log_lines())
        os.kill(sbc.pid, signal.SIGUSR1)
        stats = sbc.wait_for_log(r"event=sbc\.stats ", start=mark)
        if " media_ports_in_use=0" in stats or time.monotonic() > deadline:
            return stats


@pytest.mark.parametrize(
    ("direction", "seed", "workers"),
    [("outbound", 1, 0), ("inbound", 2, 2)],
    ids=["pbx-to-trunk", "trunk-to-pbx-with-media-workers"],
)
def test_mutated_messages_and_media_leave_no_error_and_no_call(
    tmp_path: Path, direction: str, seed: int, workers: int
) -> None:
    internal, external = free_port(SBC_INTERNAL), free_port(SBC_EXTERNAL)
    if direction == "outbound":
        caller = FuzzCaller(PBX_HOST, (SBC_INTERNAL, internal), seed)
        answerer = MutatingAnswerer(ITSP_HOST, free_port(ITSP_HOST), seed)
        config = _config(internal, external, 5060, answerer.port, workers)
    else:
        caller = FuzzCaller(ITSP_HOST, (SBC_EXTERNAL, external), seed)
        answerer = MutatingAnswerer(PBX_HOST, free_port(PBX_HOST), seed)
        config = _config(internal, external, answerer.port, caller.port, workers)
    sbc = SbcProcess(tmp_path, config_text=config)
    try:
        with answerer, sbc:
            for number in range(CASES):
                caller.case(number)
            # Every call the SBC started ends (BYE, error answers, no-answer and media
            # timeouts of 3 s): awaited line by line, then the SBC's own count.
            started = [line for line in sbc.log_lines() if "event=call.new " in line]
            index = 0
            for _ in started:
                line = sbc.wait_for_log(r"event=call\.ended ", timeout=15.0, start=index)
                index = sbc.log_lines().index(line, index) + 1
            stats = _settled_stats(sbc)
            still_answers = caller.options()
            log = sbc.log_text()
        # Leaving the `with` stopped the SBC and checked that no error was logged.
    finally:
        caller.close()
    counts = {e: log.count(f"event={e} ") for e in ("call.new", "call.ended", "sip.parse_error")}
    print(f"{direction} seed {seed}: {counts}, {caller.answered} answered calls")
    # Not vacuous: some calls got through and were answered, some messages were refused.
    assert counts["call.new"] >= 20 and caller.answered >= 3 and counts["sip.parse_error"] >= 20
    assert counts["call.ended"] == counts["call.new"]
    for field in ("calls", "call_dialogs", "media_sessions", "media_ports_in_use"):
        assert f" {field}=0" in stats, stats
    assert still_answers == 200
