"""sbc.resolve: trunk host names to gateways (RFC 3263 §4.2) against a local DNS server."""

from __future__ import annotations

import asyncio

from sbc.config import parse_config
from sbc.resolve import resolve_trunks
from tests.support.dns import FakeDns
from tests.support.net import free_port

DNS_HOST = "127.0.0.53"


def config(proxies: dict[str, str], nameserver: str = "") -> str:
    trunks = "".join(
        f'  - {{name: {name}, interface: external, proxy: "{proxy}"}}\n'
        for name, proxy in proxies.items()
    )
    dns = f"dns: {{nameservers: ['{nameserver}']}}\n" if nameserver else ""
    return (
        "interfaces:\n  external: {listen: [udp:127.0.0.2:5080], media_address: 127.0.0.2}\n"
        f"trunks:\n{trunks}{dns}"
    )


def test_system_resolver_names_resolve_ipv4_first_and_literals_are_left_alone() -> None:
    text = config({"by-name": "sip:localhost:5090", "by-address": "sip:127.0.0.20:5090"})
    found = asyncio.run(resolve_trunks(parse_config(text, "t.yaml")))
    assert "by-address" not in found
    assert ("127.0.0.1", 5090) in found["by-name"]
    hosts = [host for host, _ in found["by-name"]]
    assert hosts == sorted(hosts, key=lambda a: ":" in a)


def test_srv_when_no_port_is_given_ordered_by_priority_rfc3263_4_2() -> None:
    port = free_port(DNS_HOST)
    records = {
        ("_sip._udp.itsp.test.", "SRV"): ["20 0 5070 gw2.itsp.test.", "10 0 5080 gw1.itsp.test."],
        ("gw1.itsp.test.", "A"): ["127.0.0.20"],
        ("gw2.itsp.test.", "A"): ["127.0.0.21", "127.0.0.22"],
        ("fixed.itsp.test.", "A"): ["127.0.0.23"],
    }
    text = config(
        {"srv": "sip:itsp.test", "fixed": "sip:fixed.itsp.test:5099", "gone": "sip:nx.test"},
        f"{DNS_HOST}:{port}",
    )
    with FakeDns(DNS_HOST, port, records) as server:
        found = asyncio.run(resolve_trunks(parse_config(text, "t.yaml")))
    # Priority 10 first; the two A records of gw2 come in whatever order DNS gives them.
    assert found["srv"][0] == ("127.0.0.20", 5080)
    assert set(found["srv"][1:]) == {("127.0.0.21", 5070), ("127.0.0.22", 5070)}
    # An explicit port means no SRV lookup (RFC 3263 §4.2): A records on that port.
    assert found["fixed"] == [("127.0.0.23", 5099)]
    assert ("_sip._udp.fixed.itsp.test.", "SRV") not in server.queries
    assert "gone" not in found  # logged and left out: calls to it fail over


def test_naptr_chooses_the_srv_name_for_the_trunks_transport_rfc3263_4_1() -> None:
    port = free_port(DNS_HOST)
    records = {
        # The carrier's own SRV names, not the _sip._udp default: only NAPTR leads there.
        ("carrier.test.", "NAPTR"): [
            '10 50 "s" "SIPS+D2T" "" _sips._tcp.edge.carrier.test.',
            '20 50 "s" "SIP+D2U" "" _udp-late.carrier.test.',
            '10 60 "s" "SIP+D2U" "" _udp-first.carrier.test.',
        ],
        ("_udp-first.carrier.test.", "SRV"): ["10 0 5070 gw1.carrier.test."],
        ("_udp-late.carrier.test.", "SRV"): ["10 0 5072 gw2.carrier.test."],
        ("_sips._tcp.edge.carrier.test.", "SRV"): ["10 0 5061 tls.carrier.test."],
        ("gw1.carrier.test.", "A"): ["127.0.0.20"],
        ("gw2.carrier.test.", "A"): ["127.0.0.21"],
        ("tls.carrier.test.", "A"): ["127.0.0.22"],
        ("plain.test.", "A"): ["127.0.0.23"],
        ("_sip._udp.plain.test.", "SRV"): ["10 0 5090 plain.test."],
    }
    text = config({"naptr": "sip:carrier.test", "no-naptr": "sip:plain.test"}, f"{DNS_HOST}:{port}")
    with FakeDns(DNS_HOST, port, records) as server:
        found = asyncio.run(resolve_trunks(parse_config(text, "t.yaml")))
    # UDP trunk: the SIP+D2U records in order (10 before 20); the TLS one is not ours.
    assert found["naptr"] == [("127.0.0.20", 5070), ("127.0.0.21", 5072)]
    assert ("_sip._udp.carrier.test.", "SRV") not in server.queries
    # No NAPTR records: straight to the transport's SRV name (RFC 3263 §4.1 last paragraph).
    assert found["no-naptr"] == [("127.0.0.23", 5090)]
