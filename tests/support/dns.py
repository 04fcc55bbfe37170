"""A tiny authoritative DNS server for trunk tests: answers A and SRV questions from a
table, over UDP on loopback. dnspython builds and parses the messages."""

from __future__ import annotations

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from tests.support.net import UdpResponder


class FakeDns(UdpResponder):
    def __init__(self, host: str, port: int, records: dict[tuple[str, str], list[str]]) -> None:
        """`records`: (name, type) -> rdata texts, e.g. ('_sip._udp.itsp.test.', 'SRV') ->
        ['10 0 5090 gw1.itsp.test.'], ('gw1.itsp.test.', 'A') -> ['127.0.0.20']. The test
        may change it while the server runs."""
        super().__init__(host, port)
        self.records = records
        self.queries: list[tuple[str, str]] = []

    def answer(self, data: bytes) -> bytes | None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text()
        kind = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, kind))
        answers = self.records.get((name, kind))
        if answers:
            response.answer.append(dns.rrset.from_text_list(question.name, 60, "IN", kind, answers))
        elif not any(n == name for n, _ in self.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
        return bytes(response.to_wire())
