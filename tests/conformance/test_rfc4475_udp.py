"""RFC 4475 torture messages sent over UDP to the running SBC: each is answered as the
manifest says (or dropped), nothing crashes, and the server keeps answering afterwards."""

from __future__ import annotations

import re
import selectors
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sbc.sip.errors import ParseError
from sbc.sip.message import Request, parse
from tests.conformance.rfc4475 import EXPECTED, Case, manifest
from tests.support import SbcProcess, UdpClient, sip_request
from tests.support.sipmsg import status_of

# The torture messages name sent-by ports 5060 (or none) and 5050 without rport, so their
# answers go to the source address at those ports (RFC 3261 §18.2.2): listen on both, on a
# loopback address of our own.
CLIENT_HOST = "127.0.0.50"
CLIENT_PORTS = (5060, 5050)
# The final answer a valid request gets from the SBC as it stands (no routes yet).
# An INVITE from an address that is no configured PBX or trunk is refused 403 by routing.
PROCESSED = {"OPTIONS": 200, "INVITE": 403, "REGISTER": 403, "MESSAGE": 404}
CASES = manifest()


class Clients:
    def __init__(self) -> None:
        self.socks = [UdpClient(CLIENT_HOST, port) for port in CLIENT_PORTS]
        self.selector = selectors.DefaultSelector()
        for client in self.socks:
            self.selector.register(client.sock, selectors.EVENT_READ)

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        self.socks[0].send(data, to)

    def wait_for(self, marker: bytes, timeout: float = 5.0) -> list[bytes]:
        """Every datagram up to and including the first that contains `marker`."""
        seen: list[bytes] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            for key, _ in self.selector.select(left):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                data = sock.recv(65535)
                seen.append(data)
                if marker in data:
                    return seen
        raise AssertionError(f"nothing containing {marker!r} within {timeout} s; got {seen!r}")

    def drain(self) -> list[bytes]:
        out = []
        for key, _ in self.selector.select(0):
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            out.append(sock.recv(65535))
        return out

    def close(self) -> None:
        self.selector.close()
        for client in self.socks:
            client.close()


class Servers:
    """Several torture messages reuse one branch and sent-by (e.g. unkscm and novelsc): to
    the second, the server rightly answers as to a retransmission of the first (RFC 3261
    §17.2.3). Each message therefore goes to a server that has not seen its transaction key."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[SbcProcess] = []
        self.seen: list[set[tuple[str, str | None, str]]] = []

    def for_message(self, data: bytes) -> SbcProcess:
        key = _transaction_key(data)
        for server, seen in zip(self.started, self.seen, strict=True):
            if key is None or key not in seen:
                if key is not None:
                    seen.add(key)
                return server
        folder = self.tmp / str(len(self.started))
        folder.mkdir()
        # The corpus arrives as a burst from one stranger, which the edge guard would take
        # for a flood: declared trusted here, since this tests parsing, not flood defence.
        trusted = f"security: {{trusted: ['{CLIENT_HOST}/32']}}\n"
        server = SbcProcess(folder, extra_yaml=trusted).start()
        self.started.append(server)
        self.seen.append({key} if key is not None else set())
        return server

    def close(self) -> None:
        for server in self.started:
            server.stop()


def _transaction_key(data: bytes) -> tuple[str, str | None, str] | None:
    try:
        msg = parse(data)
        if not isinstance(msg, Request):
            return None
        return (msg.via.sent_by(), msg.via.branch, msg.method)
    except ParseError:
        return None


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    pool = Servers(Path(tmp_path_factory.mktemp("rfc4475")))
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def clients() -> Iterator[Clients]:
    try:
        c = Clients()
    except OSError as exc:  # pragma: no cover - a port taken on this machine
        pytest.skip(f"cannot bind {CLIENT_HOST}:{CLIENT_PORTS}: {exc}")
    yield c
    c.close()


def _marker(data: bytes) -> bytes:
    """Something every answer to `data` repeats: its Call-ID, else its top Via branch."""
    head = data.split(b"\r\n\r\n", 1)[0]
    call_id = re.search(rb"(?im)^(?:call-id|i)[ \t]*:[ \t]*(\S+)", head)
    if call_id:
        return call_id.group(1)
    branch = re.search(rb"(?i)branch[ \t]*=[ \t]*([^;,\s]+)", head)
    assert branch, "every torture message has a Call-ID or a Via branch"
    return branch.group(1)


def _exchange(sbc: SbcProcess, clients: Clients, data: bytes) -> list[bytes]:
    """Send `data`, then a probe OPTIONS; return the datagrams answering `data`. The server
    handles datagrams in order, so once the probe is answered any answer to `data` has been
    sent: no sleeping and guessing."""
    target = sbc.addr("internal", "udp")
    marker = _marker(data)
    clients.send(data, target)
    probe = sip_request("OPTIONS", target, source=(CLIENT_HOST, CLIENT_PORTS[0]))
    probe_marker = _marker(probe)
    clients.send(probe, target)
    seen = clients.wait_for(probe_marker) + clients.drain()
    return [d for d in seen if marker in d and probe_marker not in d]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_over_udp_handled_as_manifest_says(servers: Servers, clients: Clients, case: Case) -> None:
    expected = EXPECTED[case.file]
    replies = _exchange(servers.for_message(case.data), clients, case.data)
    statuses = [status_of(r) for r in replies]
    finals = [s for s in statuses if s is not None and s >= 200]
    if expected == "drop" or case.data.startswith(b"SIP/"):
        assert replies == [], "a response that matches no transaction is never answered"
        return
    if expected == "process":
        msg = parse(case.data)
        assert isinstance(msg, Request)
        # With a To tag it is a request inside a dialog we do not have: 481 (RFC 3261 §12.2.2)
        expected = 481 if msg.to_tag is not None else PROCESSED[msg.method]
    assert finals and finals[0] == expected, (case.handling, statuses)
    assert all(s == expected for s in finals), "retransmissions carry the same answer"


def test_server_still_answers_after_the_corpus(servers: Servers, clients: Clients) -> None:
    sbc = servers.for_message(b"")
    for case in CASES:
        clients.send(case.data, sbc.addr("internal", "udp"))
    probe = sip_request("OPTIONS", sbc.addr("internal", "udp"), source=(CLIENT_HOST, 5060))
    clients.send(probe, sbc.addr("internal", "udp"))
    replies = clients.wait_for(_marker(probe))
    assert status_of(replies[-1]) == 200
    assert sbc.process is not None and sbc.process.poll() is None
    assert "Traceback" not in sbc.log_text()
