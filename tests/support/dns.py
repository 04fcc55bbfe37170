"""A tiny authoritative DNS server for trunk tests: answers A and SRV questions from a
table, over UDP on loopback, on a thread. dnspython builds and parses the messages."""

from __future__ import annotations

import socket
import threading
from types import TracebackType

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


class FakeDns:
    def __init__(self, host: str, port: int, records: dict[tuple[str, str], list[str]]) -> None:
        """`records`: (name, type) -> rdata texts, e.g. ('_sip._udp.itsp.test.', 'SRV') ->
        ['10 0 5090 gw1.itsp.test.'], ('gw1.itsp.test.', 'A') -> ['127.0.0.20']."""
        self.records = records
        self.queries: list[tuple[str, str]] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, port))
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text()
            kind = dns.rdatatype.to_text(question.rdtype)
            self.queries.append((name, kind))
            answers = self.records.get((name, kind))
            if answers:
                response.answer.append(
                    dns.rrset.from_text_list(question.name, 60, "IN", kind, answers)
                )
            elif not any(n == name for n, _ in self.records):
                response.set_rcode(dns.rcode.NXDOMAIN)
            self._sock.sendto(response.to_wire(), source)

    def __enter__(self) -> FakeDns:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()
